"""Video sources: one PyAV decode thread per stream, feeding that stream's bounded queue.

FFmpeg's scaler produces the model's working size directly, so no full-size frame is converted in
Python unless the stream has a visual sink. Each source keeps its scaler contexts: a new context per
frame (what ``VideoFrame.to_ndarray(width=, height=)`` does) costs ~1.5 ms of a 720p frame's ~7 ms.
8-bit YUV video is scaled in two steps (``working_image``): half the scaler's time for the same picture.
Network sources reconnect with exponential backoff, jitter and a cap; PyAV's read timeout catches
most stalls, and the pipeline's capture watchdog (stream/pipeline/capture_watchdog.py) the ones it does not.

Which packets are decoded at all is ``DecodePolicy``'s call (``streams[].decode``): a stream classified at
most once per GOP decodes only its keyframes; a passthrough recording still gets every packet read
(``PacketTap``), so recording does not make a stream decode more. Source threads run at a lower CPU priority
(``SOURCE_NICE``) than the model's, so past capacity decoding yields before the model starves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from sightline.stream.buffers import BoundedQueue
from sightline.stream.config import StreamConfig, redact_url
from sightline.stream.errors import SourceOpenError, SourceReadError, describe_av_error
from sightline.stream.frames import Frame, FrameDemand
from sightline.stream.lifecycle import StreamState
from sightline.stream.sources.decode_policy import RATE_SLACK, DecodePolicy
from sightline.stream.sources.hwdecode import HwDecode
from sightline.stream.stats import StreamStats

log = logging.getLogger(__name__)

# A stream that fails to decode this many packets in a row is given up (it is not video any more).
MAX_BAD_PACKETS_IN_A_ROW = 50

# A full-size frame for the recorder is capped at this height (4K sources record at 1080p).
DISPLAY_MAX_HEIGHT = 1080

# A forward jump in a session's timestamps longer than this is a clock discontinuity (a spliced file, a
# camera that reset its clock), not this many seconds of lost frames.
MAX_GAP_S = 30.0
MAX_NOMINAL_FPS = 240.0

# MPEG-TS packet sizes (plain, M2TS with a timecode, with Reed-Solomon): a file whose size is a multiple
# of none of them ends inside a packet, i.e. it was cut.
TS_PACKET_SIZES = (188, 192, 204)

# Source threads (and the FFmpeg threads they start) run this much nicer than the model's: on a box past
# capacity the kernel gives the model its CPU first, and every camera's decode shares what is left.
# Measured (benchmarks/density.py, 160 keyframes-only cameras, 2-vCPU AMD EPYC): nice 0 failed (p99 2.0 s,
# slowest camera 0.86/s), nice 10 passed (p99 0.26 s), with CPU to spare: the cost was waiting, not work.
SOURCE_NICE = 10

WorkingSize = Callable[[int, int], tuple[int, int]]

# 8-bit YUV formats scaled in two steps (see ``working_image``), with the planar 4:4:4 format in between
# that keeps their colour range (full-range "j" formats stay full range).
TWO_STEP_YUV = {"yuv420p": "yuv444p", "yuv422p": "yuv444p", "nv12": "yuv444p", "nv21": "yuv444p",
                "yuvj420p": "yuvj444p", "yuvj422p": "yuvj444p"}


class RecordingTap(Protocol):
    """Takes every decoded frame (full size) for the stream's recording; closed when the source ends."""

    def submit(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


class PacketTap(Protocol):
    """Takes every video packet the source reads, decoded or not, for a passthrough recording (the camera's own
    bytes, remuxed); closed when the source ends. It copies what it keeps: the packet stays with the decoder."""

    def begin(self, stream: av.VideoStream) -> None:
        """A session opened (each loop of a file, each reconnect): its video stream's codec parameters."""

    def submit(self, packet: av.Packet) -> None: ...

    def close(self) -> None: ...


class Taps:
    """Several packet taps fed as one (a passthrough recording and event clips on the same input)."""

    def __init__(self, taps: list[PacketTap]) -> None:
        self.taps = taps

    def begin(self, stream: av.VideoStream) -> None:
        for tap in self.taps:
            tap.begin(stream)

    def submit(self, packet: av.Packet) -> None:
        for tap in self.taps:
            tap.submit(packet)

    def close(self) -> None:
        for tap in self.taps:
            tap.close()


class GapCounter:
    """Frames missing from a session, judged by its timestamps against the nominal frame period.

    A gap of more than 1.5 periods counts the frames that should have been in it. A step back (a
    looped or concatenated file whose timestamps restart, a reconnect) is a reset, not a loss, and so
    is a jump forward of more than ``MAX_GAP_S``.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self.last: float | None = None
        self.lost = 0
        self.resets = 0

    def see(self, t: float) -> int:
        """Note one frame's time; returns how many frames are missing just before it."""
        last, self.last = self.last, t
        if last is None or self.period <= 0:
            return 0
        step = t - last
        if step < -self.period / 2 or step > MAX_GAP_S:
            self.resets += 1
            return 0
        if step <= 1.5 * self.period:
            return 0
        missing = round(step / self.period) - 1
        self.lost += missing
        return missing


def backoff_delay(attempt: int, initial: float, cap: float, jitter: float, rng: random.Random) -> float:
    """initial * 2^attempt, capped, minus a random share ``jitter`` so many clients do not retry in step."""
    base = min(cap, initial * (2 ** min(attempt, 30)))
    return base * (1.0 - jitter * rng.random())


class Throttle:
    """Decides which frames to classify so a stream sends at most ``fps`` per second to the model."""

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._next = -float("inf")

    def take(self, t: float, early_s: float = 0.0) -> bool:
        """``early_s``: how long before its slot a frame may come and still be taken (keyframes only: a
        keyframe that arrives a little early would otherwise wait a whole GOP for the next one)."""
        if not self.period:
            return True
        if t + 1e-6 + early_s < self._next:
            return False
        # Stay on the period grid; after a gap (start, seek, reconnect) restart the grid from now.
        self._next = self._next + self.period if t - self._next < self.period else t + self.period
        return True

    def reset(self) -> None:
        self._next = -float("inf")


class Pacer:
    """Plays a file like a camera: stream time ``t`` is due ``t - t0`` seconds after the first (``t0``).

    A step back in time, or forward by more than ``MAX_GAP_S`` (a looped or spliced file), starts over."""

    def __init__(self, clock: Callable[[], float], stop: threading.Event) -> None:
        self.clock = clock
        self.stop = stop
        self._anchor: tuple[float, float] | None = None  # (wall, stream time) of the first frame
        self._last = 0.0

    def due(self, t: float) -> float:
        if self._anchor is None or t < self._last - 1.0 or t - self._last > MAX_GAP_S:
            self._anchor = (self.clock(), t)
        self._last = t
        wall, t0 = self._anchor
        return wall + (t - t0)

    def wait(self, t: float) -> float | None:
        """Wait until ``t`` is due; its due time, or None when ``stop`` was set meanwhile."""
        due = self.due(t)
        now = self.clock()
        if due > now and self.stop.wait(due - now):
            return None
        return due

    def reset(self) -> None:
        self._anchor = None


class FrameSource(ABC):
    """One stream's producer thread: turns decoded pictures into Frames in the stream's queue.

    Subclasses implement ``_produce`` (runs in the thread) and call ``_emit`` for each picture.
    The queue is closed when ``_produce`` returns, so the batcher knows the stream has ended.
    """

    def __init__(self, config: StreamConfig, queue: BoundedQueue[Frame], stats: StreamStats,
                 working_size: WorkingSize, keep_display: bool, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic, preview: FrameDemand | None = None) -> None:
        self.config = config
        self.queue = queue
        self.stats = stats
        self.working_size = working_size
        self.keep_display = keep_display  # a recorder: every frame, full size
        self.preview = preview  # a preview: full size for classified frames while someone watches
        self.stop = stop
        self.clock = clock
        self.throttle = Throttle(config.infer_fps)
        self.fps_hint = 25.0
        self.recording: RecordingTap | None = None  # set by the pipeline for streams with record: annotated
        self.packets: PacketTap | None = None  # ... and with record: passthrough
        self._seq = 0
        self._to_working = VideoReformatter()  # each keeps its FFmpeg scaler context from frame to frame
        self._to_rgb = VideoReformatter()  # the second step of ``working_image``
        self._to_display = VideoReformatter()
        self._thread = threading.Thread(target=self._run, name=f"source-{config.name}", daemon=True)

    @property
    def safe_url(self) -> str:
        return redact_url(self.config.source_url)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wake(self) -> None:
        """``stop`` was set: a source that waits on something else (WebRTC's hand-off) returns at once."""
        return None  # decoders wait on ``stop`` itself (pacing, backoff) or on FFmpeg's read timeout

    @property
    def alive(self) -> bool:
        """The thread is running (False before ``start`` and after it returned or died)."""
        return self._thread.is_alive()

    def detach(self) -> None:
        """Cut a stalled thread loose (the capture watchdog replaces it): whatever it does if it ever wakes
        goes nowhere. It sees ``stop`` set, counts into throwaway stats, puts into a closed queue, and
        leaves the stream's queue and recording open for the source that replaces it."""
        gone = threading.Event()
        gone.set()
        self.stop = gone
        self.stats = StreamStats(self.config.name)
        closed: BoundedQueue[Frame] = BoundedQueue(1, "latest")
        closed.close()
        self.queue = closed
        self.recording = None
        self.packets = None
        self.preview = None

    def _run(self) -> None:
        # this thread only (Linux); elsewhere, or not allowed, decoding competes with the model on equal terms
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SOURCE_NICE)
        try:
            self._produce()
        except Exception as exc:  # the last line of defence: a bug in one stream must not kill the process
            log.exception("stream %s: source crashed", self.config.name)
            self.stats.set_state(StreamState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.queue.close()
            for tap in (self.recording, self.packets):
                if tap is not None:
                    tap.close()
            self.recording = None  # the recorder's fps hint refers back to this source: no cycle to wait on
            self.packets = None
            # FFmpeg's scaler contexts run worker threads: let them go now, not when a GC finds this object
            self._to_working = VideoReformatter()
            self._to_rgb = VideoReformatter()
            self._to_display = VideoReformatter()

    @abstractmethod
    def _produce(self) -> None:
        """Deliver pictures through ``_emit`` until the source ends or ``stop`` is set."""

    def _emit(self, frame: av.VideoFrame, t_stream: float, captured: float, decode_s: float = 0.0) -> None:
        """Count, throttle, scale (FFmpeg's scaler, straight to the working size) and queue one picture.

        ``decode_s`` is this picture's share of the decoder's time; with the scaling it is the decode stage.
        """
        self.stats.on_decoded()
        if self.stats.state != StreamState.LIVE:
            self.stats.set_state(StreamState.LIVE)
        infer = self.throttle.take(t_stream, self._keyframe_slack())
        every = self.keep_display or (self.preview is not None and self.preview.every_frame() is not None)
        if not infer and not every:
            return  # nobody consumes this picture: it is neither converted nor scaled
        # asked per frame: a camera may change resolution mid-stream, a model swap may change the working size
        height, width = self.working_size(frame.height, frame.width)
        started = time.perf_counter()
        image = working_image(frame, width, height, self._to_working, self._to_rgb)
        wanted = every or (self.preview is not None and self.preview.wanted())
        display = self._display(frame) if wanted else None
        self.stats.on_decode_stage(decode_s + time.perf_counter() - started)
        item = Frame(self.config.name, self._seq, frame.pts, _time_base(frame), captured, self.clock(), image,
                     display, infer, self.fps_hint)
        self._seq += 1
        if self.recording is not None:  # every decoded frame, whatever the live policy does to the model's copy
            self.recording.submit(item)
        self._put(item)

    def _keyframe_slack(self) -> float:
        """Keyframes only: how early a keyframe may come for its slot (arrival jitter), never enough to take two
        keyframes for one slot."""
        return 0.0

    def _display(self, frame: av.VideoFrame) -> np.ndarray:
        if frame.height <= DISPLAY_MAX_HEIGHT:
            return self._to_display.reformat(frame, format="rgb24").to_ndarray()
        width = round(frame.width * DISPLAY_MAX_HEIGHT / frame.height)
        return self._to_display.reformat(frame, width, DISPLAY_MAX_HEIGHT, "rgb24", interpolation="AREA").to_ndarray()

    def _put(self, frame: Frame) -> None:
        if self.queue.policy == "latest":
            self.queue.put(frame)
            return
        while not self.stop.is_set():  # block (lossless) but stay responsive to stop
            if self.queue.put(frame, timeout=0.25) or self.queue.closed:
                return


class VideoSource(FrameSource):
    """Decodes ``config.source_url`` (a file or anything FFmpeg opens) until it ends, fails for good, or ``stop``."""

    def __init__(self, config: StreamConfig, queue: BoundedQueue[Frame], stats: StreamStats,
                 working_size: WorkingSize, keep_display: bool, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic, preview: FrameDemand | None = None,
                 seed: int | None = None, hwdecode: HwDecode | None = None) -> None:
        super().__init__(config, queue, stats, working_size, keep_display, stop, clock, preview)
        self.bad_packets = 0
        self._rng = random.Random(seed)
        self.hwdecode = hwdecode if hwdecode is not None and hwdecode.enabled and config.hwaccel == "auto" else None
        self.hw_used: bool | None = None  # after an open: whether the decoder runs on NVDEC
        self.policy = DecodePolicy(config, stats, preview)
        # the policy's mode as the frames coming out of the decoder see it: it turns with them, after the frames
        # the previous GOP left in the decoder (those were decoded whole, and are not keyframes-only pictures)
        self.keyframes_only = False
        self._last_packet_t: float | None = None  # the latest packet time of this session (a file's end check)
        self._pacer: Pacer | None = None  # a realtime file's clock, for this session

    def detach(self) -> None:
        super().detach()
        self.policy.stats = self.stats  # the throwaway stats: a cut-loose thread reports nothing

    def _keyframe_slack(self) -> float:
        if not self.keyframes_only:
            return 0.0
        interval = self.policy.clock.interval
        if interval is None:
            return 0.0
        if interval * RATE_SLACK >= self.throttle.period:
            # one keyframe per slot at most: take each one however early it arrives (a live camera's keyframes
            # jitter by hundreds of ms on a busy box; the grid still holds a faster camera to infer_fps)
            return self.throttle.period
        return min(0.25 * interval, 0.5 * self.throttle.period)

    def _produce(self) -> None:
        if self.config.is_file:
            self._run_file()
        else:
            self._run_network()

    def _run_file(self) -> None:
        while not self.stop.is_set():
            try:
                self._session()
            except (SourceOpenError, SourceReadError) as exc:
                log.error("stream %s: %s", self.config.name, exc)
                self.stats.set_state(StreamState.FAILED, str(exc))
                return
            if not self.config.loop:
                break
            self.throttle.reset()
        if self.stop.is_set():
            self.stats.set_state(StreamState.STOPPED)
        else:
            note = self.loss_note()
            if note:
                log.warning("stream %s: ended; %s", self.config.name, note)
            self.stats.set_state(StreamState.ENDED, note)

    def loss_note(self) -> str | None:
        """What a stream that played to its end lost on the way, or None when nothing."""
        notes = []
        if self.bad_packets:
            notes.append(f"skipped {self.bad_packets} corrupt packets")
        flagged = self.stats.corrupt_packets - self.bad_packets
        if flagged > 0:
            notes.append(f"{flagged} packets flagged corrupt by the demuxer (decoded anyway)")
        lost = self.stats.frames_lost.get("source_gap", 0)
        if lost:
            notes.append(f"lost {lost} frames (gaps in the timestamps: corrupt or missing data)")
        return "; ".join(notes) if notes else None

    def _run_network(self) -> None:
        attempt = 0
        rc = self.config.reconnect
        while not self.stop.is_set():
            delivered_before = self._seq
            try:
                self._session()
                reason = "stream ended"
            except (SourceOpenError, SourceReadError) as exc:
                reason = str(exc)
            if self.stop.is_set():
                break
            if self._seq > delivered_before:
                attempt = 0
            delay = backoff_delay(attempt, rc.initial_s, rc.max_s, rc.jitter, self._rng)
            attempt += 1
            log.warning("stream %s (%s): %s; reconnecting in %.1fs", self.config.name, self.safe_url, reason, delay)
            self.stats.set_state(StreamState.RECONNECTING, reason)
            self.stats.on_reconnect()
            self.stop.wait(delay)
        self.stats.set_state(StreamState.STOPPED)

    def _open(self) -> av.container.InputContainer:
        url, kwargs = open_arguments(self.config)
        if self.stats.state not in (StreamState.RECONNECTING, StreamState.LIVE):  # a looping file stays live
            self.stats.set_state(StreamState.CONNECTING)
        if self.hwdecode is not None:
            container = self._open_on_nvdec(url, kwargs)
            if container is not None:
                return container
        try:
            return av.open(url, **kwargs)  # type: ignore[arg-type]
        except (av.FFmpegError, OSError) as exc:
            raise SourceOpenError(f"cannot open {self.safe_url}: {describe_av_error(exc)}") from exc

    def _open_on_nvdec(self, url: str, kwargs: dict[str, object]) -> av.container.InputContainer | None:
        """Open with a fresh CUDA HWAccel; None when that fails (the caller opens in software).

        A failure that the software open then does not repeat is the hardware's: say so once and stay
        in software; when both fail the source is at fault and NVDEC is tried again on the next open.
        """
        assert self.hwdecode is not None and self.hwdecode.factory is not None
        try:
            container = av.open(url, hwaccel=self.hwdecode.factory(), **kwargs)  # type: ignore[arg-type]
        except (av.FFmpegError, OSError) as exc:
            try:
                av.open(url, **kwargs).close()  # type: ignore[arg-type]
            except (av.FFmpegError, OSError):
                return None
            log.warning("stream %s: NVDEC open failed (%s); decoding in software", self.config.name,
                        describe_av_error(exc))
            self.hwdecode = None
            return None
        video = container.streams.video
        used = bool(video) and video[0].codec_context.is_hwaccel
        if used != self.hw_used:
            codec = video[0].codec_context.name if video else "no video"
            log.info("stream %s: %s decode on %s", self.config.name, codec, "NVDEC" if used else "the CPU")
        self.hw_used = used
        return container

    def _session(self) -> None:
        """One open/decode/close cycle: returns at end of stream, raises on failure."""
        container = self._open()
        try:
            if not container.streams.video:
                raise SourceOpenError(f"{self.safe_url} has no video stream")
            stream = container.streams.video[0]
            if self.config.decode == "all":
                stream.thread_type = "AUTO"  # FFmpeg's frame threads: every frame, at the lowest latency per frame
            else:
                # one decoder thread (this one): a keyframe at a time needs no more, and frame threads would hold
                # each keyframe back until the next ones arrive; ~3 fewer threads and their buffers per camera
                stream.thread_count = 1
            rate = stream.average_rate or stream.guessed_rate
            if rate:
                self.fps_hint = float(rate)
            if self.packets is not None:
                self.packets.begin(stream)
            self._decode(container, stream)
        finally:
            container.close()

    def _decode(self, container: av.container.InputContainer, stream: av.VideoStream) -> None:
        cfg = self.config
        self._pacer = pacer = Pacer(self.clock, self.stop) if cfg.is_file and cfg.live else None
        decoded_here = 0
        t_stream = 0.0
        # a nominal rate outside 1-240 fps is a guess (FFmpeg's tbr of a timestamp-only stream): count no gaps
        gaps = GapCounter(1.0 / self.fps_hint if 1.0 <= self.fps_hint <= MAX_NOMINAL_FPS else 0.0)
        self._last_packet_t = None
        for frame, decode_s in self._frames(container, stream):
            if self.stop.is_set():
                return
            t_stream = float(frame.time) if frame.time is not None else decoded_here / self.fps_hint
            resets = gaps.resets
            if self.keyframes_only:
                gaps.last = None  # one picture per GOP: the frames between keyframes are skipped, not lost
            else:
                missing = gaps.see(t_stream)
                if missing:
                    self.stats.on_lost("source_gap", missing)
            if gaps.resets > resets:
                if pacer is not None:
                    pacer.reset()  # the clock restarted or jumped: pace the rest from this frame
                self.throttle.reset()  # and classify on the new clock's grid
            if pacer is not None:
                due = pacer.wait(t_stream)
                if due is None:
                    return
                captured = due
            else:
                captured = self.clock()
            decoded_here += 1
            # files throttle on their own clock (so fast replays classify the same frames); live on arrival
            self._emit(frame, t_stream if cfg.is_file else captured, captured, decode_s)
        if pacer is not None and self._last_packet_t is not None and pacer.wait(self._last_packet_t) is None:
            return  # a paced file ends when its last packet is due (keyframes only: not at its last keyframe)
        if cfg.is_file:
            # the last packet's time, not the last decoded frame's: keyframes only decodes one frame per GOP
            last_t = self._last_packet_t if self._last_packet_t is not None else t_stream
            self._check_complete(container, stream, last_t if decoded_here else None, clock_reset=gaps.resets > 0)

    def _frames(self, container: av.container.InputContainer,
                stream: av.VideoStream) -> Iterator[tuple[av.VideoFrame, float]]:
        """Decoded frames, each with its share of the decoder's time.

        Every packet read counts for liveness (``StreamStats.on_packet``); the policy picks the ones decoded.
        A packet the decoder rejects is skipped and counted (FFmpeg resyncs at the next keyframe); too
        many in a row, a decoder fed for ``stall_timeout_s`` without a picture, or a demuxer/network
        failure ends the session with a reason."""
        in_a_row = 0
        fed_since: float | None = None  # when the decoder was first fed after its last picture
        stall = self.config.stall_timeout_s
        network = self.config.is_network  # parsed once, not per packet
        policy = self.policy
        base = getattr(stream, "time_base", None)
        seconds = float(base) if base else None  # one float per packet, not a Fraction product
        try:
            for packet in container.demux(stream):
                self.stats.on_packet(packet.size)
                ts = packet.pts if packet.pts is not None else packet.dts
                t = ts * seconds if ts is not None and seconds is not None else None  # presentation time, s
                if t is not None and packet.size:
                    self._last_packet_t = t if self._last_packet_t is None else max(self._last_packet_t, t)
                was_keyframes_only = policy.keyframes_only
                # a paced file reads between keyframes at once: wait here, as a camera's keyframe would arrive,
                # so the decision below sees what is asked now (a clip opened a second ago)
                if was_keyframes_only and packet.is_keyframe and t is not None and self._pacer is not None \
                        and self._pacer.wait(t) is None:
                    return
                packets = self.packets  # read each time: a detached source hands nothing on
                if packets is not None and packet.size:
                    packets.submit(packet)  # every packet, also those never decoded
                if packet.size and not policy.decode(packet.is_keyframe, t):
                    continue  # between keyframes: read and counted, never decoded
                if policy.keyframes_only and not was_keyframes_only:
                    # the GOP decoded whole ends here: out with the frames the decoder still holds
                    yield from ((f, 0.0) for f in _drain(stream))
                self.keyframes_only = policy.keyframes_only
                now = self.clock()
                if network and fed_since is not None and now - fed_since > stall:
                    # packets keep coming (the read timeout never fires) but no picture: treat as stalled
                    raise SourceReadError(f"{self.safe_url}: no frame for {stall:.0f}s")
                flagged = packet.is_corrupt  # by the demuxer (e.g. a continuity error); the decoder may cope
                started = time.perf_counter()
                try:
                    frames = packet.decode()
                    if not frames and policy.keyframes_only and packet.size:
                        # a decoder that reorders (B-frames) holds a picture until later ones come, and none
                        # will: take the keyframe's picture now and start clean for the next one
                        frames = _drain(stream, packet)
                except av.InvalidDataError as exc:
                    in_a_row += 1
                    self.bad_packets += 1
                    self.stats.on_corrupt_packet()
                    if self.bad_packets == 1:
                        log.warning("stream %s: skipping corrupt data (%s)", self.config.name, describe_av_error(exc))
                    if in_a_row >= MAX_BAD_PACKETS_IN_A_ROW:
                        raise SourceReadError(
                            f"{self.safe_url}: {in_a_row} corrupt packets in a row; giving up") from exc
                    continue
                in_a_row = 0
                if flagged:
                    self.stats.on_corrupt_packet()
                if frames:
                    fed_since = None
                    share = (time.perf_counter() - started) / len(frames)
                    for frame in frames:
                        yield frame, share
                elif fed_since is None:
                    fed_since = now
        except (av.FFmpegError, OSError) as exc:
            what = "corrupt or truncated data" if self.config.is_file else "read failed"
            raise SourceReadError(f"{what} in {self.safe_url}: {describe_av_error(exc)}") from exc

    def _check_complete(self, container: av.container.InputContainer, stream: av.VideoStream,
                        last_t: float | None, clock_reset: bool = False) -> None:
        """A file whose frames stop well before its declared duration was cut short: say so.

        An MPEG-TS that ends inside a transport packet was cut. A file whose timestamps restarted
        (concatenated segments) has no meaningful declared duration: only the packet check applies.
        """
        if container.format is not None and "mpegts" in container.format.name.split(",") \
                and ts_ends_inside_a_packet(self.config.file_path()):
            raise SourceReadError(f"{self.safe_url} is truncated: it ends inside a transport packet; "
                                  "the data after the cut is lost")
        if clock_reset:
            return
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None and len(container.streams) == 1:
            duration = container.duration / av.time_base
        else:
            return
        slack = max(0.25, 3.0 / self.fps_hint)
        if last_t is None or last_t + slack < duration:
            at = "no frame" if last_t is None else f"the last frame at {last_t:.2f}s"
            raise SourceReadError(f"{self.safe_url} is truncated: {at} of a declared {duration:.2f}s")


def open_arguments(cfg: StreamConfig) -> tuple[str, dict[str, object]]:
    """What ``av.open`` is given for a stream's (single-URL) config: the one place its input options are set."""
    options: dict[str, str] = {}
    url = cfg.source_url
    if url.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = cfg.transport
    if cfg.is_network:
        options.update({"fflags": "nobuffer", "flags": "low_delay"})
    kwargs: dict[str, object] = {"options": options, "timeout": (cfg.open_timeout_s, cfg.stall_timeout_s)}
    if cfg.is_device:
        kwargs["format"] = "v4l2"
    return (str(cfg.file_path()) if cfg.is_file else url), kwargs


def working_image(frame: av.VideoFrame, width: int, height: int, scale: VideoReformatter,
                  to_rgb: VideoReformatter) -> np.ndarray:
    """``frame`` scaled (area averaging) to width×height RGB, as a uint8 H×W×3 array.

    FFmpeg's scaler turns 4:2:0 video into scaled RGB in one step on a slow generic path (measured ~2.1 ms
    per 720p frame to 455×256 on an AMD EPYC core); scaling the YUV planes to 4:4:4 at the working size
    (chroma to full resolution: no detail lost) and then converting the small picture takes ~1.1 ms, within
    2 grey levels of the one step. One scaler thread each: a stream's source thread is one of many, and
    slice threads on a small picture only add hand-offs.
    """
    between = TWO_STEP_YUV.get(frame.format.name)
    if between is None:
        return scale.reformat(frame, width, height, "rgb24", interpolation="AREA", threads=1).to_ndarray()
    planes = scale.reformat(frame, width, height, between, interpolation="AREA", threads=1)
    return to_rgb.reformat(planes, format="rgb24", src_colorspace=frame.colorspace, threads=1).to_ndarray()


def ts_ends_inside_a_packet(path: Path) -> bool:
    """True when an MPEG-TS file's last packet is incomplete: its last three packets' sync bytes
    (0x47, every 188/192/204 bytes) do not line up with the end of the file."""
    span = 3 * max(TS_PACKET_SIZES)
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - span))
            tail = fh.read()
    except OSError:
        return False
    for n in TS_PACKET_SIZES:
        sync = 4 if n == 192 else 0  # M2TS: a 4-byte timecode, then the TS packet
        starts = [len(tail) - k * n + sync for k in (1, 2, 3)]
        if all(0 <= i < len(tail) and tail[i] == 0x47 for i in starts):
            return False
    return len(tail) >= min(TS_PACKET_SIZES)


def _drain(stream: av.VideoStream, packet: av.Packet | None = None) -> list[av.VideoFrame]:
    """The pictures the decoder still holds, and the decoder reset for the next packet (what a seek does).

    A picture drained for ``packet`` (a keyframe decoded alone) gets its timestamp back."""
    ctx = stream.codec_context
    frames = ctx.decode(None)
    ctx.flush_buffers()
    for frame in frames:
        if frame.time_base is None:
            frame.time_base = stream.time_base
        if packet is not None and len(frames) == 1:
            frame.pts = packet.pts
    return frames


def _time_base(frame: av.VideoFrame) -> Fraction | None:
    tb = frame.time_base
    return Fraction(tb.numerator, tb.denominator) if tb is not None else None
