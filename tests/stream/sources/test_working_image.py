"""The sources' working-size picture: 8-bit YUV video is scaled in two steps (planes, then the small RGB
conversion), which must give the picture FFmpeg's one-step scaler gives, colour matrix and range included."""

from __future__ import annotations

import av
import numpy as np
import pytest
from av.video.reformatter import Colorspace, VideoReformatter
from sightline.stream.sources.video_source import TWO_STEP_YUV, working_image
from sightline.synthetic_media import photo

SIZE = (227, 151)  # width, height: odd, like the 455×256 working size of 720p


def source_frame(fmt: str, name: str = "chelsea") -> av.VideoFrame:
    img = np.ascontiguousarray(photo(name)[:300, :450])
    return av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)


def one_step(frame: av.VideoFrame) -> np.ndarray:
    return VideoReformatter().reformat(frame, *SIZE, "rgb24", interpolation="AREA").to_ndarray()


def two_step(frame: av.VideoFrame) -> np.ndarray:
    return working_image(frame, *SIZE, VideoReformatter(), VideoReformatter())


@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p", "nv12", "yuv422p"])
@pytest.mark.parametrize("name", ["chelsea", "astronaut"])
def test_two_step_scaling_gives_the_one_step_picture_within_two_grey_levels(fmt, name) -> None:
    assert fmt in TWO_STEP_YUV
    frame = source_frame(fmt, name)
    got, want = two_step(frame), one_step(frame)
    assert got.shape == want.shape == (SIZE[1], SIZE[0], 3) and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want)
    assert diff.max() <= 2 and diff.mean() < 0.6


def test_the_frames_colour_matrix_is_kept() -> None:
    frame = source_frame("yuv420p")
    bt601 = one_step(frame).astype(np.int16)
    frame.colorspace = Colorspace.ITU709  # an HD camera's tag: the same bytes mean other colours
    want = one_step(frame).astype(np.int16)
    got = two_step(frame).astype(np.int16)
    assert np.abs(want - bt601).max() > 4  # the tag matters for this picture...
    assert np.abs(got - want).max() <= 2  # ...and the two steps follow it


def test_other_formats_take_the_one_step_path_unchanged() -> None:
    frame = source_frame("rgb24")
    assert frame.format.name not in TWO_STEP_YUV
    np.testing.assert_array_equal(two_step(frame), one_step(frame))
