"""The rule engine: per stream, per (rule, label), turns smoothed labels into event starts and ends.

Pure logic on a timeline the caller chooses (seconds; the stream's clock), no threads, no I/O:
``observe`` returns what happened at this frame and the caller writes files and publishes.

For each rule that matches the stream and each label it names, a candidate begins at the first frame
whose smoothed label is that label with at least ``min_prob``. It becomes an event once it has held
for ``min_duration_s`` (any frame that does not qualify in between resets it); the event's ``start`` is
the candidate's first frame. The event ends once the label has been gone for ``end_after_s``; its
``end`` is the last frame that qualified. No new event of the same rule, stream and label starts
before ``end + cooldown_s``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sightline.stream.event_config import EventRule


@dataclass
class Track:
    """One (rule, label) on one stream."""

    rule: EventRule
    label: str
    candidate_since: float | None = None
    candidate_peak: float = 0.0
    active: bool = False
    start: float = 0.0
    last_seen: float = 0.0
    peak: float = 0.0
    cooldown_until: float = float("-inf")
    key: object = None  # the caller's handle for the open event


@dataclass(frozen=True)
class Change:
    kind: str  # "start" | "peak" | "end"
    track: Track
    reason: str = ""


@dataclass
class RuleEngine:
    stream: str
    tracks: dict[tuple[str, str], Track] = field(default_factory=dict)

    def set_rules(self, rules: Iterable[EventRule]) -> list[Change]:
        """Use these rules from now on. Events of a rule that is gone (or changed) end now ("rule_removed")."""
        wanted = {r.name: r for r in rules if r.matches_stream(self.stream)}
        changes = []
        for key, track in list(self.tracks.items()):
            if wanted.get(key[0]) is not track.rule:
                if track.active:
                    track.active = False
                    changes.append(Change("end", track, "rule_removed"))
                del self.tracks[key]
        return changes

    def rules(self) -> dict[str, EventRule]:
        return {t.rule.name: t.rule for t in self.tracks.values()}

    def observe(self, t: float, rules: Iterable[EventRule], label: str | None, prob: float) -> list[Change]:
        """One frame at time ``t`` whose smoothed label is ``label`` (None: not classified yet)."""
        changes: list[Change] = []
        for rule in rules:
            if not rule.matches_stream(self.stream):
                continue
            if label is not None and rule.matches_label(label) and (rule.name, label) not in self.tracks:
                self.tracks[(rule.name, label)] = Track(rule, label)
        for track in list(self.tracks.values()):
            rule = track.rule
            seen = label == track.label and prob >= rule.min_prob
            if track.active:
                if seen:
                    track.last_seen = t
                    if prob > track.peak:
                        track.peak = prob
                        changes.append(Change("peak", track))
                elif t - track.last_seen >= rule.end_after_s:
                    track.active = False
                    track.cooldown_until = track.last_seen + rule.cooldown_s
                    changes.append(Change("end", track, "gone"))
                continue
            if not seen or t < track.cooldown_until:
                track.candidate_since = None
                continue
            if track.candidate_since is None or t < track.candidate_since:
                track.candidate_since, track.candidate_peak = t, prob
            track.candidate_peak = max(track.candidate_peak, prob)
            if t - track.candidate_since >= rule.min_duration_s:
                track.active = True
                track.start, track.last_seen, track.peak = track.candidate_since, t, track.candidate_peak
                track.candidate_since = None
                changes.append(Change("start", track))
        return changes

    def close(self, reason: str = "stream_ended") -> list[Change]:
        """The stream stopped: every open event ends at its last sighting."""
        changes = []
        for track in self.tracks.values():
            if track.active:
                track.active = False
                changes.append(Change("end", track, reason))
        return changes
