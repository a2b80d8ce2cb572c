"""Reading image files: every common mode becomes H×W×3 uint8 RGB; unreadable files are one clear error."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image
from sightline.model.errors import ImageLoadError
from sightline.model.images import load_image, to_rgb_array


def test_rgb_png_is_read_exactly(write_photo, photos):
    image = load_image(write_photo("astronaut"))
    assert image.dtype == np.uint8 and image.shape == (512, 512, 3)
    assert np.array_equal(image, photos["astronaut"])


def test_grayscale_becomes_three_equal_channels(write_photo, photos):
    image = load_image(write_photo("coffee", "gray.png", mode="L"))
    gray = np.asarray(Image.fromarray(photos["coffee"]).convert("L"))
    assert image.shape == (*gray.shape, 3)
    assert all(np.array_equal(image[:, :, c], gray) for c in range(3))


def test_rgba_drops_alpha_and_keeps_colour(tmp_path, photos):
    rgba = np.dstack([photos["rocket"], np.full(photos["rocket"].shape[:2], 40, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert np.array_equal(load_image(tmp_path / "alpha.png"), photos["rocket"])


def test_palette_image_is_expanded(write_photo, photos):
    path = write_photo("chelsea", "palette.png", mode="P")
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(load_image(path), expected)


def test_palette_with_transparency_converts_without_warnings(tmp_path, photos):
    palette = Image.fromarray(photos["chelsea"]).convert("P")
    palette.save(tmp_path / "transparent.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(tmp_path / "transparent.png")
    assert image.shape == (300, 451, 3)


def test_16_bit_grayscale_keeps_the_high_byte(tmp_path):
    values = np.array([[0x0000, 0x00FF], [0xABCD, 0xFFFF]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # really read back as a 16-bit image
    image = load_image(tmp_path / "deep.png")
    assert image[:, :, 0].tolist() == [[0x00, 0x00], [0xAB, 0xFF]]


def test_cmyk_is_converted_to_rgb(tmp_path):
    cyan = Image.new("CMYK", (8, 6), (255, 0, 0, 0))
    cyan.save(tmp_path / "cyan.tiff")
    image = load_image(tmp_path / "cyan.tiff")
    assert image.shape == (6, 8, 3)
    assert image[0, 0].tolist() == [0, 255, 255]


def test_large_image_is_converted_in_strips_exactly(photos, monkeypatch):
    from sightline.model import images

    monkeypatch.setattr(images, "STRIP_PIXELS", 451 * 7)  # 7 rows per strip, a ragged last strip
    palette = Image.fromarray(photos["chelsea"]).convert("P")
    assert np.array_equal(to_rgb_array(palette), np.asarray(palette.convert("RGB")))


@pytest.mark.parametrize("array, expected", [
    (np.full((2, 2), 7, np.uint8), [7, 7, 7]),
    (np.full((2, 2, 1), 9, np.uint8), [9, 9, 9]),
    (np.full((2, 2, 4), 5, np.uint8), [5, 5, 5]),
    (np.full((2, 2, 3), 0.5, np.float32), [128, 128, 128]),
    (np.full((2, 2, 3), 0xABCD, np.uint16), [0xAB, 0xAB, 0xAB]),
])
def test_arrays_of_other_layouts_become_rgb_uint8(array, expected):
    image = to_rgb_array(array)
    assert image.dtype == np.uint8 and image.shape == (2, 2, 3)
    assert image[0, 0].tolist() == expected


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")


def test_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="is a directory, not an image"):
        load_image(tmp_path)


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ImageLoadError, match=r"notes\.png: not an image"):
        load_image(tmp_path / "notes.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(write_photo, suffix):
    path = write_photo("coffee", f"cut{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=rf"cut\{suffix}: cannot decode image \(.*truncated"):
        load_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A 20000×20000 PNG header (400 Mpx) with no pixel data: refused from the header alone."""
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    with pytest.raises(ImageLoadError, match=r"bomb\.png: image too large"):
        load_image(tmp_path / "bomb.png")
