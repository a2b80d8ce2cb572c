"""The HTTP service: ``create_app`` builds a FastAPI app that only includes routers, one per resource.

    service/app.py       create_app: middleware, error handlers, app.state, routers
    service/deps.py      module-level dependencies that read request.app.state
    service/status.py    the API's JSON for a stream, and the readiness rule (no FastAPI in it)
    service/models.py    request/response models
    service/routers/     health (/healthz /readyz /metrics), streams, previews, webrtc

Another feature adds its endpoints as an ``APIRouter`` of its own (dependencies from ``deps``) and one
line in ``create_app``'s ``ROUTERS``-style include list (or ``app.include_router(router)`` after it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:  # create_app pulls in FastAPI; the status module must not
    if name == "create_app":
        from sightline.stream.service.app import create_app

        return create_app
    raise AttributeError(name)
