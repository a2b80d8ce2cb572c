"""Video and audio files made from code, so the demo and the tests need no binary fixtures.

The demo clip is built from scikit-image's bundled photos (real pictures, no download) with a slow
pan and zoom, so consecutive frames differ the way a camera's do and the classifier sees real
content. Test clips are small and fast; each frame carries its index as a row of black/white
blocks (``read_frame_counter``) so a test can tell which frames arrived, in what order, after
decoding, scaling and batching. ``truncate_file``/``corrupt_file`` damage a copy of a file for the
error-path tests.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from PIL import Image

DEMO_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")

# Frame counter: COUNTER_BITS blocks across the full width, in the top 1/COUNTER_BAND of the frame.
COUNTER_BITS = 10
COUNTER_BAND = 8
COUNTER_MAX = 2**COUNTER_BITS - 1

# Ken Burns: each photo is zoomed in by this factor over its share of the clip.
ZOOM = 1.25


class Segment(NamedTuple):
    """A stretch of the demo clip that shows one photo (ground truth for replay evaluation)."""

    start_s: float
    end_s: float
    label: str


def photo(name: str) -> np.ndarray:
    """One of scikit-image's sample photos (``skimage.data.<name>``) as H×W×3 uint8 RGB."""
    from skimage import data

    loader = getattr(data, name, None)
    if loader is None or not callable(loader):
        raise ValueError(f"skimage.data has no photo named {name!r}")
    image = np.asarray(loader())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"skimage.data.{name} is not an image (shape {image.shape})")
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def demo_segments(seconds: float = 8.0, photos: Sequence[str] = DEMO_PHOTOS) -> list[Segment]:
    """Which photo the demo clip shows when: equal shares of ``seconds``, in order."""
    if seconds <= 0 or not photos:
        raise ValueError("a demo clip needs a positive duration and at least one photo")
    share = seconds / len(photos)
    return [Segment(round(i * share, 6), round((i + 1) * share, 6), name) for i, name in enumerate(photos)]


# What each demo photo shows, as an ImageNet-1k class name (human ground truth, not a model's output).
# The astronaut portrait has no ImageNet class: its segment is left unlabelled and not scored.
IMAGENET_TRUTH = {"chelsea": "tabby", "coffee": "espresso", "rocket": "missile"}


def imagenet_segments(segments: Sequence[Segment]) -> list[Segment]:
    """The demo segments relabelled with ImageNet classes, for `sightline eval --model imagenet`."""
    return [Segment(s.start_s, s.end_s, IMAGENET_TRUTH[s.label]) for s in segments if s.label in IMAGENET_TRUTH]


def write_labels_csv(path: str | Path, video: str, segments: Sequence[Segment]) -> Path:
    """Sidecar ground truth: one ``video,start_s,end_s,label`` row per segment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "start_s", "end_s", "label"])
        for seg in segments:
            writer.writerow([video, f"{seg.start_s:g}", f"{seg.end_s:g}", seg.label])
    return path


def read_labels_csv(path: str | Path) -> dict[str, list[Segment]]:
    """The segments of a labels file, per video name, in file order."""
    out: dict[str, list[Segment]] = {}
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            seg = Segment(float(row["start_s"]), float(row["end_s"]), row["label"])
            out.setdefault(row["video"], []).append(seg)
    return out


def make_demo_clip(path: str | Path, *, seconds: float = 8.0, fps: int = 25, size: tuple[int, int] = (640, 360),
                   photos: Sequence[str] = DEMO_PHOTOS, codec: str = "libx264") -> Path:
    """Write a clip showing each photo for an equal share of ``seconds``, slowly panned and zoomed.

    Frame ``i`` belongs to the segment containing ``i / fps`` (see ``demo_segments``). The same
    arguments give the same frames every time.
    """
    width, height = _check_size(size)
    segments = demo_segments(seconds, photos)
    total = round(seconds * fps)
    images = {name: photo(name) for name in photos}

    def frames() -> Iterator[np.ndarray]:
        for i in range(total):
            t = i / fps
            k = min(int(t * len(photos) / seconds), len(photos) - 1)
            seg = segments[k]
            progress = (t - seg.start_s) / (seg.end_s - seg.start_s)
            yield _ken_burns(images[seg.label], (width, height), min(max(progress, 0.0), 1.0), k)

    return _encode(Path(path), frames(), fps=fps, size=(width, height), codec=codec, gop=fps)


def make_test_clip(path: str | Path, *, frames: int, fps: int | Fraction = 25, size: tuple[int, int] = (160, 120),
                   pattern: str = "gradient", codec: str = "libx264", counter: bool = True,
                   gop: int | None = None) -> Path:
    """A small clip for tests; with ``counter`` each frame shows its index (``read_frame_counter``).

    ``pattern`` is ``"gradient"`` (moving colour ramps, cheapest) or ``"photos"`` (scikit-image's
    photos, panned, for tests that want real content). ``gop`` defaults to one keyframe per second
    so a reader joining a live stream starts decoding quickly.
    """
    if frames < 1:
        raise ValueError("a clip needs at least one frame")
    if counter and frames - 1 > COUNTER_MAX:
        raise ValueError(f"the frame counter holds indices up to {COUNTER_MAX}; asked for {frames} frames")
    if pattern not in ("gradient", "photos"):
        raise ValueError(f"unknown pattern {pattern!r}: use 'gradient' or 'photos'")
    width, height = _check_size(size)
    images = [photo(name) for name in DEMO_PHOTOS] if pattern == "photos" else []
    per_photo = max(1, math.ceil(frames / len(images))) if images else 0

    def render() -> Iterator[np.ndarray]:
        for i in range(frames):
            if images:
                k = min(i // per_photo, len(images) - 1)
                progress = (i - k * per_photo) / max(per_photo - 1, 1)
                image = _ken_burns(images[k], (width, height), progress, k)
            else:
                image = _gradient((width, height), i)
            if counter:
                draw_frame_counter(image, i)
            yield image

    rate = Fraction(fps)
    return _encode(Path(path), render(), fps=rate, size=(width, height), codec=codec,
                   gop=gop if gop is not None else max(1, round(rate)))


def draw_frame_counter(image: np.ndarray, index: int) -> np.ndarray:
    """Paint ``index`` in binary (most significant bit left) across the top band of ``image``, in place."""
    if not 0 <= index <= COUNTER_MAX:
        raise ValueError(f"frame counter out of range: {index}")
    height, width = image.shape[:2]
    band = max(1, height // COUNTER_BAND)
    for bit in range(COUNTER_BITS):
        x0, x1 = bit * width // COUNTER_BITS, (bit + 1) * width // COUNTER_BITS
        on = (index >> (COUNTER_BITS - 1 - bit)) & 1
        image[:band, x0:x1] = 255 if on else 0
    return image


def read_frame_counter(image: np.ndarray) -> int:
    """The index ``draw_frame_counter`` painted, read back from a decoded (possibly rescaled) RGB frame.

    Each block is judged by the mean of its central region, so lossy coding and any resize that
    keeps a block a few pixels wide do not change the answer.
    """
    height, width = image.shape[:2]
    band = max(1, height // COUNTER_BAND)
    y0, y1 = band // 4, max(band // 4 + 1, band - band // 4)
    value = 0
    for bit in range(COUNTER_BITS):
        x0, x1 = bit * width // COUNTER_BITS, (bit + 1) * width // COUNTER_BITS
        margin = (x1 - x0) // 4
        block = image[y0:y1, x0 + margin:max(x0 + margin + 1, x1 - margin)]
        value = (value << 1) | int(block.mean() >= 128)
    return value


def make_audio_clip(path: str | Path, *, seconds: float = 1.0, sample_rate: int = 44100,
                    frequency: float = 440.0, codec: str = "aac") -> Path:
    """An audio-only file (a sine tone; ``.m4a`` with AAC, or ``.mp3`` with ``codec="mp3"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        ctx = stream.codec_context
        sample_fmt = ctx.codec.audio_formats[0].name if ctx.codec.audio_formats else "fltp"
        chunk = ctx.frame_size or 1152
        total = round(seconds * sample_rate)
        for start in range(0, total, chunk):
            n = min(chunk, total - start)
            t = (np.arange(start, start + n) / sample_rate).astype(np.float32)
            tone = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            if sample_fmt != "fltp":
                frame = _resampler(sample_fmt, sample_rate).resample(frame)[0]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def truncate_file(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a recording cut off mid-write)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def corrupt_file(src: str | Path, dst: str | Path, *, at: float = 0.5, length: int = 4096, seed: int = 0) -> Path:
    """Copy ``src`` to ``dst`` with ``length`` bytes starting at ``at`` (a fraction of the size) overwritten.

    The replacement bytes are pseudo-random from ``seed``, so a failing test reproduces.
    """
    if not 0.0 <= at < 1.0:
        raise ValueError(f"at must be within [0, 1), got {at}")
    dst = Path(dst)
    shutil.copyfile(src, dst)
    size = dst.stat().st_size
    start = int(size * at)
    n = max(0, min(length, size - start))
    noise = np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()
    with dst.open("r+b") as fh:
        fh.seek(start)
        fh.write(noise)
    return dst


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"video size must be even and at least 16x16 (yuv420p), got {width}x{height}")
    return width, height


def _ken_burns(image: np.ndarray, size: tuple[int, int], progress: float, variant: int) -> np.ndarray:
    """The crop of ``image`` at ``progress`` (0..1) of a slow zoom-in with a diagonal pan, resized to ``size``.

    The crop keeps the output's aspect ratio; ``variant`` alternates the pan direction per photo.
    Sub-pixel crop boxes keep the motion smooth between frames.
    """
    width, height = size
    ih, iw = image.shape[:2]
    aspect = width / height
    full_w, full_h = (iw, iw / aspect) if iw / ih < aspect else (ih * aspect, ih)
    zoom = 1.0 + (ZOOM - 1.0) * progress
    crop_w, crop_h = full_w / zoom, full_h / zoom
    slack_x, slack_y = iw - crop_w, ih - crop_h
    # Pan sideways (direction alternating per photo) and slightly upwards, where the photos' subjects are.
    fx = 0.25 + 0.5 * progress if variant % 2 == 0 else 0.75 - 0.5 * progress
    fy = 0.25 - 0.2 * progress
    x0, y0 = slack_x * fx, slack_y * fy
    box = (x0, y0, x0 + crop_w, y0 + crop_h)
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.uint8).copy()


def _gradient(size: tuple[int, int], index: int) -> np.ndarray:
    """Colour ramps that shift with ``index`` so every frame differs."""
    width, height = size
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    r = (x * 255 // max(width - 1, 1) + 3 * index) % 256
    g = (y * 255 // max(height - 1, 1) + 5 * index) % 256
    b = ((x + y) // 2 + 7 * index) % 256
    r, g, b = np.broadcast_arrays(r, g, b)
    return np.stack([r, g, b], axis=2).astype(np.uint8)


def _encode(path: Path, frames: Iterator[np.ndarray], *, fps: int | Fraction, size: tuple[int, int],
            codec: str, gop: int) -> Path:
    """Encode RGB frames to ``path`` (container from the suffix) as yuv420p with a fixed keyframe interval."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps)
    # The muxer replaces stream.time_base once the header is written; frames keep the codec's.
    time_base = 1 / rate
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.gop_size = gop
        if stream.codec_context.codec.name == "libx264":
            # Fixed GOP and no scene-cut keyframes: readers joining a live restream find keyframes on time.
            stream.options = {"preset": "veryfast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _resampler(sample_fmt: str, sample_rate: int) -> av.AudioResampler:
    return av.AudioResampler(format=sample_fmt, layout="mono", rate=sample_rate)
