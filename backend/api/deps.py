"""Shared by every router: problem+json replies (RFC 9457), JSON encoding that cannot fail,
and the request dependencies (engine, session, settings, read cache) as Annotated aliases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from backend.db import json_safe
from backend.models import (
    Job,
)
from backend.readcache import ReadCache
from backend.settings import Settings
from plugin.config import error_list

PROBLEM = "application/problem+json"
# Fields naming something to read: a hub name or a path under the data roots (resume: a path or "last").




INT64_MAX = 2**63 - 1  # ids and offsets past it would overflow the database's integers
JobId = Annotated[int, PathParam(ge=1, le=INT64_MAX)]
TemplateId = Annotated[int, PathParam(ge=1, le=INT64_MAX)]
Offset = Annotated[int, Query(ge=0, le=INT64_MAX)]


# ------------------------------------------------------------------ problems (RFC 9457)
class ProblemResponse(JSONResponse):
    media_type = PROBLEM

    def render(self, content: Any) -> bytes:
        # A field name or message may carry what the client sent (a lone surrogate, a NaN): never a 500.
        return json.dumps(json_safe(content), allow_nan=False, separators=(",", ":")).encode()


def problem(status: int, detail: str, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return ProblemResponse(body, status_code=status, headers=headers)


@lru_cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def to_json(value: Any, kind: Any) -> bytes:
    """`value` as `kind` in JSON. A row stored before text was checked (a lone surrogate, which no UTF-8
    encoder takes) comes out with U+FFFD in its place instead of failing every list that shows it."""
    adapter = _adapter(kind)
    data = adapter.validate_python(value, from_attributes=True)
    try:
        return adapter.dump_json(data)
    except ValueError:
        return json.dumps(json_safe(adapter.dump_python(data, mode="json")), allow_nan=False).encode()


def reply(value: Any, kind: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json(value, kind), status_code=status, headers=headers, media_type="application/json")


class Problem(HTTPException):
    """An HTTPException that carries {field, message} errors into the problem body."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.errors = errors


def request_errors(exc: RequestValidationError) -> tuple[int, list[dict[str, str]]]:
    """FastAPI's errors as [{field, message}]; malformed JSON is a 400, anything else a 422."""
    out, status = [], 422
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:] if (loc[0] != "body" or len(loc) > 1) else ["body"]
        field = ".".join(loc) or "body"
        kind = err.get("type", "")
        message = err.get("msg", "")
        if kind == "json_invalid":
            status, field = 400, "body"
            message = f"malformed JSON: {(err.get('ctx') or {}).get('error', message)}"
        elif kind == "extra_forbidden":
            message = f"unknown key {field!r}"
        elif kind == "missing" and field == "body":
            message = "a JSON body is required"
        out.append({"field": field, "message": message})
    return status, out


def validation_problem(exc: ValidationError) -> Problem:
    errors = error_list(exc)
    return Problem(422, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)


# ------------------------------------------------------------------ dependencies
# async: FastAPI would run a plain `def` dependency in a worker thread, a costly hop for an attribute read.
async def engine_dep(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def session_dep(engine: Annotated[Engine, Depends(engine_dep)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


async def settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def cache_dep(request: Request) -> ReadCache:
    return request.app.state.read_cache  # type: ignore[no-any-return]


EngineDep = Annotated[Engine, Depends(engine_dep)]
SessionDep = Annotated[Session, Depends(session_dep)]
SettingsDep = Annotated[Settings, Depends(settings_dep)]
CacheDep = Annotated[ReadCache, Depends(cache_dep)]


def job_or_404(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise Problem(404, f"job {job_id} does not exist", [{"field": "job_id", "message": "no such job"}])
    return job


