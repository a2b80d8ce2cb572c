"""What the API says about streams, built from the core's plain objects (no FastAPI here).

``stream_status`` is the JSON of one stream (``GET /api/streams/{name}``); ``readiness`` the rule
behind ``/readyz``. Both read states through ``lifecycle.py``'s sets, nowhere else spelled out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from sightline.stream.config import redact_url
from sightline.stream.lifecycle import DOWN_STATES, RUNNING_STATES
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
    return {"name": name, "url": redact_url(runtime.config.url), "mode": runtime.config.mode,
            **runtime.stats.snapshot(), "prediction": raw, "smoothed": smoothed,
            "smoothing": {"ema": smoother.ema, "hysteresis": smoother.hysteresis},
            "model": runtime.output.model_id, **links(name)}


class Readiness(BaseModel):
    ready: bool
    reason: str | None
    model: dict[str, Any]
    streams_running: int
    streams_down: int
    down_share: float
    max_down_share: float


def readiness(states: Iterable[str], model: dict[str, Any], max_down_share: float,
              closing: bool = False) -> Readiness:
    """Ready unless closing, or more than ``max_down_share`` of the running streams is down.

    ``run_service`` starts the HTTP server only after the model is loaded and warmed up and the
    pipeline (inference worker, configured streams) has started, so a service that answers has its
    model. Running streams are those not ended/stopped; down means reconnecting or failed.
    """
    running = [s for s in states if s in RUNNING_STATES]
    down = sum(s in DOWN_STATES for s in running)
    share = down / len(running) if running else 0.0
    reason = None
    if closing:
        reason = "shutting down"
    elif share > max_down_share:
        reason = f"{down} of {len(running)} running streams are down (more than {max_down_share:.0%})"
    return Readiness(ready=reason is None, reason=reason, model=model, streams_running=len(running),
                     streams_down=down, down_share=round(share, 4), max_down_share=max_down_share)
