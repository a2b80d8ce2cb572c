"""Where frames come from: one decode thread per stream (files, RTSP/RTMP/HLS through PyAV, NVDEC when
asked), and WebRTC ingest. A source hands ``Frame`` objects to its stream's bounded queue; nothing past it
sees a PyAV object."""
