"""Errors the classifier raises for bad input. Each carries a one-line message fit for a CLI."""

from __future__ import annotations


class SightlineError(Exception):
    """Base of every error Sightline reports to a user as one line, without a traceback."""


class ModelLoadError(SightlineError):
    """A model source cannot be turned into a servable bundle."""


class ImageLoadError(SightlineError):
    """An image file is missing, unreadable or not an image; or an array is not an image of a usable shape."""


class DeviceError(SightlineError):
    """The requested device or precision is not available here, or a batch does not fit in its memory."""


class ConfigError(SightlineError):
    """A configuration file is missing, not YAML, or fails validation (all problems listed)."""
