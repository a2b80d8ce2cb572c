"""The model in service on one process: what ``app.state.model_control`` is there (deps.py's ``ModelControl``).

A swap loads and warms the new model in a worker thread beside the serving one (stream/pipeline/model_swap.py);
the old model keeps serving whatever happens. With ``--ray`` the cluster's ``ClusterModelControl`` swaps every
worker instead, with the same status codes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import HTTPException
from sightline.model.echo import echo
from sightline.stream.inference.model_holder import ModelSpec
from sightline.stream.pipeline.model_swap import SwapError, swap_model
from sightline.stream.pipeline.pipeline import Pipeline

log = logging.getLogger(__name__)


class LocalModelControl:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def describe(self) -> dict[str, Any]:
        return self.pipeline.models.current.describe()

    async def swap(self, source: str, backend: str | None, precision: str | None) -> dict[str, Any]:
        asked = self.pipeline.models.current.spec
        spec = ModelSpec(source, backend or asked.backend, precision or asked.precision)
        try:
            outcome = await asyncio.to_thread(swap_model, self.pipeline, spec)
        except SwapError as exc:
            raise HTTPException(exc.status, f"model not swapped, the old one keeps serving: {echo(str(exc), 800)}",
                                headers={"Retry-After": "5"} if exc.status == 409 else None) from None
        log.info("api: model %s -> %s", outcome.previous["id"], outcome.current["id"])
        return outcome.to_dict()
