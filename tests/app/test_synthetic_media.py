"""stream.media: generated clips decode back with the promised frames, sizes, rates and content."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from sightline import synthetic_media as media


def decode_rgb(path: Path, **reformat: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24", **reformat) for f in container.decode(video=0)]


def test_test_clip_has_requested_frames_size_and_rate(tmp_path: Path) -> None:
    path = media.make_test_clip(tmp_path / "clip.mp4", frames=30, fps=10, size=(160, 120))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(10)
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)
        assert stream.codec_context.pix_fmt == "yuv420p"
        frames = list(container.decode(video=0))
    assert len(frames) == 30
    assert [round(float(f.time), 3) for f in frames[:3]] == [0.0, 0.1, 0.2]


def test_frame_counter_reads_back_every_index_after_decode(tmp_path: Path) -> None:
    path = media.make_test_clip(tmp_path / "clip.mp4", frames=40, fps=25)
    assert [media.read_frame_counter(img) for img in decode_rgb(path)] == list(range(40))


def test_frame_counter_survives_downscaling(tmp_path: Path) -> None:
    path = media.make_test_clip(tmp_path / "clip.mp4", frames=40, fps=25, pattern="photos")
    small = decode_rgb(path, width=64, height=48)
    assert [media.read_frame_counter(img) for img in small] == list(range(40))


def test_frame_counter_rejects_indices_it_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frame counter"):
        media.make_test_clip(tmp_path / "clip.mp4", frames=media.COUNTER_MAX + 2, fps=25)


def test_photo_clip_frames_all_differ(tmp_path: Path) -> None:
    path = media.make_test_clip(tmp_path / "clip.mkv", frames=20, fps=25, pattern="photos", counter=False)
    frames = decode_rgb(path)
    diffs = [np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, frames[1:], strict=False)]
    assert len(frames) == 20
    assert min(diffs) > 0.5


def test_odd_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        media.make_test_clip(tmp_path / "clip.mp4", frames=2, fps=25, size=(161, 120))


def test_demo_segments_split_the_clip_equally_in_order() -> None:
    segments = media.demo_segments(8.0, ("chelsea", "coffee", "rocket", "astronaut"))
    assert segments == [
        media.Segment(0.0, 2.0, "chelsea"),
        media.Segment(2.0, 4.0, "coffee"),
        media.Segment(4.0, 6.0, "rocket"),
        media.Segment(6.0, 8.0, "astronaut"),
    ]


def test_labels_csv_round_trips(tmp_path: Path) -> None:
    segments = media.demo_segments(3.0, ("coffee", "rocket", "chelsea"))
    path = media.write_labels_csv(tmp_path / "demo_labels.csv", "demo.mp4", segments)
    assert path.read_text().splitlines()[0] == "video,start_s,end_s,label"
    assert media.read_labels_csv(path) == {"demo.mp4": segments}


def test_demo_clip_has_requested_frames_size_and_rate(tmp_path: Path) -> None:
    path = media.make_demo_clip(tmp_path / "media" / "demo.mp4", seconds=2.0, fps=12, size=(320, 180))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(12)
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 180)
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(video=0)) == 24


def colour_histogram(image: np.ndarray) -> np.ndarray:
    """4x4x4-bin RGB histogram: unchanged by the clip's pan and zoom, distinct between the photos."""
    q = (image // 64).reshape(-1, 3).astype(np.int64)
    counts = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64)
    return counts / counts.sum()


def test_demo_clip_shows_each_photo_for_its_whole_segment(tmp_path: Path) -> None:
    photos = ("chelsea", "coffee", "rocket", "astronaut")
    path = media.make_demo_clip(tmp_path / "demo.mp4", seconds=2.0, fps=10, size=(320, 180), photos=photos)
    frames = decode_rgb(path)
    refs = {name: colour_histogram(media.photo(name)) for name in photos}
    for seg in media.demo_segments(2.0, photos):
        for index in (round(seg.start_s * 10), round(seg.end_s * 10) - 1):
            hist = colour_histogram(frames[index])
            nearest = max(photos, key=lambda name: float(np.minimum(hist, refs[name]).sum()))
            assert nearest == seg.label, f"frame {index}"


def test_demo_clip_consecutive_frames_differ(tmp_path: Path) -> None:
    path = media.make_demo_clip(tmp_path / "demo.mp4", seconds=1.0, fps=10, size=(160, 90), photos=("rocket",))
    frames = decode_rgb(path)
    assert all(not np.array_equal(a, b) for a, b in zip(frames, frames[1:], strict=False))


def test_demo_clip_is_deterministic(tmp_path: Path) -> None:
    kwargs = {"seconds": 1.0, "fps": 10, "size": (160, 90), "photos": ("coffee", "chelsea")}
    a = media.make_demo_clip(tmp_path / "a.mp4", **kwargs)
    b = media.make_demo_clip(tmp_path / "b.mp4", **kwargs)
    assert a.read_bytes() == b.read_bytes()


def test_truncated_file_keeps_the_leading_fraction(tmp_path: Path) -> None:
    src = media.make_test_clip(tmp_path / "clip.mkv", frames=20, fps=25)
    dst = media.truncate_file(src, tmp_path / "cut.mkv", 0.4)
    assert dst.read_bytes() == src.read_bytes()[: int(src.stat().st_size * 0.4)]


def test_truncated_matroska_decodes_fewer_frames_then_ends(tmp_path: Path) -> None:
    src = media.make_test_clip(tmp_path / "clip.mkv", frames=50, fps=25)
    dst = media.truncate_file(src, tmp_path / "cut.mkv", 0.5)
    assert 0 < len(decode_rgb(dst)) < 50


def test_truncated_mp4_loses_its_index_and_does_not_open(tmp_path: Path) -> None:
    src = media.make_test_clip(tmp_path / "clip.mp4", frames=20, fps=25)
    dst = media.truncate_file(src, tmp_path / "cut.mp4", 0.5)
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(dst))


def test_corrupt_file_overwrites_only_the_middle_window(tmp_path: Path) -> None:
    src = media.make_test_clip(tmp_path / "clip.mkv", frames=50, fps=25)
    dst = media.corrupt_file(src, tmp_path / "bad.mkv", at=0.5, length=512)
    before, after = src.read_bytes(), dst.read_bytes()
    start = int(len(before) * 0.5)
    assert len(after) == len(before)
    assert after[:start] == before[:start] and after[start + 512:] == before[start + 512:]
    assert after[start:start + 512] != before[start:start + 512]


def test_corrupt_file_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    src = media.make_test_clip(tmp_path / "clip.mkv", frames=10, fps=25)
    a = media.corrupt_file(src, tmp_path / "a.mkv", seed=3)
    b = media.corrupt_file(src, tmp_path / "b.mkv", seed=3)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(("name", "codec", "decoder"), [("tone.m4a", "aac", "aac"), ("tone.mp3", "mp3", "mp3float")])
def test_audio_clip_has_audio_and_no_video(tmp_path: Path, name: str, codec: str, decoder: str) -> None:
    path = media.make_audio_clip(tmp_path / name, seconds=1.0, codec=codec)
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 0
        assert container.streams.audio[0].codec_context.name == decoder
        assert container.duration / av.time_base == pytest.approx(1.0, abs=0.1)
