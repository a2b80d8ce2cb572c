"""The event hub: one per pipeline. Gives each stream an ``EventSink`` and owns the bus, rules,
store, events.jsonl and the ``sightline_events_total`` and ``sightline_event_clip_errors_total`` counters.

Each stream's ``EventSink`` runs on the stream's output thread (it is one of its sinks): it feeds the
rule engine with the smoothed label of every frame, keeps the pre-roll ring, writes the snapshot when
an event starts, hands frames to the event's clip writer and publishes start/update/end on the bus.
Files go to ``output_dir/events/<id>.jpg`` and ``<id>.mp4``.

A stream that records another input of its camera (issue #29) gets ``packet_clips`` (``PacketClips``, a tap on
that input): its clips are the camera's own packets, remuxed, from the last keyframe before ``start - preroll_s``;
the sink then keeps no JPEG ring, encodes no clip frames and asks its source for no more frames (nor full-size
pictures); it only opens, ends (``stop_after``), closes and reports the clips, which the input's thread feeds.

A clip that a write error cut short (a full disk) is counted once in ``sightline_event_clip_errors_total``
and its event carries ``clip_error``: at once in the API (the hub keeps it), and on the bus with the event's
next message, or an ``update`` after its end when the clip failed after the end was published.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
from prometheus_client import Counter, Gauge
from sightline.stream.event_config import EventRule, EventsConfig
from sightline.stream.events.bus import EventBus
from sightline.stream.events.clips import ClipFrame, ClipWriter, PrerollRing
from sightline.stream.events.engine import Change, RuleEngine, Track
from sightline.stream.events.packet_clips import PacketClip, PacketClips
from sightline.stream.events.store import EventLog, EventStore, RuleSet, history_files
from sightline.stream.frames import FrameDemand
from sightline.stream.outputs.overlay import draw_overlay, encode_jpeg
from sightline.stream.outputs.sinks import Labelled
from sightline.stream.storage.layout import events_dir
from sightline.stream.storage.stats import StorageStats

if TYPE_CHECKING:
    from sightline.stream.config import RunConfig, StreamConfig
    from sightline.stream.events.notifiers import EventOutputs
    from sightline.stream.events.notifiers.metrics import OutputMetrics
    from sightline.stream.metrics import Metrics

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 15.0
# a packet clip whose input sent nothing past its end (or its max_clip_s) this long after the classified frames did
# is closed by the sink: the record input stalled or is reconnecting
PACKETS_STALLED_S = 3.0

Clip = ClipWriter | PacketClip


def new_event_id(wall: float) -> str:
    """``20261201T201500Z-1a2b3c4d``: sortable by time, safe in URLs, file names and topics."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(wall))}-{secrets.token_hex(4)}"


class EventHub:
    def __init__(self, config: RunConfig, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 storage: StorageStats | None = None) -> None:
        self.config: EventsConfig = config.events
        self.output_dir = Path(config.output_dir)
        self.rotate = config.storage.rotate
        self.storage = storage  # the history's and the clips' write failures and open files (None: not reported)
        self.dir = events_dir(self.output_dir)
        self.clock = clock
        self.wall = wall
        self.bus = EventBus()
        self.rules = RuleSet(self.config.rules, self.config.max_rules)
        self.store = EventStore(self.config.history)
        self.log: EventLog | None = None
        self._writing: set[str] = set()
        self._clip_errors: OrderedDict[str, str] = OrderedDict()  # event id -> first failure (the last `history`)
        self._counted: set[tuple[str, str, str]] = set()  # (stream, rule, label) series of sightline_events_total
        self._lock = threading.Lock()
        self.counter = None
        self.registry = metrics.registry if metrics is not None else None
        self.outputs: EventOutputs | None = None  # MQTT, webhooks: started with the service (docs/events-outputs.md)
        self._output_metrics: OutputMetrics | None = None
        self.clip_errors: Counter | None = None
        if metrics is not None:
            self.counter = Counter("sightline_events_total", "Events started, by stream, rule and label",
                                   ["stream", "rule", "label"], registry=metrics.registry)
            self.clip_errors = Counter("sightline_event_clip_errors_total",
                                       "Event clips cut short by a write error (disk full, I/O error) or not "
                                       "finalized, by stream; each clip counted once", ["stream"],
                                       registry=metrics.registry)
        if self.config.log:
            loaded, skipped = self.store.load(history_files(self.output_dir))
            if loaded:
                log.info("events: read %d event message(s) of earlier runs from the event history", loaded)
            if skipped:
                log.warning("events: skipped %d line(s) of the event history that are not event messages "
                            "(hand-edited, another program's, or torn by a crash)", skipped)
            if metrics is not None:
                Gauge("sightline_events_log_skipped_lines", "Lines of events.jsonl skipped at start: not event "
                      "messages", registry=metrics.registry).set(skipped)
        self.bus.subscribe(self.store.on_message)

    @classmethod
    def build(cls, config: RunConfig, metrics: Metrics | None = None,
              storage: StorageStats | None = None) -> EventHub | None:
        """The service when the config turns events on (``events.enabled``, or rules configured), else None."""
        return cls(config, metrics, storage=storage) if config.events.active else None

    def start(self) -> None:
        """Open events.jsonl (lazily, so a pipeline that never starts creates no files), start the outputs."""
        outputs = self.config.outputs
        with self._lock:
            if self.outputs is None and (outputs.mqtt is not None or outputs.webhooks):
                from prometheus_client import CollectorRegistry
                from sightline.stream.events.notifiers import EventOutputs

                registry = self.registry if self.registry is not None else CollectorRegistry()
                self.registry = registry  # one set of output metrics per registry, also after a restart
                self.outputs = EventOutputs.start(outputs, self.bus, registry, self._output_metrics)
                self._output_metrics = self.outputs.metrics
        if self.config.log and self.log is None:
            self.log = EventLog(self.output_dir, self.rotate, self.storage)
            self.bus.subscribe(self.log.on_message)

    def sinks_for(self, stream: StreamConfig) -> list[EventSink]:
        self.start()
        self.declare(stream.name, self.rules.snapshot()[1])
        if self.clip_errors is not None:
            self.clip_errors.labels(stream.name)  # there at 0 from the start
        return [EventSink(self, stream.name, stream.live)]

    def flush(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Wait until events.jsonl has every message published so far (a stream's sink closing calls it)."""
        if self.log is not None:
            self.log.flush(timeout)

    def close(self) -> None:
        if self.outputs is not None:
            self.outputs.close()  # drains for up to 2 s; what is left is counted as dropped
            self.outputs = None
        if self.log is not None:
            self.log.close()
            self.bus.unsubscribe(self.log.on_message)
            self.log = None

    def footage(self) -> list[tuple[str, float, float]]:
        """(stream, from, to), wall seconds, of each event the store keeps, pre- and post-roll included: retention
        keeps the recording segments they overlap for the events' retention (stream/storage/retention.py). An
        event still going runs to now; one a killed process left open ends at its start."""
        _, events = self.store.query(limit=self.store.history)
        pre, post, now = self.config.preroll_s, self.config.postroll_s, self.wall()
        return [(e["stream"], e["start"] - pre,
                 (e["end"] if e["end"] is not None else e["start"] if e.get("end_reason") else now) + post)
                for e in events]

    # -- files -------------------------------------------------------------------------------------

    def snapshot_path(self, event_id: str) -> Path:
        return self.dir / f"{event_id}.jpg"

    def clip_path(self, event_id: str) -> Path:
        return self.dir / f"{event_id}.mp4"

    def clip_writing(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._writing

    def _clip_started(self, event_id: str) -> None:
        with self._lock:
            self._writing.add(event_id)
        if self.storage is not None:
            self.storage.opened(self.clip_path(event_id))  # retention never deletes a clip being written

    def _clip_done(self, event_id: str) -> None:
        with self._lock:
            self._writing.discard(event_id)
            whole = event_id not in self._clip_errors
        if self.storage is not None:
            self.storage.closed(self.clip_path(event_id))
            if whole:
                self.storage.on_write_ok("events")

    def clip_error(self, event_id: str) -> str | None:
        """Why the event's clip is incomplete (its first write/finalize failure), None if it is not (yet)."""
        with self._lock:
            return self._clip_errors.get(event_id)

    def _clip_failed(self, event_id: str, stream: str, error: str) -> None:
        """Called once per clip, on its writer's thread, at its first failure."""
        with self._lock:
            self._clip_errors[event_id] = error
            while len(self._clip_errors) > max(1, self.config.history):
                self._clip_errors.popitem(last=False)
        if self.clip_errors is not None:
            self.clip_errors.labels(stream).inc()
        if self.storage is not None:
            self.storage.on_write_error("events", error)
        log.error("stream %s: event %s: its clip is incomplete: %s", stream, event_id, error)

    def declare(self, stream: str, rules: Iterable[EventRule]) -> None:
        """The event counters ``stream`` can have under ``rules`` exist at 0 from now on (labels a rule names;
        a "*" rule's labels are only known when they happen)."""
        if self.counter is None:
            return
        keys = {(stream, rule.name, label) for rule in rules if rule.matches_stream(stream)
                for label in rule.labels if label != "*"}
        with self._lock:
            self._counted |= keys  # remove_rule takes them out of /metrics with the rule
        for key in keys:
            self.counter.labels(*key)

    def counted(self, stream: str, rule: str, label: str) -> None:
        if self.counter is not None:
            with self._lock:
                self._counted.add((stream, rule, label))
            self.counter.labels(stream, rule, label).inc()

    def remove_rule(self, name: str) -> EventRule:
        """Take a rule out of force (KeyError: no such rule) and its series out of /metrics: a removed rule's
        counters would otherwise stay for the life of the process."""
        rule = self.rules.remove(name)
        if self.counter is not None:
            with self._lock:
                gone = {key for key in self._counted if key[1] == name}
                self._counted -= gone
            for key in gone:
                with contextlib.suppress(KeyError):
                    self.counter.remove(*key)
        return rule


@dataclass
class OpenEvent:
    event: dict[str, Any]
    clip: Clip | None
    published_peak: float
    published_at: float


class EventSink:
    """One stream's events (a pipeline sink: runs on the stream's output thread)."""

    name = "events"

    def __init__(self, service: EventHub, stream: str, live: bool) -> None:
        self.service = service
        self.config = service.config
        self.stream = stream
        self.live = live
        self.engine = RuleEngine(stream)
        self.ring = PrerollRing(self.config.preroll_s, int(self.config.preroll_max_mb * 1024 * 1024))
        self._rules_version = -1
        self._rules: tuple[EventRule, ...] = ()
        self._clips: list[Clip] = []  # open clip writers, also those of ended events (post-roll)
        self._closing: list[Clip] = []  # closed, still encoding what they were given
        self._ended: dict[Clip, dict[str, Any]] = {}  # clips of ended events still being written: their event
        self._dt: float | None = None  # frame interval (EMA): the clips' nominal frame rate
        self._last_t: float | None = None
        # set by the stream's factory: while a clip is written the source decodes every frame (decode: auto)
        self.demand: FrameDemand | None = None
        # set by the stream's factory (before it reads ``needs_display``) when the stream records another input of
        # the camera: clips are that input's packets, fed by it (no JPEG ring, no frame demand, no display frames)
        self.packet_clips: PacketClips | None = None

    @property
    def needs_display(self) -> bool:
        """Clips made of frames and snapshots want the full-size pictures (Pipeline keeps them then); packet clips
        need none, and a snapshot is then the classified frame as it is."""
        return self.packet_clips is None

    # -- the sink ----------------------------------------------------------------------------------

    def write(self, item: Labelled) -> None:
        frame = item.result.frame
        t = frame.time_s if (not self.live and frame.time_s is not None) else frame.captured_at
        wall = self.service.wall() - max(0.0, self.service.clock() - frame.captured_at)
        if self._ended:
            self._report_finished_clips()
        self._track_rate(t)
        changes = self._refresh_rules()
        rules = [r for r in self._rules if r.matches_stream(self.stream)]
        if self.packet_clips is not None:
            if self._clips or self._closing:
                self._tend_packet_clips(t)
        elif rules or self._clips:
            clip_frame = ClipFrame(t, encode_jpeg(self._clip_picture(item), self.config.jpeg_quality),
                                   item.result.frame.rate or self._fps())
            self.ring.add(clip_frame)
            self._feed_clips(clip_frame)
        smoothed = item.smoothed
        changes += self.engine.observe(t, rules, smoothed.label if smoothed else None,
                                       smoothed.prob if smoothed else 0.0)
        for change in changes:
            self._apply(change, t, wall, item)
        if self._clips and self.demand is not None and self.packet_clips is None:  # start to end of post-roll
            self.demand.need_every_frame("an event clip")

    def close(self) -> None:
        now_t = self._last_t if self._last_t is not None else 0.0
        wall = self.service.wall()
        for change in self.engine.close():
            self._apply(change, now_t, wall, None)
        clips, self._clips = self._clips + self._closing, []
        self._closing = []
        for clip in clips:
            clip.close()
        for clip in clips:
            if not clip.join(CLOSE_TIMEOUT_S):
                log.warning("stream %s: clip %s not finalized within %.0fs", self.stream, clip.path.name,
                            CLOSE_TIMEOUT_S)
        self._report_finished_clips()
        self.service.flush()

    # -- internals ---------------------------------------------------------------------------------

    def _track_rate(self, t: float) -> None:
        if self._last_t is not None and t > self._last_t:
            dt = t - self._last_t
            self._dt = dt if self._dt is None else 0.9 * self._dt + 0.1 * dt
        self._last_t = t

    def _fps(self) -> float:
        return min(120.0, max(1.0, 1.0 / self._dt)) if self._dt else 25.0

    def _refresh_rules(self) -> list[Change]:
        version, rules = self.service.rules.snapshot()
        if version == self._rules_version:
            return []
        self._rules_version, self._rules = version, rules
        self.service.declare(self.stream, rules)
        # an event starts min_duration_s after its first sighting: keep that much more than the pre-roll
        waits = [r.min_duration_s for r in rules if r.matches_stream(self.stream)]
        self.ring.seconds = self.config.preroll_s + max(waits, default=0.0)
        if self.packet_clips is not None:
            self.packet_clips.seconds = self.ring.seconds
        return self.engine.set_rules(rules)

    def _clip_picture(self, item: Labelled):  # noqa: ANN202 - an RGB array
        frame = item.result.frame
        image = frame.display if frame.display is not None else frame.image
        limit = self.config.clip_height
        if limit and image.shape[0] > limit:
            # bilinear: a third of INTER_AREA's time at 720p -> 480 (measured ~1 ms against ~6.5 ms a frame)
            width = max(2, round(image.shape[1] * limit / image.shape[0]))
            image = cv2.resize(image, (width, limit), interpolation=cv2.INTER_LINEAR)
        return draw_overlay(image, self.stream, item.top, item.smoothed, item.fps, item.latency_ms)

    def _tend_packet_clips(self, t: float) -> None:
        """Packet clips are fed, and ended past ``stop_after`` or ``max_clip_s``, on the input's thread; here those
        it ended go to the closing ones, and one whose input sent nothing that far (stalled) is closed."""
        still = []
        for clip in self._clips:
            stalled = ((clip.stop_after is not None and t - clip.stop_after > PACKETS_STALLED_S)
                       or (clip.first_t is not None and t - clip.first_t > self.config.max_clip_s + PACKETS_STALLED_S))
            if stalled:
                clip.close()
            if clip.queue.closed:
                self._closing.append(clip)
            else:
                still.append(clip)
        self._clips = still
        self._closing = [c for c in self._closing if not c.done.is_set()]

    def _feed_clips(self, clip_frame: ClipFrame) -> None:
        still = []
        for clip in self._clips:
            too_long = clip.first_t is not None and clip_frame.t - clip.first_t > self.config.max_clip_s
            if clip.wants(clip_frame.t) and not too_long:
                clip.add(clip_frame)
                still.append(clip)
            else:
                clip.close()  # it finishes on its own thread; close() waits for it
                self._closing.append(clip)
        self._clips = still
        self._closing = [c for c in self._closing if not c.done.is_set()]

    def _apply(self, change: Change, t: float, wall: float, item: Labelled | None) -> None:
        track = change.track
        if change.kind == "start":
            self._start(track, t, wall, item)
            return
        open_event: OpenEvent | None = track.key
        if open_event is None:
            return
        event = open_event.event
        if change.kind == "peak":
            event["peak"] = round(track.peak, 5)
            if (track.peak > open_event.published_peak
                    and t - open_event.published_at >= self.config.update_every_s):
                open_event.published_peak, open_event.published_at = track.peak, t
                _note_clip_error(event, open_event.clip)
                self._publish("update", event)
            return
        # end
        event["end"] = round(wall - max(0.0, t - track.last_seen), 3)
        event["peak"] = round(track.peak, 5)
        event["end_reason"] = change.reason
        if not self.live:
            event["stream_time_end"] = round(track.last_seen, 4)
        track.key = None
        if open_event.clip is not None:
            open_event.clip.stop_after = track.last_seen + self.config.postroll_s
            if change.reason != "gone" or t > open_event.clip.stop_after:
                open_event.clip.close()  # the stream stops or the rule went: the clip ends here
                if open_event.clip in self._clips:
                    self._clips.remove(open_event.clip)
                    self._closing.append(open_event.clip)
            _note_clip_error(event, open_event.clip)
            if not open_event.clip.done.is_set():
                self._ended[open_event.clip] = event  # a failure after this end message: an update follows
        self._publish("end", event)

    def _start(self, track: Track, t: float, wall: float, item: Labelled | None) -> None:
        service = self.service
        start_wall = wall - max(0.0, t - track.start)
        event_id = new_event_id(start_wall)
        event: dict[str, Any] = {
            "id": event_id, "stream": self.stream, "rule": track.rule.name, "label": track.label,
            "start": round(start_wall, 3), "end": None, "peak": round(track.peak, 5),
            "snapshot_url": None, "clip_url": None, "end_reason": None,
        }
        if not self.live:
            event["stream_time_start"] = round(track.start, 4)
            event["stream_time_end"] = None
        if item is not None:
            try:
                self._write_snapshot(service.snapshot_path(event_id), item)
                event["snapshot_url"] = f"/api/events/{event_id}/snapshot.jpg"
                if service.storage is not None:
                    service.storage.on_write_ok("events")
            except OSError as exc:
                if service.storage is not None:
                    service.storage.on_write_error("events", exc)
                log.error("stream %s: event %s: cannot write the snapshot: %s", self.stream, event_id,
                          exc.strerror or exc)
        clip = self._open_clip(event_id, track.start - self.config.preroll_s)
        if clip is not None:
            event["clip_url"] = f"/api/events/{event_id}/clip.mp4"
        track.key = OpenEvent(event, clip, track.peak, t)
        service.counted(self.stream, track.rule.name, track.label)
        log.info("stream %s: event %s started (rule %s, label %s, p=%.2f)", self.stream, event_id,
                 track.rule.name, track.label, track.peak)
        self._publish("start", event)

    def _write_snapshot(self, path: Path, item: Labelled) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_jpeg(item.annotated(self.stream), self.config.jpeg_quality)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)

    def _open_clip(self, event_id: str, since: float) -> Clip | None:
        if len(self._clips) >= self.config.max_open_clips:
            log.warning("stream %s: event %s gets no clip (%d clips are being written: events.max_open_clips)",
                        self.stream, event_id, len(self._clips))
            return None
        service, stream = self.service, self.stream
        path = service.clip_path(event_id)

        def done(_clip: Clip) -> None:
            service._clip_done(event_id)

        def failed(clip: Clip) -> None:
            service._clip_failed(event_id, stream, clip.error or "failed")

        clip: Clip | None
        if self.packet_clips is not None:  # the packets from the keyframe before ``since`` on, fed by the input
            path.parent.mkdir(parents=True, exist_ok=True)
            clip = self.packet_clips.open(event_id, path, since, on_done=done, on_failed=failed)
            if clip is None:
                return None
            service._clip_started(event_id)
            clip.start()
        else:
            frames = self.ring.since(since)
            if not frames:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = ClipWriter(path, self.stream, self._fps, self.live, on_done=done,
                                capacity=max(64, len(frames) + 64), on_failed=failed)
            service._clip_started(event_id)
            writer.start()
            for f in frames:
                writer.add(f)
            clip = writer
        self._clips.append(clip)
        return clip

    def _report_finished_clips(self) -> None:
        """Clips of ended events that are done now: one that failed after the end message gets an ``update``."""
        for clip in [c for c in self._ended if c.done.is_set()]:
            event = self._ended.pop(clip)
            if _note_clip_error(event, clip):
                self._publish("update", event)

    def _publish(self, kind: str, event: dict[str, Any]) -> None:
        self.service.bus.publish({"type": kind, "event": dict(event)})


def _note_clip_error(event: dict[str, Any], clip: Clip | None) -> bool:
    """Put the clip's failure into the event (``clip_error``); True when that is news for the event."""
    if clip is None or clip.error is None or event.get("clip_error") == clip.error:
        return False
    event["clip_error"] = clip.error
    return True
