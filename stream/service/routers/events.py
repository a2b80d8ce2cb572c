"""HTTP API of events: list and read events, their snapshot and clip; list, add and remove rules.

An ``APIRouter`` whose handlers read ``request.app.state.events`` (the pipeline's ``EventHub``,
None when the event engine is off: 404 then). Reads (events, their snapshots and clips, the rules) need
the viewer role, rule changes the admin role (auth.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from sightline.model.echo import bounded
from sightline.stream.event_config import EventRule, label_problem
from sightline.stream.events.hub import EventHub
from sightline.stream.events.store import DuplicateRuleError, TooManyRulesError, is_event_id
from sightline.stream.service.auth import VIDEO, VIEWER
from sightline.stream.service.deps import CHANGE, CLOSING_RESPONSES

NO_STORE = {"Cache-Control": "no-store"}
MAX_PAGE = 500


class Event(BaseModel):
    id: str
    stream: str
    rule: str
    label: str
    start: float
    end: float | None
    peak: float
    snapshot_url: str | None
    clip_url: str | None
    end_reason: str | None = None
    stream_time_start: float | None = None
    stream_time_end: float | None = None
    clip_ready: bool | None = None  # None: no clip; False: still being written, or incomplete (clip_error)
    clip_error: str | None = None  # why the clip is incomplete (a write error cut it short: disk full), or None


class EventPage(BaseModel):
    events: list[Event]
    total: int
    offset: int
    limit: int
    next: str | None


class RuleList(BaseModel):
    rules: list[EventRule]


def events_of(request: Request) -> EventHub:
    service = getattr(request.app.state, "events", None)
    if service is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, ENGINE_OFF)
    return service


def parse_time(value: str | None, name: str) -> float | None:
    """Epoch seconds or ISO 8601 (a time without a zone is UTC)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{name}: not epoch seconds or an ISO 8601 time: {bounded(value, 64)!r}") from None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def find_event(service: EventHub, event_id: str) -> dict[str, Any]:
    if not is_event_id(event_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such event")
    event = service.store.get(event_id)
    if event is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event {event_id!r}")
    return event


def described(service: EventHub, event: dict[str, Any]) -> dict[str, Any]:
    """The event with ``clip_ready`` (finished and whole) and ``clip_error`` (why it is not whole), as of now: the
    hub knows a clip's failure at once, the bus with the event's next message."""
    if event.get("clip_url") is None:
        return {**event, "clip_ready": None, "clip_error": event.get("clip_error")}
    error = event.get("clip_error") or service.clip_error(event["id"])
    ready = error is None and not service.clip_writing(event["id"]) and service.clip_path(event["id"]).exists()
    return {**event, "clip_ready": ready, "clip_error": error}


ENGINE_OFF = "the event engine is off (events.enabled or events.rules)"
OFF: dict[int | str, dict[str, Any]] = {404: {"description": ENGINE_OFF}}
router = APIRouter(tags=["events"], responses=OFF)
changes = APIRouter(tags=["events"], dependencies=CHANGE, responses={**CLOSING_RESPONSES, **OFF})


@router.get("/api/events/rules", response_model=RuleList, summary="The event rules in force",
            dependencies=[Depends(VIEWER)])
async def list_rules(service: EventHub = Depends(events_of)) -> dict[str, Any]:
    return {"rules": [r.model_dump() for r in service.rules.list()]}


@changes.post("/api/events/rules", status_code=status.HTTP_201_CREATED, response_model=EventRule,
              summary="Add an event rule (same fields as an `events.rules` entry; in force for the next frame)",
              responses={409: {"description": "a rule of that name exists"},
                         429: {"description": "events.max_rules rules are in force"},
                         422: {"description": "not a valid rule, or a label the serving model does not have (the "
                                              "answer names the closest class)"}})
async def add_rule(rule: EventRule, request: Request, service: EventHub = Depends(events_of)) -> JSONResponse:
    problem = label_problem(rule, request.app.state.pipeline.classifier.class_names)
    if problem is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"labels: {problem}")
    try:
        service.rules.add(rule)
    except DuplicateRuleError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except TooManyRulesError as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc)) from None
    return JSONResponse(rule.model_dump(), status_code=status.HTTP_201_CREATED,
                        headers={"Location": f"/api/events/rules/{rule.name}"})


@changes.delete("/api/events/rules/{name}", response_model=EventRule,
                summary="Remove an event rule; its open events end now (end_reason 'rule_removed')",
                responses={404: {"description": f"no such rule, or {ENGINE_OFF}"}})
async def remove_rule(name: str, service: EventHub = Depends(events_of)) -> dict[str, Any]:
    try:
        return service.remove_rule(name).model_dump()
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rule named {bounded(name, 80)!r}") from None


@router.get("/api/events", response_model=EventPage, dependencies=[Depends(VIEWER)],
            summary="Events, newest first; filter by stream, label, rule and time (epoch seconds or ISO 8601)")
async def list_events(request: Request, stream: str | None = None, label: str | None = None,
                      rule: str | None = None,
                      since: str | None = Query(None, description="events still going on or ended at/after this"),
                      until: str | None = Query(None, description="events that started at/before this"),
                      limit: int = Query(50, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0),
                      service: EventHub = Depends(events_of)) -> JSONResponse:
    total, page = await asyncio.to_thread(  # a long history takes a while to filter: never on the event loop
        service.store.query, stream, label, rule, parse_time(since, "since"), parse_time(until, "until"), limit, offset)
    following = None
    if offset + len(page) < total:
        params = {**request.query_params, "offset": str(offset + len(page)), "limit": str(limit)}
        following = f"{request.url.path}?{urlencode(params)}"
    body = {"events": [described(service, e) for e in page], "total": total, "offset": offset, "limit": limit,
            "next": following}
    return JSONResponse(EventPage.model_validate(body).model_dump(), headers=NO_STORE)


@router.get("/api/events/{event_id}", response_model=Event, dependencies=[Depends(VIEWER)],
            responses={404: {"description": f"no such event, or {ENGINE_OFF}"}})
async def get_event(event_id: str, service: EventHub = Depends(events_of)) -> dict[str, Any]:
    return described(service, find_event(service, event_id))


@router.get("/api/events/{event_id}/snapshot.jpg", response_class=FileResponse, dependencies=[Depends(VIDEO)],
            summary="The annotated frame that started the event",
            responses={200: {"content": {"image/jpeg": {}}},
                       404: {"description": f"no such event or snapshot, or {ENGINE_OFF}"}})
async def event_snapshot(event_id: str, service: EventHub = Depends(events_of)) -> FileResponse:
    find_event(service, event_id)
    path = service.snapshot_path(event_id)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this event has no snapshot")
    return FileResponse(path, media_type="image/jpeg")


@router.get("/api/events/{event_id}/clip.mp4", response_class=FileResponse, dependencies=[Depends(VIDEO)],
            summary="The event's clip (pre-roll, event, post-roll); byte ranges supported",
            responses={200: {"content": {"video/mp4": {}}},
                       404: {"description": f"no such event or clip, or {ENGINE_OFF}"},
                       503: {"description": "the clip is still being written (post-roll)"}})
async def event_clip(event_id: str, service: EventHub = Depends(events_of)) -> FileResponse:
    event = find_event(service, event_id)
    path = service.clip_path(event_id)
    if event.get("clip_url") is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this event has no clip")
    if service.clip_writing(event_id):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the clip is still being written",
                            headers={"Retry-After": "2"})
    return FileResponse(path, media_type="video/mp4")


router.include_router(changes)
