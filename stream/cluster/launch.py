"""`sightline run CONFIG --ray ADDRESS`: the HTTP API process becomes the controller of a Ray cluster.

The serve loop is the one-process one (stream/service/serve.py); ``CLUSTER`` says what differs: the
controller instead of a pipeline, the cluster's model control, viewing and worker admin on the app, SIGHUP
swapping every worker, and the banner.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from sightline.model.errors import ConfigError
from sightline.stream.cluster.controller import ClusterPipeline
from sightline.stream.cluster.model_control import ClusterModelControl, ClusterSighupReloader
from sightline.stream.cluster.rayenv import connect
from sightline.stream.cluster.viewing import ClusterViewing
from sightline.stream.config import RAY_INSTALL_HINT, RunConfig, ray_installed
from sightline.stream.service.app import create_app
from sightline.stream.service.serve import ServedKind


def with_address(config: RunConfig, address: str | None) -> RunConfig:
    """``--ray`` wins over ``cluster.ray.address``."""
    if not address:
        return config
    if not ray_installed():
        raise ConfigError(f"--ray: {RAY_INSTALL_HINT}")
    ray_config = config.cluster.ray.model_copy(update={"address": address})
    return config.model_copy(update={"cluster": config.cluster.model_copy(update={"ray": ray_config})})


def connect_controller(config: RunConfig) -> ClusterPipeline:
    r = config.cluster.ray
    if r.address is None:
        raise ValueError("cluster.ray.address is not set (the caller checks it)")
    ray = connect(r.address, r.namespace, r.dashboard_host)
    return ClusterPipeline(config, ray)


def cluster_app(controller: Any, config: RunConfig) -> FastAPI:
    return create_app(controller, config, controller.metrics, model_control=ClusterModelControl(controller),
                      viewing=ClusterViewing(controller), cluster=controller)


def banner(url: str, controller: Any) -> str:
    return (f"Sightline is serving {url}/ on {len(controller.workers())} Ray workers (API {url}/api/streams, "
            f"workers {url}/api/workers, targets {url}/api/cluster/targets); Ctrl-C stops it")


CLUSTER = ServedKind(open=connect_controller, make_app=cluster_app, banner=banner, reloader=ClusterSighupReloader)
