"""What the API says about streams, built from the core's plain objects (no FastAPI here).

``stream_status`` is the JSON of one stream (``GET /api/streams/{name}``); ``readiness`` the rule
behind ``/readyz``. Both read states through ``lifecycle.py``'s sets, nowhere else spelled out.
``capacity_status`` is the box's capacity figure (capacity.py): ``/readyz`` and ``GET /api/streams`` carry it;
``GET /api/streams`` carries the disk's figures too (``StorageFigures``), ``/readyz``'s detail its problems.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sightline.stream.capacity import CapacityStats, describe, stream_figures
from sightline.stream.config import redact_url
from sightline.stream.lifecycle import DOWN_STATES, RUNNING_STATES
from sightline.stream.storage.stats import StorageStats

if TYPE_CHECKING:  # a type only: importing the runtime would load torch where only statuses are built
    from sightline.stream.pipeline.stream_runtime import StreamRuntime


def links(name: str) -> dict[str, str]:
    return {"snapshot": f"/api/streams/{name}/snapshot.jpg", "mjpeg": f"/api/streams/{name}/mjpeg"}


def stream_status(runtime: StreamRuntime) -> dict[str, object]:
    """One stream as the API reports it: config (URL redacted), statistics, latest labels, preview links.

    ``prediction`` is the latest frame's raw top-k; ``smoothed`` the label shown on the video, which
    ``smoothing`` (EMA weight, relative hysteresis margin) makes lag or differ from ``prediction[0]``.

    A stream that reports itself (one on a Ray worker, ``cluster.controller.RemoteStream``) gives its
    worker's JSON, built there by this same function."""
    own = getattr(runtime, "status", None)
    if own is not None:
        return own()
    latest = runtime.output.latest
    raw = smoothed = None
    if latest is not None:
        raw = [{"index": p.index, "label": p.label, "prob": round(p.prob, 5)} for p in latest.top]
        if latest.smoothed is not None:
            smoothed = {"label": latest.smoothed.label, "prob": round(latest.smoothed.prob, 5)}
    name = runtime.config.name
    smoother = runtime.output.smoother
    capacity = runtime.capacity
    return {"name": name, "url": redact_url(runtime.config.source_url), "mode": runtime.config.mode,
            **runtime.stats.snapshot(), "prediction": raw, "smoothed": smoothed,
            "smoothing": {"ema": smoother.ema, "hysteresis": smoother.hysteresis},
            "model": runtime.output.model_id,
            "capacity": None if capacity is None else stream_figures(capacity.stream(name)), **links(name)}


class StreamCapacity(BaseModel):
    """One stream's share of the model over the capacity window (capacity.py)."""

    demand_per_s: float = Field(description="frames to classify per second this stream asked for (its infer_fps, "
                                            "or its frame rate)")
    served_per_s: float = Field(description="of those, frames per second handed to the model")
    shed_per_s: float = Field(description="frames to classify per second dropped because the model was behind")
    served_share: float = Field(description="served / demand: 1.0 while the model keeps up; over capacity, every "
                                            "stream's share stays near the others'")


class CapacityFigures(BaseModel):
    """The box's capacity over a sliding window: what the streams ask the model for, what it classifies."""

    over_capacity: bool = Field(description="the streams ask for more classifications than the model serves "
                                            "(from overload_ratio 1.1 until it is back under 1.02)")
    demand_per_s: float = Field(description="frames to classify per second, all streams (served + shed)")
    served_per_s: float = Field(description="frames per second handed to the model")
    shed_per_s: float = Field(description="frames to classify per second dropped because the model was behind")
    overload_ratio: float | None = Field(description="demand / served: 1.0 keeping up, 1.5 asked for half as much "
                                                     "again as served; 0 when nothing is asked, null when nothing "
                                                     "was served")
    window_s: int = Field(description="seconds the figures are over")
    streams_shedding: int = Field(description="streams that lost frames to classify in the window")
    served_share_min: float | None = Field(description="the lowest per-stream served / demand (fair share: near "
                                                       "the median)")
    served_share_median: float | None


class KindStorage(BaseModel):
    """One kind of output in output_dir (docs/storage.md)."""

    bytes: int = Field(description="bytes on disk, as of the last retention pass")
    files: int
    deleted_files: int = Field(description="deleted by retention since the service started")
    freed_bytes: int
    write_errors: int = Field(description="failed writes since the service started (disk full, I/O error)")
    failing: str | None = Field(description="why writes of this kind fail, while they do (cleared by the next good "
                                            "write); null while they succeed")
    failing_since: float | None = Field(description="Unix time of the first failure of the current spell")


class RetentionPass(BaseModel):
    passes: int = Field(description="passes finished since the service started")
    finished_at: float | None = Field(description="Unix time the last pass finished; null before the first")
    duration_s: float
    deleted_files: int = Field(description="files the last pass deleted")
    freed_bytes: int
    behind: str | None = Field(description="why the last pass could not bring a kind within its size budget or the "
                                           "free space above the floor; null when it did")
    errors: int = Field(description="files retention could not delete since the service started")


class StorageFigures(BaseModel):
    """output_dir's disk: what each kind holds, the free space, retention, write failures (docs/storage.md)."""

    free_bytes: int | None = Field(description="free on output_dir's volume after the last pass; null before it")
    volume_bytes: int | None
    min_free_bytes: int = Field(description="the floor retention keeps free (storage.retention.min_free_gb)")
    kinds: dict[str, KindStorage] = Field(description="recordings, events, predictions, event_history")
    retention: RetentionPass
    problems: list[str] = Field(description="kinds whose writes fail, retention behind (also in /readyz's detail)")


def storage_status(storage: StorageStats | None) -> dict[str, Any] | None:
    """The disk's figures (``StorageFigures``), or None where there is no output_dir here (a cluster's controller)."""
    return None if storage is None else storage.figures()


class Readiness(BaseModel):
    ready: bool
    reason: str | None
    model: dict[str, Any]
    streams_running: int
    streams_down: int
    down_share: float
    max_down_share: float
    over_capacity: bool | None = Field(None, description="the box is over capacity (it stays ready: out of a "
                                                         "load balancer its streams would go elsewhere and worse); "
                                                         "null where it is not measured here (a cluster's workers)")
    capacity: CapacityFigures | None = None
    detail: str | None = Field(None, description="over capacity, by how much ('asked for 120 classifications/s, "
                                                 "served 80/s (1.5x over capacity)'), and the disk's problems "
                                                 "('predictions writes failing: No space left on device (12 failed "
                                                 "writes so far)'), joined by '; '. Neither makes the service "
                                                 "unready: its streams are still classified")


def capacity_status(capacity: CapacityStats | None) -> dict[str, Any] | None:
    """The box's figures (``CapacityFigures``), or None where it has none (a cluster's controller)."""
    return None if capacity is None else capacity.figures()


def readiness(states: Iterable[str], model: dict[str, Any], max_down_share: float,
              closing: bool = False, capacity: CapacityStats | None = None,
              storage: StorageStats | None = None) -> Readiness:
    """Ready unless closing, or more than ``max_down_share`` of the running streams is down.

    ``run_service`` starts the HTTP server only after the model is loaded and warmed up and the
    pipeline (inference worker, configured streams) has started, so a service that answers has its
    model. Running streams are those not ended/stopped; down means reconnecting or failed. Over capacity, or with
    writes failing (a full disk), the service stays ready (the status code does not change) and says so in
    ``detail``: out of a load balancer its streams would be classified nowhere.
    """
    running = [s for s in states if s in RUNNING_STATES]
    down = sum(s in DOWN_STATES for s in running)
    share = down / len(running) if running else 0.0
    reason = None
    if closing:
        reason = "shutting down"
    elif share > max_down_share:
        reason = f"{down} of {len(running)} running streams are down (more than {max_down_share:.0%})"
    figures = capacity_status(capacity)
    over = None if figures is None else bool(figures["over_capacity"])
    details = [describe(capacity.box())] if over and capacity is not None else []
    details += storage.problems() if storage is not None else []
    return Readiness(ready=reason is None, reason=reason, model=model, streams_running=len(running),
                     streams_down=down, down_share=round(share, 4), max_down_share=max_down_share,
                     over_capacity=over, capacity=figures, detail="; ".join(details) or None)
