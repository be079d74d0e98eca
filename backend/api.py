"""HTTP API for the job queue (FastAPI), with the worker running inside the server process.

    python main.py serve [--host 127.0.0.1] [--port 8000] [--db URL] [--no-worker]
    ANGLE_LAB_API_TOKEN=secret python main.py serve --host 0.0.0.0      # a public bind needs a token

Routes: POST/GET /jobs, GET/DELETE /jobs/{id}, POST /jobs/{id}/stop|retry, GET /jobs/{id}/events (SSE),
/logs, /artifacts, /artifacts/{path}, /artifacts.zip; POST/GET /templates, POST /templates/{id}/queue;
GET /plugin (index.json), GET /health, and the lab page at / (backend/ui.py). Every 4xx is
application/problem+json with one {field, message} per problem. OpenAPI at /openapi.json, docs at /docs.

Every caller stays inside the service's data (README, "Security"): a job writes only under the output
roots (<data_dir>/runs and ANGLE_LAB_OUTPUT_ROOTS) and reads only hub names or paths under the data roots
(<data_dir>/datasets, ANGLE_LAB_DATA_ROOTS, the output roots); the file routes serve only a job's own folder
there. Without a token only loopback Host names are answered and writes must come from the same origin.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import zipfile
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import jobs, templates, ui
from backend.db import get_engine, init_db, json_safe, read_session
from backend.models import (
    FINAL,
    Job,
    JobCreate,
    JobList,
    JobPublic,
    JobStatus,
    JobSummary,
    TemplateCreate,
    TemplatePublic,
    TemplateQueue,
)
from backend.readcache import ReadCache
from backend.settings import REPO_ROOT, Settings, get_settings
from plugin.config import error_list
from plugin.modifiers import preflight

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
SSE_POLL_S = 0.25  # how often an event stream looks at its job row
SSE_KEEPALIVE_S = 15.0  # a comment line so proxies do not close an idle stream
LOG_CHUNK_MAX = 1 << 20
ZIP_CHUNK = 1 << 20
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
PROGRESS_KEYS = ("step", "max_steps", "epoch", "loss", "learning_rate", "eta_s", "phase")
INT64_MAX = 2**63 - 1  # ids and offsets past it would overflow the database's integers
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Fields naming something to read: a hub name or a path under the data roots (resume: a path or "last").
INPUT_FIELDS = ("train_name_or_path", "valid_name_or_path", "test_name_or_path", "model_name_or_path",
                "tokenizer_name_or_path", "teacher_name_or_path", "pretrained_lora_path", "resume_from_checkpoint")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # `name` or `org/name`
DEFAULT_RUN_NAME = re.compile(r"job-\d+")  # <runs>/job-N is job N's own folder
NAME_MAX = 255  # bytes in one file name, on every common file system
DATA_ROOTS = "the data roots (<data_dir>/datasets, ANGLE_LAB_DATA_ROOTS, or an earlier job's output)"
OUTSIDE_INPUT = f"must be a hub name or a path inside {DATA_ROOTS}"
OUTSIDE_PATH = f"must be a path inside {DATA_ROOTS}"
PATH_ONLY = ("config.resume_from_checkpoint", "launch.config_file")  # never a hub name
OUTSIDE_OUTPUT = ("must be a folder name (created in <data_dir>/runs) or a path inside the output roots "
                  "(<data_dir>/runs, ANGLE_LAB_OUTPUT_ROOTS)")

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


def _request_errors(exc: RequestValidationError) -> tuple[int, list[dict[str, str]]]:
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


def _validation_problem(exc: ValidationError) -> Problem:
    errors = error_list(exc)
    return Problem(422, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)


# ------------------------------------------------------------------ middleware (pure ASGI: cheap, no body buffering)
class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        # An HTTPException: FastAPI re-raises those from body parsing instead of turning them into a 400.
        super().__init__(413, f"request body larger than {limit} bytes")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, port: int | None, allowed: Sequence[str]) -> bool:
    """A Host header a tokenless server answers: a loopback name on the bound port, or one of `allowed`
    (a name, any port, or name:port). A DNS-rebinding page reaches us under its own name, so it is refused."""
    host = host.strip().lower()
    if "*" in allowed or host in allowed:
        return True
    if not host or any(c in host for c in "@/\\?# "):
        return False
    try:
        parts = urlsplit(f"//{host}")
        name, given = parts.hostname or "", parts.port
    except ValueError:
        return False
    if name in allowed:
        return True
    return is_loopback(name) and (given is None or port is None or given == port)


def cross_site(host: str, headers: dict[str, str]) -> tuple[str, str] | None:
    """(header, why) when a browser sent this request from another site; None for same-origin or non-browser
    requests. Only a tokenless server needs it: a page elsewhere cannot add a bearer token."""
    origin = headers.get("origin")
    if origin is not None:
        try:
            parts = urlsplit(origin)
            same = parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()
        except ValueError:
            same = False
        return None if same else ("origin", f"a write from another origin ({origin[:200]!r}) needs a token")
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return "sec-fetch-site", "a write from another site needs a token"
    return None


class Guard:
    """Bearer token on every route but /health and the lab page (ui.is_public), the body size limit
    (Content-Length or counted), and without a token: loopback Host names only, same-origin writes only."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int, allowed_hosts: Sequence[str] = ()) -> None:
        self.app, self.token, self.max_body = app, token, max_body
        self.allowed_hosts = [h.strip().lower() for h in allowed_hosts]

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[str, str] | None:
        host = headers.get("host")
        if host is None:
            return None  # HTTP/1.0 without Host: not a browser
        server = scope.get("server")
        if not host_allowed(host, server[1] if server else None, self.allowed_hosts):
            return "host", (f"Host {host[:200]!r} is not served without a token: use 127.0.0.1 or localhost, "
                            "list it in ANGLE_LAB_ALLOWED_HOSTS, or set ANGLE_LAB_API_TOKEN")
        if scope.get("method", "GET") in SAFE_METHODS:
            return None
        return cross_site(host, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not self.token and (refused := self._refusal(scope, headers)) is not None:
            field, message = refused
            await problem(403, message, [{"field": field, "message": message}])(scope, receive, send)
            return
        if self.token and not ui.is_public(scope.get("path", "")):
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), self.token.encode()):
                await problem(401, "missing or wrong bearer token (Authorization: Bearer <ANGLE_LAB_API_TOKEN>)",
                              headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await problem(413, f"request body larger than {self.max_body} bytes",
                          [{"field": "body", "message": f"at most {self.max_body} bytes"}])(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge(self.max_body)
            return message

        await self.app(scope, limited, send)


# ------------------------------------------------------------------ dependencies
# async: FastAPI would run a plain `def` dependency in a worker thread, a costly hop for an attribute read.
async def _engine(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def _session(engine: Annotated[Engine, Depends(_engine)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


async def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _cache(request: Request) -> ReadCache:
    return request.app.state.read_cache  # type: ignore[no-any-return]


EngineDep = Annotated[Engine, Depends(_engine)]
SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
CacheDep = Annotated[ReadCache, Depends(_cache)]


def _job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise Problem(404, f"job {job_id} does not exist", [{"field": "job_id", "message": "no such job"}])
    return job


# ------------------------------------------------------------------ confinement: what a job may read and write
def _resolve(value: str, base: Path = REPO_ROOT) -> Path | None:
    """A job's path as its trainer sees it (relative ones from the project folder, its cwd), symlinks followed."""
    try:
        return (base / Path(value).expanduser()).resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long, say
        return False


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _hub_name(value: str) -> bool:
    """`name` or `org/name` that is not also a local path (the trainer tries a local path first)."""
    return (HUB_NAME.fullmatch(value) is not None and not value.lower().endswith(DATA_SUFFIXES)
            and not _exists(REPO_ROOT / value))


def _service_private(path: Path, settings: Settings) -> bool:
    """The data dir's own files (jobs.db, ...): inside it but outside its runs and datasets folders."""
    return path.is_relative_to(settings.data_dir) and not _inside(
        path, (settings.runs_dir.resolve(), settings.datasets_dir.resolve()))


def input_errors(spec: JobCreate, settings: Settings) -> list[dict[str, str]]:
    """Every path an API caller's job would read is a hub name or lies inside the data roots. The message is
    the same whether or not the path exists: a caller learns nothing about folders outside them."""
    roots = settings.all_data_roots
    c = spec.config
    fields = [(f"config.{name}", getattr(c, name)) for name in INPUT_FIELDS]
    errors = []
    for field, value in [*fields, ("launch.config_file", spec.launch.config_file)]:
        if not value or (field == "config.resume_from_checkpoint" and value == "last"):
            continue
        if field not in PATH_ONLY and _hub_name(value):
            continue
        path = _resolve(value)
        if path is None or not _inside(path, roots) or _service_private(path, settings):
            errors.append({"field": field, "message": OUTSIDE_PATH if field in PATH_ONLY else OUTSIDE_INPUT})
        elif not _exists(path) or (field == "launch.config_file" and not path.is_file()):
            errors.append({"field": field, "message": f"no such file or folder: {value!r}"})
    return errors


def output_error(path: Path, settings: Settings) -> str | None:
    """Why `path` (resolved) may not be a job's output folder, or None. It must lie strictly inside an output
    root, and neither hold nor sit in a folder the service or the operator keeps there (the project, the data
    dir, a data root): a job writing there would overwrite them, and the file routes would serve them."""
    roots = [r for r in settings.all_output_roots if path.is_relative_to(r) and path != r]
    if not roots:
        return OUTSIDE_OUTPUT
    nearest = max(roots, key=lambda r: len(r.parts))
    for kept in (REPO_ROOT, settings.data_dir, settings.datasets_dir.resolve(), *settings.all_data_roots):
        if kept.is_relative_to(path):
            return f"must not hold {kept.name or kept!s}, a folder the service keeps: " + OUTSIDE_OUTPUT
        if path.is_relative_to(kept) and kept != nearest and kept.is_relative_to(nearest):
            return f"must not be inside {kept.name or kept!s}, a folder the service keeps: " + OUTSIDE_OUTPUT
    return None


def confine_save_dir(value: str, settings: Settings) -> tuple[Path | None, str | None]:
    """An API caller's save_dir as (absolute folder, None), or (None, why not). A relative one is a name in
    the runs dir (never '..' or '~'); job-N names there are left to job N."""
    runs = settings.runs_dir.resolve()
    if not Path(value).is_absolute():
        parts = PurePosixPath(value).parts
        if value.startswith("~") or "\\" in value or any(p in ("..", ".") for p in parts):
            return None, OUTSIDE_OUTPUT
    if any(len(part.encode("utf-8")) > NAME_MAX for part in PurePosixPath(value).parts):
        return None, f"a folder name is at most {NAME_MAX} bytes"  # the trainer could not create it
    path = _resolve(value, runs)
    if path is None:
        return None, OUTSIDE_OUTPUT
    why = output_error(path, settings)
    if why is None and path.is_relative_to(runs) and DEFAULT_RUN_NAME.fullmatch(path.relative_to(runs).parts[0]):
        why = "job-N folders in <data_dir>/runs belong to job N: choose another name, or leave save_dir empty"
    return (None, why) if why else (path, None)


def check_spec(spec: JobCreate, settings: Settings) -> Path | None:
    """What the schema cannot check: paths confined and existing, sizes against the model's config.json.
    Returns the absolute save_dir when the caller chose one. Raises a 422 naming every bad field."""
    errors = input_errors(spec, settings)
    save_dir = None
    if spec.config.save_dir and "save_dir" in spec.config.model_fields_set:
        save_dir, why = confine_save_dir(spec.config.save_dir, settings)
        if why:
            errors.append({"field": "config.save_dir", "message": why})
    if not errors:  # matryoshka_dims / ese_compression_size vs the model's size (reads only its config.json)
        errors += [{"field": f"config.{field}", "message": msg} for field, msg in preflight(spec.config)]
    if errors:
        raise Problem(422, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)
    return save_dir


def _queue(engine: Engine, settings: Settings, spec: JobCreate, job_data: dict[str, Any] | None = None) -> Response:
    save_dir = check_spec(spec, settings)
    if save_dir is not None:
        spec.config.save_dir = str(save_dir)  # absolute here: the runner and trainer run in another cwd
    try:
        job = jobs.create_job(engine, spec, settings.runs_dir, job_data=job_data)
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "config.save_dir", "message": str(e)}]) from None
    return reply(job, JobPublic, 202, {"Location": f"/jobs/{job.id}"})


# ------------------------------------------------------------------ files
def output_dir(job: Job, settings: Settings) -> Path:
    """The job's own folder when it lies where jobs may write (a row from before confinement, or a job queued
    from the command line, may point anywhere: those are not served). 404 otherwise."""
    save_dir = job.config.get("save_dir")
    path = _resolve(save_dir) if isinstance(save_dir, str) and save_dir else None
    if path is None or output_error(path, settings) is not None:
        message = "the job's output folder is outside the output roots: not served over HTTP"
        raise Problem(404, message, [{"field": "config.save_dir", "message": message}])
    return path


def safe_file(root: Path, rel: str) -> Path | None:
    """`rel` inside `root` as a real file, or None: no absolute paths, no '..', no symlink leading outside."""
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        return None
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return None
    try:
        real_root = root.resolve(strict=True)
        real = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(real_root) or not real.is_file():
        return None
    return real


def walk_files(root: Path, include_checkpoints: bool = True) -> list[tuple[Path, str]]:
    """(real path, relative name) of every regular file under root; symlinks leaving root are skipped."""
    try:
        real_root = root.resolve(strict=True)
    except OSError:
        return []
    out = []
    for folder, dirs, files in os.walk(real_root):
        rel_folder = Path(folder).relative_to(real_root)
        if not include_checkpoints and rel_folder == Path("."):
            dirs[:] = [d for d in dirs if d != "checkpoints"]
        dirs.sort()
        for name in sorted(files):
            rel = (rel_folder / name).as_posix()
            real = safe_file(real_root, rel)
            if real is not None:
                out.append((real, rel))
    return out


class _Sink:
    """A write-only stream zipfile can write to without seeking (it then uses data descriptors)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def pop(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def zip_stream(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    """The files as a zip, produced chunk by chunk: memory stays at one chunk whatever the model size."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as zf:  # type: ignore[arg-type]
        for path, arc in files:
            info = zipfile.ZipInfo.from_file(path, arc)
            info.compress_type = zipfile.ZIP_STORED  # weights barely compress; deflate would cost CPU for nothing
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                while chunk := src.read(ZIP_CHUNK):
                    dst.write(chunk)
                    if data := sink.pop():
                        yield data
            if data := sink.pop():
                yield data
    if data := sink.pop():
        yield data


# ------------------------------------------------------------------ response schemas
class ArtifactFile(BaseModel):
    path: str
    size: int


class ArtifactList(BaseModel):
    job_id: int
    output_dir: str
    files: list[ArtifactFile]
    total_bytes: int


class LogChunk(BaseModel):
    job_id: int
    stream: str
    path: str
    size: int = 0
    offset: int = 0
    next_offset: int = 0
    text: str = ""


class Health(BaseModel):
    status: str
    database: bool
    worker: bool | None


# ------------------------------------------------------------------ routes
router = APIRouter()


@router.post("/jobs", status_code=202, response_model=JobPublic, tags=["jobs"])
def create_job(spec: JobCreate, engine: EngineDep, settings: SettingsDep) -> Response:
    """Validate and queue a training job; Location points to it."""
    return _queue(engine, settings, spec, {"source": "api"})


@router.get("/jobs", response_model=JobList, tags=["jobs"])
async def list_jobs(engine: EngineDep, cache: CacheDep, status: JobStatus | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0,
              view: Literal["summary", "full"] = "summary") -> Response:
    """Jobs newest first, optionally only one status; `view=full` returns whole rows."""

    def build() -> bytes:
        rows = jobs.list_jobs(engine, status, limit, offset)
        items = [JobPublic.model_validate(j) for j in rows] if view == "full" else [JobSummary.of(j) for j in rows]
        return to_json(JobList(items=items, total=jobs.count_jobs(engine, status), limit=limit, offset=offset), JobList)

    # Serialized here, once (a returned model would be validated and encoded again), and reused by every
    # poller until the database changes.
    return Response(await cache.get(("list", status, limit, offset, view), build), media_type="application/json")


@router.get("/jobs/{job_id}", response_model=JobPublic, tags=["jobs"])
async def get_job(job_id: JobId, engine: EngineDep, cache: CacheDep) -> Response:
    """One job: status, progress, metrics, timings, error."""

    def build() -> bytes:
        with read_session(engine) as session:
            return to_json(_job(session, job_id), JobPublic)

    return Response(await cache.get(("job", job_id), build), media_type="application/json")


@router.post("/jobs/{job_id}/stop", status_code=202, response_model=JobPublic, tags=["jobs"])
def stop_job(job_id: JobId, engine: EngineDep) -> Response:
    """QUEUED ends STOPPED now; RUNNING checkpoints at its next step and ends STOPPED. 409 if already finished."""
    try:
        return reply(jobs.request_stop(engine, job_id, "requested through the API"), JobPublic, 202)
    except jobs.JobNotFound as e:
        raise Problem(404, str(e), [{"field": "job_id", "message": "no such job"}]) from None
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "status", "message": str(e)}]) from None


@router.post("/jobs/{job_id}/retry", status_code=202, response_model=JobPublic, tags=["jobs"])
def retry_job(job_id: JobId, engine: EngineDep) -> Response:
    """Queue a FAILED or STOPPED job again (resuming from its newest checkpoint). 409 otherwise."""
    try:
        job = jobs.retry(engine, job_id)
    except jobs.JobNotFound as e:
        raise Problem(404, str(e), [{"field": "job_id", "message": "no such job"}]) from None
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "status", "message": str(e)}]) from None
    return reply(job, JobPublic, 202, {"Location": f"/jobs/{job.id}"})


@router.delete("/jobs/{job_id}", status_code=204, tags=["jobs"])
def delete_job(job_id: JobId, engine: EngineDep, settings: SettingsDep) -> Response:
    """Delete a job that is not running (409 while it runs), and its output folder when that lies in the runs dir
    and no other job's output is in it: a later job never finds a deleted job's files."""
    try:
        jobs.delete_job(engine, job_id, settings.runs_dir)
    except jobs.JobNotFound as e:
        raise Problem(404, str(e), [{"field": "job_id", "message": "no such job"}]) from None
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "status", "message": str(e)}]) from None
    return Response(status_code=204)


def _sse(event: str, data: dict[str, Any], seq: int) -> bytes:
    # json_safe: a NaN loss would otherwise be sent as `NaN`, which JSON.parse in the page refuses.
    return f"id: {seq}\nevent: {event}\ndata: {json.dumps(json_safe(data), default=str, allow_nan=False)}\n\n".encode()


@router.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: JobId, engine: EngineDep) -> StreamingResponse:
    """Server-Sent Events: `status`, `progress` and `metrics` as they change; the stream ends with the job."""
    try:
        await anyio.to_thread.run_sync(jobs.get_job, engine, job_id)
    except jobs.JobNotFound as e:
        raise Problem(404, str(e), [{"field": "job_id", "message": "no such job"}]) from None

    async def stream() -> AsyncIterator[bytes]:
        seq, last_status, last_progress, last_metrics = 0, None, None, None
        idle = 0.0
        while True:
            try:
                job = await anyio.to_thread.run_sync(jobs.get_job, engine, job_id)
            except jobs.JobNotFound:
                seq += 1
                yield _sse("status", {"job_id": job_id, "status": "DELETED"}, seq)
                return
            d = job.job_data
            progress = {"job_id": job_id, "progress": job.progress, **{k: d.get(k) for k in PROGRESS_KEYS}}
            metrics = {"eval": d.get("eval"), "metrics": d.get("metrics")}
            out = []
            if progress != last_progress:
                out.append(("progress", progress))
                last_progress = progress
            if metrics != last_metrics and any(metrics.values()):
                out.append(("metrics", {"job_id": job_id, **metrics}))
                last_metrics = metrics
            if job.status != last_status:
                # Status last: a client that stops at the final status has already seen the final numbers.
                out.append(("status", {"job_id": job_id, "status": job.status, "progress": job.progress,
                                       "attempt": job.attempt, "error": d.get("error")}))
                last_status = job.status
            for event, data in out:
                seq += 1
                yield _sse(event, data, seq)
            if job.status in [s.value for s in FINAL]:
                return
            idle = 0.0 if out else idle + SSE_POLL_S
            if idle >= SSE_KEEPALIVE_S:
                idle = 0.0
                yield b": keepalive\n\n"
            await anyio.sleep(SSE_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/jobs/{job_id}/logs", response_model=LogChunk, tags=["files"])
def job_logs(job_id: JobId, session: SessionDep, settings: SettingsDep,
             stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stderr",
             tail: Annotated[int, Query(ge=1, le=10_000)] = 200, offset: Offset | None = None) -> LogChunk:
    """The trainer's log: the last `tail` lines, or (with `offset`) the bytes from there on (follow with next_offset)."""
    folder = output_dir(_job(session, job_id), settings)
    rel = f"logs/{stream}.log"
    chunk = LogChunk(job_id=job_id, stream=stream, path=str(folder / rel))
    path = safe_file(folder, rel)  # a log file that is a symlink out of the folder is not followed
    if path is None:
        return chunk  # not started yet
    size = path.stat().st_size
    with open(path, "rb") as f:
        if offset is not None:
            start = min(offset, size)
            f.seek(start)
            data = f.read(LOG_CHUNK_MAX)
            text = data.decode(errors="replace")
        else:
            start = max(0, size - LOG_CHUNK_MAX)
            f.seek(start)
            data = f.read()
            text = "\n".join(data.decode(errors="replace").splitlines()[-tail:])
    return LogChunk(job_id=job_id, stream=stream, path=chunk.path, size=size, offset=start,
                    next_offset=start + len(data), text=text)


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList, tags=["files"])
def list_artifacts(job_id: JobId, session: SessionDep, settings: SettingsDep) -> ArtifactList:
    """Every file in the job's output folder, with sizes."""
    folder = output_dir(_job(session, job_id), settings)
    files = [ArtifactFile(path=rel, size=real.stat().st_size) for real, rel in walk_files(folder)]
    return ArtifactList(job_id=job_id, output_dir=str(folder), files=files, total_bytes=sum(f.size for f in files))


@router.get("/jobs/{job_id}/artifacts.zip", tags=["files"], response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download_artifacts_zip(job_id: JobId, session: SessionDep, settings: SettingsDep,
                           include_checkpoints: bool = False) -> StreamingResponse:
    """The output folder as a zip, streamed (checkpoints left out unless asked for)."""
    files = walk_files(output_dir(_job(session, job_id), settings), include_checkpoints)
    if not files:
        raise Problem(404, f"job {job_id} has no output files yet", [{"field": "job_id", "message": "no files"}])
    return StreamingResponse(zip_stream(files), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="job-{job_id}.zip"'})


@router.get("/jobs/{job_id}/artifacts/{path:path}", tags=["files"], response_class=FileResponse)
def download_artifact(job_id: JobId, path: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """One file of the output folder; anything outside it (.., absolute, symlinks) is a 404."""
    real = safe_file(output_dir(_job(session, job_id), settings), path)
    if real is None:
        raise Problem(404, f"no artifact {path!r} in job {job_id}'s output folder", [{"field": "path", "message":
                      "no such file inside the output folder"}])
    return FileResponse(real, filename=real.name)


@router.post("/templates", status_code=201, response_model=TemplatePublic, tags=["templates"])
def create_template(spec: TemplateCreate, engine: EngineDep, settings: SettingsDep) -> Response:
    """Save a job recipe under a unique name."""
    check_spec(JobCreate(config=spec.config, launch=spec.launch), settings)
    try:
        template = templates.create_template(engine, spec)
    except templates.TemplateExists as e:
        raise Problem(409, str(e), [{"field": "name", "message": str(e)}]) from None
    return reply(template, TemplatePublic, 201, {"Location": f"/templates/{template.id}"})


@router.get("/templates", response_model=list[TemplatePublic], tags=["templates"])
def list_templates(engine: EngineDep, limit: Annotated[int, Query(ge=1, le=500)] = 100, offset: Offset = 0) -> Response:
    return reply(templates.list_templates(engine, limit, offset), list[TemplatePublic])


@router.post("/templates/{template_id}/queue", status_code=202, response_model=JobPublic, tags=["templates"])
def queue_template(template_id: TemplateId, engine: EngineDep, settings: SettingsDep,
                   overrides: Annotated[TemplateQueue | None, Body()] = None) -> Response:
    """Queue a job from a template, with config/launch overrides merged on top."""
    try:
        template = templates.get_template(engine, template_id)
    except templates.TemplateNotFound as e:
        raise Problem(404, str(e), [{"field": "template_id", "message": "no such template"}]) from None
    overrides = overrides or TemplateQueue()
    try:
        spec = templates.job_spec(template, overrides.config, overrides.launch)
    except ValidationError as e:
        raise _validation_problem(e) from None
    return _queue(engine, settings, spec, {"source": "template", "template_id": template_id})


@lru_cache
def _manifest() -> dict[str, Any]:
    from plugin.manifest import build_manifest

    return build_manifest()


@router.get("/plugin", tags=["meta"])
def get_plugin_manifest() -> dict[str, Any]:
    """The Transformer Lab plugin manifest (index.json), generated from TrainConfig."""
    return _manifest()


def health(request: Request) -> Health:
    """Liveness: database reachable, worker thread alive (None when the server runs without one)."""
    ok = True
    try:
        jobs.count_jobs(request.app.state.engine)
    except Exception:  # noqa: BLE001 - reported, not raised
        ok = False
    thread = request.app.state.worker_thread
    return Health(status="ok" if ok else "degraded", database=ok, worker=None if thread is None else thread.is_alive())


# ------------------------------------------------------------------ app
def _stop_worker(worker: Any, thread: threading.Thread, settings: Settings) -> None:
    """As the worker's own first SIGTERM: running jobs checkpoint and go back to the queue."""
    worker.shutdown.set()
    for runner, _ in list(worker.runners.values()):
        runner.stop("server shutting down", requeue=True)
    thread.join(timeout=settings.kill_grace_s + 30)
    if thread.is_alive():
        log.warning("worker still busy after shutdown grace: killing %d trainer(s)", len(worker.runners))
        for runner, _ in list(worker.runners.values()):
            runner.kill()


def create_app(settings: Settings | None = None, db_url: str | None = None, run_worker: bool = True) -> FastAPI:
    settings = settings or get_settings()
    engine = get_engine(db_url or settings.db_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        init_db(engine)
        worker = None
        if run_worker:
            from backend.worker import Worker

            worker = Worker(engine, settings)
            app.state.worker_thread = threading.Thread(target=worker.run, name="worker", daemon=True)
            app.state.worker_thread.start()
        yield
        if worker is not None:
            await anyio.to_thread.run_sync(_stop_worker, worker, app.state.worker_thread, settings)
        app.state.read_cache.close()

    app = FastAPI(title="angle-lab", version="0.1.0", lifespan=lifespan,
                  description="Queue, watch and download AnglE sentence-embedding training jobs.",
                  generate_unique_id_function=lambda route: route.name)
    app.state.engine, app.state.settings, app.state.worker_thread = engine, settings, None
    app.state.read_cache = ReadCache(engine)
    app.include_router(router)
    app.add_api_route("/health", health, methods=["GET"], response_model=Health, tags=["meta"], name="health")
    ui.mount(app)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, errors = _request_errors(exc)
        return problem(status, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        errors = getattr(exc, "errors", None)
        if errors is None:  # raised by the framework: an unknown route (404), a wrong method (405), a big body (413)
            errors = [{"field": "body" if exc.status_code == 413 else "url", "message": str(exc.detail)}]
        return problem(exc.status_code, str(exc.detail), errors, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _on_crash(_request: Request, _exc: Exception) -> JSONResponse:
        # A bug answers in the same shape as every other error; the traceback goes to the server log only.
        message = "internal server error (the server log has the details)"
        return problem(500, message, [{"field": "server", "message": message}])

    app.add_middleware(Guard, token=settings.api_token or None, max_body=settings.max_body_bytes,
                       allowed_hosts=settings.allowed_hosts)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, db_url: str | None = None, run_worker: bool = True) -> int:
    """Run the API (and the worker) with uvicorn until SIGTERM/^C."""
    import uvicorn

    settings = get_settings()
    if not is_loopback(host) and not settings.api_token:
        raise SystemExit(f"error: refusing to serve on {host}: a non-loopback address needs a token; "
                         "set ANGLE_LAB_API_TOKEN (clients then send 'Authorization: Bearer <token>') "
                         "or bind to 127.0.0.1")
    # timeout_graceful_shutdown: an open event stream must not keep ^C from ending the server.
    uvicorn.run(create_app(settings, db_url, run_worker), host=host, port=port, log_level="info", access_log=False,
                timeout_graceful_shutdown=5)
    return 0
