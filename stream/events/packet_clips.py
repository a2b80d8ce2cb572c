"""Event clips from a camera's own packets: remuxed into fragmented MP4, nothing decoded or encoded.

``PacketClips`` is a ``PacketTap`` on a stream's record input (issue #29: a camera with a main stream that is
recorded and a sub stream that is classified). The input's thread hands it every video packet; it copies each
(``CopiedPacket``, as the passthrough recorder does), stamps it with ``clock()`` on arrival, the service's monotonic
clock that a live stream's frames carry as ``captured_at``, and keeps a **pre-roll ring** of whole GOPs: the ring
always starts at a keyframe and reaches back at least ``seconds`` (``preroll_s``, plus the longest
``min_duration_s`` of the stream's rules: the event sink sets it), at most ``preroll_max_mb`` of packets (the
oldest GOP goes first; the newest is kept unless it alone is over the cap).

``open`` makes an event's clip (``PacketClip``): the ring's packets from the last keyframe at or before the clip's
start on, then every packet that arrives until the first one past ``stop_after`` (or ``max_clip_s`` after the
clip's first packet), which is not written. A ring whose newest packet is older than the clip's start by more than
``STALE_S`` is old footage (the input had stopped): the clip begins with the next keyframe that arrives.

Each clip writes on its own thread behind a bounded queue. The input's thread never waits on it: a packet the
queue cannot take is counted in ``dropped``, and so are the packets after it up to the next keyframe (they cannot
be decoded without what was lost), so the file stays decodable. The camera coming back with other codec
parameters (another resolution) ends a clip: one file cannot hold both.

A failed write or a file that cannot be finalized (a full disk: ``OSError``) makes the clip incomplete, as with
``ClipWriter``: ``error`` keeps the first failure, ``on_failed`` is called once, on the writer's thread; nothing
more is written to that file (what was written plays up to its last whole fragment). A clip that got no packet at
all (the input was down while it was open) has no file and says so in ``error`` (``NO_VIDEO``), with no
``on_failed``: nothing failed to be written.

Threads: ``begin``/``submit``/``close`` run on the input's thread; ``open`` and a clip's ``stop_after``/``close``/
``join`` on the stream's output thread (the event sink's). A clip's ``first_t``/``last_t``/``dropped``/``error``
are written by the input's and the writer's threads and only read elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import av
from sightline.stream.buffers import BoundedQueue, Consumer
from sightline.stream.outputs.passthrough import CopiedPacket, Template
from sightline.stream.outputs.segments import MP4_OPTIONS, RisingClock

if TYPE_CHECKING:
    from sightline.stream.event_config import EventsConfig

log = logging.getLogger(__name__)

CLIP_PACKETS = 256  # live packets a clip's writer may fall behind by (about 8 s at 30 fps), beside its pre-roll
NO_VIDEO = "no video: the record input sent no keyframe while the clip was open"
STALE_S = 1.0  # a ring whose newest packet is older than a clip's start by more than this is not used for it


def open_mp4(path: Path) -> av.container.OutputContainer:
    """A clip's file: fragmented MP4, as recordings are (every fragment reaches the file when muxed)."""
    return av.open(str(path), "w", format="mp4", options=MP4_OPTIONS)


class PacketClip:
    """One event's clip: copied packets in, an MP4 out, on a thread of its own (the interface ``EventSink`` uses
    on a ``ClipWriter``). Made by ``PacketClips.open``; the caller starts it."""

    def __init__(self, path: Path, stream: str, max_clip_s: float, capacity: int,
                 on_done: Callable[[PacketClip], None] | None = None,
                 on_failed: Callable[[PacketClip], None] | None = None) -> None:
        self.path = path
        self.stream = stream
        self.max_clip_s = max_clip_s
        self.on_done = on_done
        self.on_failed = on_failed
        self.stop_after: float | None = None  # the clip ends with the first packet past this time (not written)
        self.error: str | None = None  # the first write/finalize failure: the clip is incomplete
        self.errors = 0
        self.dropped = 0  # packets the clip lost: its queue was full, or they came before the keyframe after that
        self.first_t: float | None = None  # arrival (clock) of the first and the last packet queued
        self.last_t: float | None = None
        self.written = 0  # packets in the file
        self.done = threading.Event()
        self.queue: BoundedQueue[CopiedPacket] = BoundedQueue(capacity, "block")
        self._consumer = Consumer(self.queue, f"clip-{stream}", self._write, self._finalize)
        # the input thread's
        self._key: tuple | None = None  # the codec parameters of the clip's packets
        self._resync = True  # the next packet taken is a keyframe
        # the writer thread's
        self._out: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._clock = RisingClock()  # in ticks of the packets' time base
        self._base = 0  # the first packet's dts (rising ticks)
        self._last_dts = -1

    @property
    def ended(self) -> bool:
        """No more packets go in (past ``stop_after``, too long, closed): the writer finishes what it has."""
        return self.queue.closed

    def start(self) -> None:
        self._consumer.start()

    def close(self) -> None:
        """No more packets: write what is queued, then finalize the file."""
        self.queue.close()

    def join(self, timeout: float | None = None) -> bool:
        return self._consumer.join(timeout)

    # the input's thread (and ``PacketClips.open``, under its lock)

    def resync(self) -> None:
        """A new session: its packets before its first keyframe cannot be decoded."""
        self._resync = True

    def offer(self, item: CopiedPacket) -> None:
        """Queue ``item``, or end the clip before it; never waits."""
        if self.queue.closed:
            return
        t = item.arrived
        stop = self.stop_after
        if ((stop is not None and t > stop) or (self.first_t is not None and t - self.first_t > self.max_clip_s)
                or (self._key is not None and item.template.key != self._key)):
            self.close()  # past its end, too long, or the camera changed its parameters (one file cannot hold both)
            return
        if self._resync:
            if not item.keyframe:
                if self.first_t is not None:
                    self.dropped += 1
                return
            self._resync = False
        if self.queue.put(item, timeout=0):
            self._key = item.template.key
            self.last_t = t
            if self.first_t is None:
                self.first_t = t
        elif not self.queue.closed:
            self.dropped += 1
            self._resync = True

    # the writer's thread

    def _write(self, item: CopiedPacket) -> None:
        if self.error is not None:
            return  # the file failed: nothing more goes into it
        first = self._out is None
        if first and not self._open(item):
            return
        out = self._out
        tb = item.template.time_base
        step = max(1, item.duration)
        raw = item.dts if item.dts is not None else item.pts
        if raw is None:  # no time at all: one packet after the last
            raw = int(self._clock.last - self._clock.offset) + step if self._clock.last is not None else 0
        dts = int(self._clock.see(raw, step))
        pts = dts if item.pts is None else int(item.pts + self._clock.offset)
        if first:
            self._base = dts
        dts = max(dts - self._base, self._last_dts + 1)  # the muxer refuses a dts that does not rise
        packet = av.Packet(item.data)
        packet.dts, packet.pts, packet.time_base = dts, max(pts - self._base, dts), tb
        packet.duration, packet.is_keyframe, packet.stream = item.duration, item.keyframe, self._video
        try:
            out.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self._failed(exc, "writing")
            self._close_file(report=False)
            return
        self._last_dts = dts
        self.written += 1

    def _open(self, item: CopiedPacket) -> bool:
        if not item.keyframe:
            return False  # cannot happen (the clip takes a keyframe first); a file must start with one
        out = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            out = open_mp4(self.path)
            self._video = out.add_stream_from_template(item.template.stream)
        except (av.FFmpegError, OSError, ValueError) as exc:
            if out is not None:
                with contextlib.suppress(av.FFmpegError, OSError):
                    out.close()
            self._video = None
            self._failed(exc, "writing")
            return False
        self._out = out
        return True

    def _close_file(self, report: bool) -> None:
        out, self._out, self._video = self._out, None, None
        if out is None:
            return
        try:
            out.close()  # its trailer: the last fragment
        except (av.FFmpegError, OSError) as exc:
            if report:
                self._failed(exc, "finalizing")

    def _finalize(self) -> None:
        self._close_file(report=True)
        if self.written == 0 and self.error is None:
            # no keyframe came while it was open (the input was down): no file; not a write failure (no on_failed),
            # but the event says why it has no clip
            self.error = NO_VIDEO
        self.done.set()
        if self.on_done is not None:
            self.on_done(self)

    def _failed(self, exc: BaseException, what: str) -> None:
        self.errors += 1
        if self.error is None:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
            self.error = f"{what} failed: {reason}"
            if self.on_failed is not None:
                try:
                    self.on_failed(self)
                except Exception:  # a bad callback must not stop the clip's thread
                    log.exception("stream %s: clip %s: reporting its failure failed", self.stream, self.path.name)
        log.error("stream %s: %s clip %s failed: %s", self.stream, what, self.path.name, exc)


class PacketClips:
    """One stream's pre-roll ring of packets and its open clips (the record input's ``PacketTap``)."""

    name = "event-clips"

    def __init__(self, config: EventsConfig, stream: str, clock: Callable[[], float] = time.monotonic,
                 capacity: int = CLIP_PACKETS) -> None:
        self.config = config
        self.stream = stream
        self.clock = clock
        self.capacity = capacity
        self.seconds = config.preroll_s  # how far back the ring reaches (the event sink adds its rules' wait)
        self.max_bytes = int(config.preroll_max_mb * 1024 * 1024)
        self.bytes = 0
        self.evicted_for_memory = 0  # packets that left the ring early for its byte cap
        self._lock = threading.Lock()
        self._gops: deque[list[CopiedPacket]] = deque()  # each begins with its keyframe
        self._keyed = False  # the newest GOP is open: a packet that is not a keyframe joins it
        self._template: Template | None = None
        self._clips: list[PacketClip] = []  # clips fed with live packets
        self._closed = False

    # PacketTap: the input's thread

    def begin(self, stream: av.VideoStream) -> None:
        """A session opened (each reconnect): its packets' codec parameters. Until its first keyframe nothing of it
        goes into the ring or a clip; parameters other than the ring's empty the ring."""
        try:
            template: Template | None = Template(stream)
        except (av.FFmpegError, ValueError) as exc:  # a codec MP4 cannot hold
            template = None
            log.error("stream %s: event clips cannot hold this input's video: %s", self.stream, exc)
        with self._lock:
            if template is not None and self._gops and self._gops[0][0].template.key != template.key:
                self._gops.clear()
                self.bytes = 0
            self._template = template
            self._keyed = False
            for clip in self._clips:
                clip.resync()

    def submit(self, packet: av.Packet) -> None:
        """Every video packet the input reads; copied and stamped with its arrival."""
        template = self._template
        if template is None or self._closed:
            return
        item = CopiedPacket(bytes(packet), packet.pts, packet.dts, packet.duration or 0, packet.is_keyframe,
                            self.clock(), template)  # ``arrived``: on ``clock``, the frames' captured_at clock
        with self._lock:
            if self._closed:
                return
            self._keep(item)
            if self._clips:
                for clip in self._clips:
                    clip.offer(item)
                self._clips = [c for c in self._clips if not c.ended]

    def close(self) -> None:
        """The input is gone for good (its stream stops): open clips finish with what they have."""
        with self._lock:
            self._closed = True
            clips, self._clips = self._clips, []
            self._gops.clear()
            self.bytes = 0
            self._template = None
        for clip in clips:
            clip.close()

    # the stream's output thread

    def open(self, event_id: str, path: Path, since_t: float,
             on_done: Callable[[PacketClip], None] | None = None,
             on_failed: Callable[[PacketClip], None] | None = None) -> PacketClip | None:
        """A clip of ``path`` from the last keyframe at or before ``since_t`` (``clock`` time) on, not started (the
        caller registers it, then calls ``start``); None when the input is closed or ``max_open_clips`` are open."""
        with self._lock:
            if self._closed:
                return None
            open_now = [c for c in self._clips if not c.ended]
            if len(open_now) >= self.config.max_open_clips:
                log.warning("stream %s: event %s gets no clip (%d clips are being written: events.max_open_clips)",
                            self.stream, event_id, len(open_now))
                return None
            preroll = self._since(since_t)
            clip = PacketClip(path, self.stream, self.config.max_clip_s, len(preroll) + self.capacity,
                              on_done, on_failed)
            for item in preroll:
                clip.offer(item)
            self._clips = [*open_now, clip]
        return clip

    @property
    def open_clips(self) -> int:
        with self._lock:
            return sum(1 for c in self._clips if not c.ended)

    def __len__(self) -> int:
        """Packets in the ring."""
        with self._lock:
            return sum(len(gop) for gop in self._gops)

    # under the lock

    def _keep(self, item: CopiedPacket) -> None:
        if item.keyframe:
            self._gops.append([item])
            self._keyed = True
        elif self._keyed:
            self._gops[-1].append(item)
        else:
            return  # no keyframe of this session yet: undecodable
        self.bytes += len(item.data)
        t = item.arrived
        # the oldest GOP goes once the next one alone reaches back far enough
        while len(self._gops) > 1 and self._gops[1][0].arrived <= t - self.seconds:
            self._drop_oldest()
        while self.bytes > self.max_bytes and self._gops:
            if len(self._gops) == 1:
                self._keyed = False  # one GOP over the cap: the ring waits for the next keyframe
            gop = self._drop_oldest()
            if t - gop[-1].arrived <= self.seconds:
                self.evicted_for_memory += len(gop)

    def _drop_oldest(self) -> list[CopiedPacket]:
        gop = self._gops.popleft()
        self.bytes -= sum(len(p.data) for p in gop)
        return gop

    def _since(self, since_t: float) -> list[CopiedPacket]:
        """The ring's packets from the last keyframe at or before ``since_t`` (from its first one if none is)."""
        if not self._gops or self._gops[-1][-1].arrived < since_t - STALE_S:
            return []  # nothing, or old footage: the clip begins with the next keyframe
        first = 0
        for i, gop in enumerate(self._gops):
            if gop[0].arrived > since_t:
                break
            first = i
        return [item for gop in list(self._gops)[first:] for item in gop]
