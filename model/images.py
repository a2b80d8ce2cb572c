"""Reading images from disk into H×W×3 uint8 RGB arrays, whatever their mode or bit depth."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sightline.model.errors import ImageLoadError

# Rows converted at a time by to_rgb_array (about this many pixels per strip).
STRIP_PIXELS = 1 << 20


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` fully (so truncation is caught here, not mid-batch) into RGB uint8.

    A 10000×10000 photo is legitimate input, so Pillow's decompression-bomb *warning* (above
    ~89 Mpx) is silenced; its *error* (above twice that, ~179 Mpx by default) still refuses a file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_rgb_array(img)
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not an image (unrecognised format)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{path}: image too large ({exc})") from exc
    except ImageLoadError as exc:
        raise ImageLoadError(f"{path}: {exc}") from exc
    except (OSError, ValueError) as exc:  # truncated or corrupt data; a mode PIL cannot convert
        raise ImageLoadError(f"{path}: cannot decode image ({exc})") from exc


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Grayscale, alpha, palette, 16-bit, float and CMYK inputs become 8-bit RGB; others are errors.

    PIL images are converted in strips of rows, so a huge photo costs its decoded PIL image plus the
    uint8 result and no full-size temporary (``np.asarray`` on the whole image would add two).
    """
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if image.mode.startswith("I") or image.mode == "F":
        return _array_to_rgb(np.asarray(image))
    width, height = image.size
    rows = max(1, STRIP_PIXELS // max(1, width))
    if rows >= height:
        return np.array(_rgb(image))
    out = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = np.asarray(_rgb(image.crop((0, top, width, bottom))))
    return out


def _rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("LA", "PA", "RGBA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return image.convert("RGB")


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageLoadError(f"expected an H×W, H×W×1, H×W×3 or H×W×4 image, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"empty image of shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(arr) * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        top = int(arr.max(initial=0))
        if top <= 255:
            return np.clip(arr, 0, 255).astype(np.uint8)
        # 16-bit data stored as 32-bit ints (PIL mode "I")
        return (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    raise ImageLoadError(f"unsupported pixel type {arr.dtype}")
