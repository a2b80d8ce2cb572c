"""A stream's states and the transitions between them, written down once.

Every state change goes through ``StreamStats._change_state``, which checks it against ``TRANSITIONS``;
a change the table does not allow is refused and logged (a late callback cannot bring a stopped
stream back to life). Metrics, readiness and the API all read these sets instead of repeating strings.

    connecting --> live --> reconnecting --> live ...
         |          |            |
         +----------+------------+--> ended | failed | stopped   (terminal)
"""

from __future__ import annotations

from enum import StrEnum


class StreamState(StrEnum):
    CONNECTING = "connecting"  # opening the source, or waiting for a WebRTC publisher
    LIVE = "live"  # frames arrive
    RECONNECTING = "reconnecting"  # the source failed or stalled; retrying with backoff
    ENDED = "ended"  # a file played to its end
    FAILED = "failed"  # given up for good (cannot open, corrupt, internal error)
    STOPPED = "stopped"  # stopped on request


S = StreamState
TERMINAL_STATES = frozenset({S.ENDED, S.FAILED, S.STOPPED})
_LEAVING = TERMINAL_STATES | {S.RECONNECTING}
# state -> the states it may change to. Repeating connecting/reconnecting updates the reason.
TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    S.CONNECTING: frozenset({S.CONNECTING, S.LIVE} | _LEAVING),
    S.LIVE: frozenset({S.LIVE} | _LEAVING),
    S.RECONNECTING: frozenset({S.RECONNECTING, S.CONNECTING, S.LIVE, S.FAILED, S.STOPPED}),
    S.ENDED: frozenset(),
    S.FAILED: frozenset(),
    S.STOPPED: frozenset(),
}
# Eligibility sets, one per question asked elsewhere.
RUNNING_STATES = frozenset(S) - {S.ENDED, S.STOPPED}  # readiness counts these (finished streams neither way)
DOWN_STATES = frozenset({S.RECONNECTING, S.FAILED})  # counted as down by /readyz
WATCHED_STATES = frozenset({S.LIVE})  # the capture watchdog expects frames in these
CLEAR_ERROR_STATES = frozenset({S.CONNECTING, S.LIVE})  # entering these without a reason clears the last error


def allowed(old: StreamState, new: StreamState) -> bool:
    return new in TRANSITIONS[old]
