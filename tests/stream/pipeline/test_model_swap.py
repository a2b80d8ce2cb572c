"""Model hot-swap on a running pipeline: real looping file streams, real checkpoints written by the test."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from sightline import synthetic_media as media
from sightline.model.bundle import ModelBundle, PreprocessSpec
from sightline.model.classifier import Classifier
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.inference.cuda_feeder import FeederWorker
from sightline.stream.inference.model_holder import MODEL_ID_LENGTH, ModelSpec
from sightline.stream.metrics import Metrics
from sightline.stream.pipeline.model_swap import SwapError, SwapIncompatibleError, load_classifier, swap_model
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.status import stream_status

from tests.support.models import TINY, tiny_bundle
from tests.support.predictions import predictions

pytestmark = pytest.mark.timeout(120)

TOKEN = "swap-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def model_id(bundle: ModelBundle) -> str:
    return bundle.content_hash()[:MODEL_ID_LENGTH]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def feeder_worker(classifier: Classifier, batcher, topk, routes, stats, clock, *args, **kwargs) -> FeederWorker:
    """The GPU inference path, run on the CPU (its runner then works synchronously, no CUDA streams)."""
    return FeederWorker(classifier, batcher, topk, routes, stats, clock)


def start_pipeline(tmp_path: Path, bundle: ModelBundle, mode: str = "fast", **extra: object) -> Pipeline:
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=30, fps=10, size=(96, 72))
    model = {"source": str(tmp_path / "a.pt"), "device": "cpu", **extra.pop("model", {})}  # type: ignore[dict-item]
    config = RunConfig(model=model, output_dir=tmp_path / "out", media_root=tmp_path,
                       streams=[StreamConfig(name="cam", url=str(clip), mode=mode, loop=True)], **extra)
    pipeline = Pipeline(Classifier(bundle, device="cpu"), config, Metrics())
    pipeline.start()
    return pipeline


def inferred(pipeline: Pipeline) -> int:
    return int(stream_status(pipeline.get("cam"))["frames_inferred"])


def serving(pipeline: Pipeline) -> str:
    """The model that classified the stream's latest frame, as its status says."""
    return str(stream_status(pipeline.get("cam"))["model"])


def runs(ids: list[str]) -> list[str]:
    """['a', 'a', 'b', 'b', 'b'] -> ['a', 'b']: the models in the order they served."""
    return [m for i, m in enumerate(ids) if i == 0 or ids[i - 1] != m]


@pytest.mark.parametrize("worker", ["lanes", "feeder"])
def test_swaps_between_batches_classify_every_frame_once_and_release_the_old_model(
        tmp_path: Path, worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two swaps on a lossless looping stream: same classes, then three other classes. On two CPU lanes, and
    on the CUDA feeder's code run on the CPU (its own runner per model, batches of two runners in flight)."""
    if worker == "feeder":
        monkeypatch.setattr("sightline.stream.pipeline.pipeline.create_worker", feeder_worker)
    a, b, c = tiny_bundle(4, seed=0), tiny_bundle(4, seed=1), tiny_bundle(3, seed=2)
    c.class_names[:] = ["cat", "dog", "bird"]
    paths = {name: bundle.save(tmp_path / f"{name}.pt") for name, bundle in (("a", a), ("b", b), ("c", c))}
    pipeline = start_pipeline(tmp_path, a)
    if worker == "feeder":
        assert isinstance(pipeline.worker, FeederWorker)
    else:
        assert pipeline.worker.lanes == 2 or torch.get_num_threads() < 2  # the swap must hold across lanes
    served: list[weakref.ref] = [weakref.ref(pipeline.models.current.classifier)]
    resident_at_load: list[int] = []

    def loader(spec: ModelSpec, device: torch.device) -> Classifier:
        gc.collect()
        resident_at_load.append(sum(ref() is not None for ref in served))
        new = load_classifier(spec, device)
        served.append(weakref.ref(new))
        return new

    try:
        wait_until(lambda: inferred(pipeline) >= 12, 30, "classified frames under model a")
        first = swap_model(pipeline, ModelSpec(str(paths["b"])), loader=loader)
        assert first.swapped and not first.classes_changed
        assert first.previous["id"] == model_id(a) and first.current["id"] == model_id(b)
        wait_until(lambda: serving(pipeline) == model_id(b), 30, "results from model b")
        at = inferred(pipeline)
        wait_until(lambda: inferred(pipeline) >= at + 5, 30, "more frames under model b")
        second = swap_model(pipeline, ModelSpec(str(paths["c"])), loader=loader)
        assert second.swapped and second.classes_changed and second.current["classes"] == 3
        wait_until(lambda: serving(pipeline) == model_id(c), 30, "results from model c")
        at = inferred(pipeline)
        wait_until(lambda: inferred(pipeline) >= at + 5, 30, "more frames under model c")
        assert stream_status(pipeline.get("cam"))["state"] == "live"  # the stream never stopped
        assert pipeline.worker.errors == 0  # loading beside the serving model never broke a batch of it
    finally:
        pipeline.shutdown(5.0)

    lines = predictions(tmp_path / "out", "cam")
    assert [r["seq"] for r in lines] == list(range(len(lines)))  # every frame classified, exactly once, in order
    ids = [r["model"] for r in lines]
    assert runs(ids) == [model_id(a), model_id(b), model_id(c)]  # each swap lands at one seq boundary
    first_c = ids.index(model_id(c))
    assert all(p["label"] in ("cat", "dog", "bird") for r in lines[first_c:] for p in r["top"])
    assert all(len(r["top"]) == 3 for r in lines[first_c:]) and all(len(r["top"]) == 4 for r in lines[:first_c])
    # the classes changed: smoothing started afresh, so the first smoothed value is that frame's own probability
    fresh = lines[first_c]
    shown = fresh["smoothed"]
    assert shown["prob"] == next(p["prob"] for p in fresh["top"] if p["label"] == shown["label"])

    # memory: a swap loads only once the model before the serving one is released; both old ones are gone now
    assert resident_at_load == [1, 1]
    gc.collect()
    assert [ref() is None for ref in served] == [True, True, False]
    pipeline = None  # type: ignore[assignment]  # the last reference to the service, and so to model c
    gc.collect()
    assert served[2]() is None


def test_smoothing_carries_on_with_the_same_classes_and_restarts_with_others() -> None:
    from sightline.stream.outputs.smoothing import Smoother

    smoother = Smoother(["a", "b"], ema=0.5, hysteresis=0.0)
    smoother.update(np.array([1.0, 0.0]))
    assert not smoother.retarget(["a", "b"])  # another model, same classes: the average goes on
    assert smoother.update(np.array([0.0, 1.0])).prob == pytest.approx(0.5)
    assert smoother.retarget(["a", "b", "c"])  # other classes: a fresh start
    fresh = smoother.update(np.array([0.2, 0.1, 0.7]))
    assert (fresh.label, fresh.prob) == ("c", pytest.approx(0.7))


def fresh_app(pipeline: Pipeline) -> httpx.AsyncClient:
    app = create_app(pipeline, pipeline.config, pipeline.metrics)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=120)


def swaps(pipeline: Pipeline, result: str) -> float:
    return pipeline.swap_counts.get(result, 0)


async def test_put_model_refuses_bad_models_and_keeps_serving_then_swaps_to_openvino(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no ImageNet weights cached

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a running service must never download model weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    a = tiny_bundle(4, seed=0)
    a.save(tmp_path / "a.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    broken = tiny_bundle(4, seed=4)
    broken.state_dict["fc.weight"] = torch.full_like(broken.state_dict["fc.weight"], float("nan"))
    broken.save(tmp_path / "nan.pt")
    good = tiny_bundle(4, seed=5, spec=TINY)
    good.save(tmp_path / "good.pt")
    tiny_bundle(4, seed=6, spec=PreprocessSpec(resize=2000, crop=32)).save(tmp_path / "huge.pt")
    pipeline = await asyncio.to_thread(start_pipeline, tmp_path, a, "realtime", server={"token": TOKEN})
    try:
        async with fresh_app(pipeline) as client:
            before = (await client.get("/api/model")).json()
            assert before["id"] == model_id(a) and before["backend"] == "torch"

            r = await client.put("/api/model", json={"source": str(tmp_path / "good.pt")})
            assert r.status_code == 401  # the token guards the swap
            for outside in ("/etc/passwd", str(tmp_path / ".." / "x.pt"), str(tmp_path.parent)):
                r = await client.put("/api/model", json={"source": outside}, headers=AUTH)
                assert r.status_code == 403 and "model.swap_dir" in r.json()["detail"], r.text
            cases = [("garbage.pt", 422, "not a readable PyTorch checkpoint"),
                     ("missing.pt", 422, "no such model file"), ("nan.pt", 500, "warm-up"),
                     ("imagenet", 422, "a running service never downloads"),
                     ("huge.pt", 409, "over model.max_resize (1024)")]
            for name, code, reason in cases:
                source = name if name == "imagenet" else str(tmp_path / name)
                r = await client.put("/api/model", json={"source": source}, headers=AUTH)
                assert r.status_code == code, (name, r.text)
                assert "old one keeps serving" in r.json()["detail"] and reason in r.json()["detail"], r.text
            assert (await client.get("/api/model")).json() == before
            assert swaps(pipeline, "failed") == 4 and swaps(pipeline, "refused") == 1
            nul = await client.put("/api/model", json={"source": str(tmp_path / "a\x00.pt")}, headers=AUTH)
            assert nul.status_code == 422 and "pattern" in nul.text  # refused by the schema, before any file
            assert swaps(pipeline, "failed") == 4
            seen = inferred(pipeline)
            await asyncio.to_thread(wait_until, lambda: inferred(pipeline) >= seen + 5, 30, "old model serving")

            r = await client.put("/api/model", json={"source": str(tmp_path / "good.pt"), "backend": "openvino",
                                                     "precision": "fp32"}, headers=AUTH)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["swapped"] and body["model"]["id"] == model_id(good) and body["previous"]["id"] == model_id(a)
            assert body["model"]["backend"] == "openvino" and body["model"]["precision"] == "fp32"
            assert (await client.get("/api/model")).json()["backend"] == "openvino"
            await asyncio.to_thread(wait_until, lambda: stream_status(pipeline.get("cam"))["model"] == model_id(good),
                                    30, "results from the openvino model")
            metrics = (await client.get("/metrics")).text
            assert f'model="{model_id(good)}"' in metrics and f'model="{model_id(a)}"' not in metrics
            assert 'sightline_model_swaps_total{result="swapped"} 1.0' in metrics

            r = await client.put("/api/model", json={"source": str(tmp_path / "good.pt")}, headers=AUTH)
            assert r.status_code == 200 and not r.json()["swapped"]  # same model, same backend: nothing to do
            assert swaps(pipeline, "unchanged") == 1
            assert pipeline.worker.errors == 0  # building the OpenVINO model beside the serving one broke no batch
    finally:
        await asyncio.to_thread(pipeline.shutdown, 5.0)
    ids = [r["model"] for r in predictions(tmp_path / "out", "cam")]
    assert runs(ids) == [model_id(a), model_id(good)]


def test_a_worker_without_a_holder_refuses_the_swap(tmp_path: Path) -> None:
    a = tiny_bundle(4, seed=0)
    a.save(tmp_path / "a.pt")
    pipeline = start_pipeline(tmp_path, a, "realtime")
    try:
        pipeline.worker.models = None
        with pytest.raises(SwapIncompatibleError, match="does not serve the model holder"):
            swap_model(pipeline, ModelSpec(str(tmp_path / "a.pt")))
        assert pipeline.models.current.id == model_id(a)
    finally:
        pipeline.shutdown(5.0)


def test_the_log_says_what_the_swap_counter_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A model that does not load is counted result="failed" and logged "failed"; a swap while another runs is
    counted and logged "refused" (the log said "refused" for both)."""
    a = tiny_bundle(4, seed=0)
    a.save(tmp_path / "a.pt")
    pipeline = start_pipeline(tmp_path, a, "realtime")
    try:
        with caplog.at_level("ERROR", logger="sightline.stream.pipeline.model_swap"):
            with pytest.raises(SwapError):
                swap_model(pipeline, ModelSpec(str(tmp_path / "missing.pt")))
            assert pipeline.swap_counts == {"failed": 1}
            assert [r.getMessage().split(",")[0] for r in caplog.records] == [
                f"model swap to {tmp_path / 'missing.pt'} failed"]
            caplog.clear()
            assert pipeline.models.swapping.acquire(blocking=False)  # another swap in progress
            try:
                with pytest.raises(SwapError, match="another model swap is in progress"):
                    swap_model(pipeline, ModelSpec(str(tmp_path / "a.pt")))
            finally:
                pipeline.models.swapping.release()
            assert pipeline.swap_counts == {"failed": 1, "refused": 1}
            assert [r.getMessage().split(",")[0] for r in caplog.records] == [
                f"model swap to {tmp_path / 'a.pt'} refused"]
    finally:
        pipeline.shutdown(5.0)


class ShapeSpy:
    """A classifier's preprocessing that notes the size of every frame it is given."""

    def __init__(self, preprocessor) -> None:
        self.inner = preprocessor
        self.shapes: list[tuple[int, ...]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, images):
        self.shapes.extend(image.shape for image in images)
        return self.inner(images)


@pytest.mark.parametrize("worker", ["lanes", "feeder"])
def test_a_model_with_another_resize_swaps_and_the_decoders_follow_it(
        tmp_path: Path, worker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 px -> 96 px (shorter side): from the swap on the stream's decoder scales to the new model's working size;
    every frame is still classified once, by one model or the other."""
    if worker == "feeder":
        monkeypatch.setattr("sightline.stream.pipeline.pipeline.create_worker", feeder_worker)
    a, big = tiny_bundle(4, seed=0), tiny_bundle(4, seed=3, spec=PreprocessSpec(resize=96, crop=80))
    a.save(tmp_path / "a.pt")
    big.save(tmp_path / "big.pt")
    pipeline = start_pipeline(tmp_path, a)
    spies: list[ShapeSpy] = []

    def loader(spec: ModelSpec, device: torch.device) -> Classifier:
        new = load_classifier(spec, device)
        spies.append(ShapeSpy(new.preprocessor))
        new.preprocessor = spies[-1]
        return new

    def decoded() -> tuple[int, ...]:
        latest = pipeline.get("cam").output.latest
        return () if latest is None else latest.result.frame.image.shape

    try:
        wait_until(lambda: inferred(pipeline) >= 6, 30, "classified frames under the 64 px model")
        assert decoded() == (64, 85, 3)  # the 96x72 clip decoded with its shorter side at 64 px
        outcome = swap_model(pipeline, ModelSpec(str(tmp_path / "big.pt")), loader=loader)
        assert outcome.swapped
        wait_until(lambda: decoded() == (96, 128, 3), 30, "frames decoded for the 96 px model")
        at = inferred(pipeline)
        wait_until(lambda: inferred(pipeline) >= at + 6, 30, "more frames under the 96 px model")
        assert decoded() == (96, 128, 3)
        assert stream_status(pipeline.get("cam"))["state"] == "live" and pipeline.worker.errors == 0
    finally:
        pipeline.shutdown(5.0)
    # the new model was given the old size only for frames decoded before the swap (those still queued)
    seen = {shape for shape in spies[0].shapes if shape[0] != shape[1]}  # the warm-up's square frames left out
    assert seen <= {(64, 85, 3), (96, 128, 3)}
    lines = predictions(tmp_path / "out", "cam")
    assert [r["seq"] for r in lines] == list(range(len(lines)))
    assert runs([r["model"] for r in lines]) == [model_id(a), model_id(big)]


@pytest.mark.slow
def test_sighup_reloads_the_model_from_the_config_file_of_a_running_service(tmp_path: Path) -> None:
    """`sightline run` as a user runs it: a broken config on SIGHUP changes nothing, a good one swaps."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    import yaml

    a, b = tiny_bundle(4, seed=0), tiny_bundle(2, seed=1)
    clip = media.make_test_clip(tmp_path / "clip.mp4", frames=20, fps=10, size=(96, 72))
    cfg = tmp_path / "run.yaml"

    def write_config(source: Path) -> None:
        cfg.write_text(yaml.safe_dump({
            "model": {"source": str(source), "device": "cpu"}, "output_dir": str(tmp_path / "out"),
            "media_root": str(tmp_path), "server": {"enabled": False},
            "streams": [{"name": "cam", "url": str(clip), "loop": True}]}))

    write_config(a.save(tmp_path / "a.pt"))
    b.save(tmp_path / "b.pt")
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, "-m", "sightline", "run", str(cfg)], cwd=repo, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()

    def ids() -> list[str]:
        return [r["model"] for r in predictions(tmp_path / "out", "cam")]

    try:
        wait_until(lambda: len(ids()) >= 3, 60, "the first model's results")
        write_config(tmp_path / "missing.pt")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any("the old model keeps serving" in line for line in err), 30, "the refusal in the log")
        seen = len(ids())
        wait_until(lambda: len(ids()) >= seen + 3, 30, "results after the refused reload")
        assert proc.poll() is None and set(ids()) == {model_id(a)}
        write_config(tmp_path / "b.pt")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: ids().count(model_id(b)) >= 3, 60, "results from the reloaded model")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    assert proc.returncode == 0, "".join(err)
    text = "".join(err)
    assert "no such model file" in text and f"model swap: model {model_id(a)} -> {model_id(b)}" in text
    assert "Traceback" not in text
    lines = predictions(tmp_path / "out", "cam")
    assert runs([r["model"] for r in lines]) == [model_id(a), model_id(b)]
    seqs = [r["seq"] for r in lines]
    assert seqs == sorted(set(seqs))  # in order, none twice (a live stream may drop a stale frame)
    assert all(len(r["top"]) == 2 for r in lines if r["model"] == model_id(b))


def test_a_swap_says_which_event_rules_the_new_model_can_no_longer_fire(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sightline.stream.event_config import EventRule
    from sightline.stream.events.store import RuleSet

    a = tiny_bundle(4, seed=0)
    a.save(tmp_path / "a.pt")
    other = tiny_bundle(4, seed=1)
    other.class_names = ["class_a", "cat", "dog", "class_bb"]  # class_b and class_c are gone
    other.save(tmp_path / "other.pt")
    pipeline = start_pipeline(tmp_path, a)
    pipeline.events = SimpleNamespace(rules=RuleSet([  # the event hub's rules, as build_pipeline attaches them
        EventRule(name="gone", labels=["class_b"]), EventRule(name="kept", labels=["class_a", "class_c"]),
        EventRule(name="any", labels=["*"])]))
    try:
        outcome = swap_model(pipeline, ModelSpec(str(tmp_path / "other.pt")))
    finally:
        pipeline.shutdown(5.0)
    assert outcome.swapped and outcome.classes_changed
    assert outcome.to_dict()["rules_unmatched"] == [
        "rule 'gone': 'class_b' (closest: 'class_bb') not among the model's classes (class_a, cat, dog, class_bb)",
        "rule 'kept': 'class_c' (closest: 'class_a') not among the model's classes (class_a, cat, dog, class_bb)"]


def test_a_load_that_blocks_gives_up_at_its_deadline_and_frees_the_swap(tmp_path: Path) -> None:
    """A FIFO is refused before it is opened; a load that blocks anyway (a stalled network mount) fails at
    model.load_timeout_s, or at once on shutdown, and the next swap goes ahead: nothing waits on it."""
    import os
    import threading

    from sightline.stream.pipeline.model_swap import SwapLoadError

    a = tiny_bundle(4, seed=0)
    a.save(tmp_path / "a.pt")
    tiny_bundle(4, seed=2).save(tmp_path / "b.pt")
    os.mkfifo(tmp_path / "fifo.pt")
    pipeline = start_pipeline(tmp_path, a, model={"load_timeout_s": 1})
    stalled = threading.Event()

    def stalled_mount(spec: ModelSpec, device: torch.device) -> Classifier:
        stalled.wait(30)
        raise OSError("the mount came back too late")

    try:
        started = time.monotonic()
        with pytest.raises(SwapLoadError, match="not a regular file"):
            swap_model(pipeline, ModelSpec(str(tmp_path / "fifo.pt")))
        with pytest.raises(SwapLoadError, match=r"not loaded within model.load_timeout_s \(1 s\)"):
            swap_model(pipeline, ModelSpec(str(tmp_path / "b.pt")), loader=stalled_mount)
        assert time.monotonic() - started < 10
        # a real load gets room (a loaded 2-core machine once took over 1 s for it)
        roomy = pipeline.config.model.model_copy(update={"load_timeout_s": 30})
        pipeline.config = pipeline.config.model_copy(update={"model": roomy})
        assert swap_model(pipeline, ModelSpec(str(tmp_path / "b.pt"))).swapped  # the lock was released
        pipeline.models.closing.set()  # shutdown: a stuck load is given up at once, not at its deadline
        started = time.monotonic()
        with pytest.raises(SwapLoadError, match="shutting down"):
            swap_model(pipeline, ModelSpec(str(tmp_path / "a.pt")), loader=stalled_mount)
        assert time.monotonic() - started < 5.0  # not at its 30 s deadline (0.9 s once on a loaded 2-core box)
    finally:
        stalled.set()
        pipeline.shutdown(5.0)
