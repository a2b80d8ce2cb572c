"""Event configuration: rules (which streams, labels, how sure, how long) and the clips' shape.

Imported by ``stream/config.py`` as ``RunConfig.events``; documented in docs/events.md.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from sightline.model.yamlconfig import StrictModel
from sightline.stream.events.notifiers.config import EventOutputsConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # as stream names: safe in URLs, topics and file names


class EventRule(StrictModel):
    """One rule: an event starts when a matching stream's smoothed label is one of ``labels`` with at
    least ``min_prob`` for ``min_duration_s``, and ends when it has been gone for ``end_after_s``."""

    name: str = Field(pattern=NAME_PATTERN)
    streams: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                               description="stream names, or '*' for every stream")
    labels: list[str] = Field(min_length=1, description="class names (as the model names them), or '*' for any")
    min_prob: float = Field(0.5, ge=0, le=1, description="smallest smoothed probability that counts as seen")
    min_duration_s: float = Field(1.0, ge=0, le=3600, description="seen this long before the event starts")
    end_after_s: float = Field(2.0, ge=0, le=3600, description="gone this long before the event ends")
    cooldown_s: float = Field(10.0, ge=0, le=86400,
                              description="after an event ends, no new event of this rule, stream and label "
                                          "for this long (from the event's end)")

    @field_validator("streams")
    @classmethod
    def _stream_names(cls, streams: list[str]) -> list[str]:
        import re

        for s in streams:
            if s != "*" and not re.match(NAME_PATTERN, s):
                raise ValueError(f"not a stream name or '*': {s[:80]!r}")
        return streams

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: list[str]) -> list[str]:
        for label in labels:
            if not label or len(label) > 200 or any(ord(c) < 32 for c in label):
                raise ValueError("labels are 1-200 printable characters")
        return labels

    def matches_stream(self, stream: str) -> bool:
        return "*" in self.streams or stream in self.streams

    def matches_label(self, label: str) -> bool:
        return "*" in self.labels or label in self.labels


class EventsConfig(StrictModel):
    enabled: bool | None = Field(None, description="run the event engine; default: on when rules are configured "
                                                   "(turn it on with no rules to add rules through the API)")
    rules: list[EventRule] = Field(default_factory=list)
    preroll_s: float = Field(3.0, ge=0, le=30, description="seconds of video kept before each event's start")
    postroll_s: float = Field(3.0, ge=0, le=60, description="seconds of video after each event's end")
    max_clip_s: float = Field(300.0, gt=0, le=3600, description="a clip is closed after this long (the event goes on)")
    clip_height: int = Field(480, ge=0, le=4320,
                             description="clips and the pre-roll are scaled down to at most this many lines "
                                         "(0: the source's size)")
    jpeg_quality: int = Field(75, ge=10, le=100, description="JPEG quality of snapshots and of pre-roll frames")
    preroll_max_mb: float = Field(32.0, gt=0, le=4096,
                                  description="pre-roll memory per stream at most (oldest frames go first)")
    max_open_clips: int = Field(4, ge=1, le=64, description="clips written at once per stream (an event beyond "
                                                            "gets a snapshot, no clip)")
    log: bool = Field(True, description="append every event message to output_dir/events.jsonl")
    history: int = Field(10_000, ge=10, le=1_000_000,
                         description="events kept for GET /api/events (read back from events.jsonl at start)")
    outputs: EventOutputsConfig = Field(default_factory=EventOutputsConfig,
                                        description="MQTT and webhooks (docs/events-outputs.md)")
    update_every_s: float = Field(5.0, gt=0, le=3600,
                                  description="an ongoing event's peak probability is published (type 'update') "
                                              "at most this often, when it rose")

    @model_validator(mode="after")
    def _unique_rules(self) -> EventsConfig:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rules: duplicate rule name(s) {dup}")
        return self

    @property
    def active(self) -> bool:
        return self.enabled if self.enabled is not None else bool(self.rules)
