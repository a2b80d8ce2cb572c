"""`sightline run CONFIG` and `sightline demo`: the streaming service from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sightline.model.cli import add_backend_argument

if TYPE_CHECKING:  # the service's modules pull in torch, av and fastapi: imported when a command runs
    from sightline.stream.config import RunConfig

log = logging.getLogger("sightline")

TOKEN_ENV = "SIGHTLINE_TOKEN"  # the admin credential (server.token)
VIEWER_TOKEN_ENV = "SIGHTLINE_VIEWER_TOKEN"  # one more entry of server.viewer_tokens
METRICS_TOKEN_ENV = "SIGHTLINE_METRICS_TOKEN"  # server.metrics_token


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the streaming service on a YAML config",
                       description="Decode the configured streams, classify their frames in cross-stream batches, "
                                   "write overlays/recordings/prediction logs and serve the HTTP API and metrics.")
    p.add_argument("config", type=Path, metavar="CONFIG", help="YAML file (see configs/example.yaml)")
    add_overrides(p)
    p.add_argument("--pid-file", type=Path, default=None, metavar="PATH",
                   help="write this process's PID to PATH once the config is read (for kill -HUP \"$(cat PATH)\": "
                        "reload the model, docs/model-swap.md); removed at exit")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (auto: this machine's; host:port; local: a private one); replaces "
                        "cluster.ray.address (docs/cluster.md)")
    p.set_defaults(func=cmd_run)

    h = sub.add_parser("hash-password", help="print a password hash for server.users (the password is read, never "
                                             "an argument)",
                       description="Reads a password (asked twice on a terminal, else the first line of stdin) and "
                                   "prints its PBKDF2-SHA256 hash: paste it as a user's password_hash "
                                   "(docs/service.md).")
    h.set_defaults(func=cmd_hash_password)

    d = sub.add_parser(
        "demo", help="the service on a looping clip of real photos, with previews at http://127.0.0.1:8080/",
        description="Makes a clip of scikit-image's photos, classifies it live (a looping camera stream and a "
                    "lossless replay) and serves the page and API until Ctrl-C. Uses the ImageNet ResNet18 "
                    "weights when torch's cache has them or they can be downloaded; otherwise trains a small demo "
                    "classifier once (under a minute on 2 cores) and caches it. Writes everything under --out.")
    d.add_argument("--out", type=Path, default=Path("sightline-demo"), metavar="DIR",
                   help="folder for the clip (media/) and the outputs (runs/); default ./sightline-demo")
    d.add_argument("--config", type=Path, default=None,
                   help="a config instead of the packaged demo one (relative paths are resolved against --out)")
    add_overrides(d)
    d.set_defaults(func=cmd_demo)


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--model", default=None, help="replaces model.source (imagenet, a bundle or a .pth)")
    p.add_argument("--device", default=None, help="replaces model.device")
    add_backend_argument(p, default=None)
    p.add_argument("--port", type=int, default=None, help="replaces server.port (0: any free port)")


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Never from argv: a password there is in the shell history and in every `ps` listing."""
    import getpass
    import sys

    from sightline.model.errors import ConfigError
    from sightline.stream.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("an empty password")
    print(hash_password(password))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sightline.stream.config import load_run_config

    limit_malloc_arenas()
    config = apply_overrides(apply_environment(load_run_config(args.config), os.environ), args)
    from sightline.stream.service.serve import ONE_PROCESS, serve

    kind = ONE_PROCESS
    if args.ray or config.cluster.ray.address:
        from sightline.stream.cluster.launch import CLUSTER, with_address

        kind, config = CLUSTER, with_address(config, args.ray)
    with pid_file(args.pid_file):
        return asyncio.run(serve(config, kind, args.duration,
                                 reload_config=lambda: apply_environment(load_run_config(args.config), os.environ)))


@contextlib.contextmanager
def pid_file(path: Path | None) -> Iterator[None]:
    """``--pid-file``: this process's PID in ``path`` while it runs (written whole, by a rename), removed at exit
    unless another process has written its own PID there since. A SIGKILL leaves it behind."""
    if path is None:
        yield
        return
    from sightline.model.errors import ConfigError

    pid = str(os.getpid())
    partial = path.with_name(f".{path.name}.{pid}")
    try:
        partial.write_text(pid + "\n")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"--pid-file {path}: cannot write it ({exc.strerror or type(exc).__name__})") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == pid:
                path.unlink()


MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before the service starts its threads; True when the cap was set.

    Every decode, output and recording thread allocates and frees frame-sized buffers; glibc gives threads
    arenas of their own (up to 8 per core) and returns little of them to the system, so RSS crept up by
    13% over a 20-minute soak (benchmarks/results/soak-cpu.txt) and stayed flat with 2 arenas
    (soak-cpu-arena2.txt). An environment that already sets MALLOC_ARENA_MAX keeps its own value.
    """
    import ctypes
    import platform

    if os.environ.get("MALLOC_ARENA_MAX") or platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))


def apply_overrides(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """Command-line flags win over the file."""
    model = {k: v for k, v in (("source", args.model), ("device", args.device),
                               ("backend", getattr(args, "backend", None))) if v is not None}
    server = {"port": args.port} if args.port is not None else {}
    return config.model_copy(update={"model": config.model.model_copy(update=model),
                                     "server": config.server.model_copy(update=server)})


def apply_environment(config: RunConfig, environ: Mapping[str, str]) -> RunConfig:
    """Secrets from the environment, so they stay out of config files (each only when set and not empty):
    SIGHTLINE_TOKEN replaces server.token, SIGHTLINE_METRICS_TOKEN server.metrics_token, and
    SIGHTLINE_VIEWER_TOKEN is one more viewer token. Validated as the file's own values are."""
    from sightline.model.yamlconfig import validate
    from sightline.stream.config import ServerConfig

    server = config.server.model_dump()
    for env, key in ((TOKEN_ENV, "token"), (METRICS_TOKEN_ENV, "metrics_token")):
        if value := environ.get(env, "").strip():
            server[key] = value
    if viewer := environ.get(VIEWER_TOKEN_ENV, "").strip():
        server["viewer_tokens"] = [*server["viewer_tokens"], viewer]
    checked = validate(server, ServerConfig, "the environment (SIGHTLINE_*), server")
    return config.model_copy(update={"server": checked})


def cmd_demo(args: argparse.Namespace) -> int:
    from sightline.demo import DemoModel, check_port_free, choose_model, ensure_media, load_demo_config
    from sightline.model.offline import offline

    limit_malloc_arenas()
    check_port_free(args.config, args.port)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = DemoModel(args.model, "--model") if args.model else choose_model(offline())
    log.info("demo model: %s", model.why)
    ensure_media(out, model)
    config = load_demo_config(out, args.config)
    config = config.model_copy(update={"model": config.model.model_copy(update={"source": model.source})})
    config = apply_overrides(apply_environment(config, os.environ), args)
    from sightline.stream.service.serve import run_service

    return asyncio.run(run_service(config, args.duration, outputs_of=out))
