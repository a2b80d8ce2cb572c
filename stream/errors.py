"""Streaming errors. Messages name the stream, never the credentials in its URL."""

from __future__ import annotations

from sightline.model.errors import SightlineError


class StreamError(SightlineError):
    """A problem with one stream; the others carry on."""


class SourceOpenError(StreamError):
    """The source could not be opened (unreachable, refused, not a video)."""


class SourceReadError(StreamError):
    """The source failed while reading (corrupt data, connection dropped, stalled)."""


# -- the lifecycle of streams (the API maps each to a status code) --


class UnknownStreamError(StreamError):
    pass


class StreamBusyError(StreamError):
    """The stream is being removed (API: 409); a retry after it is gone succeeds."""


class TooManyStreamsError(StreamError):
    """``server.max_streams`` streams are registered (API: 429)."""


class DuplicateStreamError(StreamError):
    pass


class StreamOutputError(StreamError):
    """A stream's outputs (prediction log, recording) cannot be opened (API: 503); nothing is registered."""


class PublisherConnectedError(StreamError):
    """A publisher is connected to a ``webrtc://`` stream; a second one is refused (API: 409)."""


def describe_av_error(exc: BaseException) -> str:
    """FFmpeg's reason without the file name PyAV appends (it may hold credentials)."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return str(strerror)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__
