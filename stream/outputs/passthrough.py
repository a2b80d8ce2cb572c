"""A passthrough recording: the camera's own packets remuxed into fragmented MP4, nothing decoded or encoded.

The source hands every video packet it reads to this writer (``PacketTap``), also the packets between keyframes
that a stream classified once a second never decodes: recording does not make a stream decode more. The bytes are
copied as they are; only the timestamps change, rebased so each file starts near 0 and rising across loops and
reconnects (``RisingClock``). Files and segments follow ``SegmentPlan``; a segment starts at a keyframe, and so
does a new file after the codec's parameters changed (a camera that came back with another resolution).

The writer runs on its own thread behind a bounded queue. A live source never waits for it: a packet it cannot
take is counted lost (``frames_lost{reason="recorder_behind"}``), and the packets after it up to the next keyframe
too (they cannot be decoded without it), so the file stays decodable. A replay (``mode: fast``) waits instead.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from sightline.stream.buffers import BoundedQueue, Consumer
from sightline.stream.outputs.segments import MP4_OPTIONS, RisingClock, SegmentPlan
from sightline.stream.stats import StreamStats

log = logging.getLogger(__name__)

PACKET_QUEUE = 128  # packets waiting for the writer (about 4 s at 30 fps)
FAST_PUT_S = 0.25  # a replay's source waits for room in steps of this, watching its stop


class Template:
    """A session's codec parameters, kept in a container of its own: the source closes its input (and the stream
    in it) when the session ends, while segments opened later still need them."""

    def __init__(self, stream: av.VideoStream) -> None:
        self._holder = av.open(io.BytesIO(), "w", format="mp4")
        self.stream = self._holder.add_stream_from_template(stream)
        ctx = self.stream.codec_context
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)
        # what a decoder needs to be the same for one file to hold both sessions' packets
        self.key = (ctx.name, ctx.width, ctx.height, bytes(ctx.extradata or b""), self.time_base)

    def close(self) -> None:
        self._holder.close()


@dataclass(frozen=True, slots=True)
class CopiedPacket:
    """A packet's bytes and times, copied in the source thread (PyAV's packet stays with the source's decoder)."""

    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    keyframe: bool
    arrived: float  # wall time
    template: Template


class PassthroughWriter:
    """One stream's passthrough recorder thread (the source's ``PacketTap``)."""

    name = "recorder"

    def __init__(self, plan: SegmentPlan, stats: StreamStats, live: bool, stop: threading.Event,
                 capacity: int = PACKET_QUEUE, wall: Callable[[], float] = time.time) -> None:
        self.plan = plan
        self.stream = plan.stream
        self.stats = stats
        self.live = live
        self.stop = stop
        self.wall = wall
        self.queue: BoundedQueue[CopiedPacket] = BoundedQueue(capacity, "block")
        self.done = threading.Event()
        self.errors = 0
        self._consumer = Consumer(self.queue, f"recorder-{self.stream}", self._write, self._finalize)
        # the source thread's
        self._template: Template | None = None
        self._resync = False  # a packet was lost: the next one taken is a keyframe
        # the writer thread's
        self._current: Template | None = None
        self._clock = RisingClock()  # in ticks of the current template's time base
        self._out: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._path: Path | None = None
        self._base = 0  # the open segment's first dts (rising ticks)
        self._last_dts = -1
        self._end = 0  # the open segment's length so far (ticks): the last packet's dts + duration
        self._recorded_s = 0.0  # the recording's length before the open segment

    def start(self) -> None:
        self._consumer.start()

    def close(self) -> None:
        """No more packets: write what is queued, then close the file."""
        self.queue.close()

    def join(self, timeout: float | None = None) -> bool:
        return self._consumer.join(timeout)

    # PacketTap: called by the source thread

    def begin(self, stream: av.VideoStream) -> None:
        """A session opened (a file, each loop of it, each reconnect): the parameters of its packets."""
        try:
            self._template = Template(stream)
        except (av.FFmpegError, ValueError) as exc:  # a codec MP4 cannot hold (raw video from a device)
            self._template = None
            self._failed(exc, "opening")

    def submit(self, packet: av.Packet) -> None:
        """Every video packet the source reads, before it is decoded (or skipped)."""
        template = self._template
        if template is None:
            return
        if self._resync:
            if not packet.is_keyframe:
                self.stats.on_lost("recorder_behind")
                return
            self._resync = False
        item = CopiedPacket(bytes(packet), packet.pts, packet.dts, packet.duration or 0, packet.is_keyframe,
                            self.wall(), template)
        if self.live:
            if not self.queue.put(item, timeout=0) and not self.queue.closed:
                self.stats.on_lost("recorder_behind")
                self._resync = True
            return
        while not self.stop.is_set():
            if self.queue.put(item, timeout=FAST_PUT_S) or self.queue.closed:
                return

    # the writer thread

    def _write(self, item: CopiedPacket) -> None:
        if item.template is not self._current:
            if self._current is None or item.template.key != self._current.key:
                self._end_segment()  # other parameters: a new file from the next keyframe
                self._clock = RisingClock()
            if self._current is not None:
                self._current.close()
            self._current = item.template
        tb = item.template.time_base
        step = max(1, item.duration)
        raw = item.dts if item.dts is not None else item.pts
        if raw is None:  # no time at all: one packet after the last
            raw = int(self._clock.last - self._clock.offset) + step if self._clock.last is not None else 0
        dts = int(self._clock.see(raw, step))
        pts = dts if item.pts is None else int(item.pts + self._clock.offset)
        if item.keyframe and (self._out is None or self.plan.due(float((dts - self._base) * tb))):
            self._end_segment()
            self._begin_segment(item, dts)
        if self._out is None or self._video is None:
            return  # waiting for a keyframe (after a failure, or at the start)
        dts = max(dts - self._base, self._last_dts + 1)  # the muxer refuses a dts that does not rise
        packet = av.Packet(item.data)
        packet.dts, packet.pts, packet.time_base = dts, max(pts - self._base, dts), tb
        packet.duration, packet.is_keyframe, packet.stream = item.duration, item.keyframe, self._video
        try:
            self._out.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self._lost_file(exc)
            return
        self._last_dts, self._end = dts, dts + step
        self.plan.wrote()

    def _begin_segment(self, item: CopiedPacket, dts: int) -> None:
        try:
            path = self.plan.next_path(self._recorded_s, item.arrived)
        except OSError as exc:
            self._lost_file(exc)
            return
        if path is None:
            return
        try:
            out = av.open(str(path), "w", format="mp4", options=MP4_OPTIONS)
            self._video = out.add_stream_from_template(item.template.stream)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.plan.closed(path, written=False)
            self._lost_file(exc)
            return
        self._out, self._path, self._base, self._last_dts = out, path, dts, -1

    def _end_segment(self, report: bool = True) -> None:
        """Close the open file (its trailer: the last fragment); a failure is reported (unless the file is closed
        because a write failed already), the file stays playable up to its last written fragment."""
        out, path = self._out, self._path
        if out is None or path is None:
            return
        self._out = self._video = self._path = None
        written = self._last_dts >= 0
        if self._current is not None and written:
            self._recorded_s += float(self._end * self._current.time_base)
        try:
            out.close()
        except (av.FFmpegError, OSError) as exc:
            if report:
                self.plan.failed(exc)
                self._failed(exc, "closing")
        finally:
            self.plan.closed(path, written)

    def _lost_file(self, exc: BaseException) -> None:
        """A write failed (a full disk): close what there is; a fresh file starts at a later keyframe."""
        self.plan.failed(exc)
        self._failed(exc, "writing")
        self._end_segment(report=False)

    def _finalize(self) -> None:
        self._end_segment()
        if self._current is not None:
            self._current.close()
        self.done.set()

    def _failed(self, exc: BaseException, what: str) -> None:
        self.errors += 1
        self.stats.on_sink_error(self.name)
        if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
            log.error("stream %s: recorder failed %s (%d so far): %s", self.stream, what, self.errors, exc)
