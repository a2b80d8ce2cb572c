"""Server memory under large unauthenticated uploads: RSS of a service process before and after N POSTs.

A child process serves the API (small random-init model, no streams, a token set) on 127.0.0.1; the
parent sends --posts POSTs of --mb MB each to /api/streams without a token, over raw sockets (the body
streams from a 1 MB buffer, so the client holds nothing), and reads the answer. The child's VmRSS is
read from /proc before and after. Linux only.

    python benchmarks/body_cap.py --posts 3 --mb 100
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

SERVER = r"""
import asyncio, sys, tempfile, torch
from pathlib import Path
from sightline.model.architectures import build_network
from sightline.model.bundle import ModelBundle, PreprocessSpec
from sightline.model.classifier import Classifier
from sightline.stream.service.app import create_app
from sightline.stream.config import RunConfig
from sightline.stream.service.server import HttpServer
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.pipeline import Pipeline

async def main():
    torch.manual_seed(0)
    net = build_network("resnet18", 4)
    bundle = ModelBundle("resnet18", list("abcd"), net.state_dict(), PreprocessSpec(resize=64, crop=56), {})
    tmp = Path(tempfile.mkdtemp())
    config = RunConfig(output_dir=tmp, media_root=tmp, server={"token": "benchmark-token", "port": 0})
    pipeline = Pipeline(Classifier(bundle, device="cpu"), config, Metrics())
    pipeline.start()
    server = HttpServer("127.0.0.1", 0)
    await server.start(create_app(pipeline, config, pipeline.metrics))
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()
    pipeline.shutdown()

asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def post(port: int, size: int) -> tuple[str, int]:
    """(status line, bytes of body the server took before it answered or closed)."""
    chunk = b" " * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {size}\r\n\r\n".encode())
        try:
            while sent < size:
                n = min(len(chunk), size - sent)
                sock.sendall(chunk[:n])
                sent += n
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            reply = b"(reset)"
    return reply.split(b"\r\n", 1)[0].decode("latin-1"), sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=3)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    child = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=os.environ.copy())
    try:
        port = int(child.stdout.readline())
        time.sleep(1.0)
        before = rss_mb(child.pid)
        for i in range(args.posts):
            status, sent = post(port, args.mb * 1_000_000)
            print(f"POST {i + 1}: {status!r}, {sent / 1e6:.1f} MB sent before the server answered or closed")
        time.sleep(1.0)
        after = rss_mb(child.pid)
        print(f"service RSS: {before:.0f} MB before, {after:.0f} MB after {args.posts} x {args.mb} MB "
              f"unauthenticated POSTs (+{after - before:.0f} MB)")
    finally:
        child.stdin.close()
        child.wait(30)


if __name__ == "__main__":
    main()
