"""The same streams through one local Pipeline and through one Ray pipeline worker, in one run.

(a) throughput: N fast (lossless) file streams to their end: frames classified per wall second;
(b) latency: M realtime streams classified at --live-fps (well under capacity) for S seconds: p50 capture->result
    latency (ms).

The Ray side is one ``PipelineWorker`` actor (the class ``sightline run --ray`` places streams on) holding as
many CPUs as the local process uses, on a one-machine Ray cluster this script starts. Rounds alternate
local/Ray so a busy machine weighs on both. Targets (issue 14): Ray keeps >= 0.9 of the local frames/s and
adds <= 5 ms p50 latency. Ray processes bind "the machine's address": run it in a loopback-only namespace:

    unshare --net bash -c 'ip link set lo up && exec "$@"' bash \
        python benchmarks/ray_overhead.py --out benchmarks/results/ray-overhead-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import torch  # noqa: E402
from sightline.model.architectures import build_network  # noqa: E402
from sightline.model.bundle import ModelBundle  # noqa: E402
from sightline.model.device import describe_device  # noqa: E402
from sightline.model.weights import imagenet_classes, imagenet_preprocess  # noqa: E402
from sightline.stream.cluster.worker import PipelineWorker  # noqa: E402
from sightline.stream.config import RunConfig, StreamConfig  # noqa: E402
from sightline.stream.pipeline.build import build_pipeline  # noqa: E402
from sightline.synthetic_media import make_test_clip  # noqa: E402

POLL_S = 0.05


def make_inputs(tmp: Path, seconds: int) -> tuple[Path, Path]:
    torch.manual_seed(0)
    bundle = ModelBundle("resnet18", imagenet_classes(), build_network("resnet18", 1000).state_dict(),
                         imagenet_preprocess(), {"source": "random-init"})
    model = bundle.save(tmp / "resnet18.pt")
    clip = make_test_clip(tmp / "clip.mp4", frames=15 * seconds, fps=15, size=(320, 240))
    return model, clip


def streams(clip: Path, n: int, mode: str, tag: str, infer_fps: float | None = None) -> list[dict[str, Any]]:
    return [StreamConfig(name=f"{tag}-{i}", url=str(clip), mode=mode, loop=mode == "realtime",
                         infer_fps=infer_fps).model_dump(mode="json") for i in range(n)]


class Local:
    def __init__(self, config: RunConfig) -> None:
        self.pipeline = build_pipeline(config)
        self.pipeline.start()

    def add(self, s: dict) -> None:
        self.pipeline.add_stream(StreamConfig.model_validate(s))

    def statuses(self) -> list[dict]:
        return [{**self.pipeline.get(n).status(), "finished": self.pipeline.get(n).finished}
                for n in self.pipeline.names()]

    def remove(self, name: str) -> None:
        self.pipeline.remove_stream(name)

    def close(self) -> None:
        self.pipeline.shutdown()


class OnRay:
    def __init__(self, ray: Any, config: RunConfig, cpus: float) -> None:
        self.ray = ray
        self.actor = ray.remote(PipelineWorker).options(num_cpus=cpus, max_concurrency=16).remote(
            config.model_dump(mode="json"), "bench")
        ray.get(self.actor.info.remote())

    def add(self, s: dict) -> None:
        answer = self.ray.get(self.actor.add_stream.remote(s))
        assert "status" in answer, answer

    def statuses(self) -> list[dict]:
        return self.ray.get(self.actor.statuses.remote())

    def remove(self, name: str) -> None:
        self.ray.get(self.actor.remove_stream.remote(name))

    def close(self) -> None:
        self.ray.get(self.actor.shutdown.remote())
        self.ray.kill(self.actor)


def throughput(side: Local | OnRay, clip: Path, n: int, tag: str) -> float:
    specs = streams(clip, n, "fast", tag)
    started = time.perf_counter()
    for s in specs:
        side.add(s)
    while True:
        st = [s for s in side.statuses() if s["name"].startswith(tag)]
        if len(st) == n and all(s["finished"] for s in st):
            break
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    frames = sum(int(s["frames_inferred"]) for s in st)
    for s in specs:
        side.remove(s["name"])
    return frames / wall


def latency(side: Local | OnRay, clip: Path, n: int, seconds: float, tag: str, fps: float) -> float:
    specs = streams(clip, n, "realtime", tag, infer_fps=fps)
    for s in specs:
        side.add(s)
    time.sleep(seconds)
    st = [s for s in side.statuses() if s["name"].startswith(tag)]
    for s in specs:
        side.remove(s["name"])
    return statistics.median(float(s["p50_ms"]) for s in st if s["p50_ms"] is not None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--streams", type=int, default=4, help="fast streams for throughput")
    ap.add_argument("--clip-seconds", type=int, default=6)
    ap.add_argument("--live", type=int, default=1, help="realtime streams for latency (15 fps clip)")
    ap.add_argument("--live-fps", type=float, default=5.0, help="classify this many frames/s of each (well under "
                                                                 "capacity, so latency is not queueing)")
    ap.add_argument("--live-seconds", type=float, default=12)
    ap.add_argument("--cpus", type=float, default=float(os.cpu_count() or 1))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=int(args.cpus), include_dashboard=False, namespace="bench", log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model, clip = make_inputs(tmp, args.clip_seconds)
        config = RunConfig.model_validate({"model": {"source": str(model), "device": args.device},
                                           "output_dir": str(tmp / "out"), "media_root": str(tmp),
                                           "log_predictions": True, "server": {"enabled": False}})
        local, remote = Local(config), OnRay(ray, config, args.cpus)
        rows = []
        try:
            for r in range(args.rounds):
                row = {"round": r + 1}
                for label, side in (("local", local), ("ray", remote)):
                    row[f"{label}_fps"] = round(throughput(side, clip, args.streams, f"{label}{r}f"), 2)
                    row[f"{label}_p50_ms"] = round(latency(side, clip, args.live, args.live_seconds,
                                                           f"{label}{r}l", args.live_fps), 2)
                rows.append(row)
                print(row, flush=True)
        finally:
            local.close()
            remote.close()
    ray.shutdown()
    fps_ratio = statistics.median(r["ray_fps"] / r["local_fps"] for r in rows)
    added = statistics.median(r["ray_p50_ms"] - r["local_p50_ms"] for r in rows)
    result = {"device": describe_device(torch.device(args.device)), "torch_threads": torch.get_num_threads(),
              "ray": ray.__version__, "cpus": args.cpus, "streams_fast": args.streams, "clip": "320x240 @ 15 fps",
              "clip_seconds": args.clip_seconds, "live_streams": args.live, "live_fps": args.live_fps,
              "live_seconds": args.live_seconds,
              "rounds": rows, "fps_ratio_median": round(fps_ratio, 3), "p50_added_ms_median": round(added, 2),
              "targets": {"fps_ratio": ">= 0.9", "p50_added_ms": "<= 5"}}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
