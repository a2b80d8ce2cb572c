"""Request and response models of the HTTP API (what the OpenAPI schema shows)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sightline.stream.service.status import CapacityFigures, Readiness, StorageFigures, StreamCapacity

__all__ = ["CapacityFigures", "Prediction", "Readiness", "RecordingList", "RecordingSegment", "SessionDescription",
           "SmoothedLabel", "Smoothing", "StorageFigures", "StreamCapacity", "StreamList", "StreamStatus"]


class Prediction(BaseModel):
    index: int
    label: str
    prob: float


class SmoothedLabel(BaseModel):
    """The label shown on the video: the EMA of the class probabilities, kept until another class leads."""

    label: str
    prob: float = Field(description="the label's smoothed (EMA) probability, not this frame's")


class Smoothing(BaseModel):
    """How ``smoothed`` follows the frames (``smoothing`` in the config; docs/classifying.md)."""

    ema: float = Field(description="weight of the past in the probability EMA (0 = none)")
    hysteresis: float = Field(description="relative margin: another class replaces the shown one when its "
                                          "smoothed probability exceeds (1 + hysteresis) x the shown one's")


class DecodeInfo(BaseModel):
    """Which frames a stream's source decodes now, and why (docs/density.md)."""

    setting: Literal["auto", "all", "keyframes"]
    mode: Literal["all", "keyframes"] = Field(description="in force now")
    reason: str = Field(description="why, in one line")
    keyframe_interval_s: float | None = Field(description="measured: the median of the last GOPs; null until two "
                                                          "keyframes were seen")
    classify_fps_max: float | None = Field(description="the most this stream can be classified per second in this "
                                                       "mode (infer_fps, or the keyframe rate when lower); null: "
                                                       "every frame")


class InputStatus(BaseModel):
    """One of the stream's inputs (streams[].inputs; a stream with one url has one, "main")."""

    model_config = ConfigDict(extra="allow")

    name: str
    roles: list[str] = Field(description="classify, record, view")
    url: str = Field(description="credentials redacted")
    state: str
    error: str | None = None
    packets: int = Field(0, description="packets read on this input's connection")
    bytes: int = 0
    reconnects: int = 0
    frames_decoded: int = Field(0, description="always 0 for an input without the classify role (never decoded)")
    last_packet_age_s: float | None = None


class StreamStatus(BaseModel):
    """One stream, as `GET /api/streams/{name}` reports it (latencies over the last 30 s, fps over 5 s)."""

    model_config = ConfigDict(extra="allow")

    name: str
    url: str
    mode: str
    state: str
    error: str | None
    fps: float
    p50_ms: float | None
    p99_ms: float | None
    frames_decoded: int
    frames_inferred: int
    active_s: float = Field(0.0, description="seconds from the first decoded frame to now, or to the last frame once "
                                             "the stream is over: its own rate is frames_inferred / active_s")
    dropped: dict[str, int]
    reconnects: int
    sink_errors: dict[str, int]
    corrupt_packets: int = Field(0, description="packets the decoder rejected or the demuxer flagged corrupt")
    frames_lost: dict[str, int] = Field(default_factory=dict,
                                        description="frames lost for good: source_gap (missing from the source, "
                                                    "by its timestamps), recorder_behind (not recorded)")
    records_lost: dict[str, int] = Field(default_factory=dict,
                                         description="output records not written (disk full), by sink")
    prediction: list[Prediction] | None = Field(description="the latest classified frame's raw top-k")
    smoothed: SmoothedLabel | None = Field(description="the label shown on the video (EMA + hysteresis); it may lag "
                                                       "or differ from prediction[0], the frame's raw top-1")
    smoothing: Smoothing | None = None
    capacity: StreamCapacity | None = Field(None, description="this stream's share of the model over the capacity "
                                                              "window; null once its input has ended")
    decode: DecodeInfo | None = Field(None, description="which frames the source decodes (streams[].decode); "
                                                         "null for a WebRTC ingest (its peer connection decodes "
                                                         "every frame)")
    inputs: list[InputStatus] = Field(default_factory=list, description="the stream's inputs, the classify one "
                                                                        "first; each with its own connection state")
    inputs_down: list[str] = Field(default_factory=list, description="names of the inputs not live now")
    snapshot: str
    mjpeg: str


class SessionDescription(BaseModel):
    """A WebRTC SDP offer (request) or answer (response), as RTCPeerConnection.localDescription holds it."""

    sdp: str = Field(min_length=1, max_length=200_000)
    type: Literal["offer", "answer"]


class StreamList(BaseModel):
    streams: list[StreamStatus]
    total: int = Field(description="streams that match the state filter, before offset and limit")
    capacity: CapacityFigures | None = Field(None, description="the box's capacity (also in /readyz); null where "
                                                               "it is not measured here (a cluster's workers)")
    storage: StorageFigures | None = Field(None, description="output_dir's disk: bytes per kind, free space, "
                                                             "retention, write failures; null on a cluster's "
                                                             "controller (each worker has its own)")


class RecordingSegment(BaseModel):
    """One segment of a stream's recording (docs/recordings.md)."""

    file: str = Field(description="<stream>.<UTC start>[-n].mp4")
    start: float = Field(description="epoch seconds, from the name: the wall time of the segment's first frame "
                                     "(whole seconds)")
    end: float = Field(description="epoch seconds: the file's last write; now for the open segment")
    open: bool = Field(description="still being written (the newest segment of a running stream)")
    bytes: int
    url: str = Field(description="where it downloads (byte ranges supported)")


class RecordingList(BaseModel):
    stream: str
    segments: list[RecordingSegment] = Field(description="those overlapping the asked range, oldest first")
