"""`sightline run CONFIG --ray ADDRESS`: the HTTP API process becomes the controller of a Ray cluster."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from sightline.stream.config import ModelConfig, RunConfig

log = logging.getLogger("sightline")


def with_address(config: RunConfig, address: str | None) -> RunConfig:
    """``--ray`` wins over ``cluster.ray.address``."""
    if not address:
        return config
    ray_config = config.cluster.ray.model_copy(update={"address": address})
    return config.model_copy(update={"cluster": config.cluster.model_copy(update={"ray": ray_config})})


def connect_controller(config: RunConfig):  # noqa: ANN201 (returns a ClusterPipeline; ray imported inside)
    from sightline.stream.cluster.controller import ClusterPipeline
    from sightline.stream.cluster.rayenv import connect

    r = config.cluster.ray
    assert r.address is not None  # the caller checked
    ray = connect(r.address, r.namespace, r.dashboard_host)
    return ClusterPipeline(config, ray)


async def run_cluster_service(config: RunConfig, duration: float | None = None,
                              reload_model: Callable[[], ModelConfig] | None = None) -> int:
    """As ``run_service``, with the pipeline spread over the cluster's workers. ``reload_model``: with it,
    SIGHUP swaps every worker to the model it returns (the config file's; cluster/model_service.py)."""
    from sightline.run_cli import summary
    from sightline.stream.cluster.model_service import ClusterSighupReloader
    from sightline.stream.service.app import create_app
    from sightline.stream.service.server import HttpServer, require_safe_bind

    require_safe_bind(config.server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloader = ClusterSighupReloader(loop, reload_model) if reload_model is not None else None
    if reloader is not None:
        reloader.install()
    server = None
    try:
        if config.server.enabled:
            server = HttpServer(config.server.host, config.server.port, write_timeout_s=config.server.write_timeout_s)
            server.bind()
        controller = await asyncio.to_thread(connect_controller, config)
        if server is not None and not stop.is_set():
            try:
                await asyncio.to_thread(controller.start)
                if reloader is not None:
                    reloader.attach(controller)  # type: ignore[arg-type]
                app = create_app(controller, config, controller.metrics)  # type: ignore[arg-type]
                app.state.cluster = controller
                await server.start(app)
            except BaseException:
                await asyncio.to_thread(controller.shutdown)
                raise
            workers = controller.workers()
            print(f"Sightline is serving {server.url}/ on {len(workers)} Ray workers (API {server.url}/api/streams, "
                  f"workers {server.url}/api/workers, targets {server.url}/api/cluster/targets); Ctrl-C stops it",
                  flush=True)
        started = loop.time()
        code = await controller.run(duration=duration, stop=stop)
        print(summary(controller.statuses(), loop.time() - started, config.output_dir), flush=True)
    finally:
        if server is not None:
            await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if reloader is not None:
            reloader.remove()
    return code
