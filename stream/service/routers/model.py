"""`GET /api/model` and `PUT /api/model`: the model in service, and a hot-swap to another one.

The routes ask ``app.state.model_control`` (deps.py's ``ModelControl``: this process's pipeline,
stream/service/model_control.py, or every worker of a cluster). GET needs the viewer role, PUT (a state change)
the admin role, checked by ``ServiceGuard`` before the body is read and again by the route's own dependency.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field
from sightline.model.weights import IMAGENET
from sightline.stream.config import ModelConfig
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.auth import ADMIN, VIEWER
from sightline.stream.service.deps import (
    ModelControl,
    get_closing,
    get_model_control,
    get_pipeline,
    refuse_when_closing,
)

SOURCE_MAX = 4096


class ModelRequest(BaseModel):
    """The model to put into service; backend and precision default to those the service was asked for."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=SOURCE_MAX, pattern=r"^[^\x00-\x1f\x7f]+$",
                        description="'imagenet', a Sightline bundle or a torchvision .pth, as model.source (no "
                                    "control characters)")
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
    rules_unmatched: list[str] = Field(default_factory=list,
                                       description="event rules with labels the new model lacks: they stay in force "
                                                   "but will not fire (one line each, naming the closest class)")


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


router = APIRouter(tags=["model"])


@router.get("/api/model", response_model=ServedModelInfo, summary="The model in service",
            dependencies=[Depends(VIEWER)],
            responses={503: {"description": "with --ray: no pipeline worker is ready yet"}})
async def get_model(control: ModelControl = Depends(get_model_control)) -> Any:
    return await control.describe()


@router.put("/api/model", response_model=SwapResponse, dependencies=[Depends(ADMIN)],
            summary="Swap the model without stopping a stream: loaded and warmed beside the old one, checked, then "
                    "put into service between two batches",
            responses={403: {"description": "source outside model.swap_dir"},
                       409: {"description": "another swap is in progress, or the model does not fit the running "
                                            "streams (another device, or a resize over model.max_resize)"},
                       422: {"description": "the model cannot be loaded (missing file, not a bundle, backend "
                                            "missing, not a regular file, not loaded within model.load_timeout_s, "
                                            "or 'imagenet' while its weights are not in torch's cache: the service "
                                            "never downloads)"},
                       500: {"description": "the model failed its warm-up run"},
                       503: {"description": "shutting down"}})
async def put_model(body: ModelRequest, pipeline: Pipeline = Depends(get_pipeline),
                    control: ModelControl = Depends(get_model_control),
                    closing: asyncio.Event = Depends(get_closing)) -> Any:
    refuse_when_closing(closing)
    outside = outside_swap_dir(body.source, pipeline.config.model)
    if outside:
        raise HTTPException(status.HTTP_403_FORBIDDEN, outside)
    return await control.swap(body.source, body.backend, body.precision)
