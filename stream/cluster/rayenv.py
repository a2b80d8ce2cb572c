"""Joining (or starting) a Ray cluster with nothing leaving the machine uninvited.

Ray's usage-statistics reporting is turned off before ``ray`` is imported, and a cluster this process starts
(``local``) has no dashboard unless ``cluster.ray.dashboard_host`` asks for one.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sightline.model.errors import ConfigError
from sightline.stream.config import RAY_INSTALL_HINT

log = logging.getLogger(__name__)

USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"


def quiet_ray_environment(environ: dict[str, str] | Any = os.environ) -> None:
    """No usage statistics, whatever the environment said; set before Ray is imported and inherited by
    every Ray process this one starts."""
    environ[USAGE_STATS_ENV] = "0"


def require_ray() -> Any:
    quiet_ray_environment()
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_INSTALL_HINT) from None
    return ray


def connect(address: str, namespace: str, dashboard_host: str | None = None) -> Any:
    """``ray.init`` for the controller and for ``sightline eval --ray``; returns the ``ray`` module.

    ``auto`` joins the cluster of this machine, ``host:port``/``ray://...`` a given one, ``local`` starts a
    private one-machine cluster (no dashboard unless ``dashboard_host``)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"namespace": namespace, "log_to_driver": True}
    if address == "local":
        kwargs["include_dashboard"] = dashboard_host is not None
        if dashboard_host is not None:
            kwargs["dashboard_host"] = dashboard_host
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)
    log.info("joined Ray cluster %s (namespace %s): %s", address, namespace, ray.cluster_resources())
    return ray
