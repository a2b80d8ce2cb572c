"""What a stream's results become: smoothing, the overlay, sinks (JSONL, recorder), the recording, the
annotated-video encoder shared by WebRTC viewers and the RTSP/RTMP publisher."""
