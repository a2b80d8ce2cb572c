"""What a source does with bad data, through VideoSource's own decode loop fed by a fake demuxer.

The demuxer is the seam: its packets either decode to pictures, decode to nothing (a camera sending packets
but no picture), or raise PyAV's real ``InvalidDataError`` (a corrupt packet). The README promises: corrupt
packets are skipped and counted, 50 in a row fail the stream, and a network stream that delivers packets
but no picture for ``stall_timeout_s`` is reconnected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import av
import pytest
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import StreamConfig
from sightline.stream.errors import SourceReadError
from sightline.stream.frames import Frame
from sightline.stream.sources.video_source import MAX_BAD_PACKETS_IN_A_ROW, VideoSource
from sightline.stream.stats import StreamStats

pytestmark = pytest.mark.timeout(30)

INVALID = 1094995529  # AVERROR_INVALIDDATA


class Packet:
    is_corrupt = False  # what the demuxer flags; these packets are refused by the decoder instead
    is_keyframe = True  # every packet a picture of its own (the decode policy feeds it in any mode)
    size = 1
    pts = dts = time_base = None  # untimed

    def __init__(self, kind: str, delay: float = 0.0) -> None:
        self.kind, self.delay = kind, delay

    def decode(self) -> list[object]:
        if self.delay:
            time.sleep(self.delay)
        if self.kind == "corrupt":
            raise av.InvalidDataError(INVALID, "Invalid data found when processing input")
        return [SimpleNamespace(picture=True)] if self.kind == "picture" else []


class Demuxer:
    def __init__(self, packets: Iterator[Packet]) -> None:
        self.packets = packets
        self.streams = SimpleNamespace(video=[SimpleNamespace(thread_type=None, average_rate=25, guessed_rate=25)])
        self.closed = False

    def demux(self, stream: object) -> Iterator[Packet]:
        return self.packets

    def close(self) -> None:
        self.closed = True


def source(url: str = "clip.mp4", **config: object) -> VideoSource:
    cfg = StreamConfig(name="cam", url=url, **config)
    queue: BoundedQueue[Frame] = BoundedQueue(2, "latest")
    return VideoSource(cfg, queue, StreamStats("cam"), lambda h, w: (h, w), keep_display=False,
                       stop=threading.Event(), seed=0)


def packets(*runs: tuple[str, int]) -> Iterator[Packet]:
    for kind, count in runs:
        for _ in range(count):
            yield Packet(kind)


def test_corrupt_packets_are_skipped_and_counted() -> None:
    src = source()
    demuxer = Demuxer(packets(("picture", 3), ("corrupt", MAX_BAD_PACKETS_IN_A_ROW - 1), ("picture", 2),
                              ("corrupt", 5), ("picture", 1)))
    frames = list(src._frames(demuxer, demuxer.streams.video[0]))
    assert len(frames) == 6  # every good picture, in order
    assert src.bad_packets == MAX_BAD_PACKETS_IN_A_ROW - 1 + 5


def test_fifty_corrupt_packets_in_a_row_fail_the_stream() -> None:
    assert MAX_BAD_PACKETS_IN_A_ROW == 50  # the README's figure
    src = source()
    demuxer = Demuxer(packets(("picture", 2), ("corrupt", 50), ("picture", 10)))
    frames = []
    with pytest.raises(SourceReadError, match="50 corrupt packets in a row; giving up"):
        for frame in src._frames(demuxer, demuxer.streams.video[0]):
            frames.append(frame)
    assert len(frames) == 2 and src.bad_packets == 50


def test_network_stream_with_packets_but_no_picture_is_reconnected() -> None:
    """Packets keep arriving (so FFmpeg's read timeout never fires) but none decodes to a picture."""
    src = source("rtsp://user:pw@127.0.0.1:9/cam", stall_timeout_s=1, reconnect={"initial_s": 30, "max_s": 30})
    opened: list[Demuxer] = []

    def open_() -> Demuxer:
        def endless() -> Iterator[Packet]:
            while True:
                yield Packet("empty", delay=0.02)

        opened.append(Demuxer(endless()))
        return opened[-1]

    src._open = open_  # type: ignore[method-assign]
    started = time.monotonic()
    src.start()
    try:
        deadline = started + 15
        while src.stats.reconnects < 1:
            assert time.monotonic() < deadline, (src.stats.state, src.stats.error)
            time.sleep(0.02)
        assert time.monotonic() - started >= 1.0  # not before stall_timeout_s
        assert src.stats.state == "reconnecting"
        assert src.stats.error == "rtsp://***@127.0.0.1:9/cam: no frame for 1s"
        assert len(opened) == 1 and opened[0].closed
    finally:
        src.stop.set()
        assert src.join(5)
    assert src.stats.state == "stopped" and src.stats.frames_decoded == 0
