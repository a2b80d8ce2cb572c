"""Logging in and out of the page: ``/login`` (the form), ``POST /login``, ``POST /logout``, ``GET /api/session``.

A login sets a session cookie: a random id (the session itself stays on the server), HttpOnly, SameSite=Strict,
Secure when the request came over TLS, expiring after ``server.session_ttl_s``. Logout ends the session on the
server, not only in the browser. CSRF: the cookie is never sent from another site (SameSite=Strict), and a
state change from another origin is refused by the Origin check (guard.py) whatever it carries.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sightline.stream.service.auth import SESSION_COOKIE, Auth, Principal
from sightline.stream.service.deps import get_auth

router = APIRouter(tags=["session"])
NO_STORE = {"Cache-Control": "no-store"}


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Session(BaseModel):
    user: str | None = Field(description="who is logged in (a user's name, 'token'), or null")
    role: str | None = Field(description="viewer or admin: what this browser may do now (null: it must log in)")
    may_change: bool = Field(description="whether state changes (add or remove streams...) are allowed")
    can_login: bool = Field(description="whether server.users has anyone to log in as")


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.pages["login.html"], headers=NO_STORE)


@router.post("/login", response_model=Session, summary="Log in: sets the session cookie",
             responses={401: {"description": "wrong name or password"},
                        429: {"description": "too many failed logins from this address (Retry-After)"}})
async def login(body: Login, request: Request, auth: Auth = Depends(get_auth)) -> Response:
    session_id, user = await auth.login(body.name, body.password, request.scope)
    answer = Session(user=user.name, role=user.role, may_change=auth.may_change(Principal(user.name, user.role)),
                     can_login=True)
    response = Response(answer.model_dump_json(), media_type="application/json", headers=NO_STORE)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=int(auth.credentials.session_ttl_s), path="/",
                        secure=auth.secure_cookie(request.scope), httponly=True, samesite="strict")
    return response


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Log out: the session ends on the server")
async def logout(request: Request, auth: Auth = Depends(get_auth)) -> Response:
    auth.logout(request.scope)
    response = Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=auth.secure_cookie(request.scope), httponly=True,
                           samesite="strict")
    return response


@router.get("/api/session", response_model=Session, summary="Who this request is: what the page shows and hides")
async def session(request: Request, auth: Auth = Depends(get_auth)) -> Response:
    principal = await auth.who(request.scope)
    answer = Session(user=None if principal is None or principal.name == "anonymous" else principal.name,
                     role=None if principal is None else principal.role, may_change=auth.may_change(principal),
                     can_login=bool(auth.credentials.users))
    return Response(answer.model_dump_json(), media_type="application/json", headers=NO_STORE)
