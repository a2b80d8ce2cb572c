"""Errors the classifier raises for bad input. Each carries a one-line message fit for a CLI."""

from __future__ import annotations


class SightlineError(Exception):
    """Base of every error Sightline reports to a user as one line, without a traceback."""


class ModelLoadError(SightlineError):
    """A model source cannot be turned into a servable bundle."""


class ImageLoadError(SightlineError):
    """An image file is missing, unreadable, or not an image."""


class DeviceError(SightlineError):
    """The requested device or precision is not available here."""


class ConfigError(SightlineError):
    """A configuration file is missing, not YAML, or fails validation (all problems listed)."""
