"""`GET /api/model` and `PUT /api/model`: the model in service, and a hot-swap to another one.

The router reads the pipeline from ``request.app.state.pipeline``. PUT is state-changing: ``ServiceGuard``
already requires the bearer token (and a same-origin ``Origin``) before the body is read; ``require_token``
checks it again here so the route stays protected wherever the router is mounted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sightline.model.echo import echo
from sightline.model.sources import IMAGENET
from sightline.stream.config import ModelConfig
from sightline.stream.inference.model_holder import ModelSpec
from sightline.stream.pipeline.model_swap import SwapError, swap_model
from sightline.stream.service.guard import bearer_token_matches

log = logging.getLogger(__name__)

SOURCE_MAX = 4096


class ModelRequest(BaseModel):
    """The model to put into service; backend and precision default to those the service was asked for."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=SOURCE_MAX,
                        description="'imagenet', a Sightline bundle or a torchvision .pth, as model.source")
    backend: Literal["auto", "torch", "openvino", "onnxruntime", "tensorrt"] | None = None
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] | None = None


class ServedModelInfo(BaseModel):
    id: str = Field(description="the first 12 hex digits of the SHA-256 of the bundle's content (weights, "
                                "classes, preprocessing)")
    source: str
    backend: str
    requested_backend: str
    precision: str
    arch: str
    classes: int
    device: str


class SwapResponse(BaseModel):
    swapped: bool = Field(description="false when the requested model was already serving")
    classes_changed: bool
    model: ServedModelInfo
    previous: ServedModelInfo
    load_s: float
    warm_s: float


def swap_dir(model: ModelConfig) -> Path | None:
    if model.swap_dir is not None:
        return Path(model.swap_dir)
    return None if model.source == IMAGENET else Path(model.source).parent


def outside_swap_dir(source: str, model: ModelConfig) -> str | None:
    """Why ``source`` may not be loaded through the API (None: it may). Checked before the file is touched,
    so the answer says nothing about files outside the folder."""
    if source == IMAGENET:
        return None
    root = swap_dir(model)
    if root is None:
        return "source: the service serves 'imagenet' and has no model.swap_dir; only 'imagenet' can be loaded"
    if not Path(os.path.abspath(source)).resolve().is_relative_to(root.resolve()):
        return f"source: not inside model.swap_dir ({root})"
    return None


def require_token(request: Request) -> None:
    token = getattr(request.app.state, "token", None)
    if token is None:
        return
    if not bearer_token_matches(request.headers.get("authorization"), token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": 'Bearer realm="sightline"'})


router = APIRouter(tags=["model"])


@router.get("/api/model", response_model=ServedModelInfo, summary="The model in service")
async def get_model(request: Request) -> Any:
    if getattr(request.app.state, "cluster", None) is not None:  # sightline run --ray: what the workers serve
        from sightline.stream.cluster import model_service
        return await model_service.get_model(request.app.state.cluster)
    return request.app.state.pipeline.models.current.describe()


@router.put("/api/model", response_model=SwapResponse, dependencies=[Depends(require_token)],
            summary="Swap the model without stopping a stream: loaded and warmed beside the old one, checked, then "
                    "put into service between two batches",
            responses={401: {"description": "server.token is set and the bearer token is missing or wrong"},
                       403: {"description": "source outside model.swap_dir"},
                       409: {"description": "another swap is in progress, or the model does not fit the running "
                                            "streams (other device or resize)"},
                       422: {"description": "the model cannot be loaded (missing file, not a bundle, backend "
                                            "missing)"},
                       500: {"description": "the model failed its warm-up run"},
                       503: {"description": "shutting down"}})
async def put_model(body: ModelRequest, request: Request) -> Any:
    state = request.app.state
    closing = getattr(state, "closing", None)
    if closing is not None and closing.is_set():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "shutting down")
    pipeline = state.pipeline
    outside = outside_swap_dir(body.source, pipeline.config.model)
    if outside:
        raise HTTPException(status.HTTP_403_FORBIDDEN, outside)
    if getattr(state, "cluster", None) is not None:  # sightline run --ray: every worker swaps
        from sightline.stream.cluster import model_service
        return await model_service.put_model(state.cluster, body.source, body.backend, body.precision)
    asked = pipeline.models.current.spec
    spec = ModelSpec(body.source, body.backend or asked.backend, body.precision or asked.precision)
    try:
        outcome = await asyncio.to_thread(swap_model, pipeline, spec)
    except SwapError as exc:
        raise HTTPException(exc.status, f"model not swapped, the old one keeps serving: {echo(str(exc), 800)}",
                            headers={"Retry-After": "5"} if exc.status == 409 else None) from None
    log.info("api: model %s -> %s", outcome.previous["id"], outcome.current["id"])
    return outcome.to_dict()
