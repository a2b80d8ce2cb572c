"""`sightline demo`: the service on a clip of real photos, from any directory, online or offline.

Everything the demo writes goes under one folder (``--out``, default ``./sightline-demo``): the clip and
its ground truth in ``media/``, the service's outputs in ``runs/``. The model is ResNet18 with the
ImageNet weights when torch's cache has them (or they can be downloaded); otherwise a small classifier
is fine-tuned once on scikit-image's photos and kept in Sightline's cache for the next run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from sightline.stream.config import RunConfig
    from sightline.synthetic_media import Segment

log = logging.getLogger("sightline.demo")

DEFAULT_OUT = Path("sightline-demo")
CLIP_NAME = "demo.mp4"
LABELS_NAME = "demo_labels.csv"
# The demo classifier's classes: what each of scikit-image's photos in the clip shows.
DEMO_CLASSES = {"chelsea": "cat", "coffee": "coffee", "rocket": "rocket", "astronaut": "astronaut"}
DEMO_MODEL_VERSION = 1  # bump when the recipe below changes, so a cached model is rebuilt
TRAIN_CROPS, VAL_CROPS = 24, 8  # per photo
TRAIN_SIZE = (192, 108)  # crops are saved at the clip's 16:9 aspect
RESIZE, CROP = 54, 48  # a small serving size: four distinct photos need no more, and it trains in seconds


@dataclass(frozen=True)
class DemoModel:
    source: str  # 'imagenet' or a bundle path
    why: str  # one line for the log


def cache_dir() -> Path:
    """Sightline's own cache: $SIGHTLINE_CACHE, else $XDG_CACHE_HOME/sightline, else ~/.cache/sightline."""
    if os.environ.get("SIGHTLINE_CACHE"):
        return Path(os.environ["SIGHTLINE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sightline"


def demo_bundle_path() -> Path:
    return cache_dir() / f"demo-classifier-v{DEMO_MODEL_VERSION}.pt"


def choose_model(offline: bool) -> DemoModel:
    """ImageNet ResNet18 when its weights can be had, else the cached (or a newly trained) demo classifier."""
    from sightline.model.errors import ModelLoadError
    from sightline.model.weights import imagenet_cache_path, load_model_source

    if imagenet_cache_path().exists():
        return DemoModel("imagenet", f"ImageNet ResNet18 from {imagenet_cache_path()}")
    if not offline:
        try:
            load_model_source("imagenet")  # downloads into torch's cache
            return DemoModel("imagenet", "ImageNet ResNet18 (downloaded into torch's cache)")
        except ModelLoadError as exc:  # the loader's one-line reason, cache path included
            print(f"{exc}; using a small demo classifier trained on scikit-image's photos instead", flush=True)
    else:
        print("ImageNet weights are not cached and --offline forbids the download: using a small demo "
              "classifier trained on scikit-image's photos instead", flush=True)
    bundle = demo_bundle_path()
    if bundle.exists():
        return DemoModel(str(bundle), f"demo classifier from {bundle}")
    train_demo_classifier(bundle)
    return DemoModel(str(bundle), f"demo classifier, newly trained, cached at {bundle}")


def train_demo_classifier(path: Path) -> Path:
    """Fine-tune ResNet18 (random init, 4 classes) on crops of the clip's photos with Sightline's trainer."""

    from sightline.training.config import TrainConfig
    from sightline.training.trainer import Trainer

    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="demo-train-", dir=path.parent) as tmp:
        root = write_demo_dataset(Path(tmp) / "data")
        cfg = TrainConfig(data=root, out=Path(tmp) / "run", init="scratch", mode="full", epochs=6,
                          batch_size=8, optimizer="adamw", lr=0.003, warmup_epochs=0.5, resize=RESIZE, crop=CROP,
                          num_workers=0, progress=False, device="cpu", seed=0,
                          augment={"scale": (0.3, 1.0)})  # type: ignore[arg-type]
        print(f"training the demo classifier (ResNet18, {len(DEMO_CLASSES)} classes, {cfg.epochs} epochs on "
              f"the CPU; once, then cached)...", flush=True)
        result = Trainer(cfg).run()
        os.replace(result.out / "bundle.pt", path)
    print(f"demo classifier: val top-1 {result.best_acc1:.2f} after {time.perf_counter() - started:.0f} s, "
          f"cached at {path}", flush=True)
    return path


def write_demo_dataset(root: Path, seed: int = 0) -> Path:
    """train/ and val/ ImageFolders of random 16:9 crops (zoom, pan, mirror) of each photo."""
    import numpy as np
    from PIL import Image
    from sightline.synthetic_media import photo

    rng = np.random.default_rng(seed)
    for name, label in DEMO_CLASSES.items():
        image = photo(name)
        for split, count in (("train", TRAIN_CROPS), ("val", VAL_CROPS)):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                crop = random_crop(image, rng)
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                Image.fromarray(np.ascontiguousarray(crop)).resize(TRAIN_SIZE).save(folder / f"{i:03d}.png")
    return root


def random_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 16:9 window covering 55-100% of the photo's largest 16:9 window, anywhere inside it."""
    h, w = image.shape[:2]
    full_w, full_h = (w, w * 9 / 16) if w / h < 16 / 9 else (h * 16 / 9, h)
    scale = rng.uniform(0.55, 1.0) ** 0.5
    cw, ch = int(full_w * scale), int(full_h * scale)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image[y0:y0 + ch, x0:x0 + cw]


def demo_segments_for(model: DemoModel) -> list[Segment]:
    """Ground truth in the classes of the model being served (ImageNet names or the demo classifier's)."""
    from sightline.synthetic_media import Segment, demo_segments, imagenet_segments

    segments = demo_segments()
    if model.source == "imagenet":
        return imagenet_segments(segments)
    return [Segment(s.start_s, s.end_s, DEMO_CLASSES[s.label]) for s in segments]


def ensure_media(out: Path, model: DemoModel) -> Path:
    """The demo clip (made once) and its labels (rewritten for the model in use) under ``out/media``."""
    from sightline.synthetic_media import make_demo_clip, write_labels_csv

    media = out / "media"
    clip = media / CLIP_NAME
    if not clip.exists():
        print(f"writing {clip} from scikit-image's sample photos", flush=True)
        media.mkdir(parents=True, exist_ok=True)
        partial = media / f".{CLIP_NAME}.partial.mp4"
        make_demo_clip(partial)
        os.replace(partial, clip)
    write_labels_csv(media / LABELS_NAME, clip.name, demo_segments_for(model))
    return clip


def check_port_free(path: Path | None, port: int | None) -> None:
    """Fail on a busy port at once, before a model is chosen or trained (seconds): the demo's `run` binds only
    once its media and model are ready. ``port``: --port, else the config's server.port."""
    from sightline.model.yamlconfig import load_yaml
    from sightline.stream.config import RunConfig
    from sightline.stream.service.server import HttpServer

    with resources.as_file(resources.files("sightline").joinpath("demo.yaml")) as packaged:
        server = load_yaml(path if path is not None else packaged, RunConfig).server
    if server.enabled:
        HttpServer(server.host, server.port if port is None else port).bind().close()


def load_demo_config(out: Path, path: Path | None = None) -> RunConfig:
    """The packaged demo config (or ``path``), its relative paths resolved against ``out``, files checked."""
    from sightline.model.yamlconfig import load_yaml
    from sightline.stream.config import RunConfig, check_sources

    with resources.as_file(resources.files("sightline").joinpath("demo.yaml")) as packaged:
        source = path if path is not None else packaged
        config = load_yaml(source, RunConfig)

    def under_out(p: Path) -> Path:
        return p if p.is_absolute() else out / p

    streams = [s.model_copy(update={"url": str(under_out(Path(s.source_url)))}) if s.is_file else s
               for s in config.streams]
    config = config.model_copy(update={"output_dir": under_out(config.output_dir),
                                       "media_root": under_out(config.media_root), "streams": streams})
    check_sources(config.streams, config.media_root, origin=str(source))
    return config
