"""Request and response models of the HTTP API (what the OpenAPI schema shows)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sightline.stream.service.status import Readiness

__all__ = ["Prediction", "Readiness", "SessionDescription", "SmoothedLabel", "StreamList", "StreamStatus"]


class Prediction(BaseModel):
    index: int
    label: str
    prob: float


class SmoothedLabel(BaseModel):
    label: str
    prob: float


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
    dropped: dict[str, int]
    reconnects: int
    sink_errors: dict[str, int]
    corrupt_packets: int = Field(0, description="packets the decoder rejected or the demuxer flagged corrupt")
    frames_lost: dict[str, int] = Field(default_factory=dict,
                                        description="frames lost for good: source_gap (missing from the source, "
                                                    "by its timestamps), recorder_behind (not recorded)")
    records_lost: dict[str, int] = Field(default_factory=dict,
                                         description="output records not written (disk full), by sink")
    prediction: list[Prediction] | None
    smoothed: SmoothedLabel | None
    snapshot: str
    mjpeg: str


class SessionDescription(BaseModel):
    """A WebRTC SDP offer (request) or answer (response), as RTCPeerConnection.localDescription holds it."""

    sdp: str = Field(min_length=1, max_length=200_000)
    type: Literal["offer", "answer"]


class StreamList(BaseModel):
    streams: list[StreamStatus]
