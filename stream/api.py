"""The HTTP API moved to ``sightline.stream.service`` (one router per resource); these names stay importable."""

from __future__ import annotations

from sightline.stream.service.app import DETAIL_LIMIT, create_app, validation_message
from sightline.stream.service.deps import NAME_ECHO
from sightline.stream.service.routers.previews import LABELS_HEADER
from sightline.stream.service.routers.streams import MediaRootError, add_stream_checked
from sightline.stream.service.status import Readiness, readiness
from sightline.stream.service_guard import bearer_token_matches

__all__ = ["DETAIL_LIMIT", "LABELS_HEADER", "NAME_ECHO", "MediaRootError", "Readiness", "add_stream_checked",
           "bearer_token_matches", "create_app", "readiness", "validation_message"]
