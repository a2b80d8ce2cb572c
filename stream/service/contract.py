"""The OpenAPI document, made to say what the service answers: no more (no ``default``, no 422 that cannot
happen), no less (ServiceGuard's refusals, one error body for every refusal).

FastAPI documents each route's own responses; three things it cannot know are settled here, once:

- Every refusal has one body, ``ErrorBody``: ``{"detail": "<one line per problem>"}``, plus ``errors`` (the
  field errors) when the request failed validation (app.py's handler). FastAPI's own ``HTTPValidationError``
  (``detail`` as a list) describes a body this service never sends.
- FastAPI adds a 422 to every operation with a parameter; one whose parameters are all free strings in the
  path and that has no body can never fail validation: that 422 is dropped.
- ``ServiceGuard`` (guard.py) answers before any route: 403 (a Host not served here; for POST/PUT/PATCH/DELETE
  also a foreign Origin), 400 (a malformed Content-Length) and 413 (a body over ``server.max_body_bytes``),
  on every operation.
- Who may call an operation is its route's ``Requirement`` (auth.py): the document declares the security schemes
  (bearer, cookie, basic, the metrics token), each operation's ``security``, and its 401 and 403.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from sightline.stream.service.auth import SECURITY_SCHEMES, requirement_of, security_of
from sightline.stream.service.guard import STATE_CHANGING
from starlette.routing import BaseRoute

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
FASTAPI_VALIDATION = "#/components/schemas/HTTPValidationError"
ANY_STRING = ({"type": "string"}, {"anyOf": [{"type": "string"}, {"type": "null"}]})


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: 'body', 'query', 'path' and the field's path")
    msg: str
    type: str | None = None


class ErrorBody(BaseModel):
    """What every refusal (4xx, 5xx) carries, from a route, from FastAPI or from ServiceGuard."""

    detail: str = Field(description="what was refused and why, one line per problem; no secret is echoed")
    errors: list[FieldError] | None = Field(None, description="the field errors, when the request failed validation")


def guard_responses(method: str, has_body: bool) -> dict[str, str]:
    """ServiceGuard's refusals of a request to an operation (guard.py's rules, in its order)."""
    host = "Host not served here (server.allowed_hosts)"
    return {"403": f"{host}, or a cross-origin request (server.allowed_origins)" if method in STATE_CHANGING else host,
            "400": "malformed request: a Content-Length that is not a number"
                   + (", or a body that cannot be decoded as JSON text" if has_body else ""),
            "413": "request body over server.max_body_bytes"}


def can_fail_validation(operation: dict[str, Any]) -> bool:
    """Whether a request to ``operation`` can get FastAPI's 422: it takes a body, or a parameter that is required
    outside the path or whose schema is more than "any string"."""
    if "requestBody" in operation:
        return True
    for param in operation.get("parameters", ()):
        if param.get("required") and param["in"] != "path":
            return True
        free = {k: v for k, v in param.get("schema", {}).items() if k not in ("title", "description")}
        if free not in ANY_STRING:
            return True
    return False


def _merge(response: dict[str, Any], description: str) -> None:
    own = response.get("description")
    response["description"] = f"{own}; or {description}" if own else description


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for ``app``, corrected as the module docstring says."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         openapi_version=app.openapi_version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorBody"] = error_schema
    schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    _declare_security(schema, app.routes)
    for operations in schema["paths"].values():
        for method, operation in operations.items():
            responses = operation["responses"]
            auto = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if auto.get("$ref") == FASTAPI_VALIDATION and not can_fail_validation(operation):
                del responses["422"]
            for code, description in guard_responses(method.upper(), "requestBody" in operation).items():
                _merge(responses.setdefault(code, {}), description)
            for code, response in responses.items():
                if int(code) < 400:
                    continue
                json_schema = response.get("content", {}).get("application/json", {}).get("schema")
                if not json_schema or json_schema.get("$ref") == FASTAPI_VALIDATION:
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
            operation["responses"] = dict(sorted(responses.items()))
    if f"'{FASTAPI_VALIDATION}'" not in repr(schema["paths"]):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)  # only HTTPValidationError's items
    return schema


def _declare_security(schema: dict[str, Any], routes: list[BaseRoute]) -> None:
    for route in iter_route_contexts(routes):
        need = requirement_of(route.original_route)
        operations = schema["paths"].get(route.path_format or "", {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if need is None or operation is None:
                continue
            operation["security"] = security_of(need)
            operation["responses"]["401"] = {"description": "no credential, or a wrong one (WWW-Authenticate says "
                                                            "which kind)"}
            if need.basic:
                operation["responses"]["429"] = {"description": "too many failed Basic logins from this address"}
            if need.role == "admin":
                operation["responses"]["403"] = {"description": "the credential's role may not do this (admin only)"}


def install(app: FastAPI) -> None:
    """``app.openapi`` (and so ``/openapi.json``) serves ``openapi_document``, made once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
