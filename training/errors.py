"""Errors the training module reports to a user as one line (the CLI root prints them without a traceback)."""

from __future__ import annotations

from sightline.model.errors import SightlineError


class DatasetError(SightlineError):
    """The dataset folder does not have the ImageFolder layout training needs."""


class TrainingError(SightlineError):
    """Training cannot continue (a resume file that does not fit, out of memory at micro-batch 1, ...)."""
