"""HTTP API for the job queue (FastAPI), with the worker running inside the server process.

    python main.py serve [--host 127.0.0.1] [--port 8000] [--db URL] [--no-worker]
    ANGLE_LAB_API_TOKEN=secret python main.py serve --host 0.0.0.0      # a public bind needs a token

Routes: POST/GET /jobs, GET/DELETE /jobs/{id}, POST /jobs/{id}/stop|retry, GET /jobs/{id}/events (SSE),
/logs, /artifacts, /artifacts/{path}, /artifacts.zip; POST/GET /templates, POST /templates/{id}/queue;
GET /plugin (index.json), GET /health, and the lab page at / (backend/ui.py). Every 4xx is
application/problem+json with one {field, message} per problem. OpenAPI at /openapi.json, docs at /docs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import jobs, templates, ui
from backend.db import get_engine, init_db, read_session
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
from backend.settings import Settings, get_settings
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


# ------------------------------------------------------------------ problems (RFC 9457)
def problem(status: int, detail: str, errors: list[dict[str, str]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


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


class Guard:
    """Bearer token on every route but /health and the lab page (ui.is_public), and the body size limit
    (Content-Length or counted)."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int) -> None:
        self.app, self.token, self.max_body = app, token, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
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


# ------------------------------------------------------------------ checks the schema cannot make
def _looks_local(value: str) -> bool:
    """A filesystem path rather than a hub name: absolute, ./ ../ ~, or a data-file suffix."""
    return value.startswith(("/", "./", "../", "~")) or value.lower().endswith(DATA_SUFFIXES)


def check_paths(spec: JobCreate) -> None:
    """Local paths in a valid config must exist now, not fail minutes later in the trainer."""
    errors = []
    c = spec.config
    for name in ("train_name_or_path", "valid_name_or_path", "test_name_or_path", "model_name_or_path",
                 "tokenizer_name_or_path", "teacher_name_or_path"):
        value = getattr(c, name)
        if isinstance(value, str) and _looks_local(value) and not Path(value).expanduser().exists():
            errors.append({"field": f"config.{name}", "message": f"no such file or folder: {value!r}"})
    resume = c.resume_from_checkpoint
    if resume and resume != "last" and not Path(resume).expanduser().exists():
        errors.append({"field": "config.resume_from_checkpoint", "message": f"no such checkpoint folder: {resume!r}"})
    if spec.launch.config_file and not Path(spec.launch.config_file).expanduser().is_file():
        errors.append({"field": "launch.config_file", "message": f"no such file: {spec.launch.config_file!r}"})
    if not errors:  # matryoshka_dims / ese_compression_size vs the model's size (reads only its config.json)
        errors += [{"field": f"config.{field}", "message": msg} for field, msg in preflight(c)]
    if errors:
        raise Problem(422, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)


def _queue(engine: Engine, settings: Settings, spec: JobCreate, response: Response,
           job_data: dict[str, Any] | None = None) -> Job:
    check_paths(spec)
    try:
        job = jobs.create_job(engine, spec, settings.runs_dir, job_data=job_data)
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "config.save_dir", "message": str(e)}]) from None
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


# ------------------------------------------------------------------ files
def output_dir(job: Job) -> Path:
    return Path(str(job.config.get("save_dir") or "")).expanduser()


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
def create_job(spec: JobCreate, response: Response, engine: EngineDep, settings: SettingsDep) -> Job:
    """Validate and queue a training job; Location points to it."""
    return _queue(engine, settings, spec, response, {"source": "api"})


@router.get("/jobs", response_model=JobList, tags=["jobs"])
async def list_jobs(engine: EngineDep, cache: CacheDep, status: JobStatus | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0)] = 0,
              view: Literal["summary", "full"] = "summary") -> Response:
    """Jobs newest first, optionally only one status; `view=full` returns whole rows."""

    def build() -> bytes:
        rows = jobs.list_jobs(engine, status, limit, offset)
        items = [JobPublic.model_validate(j) for j in rows] if view == "full" else [JobSummary.of(j) for j in rows]
        page = JobList(items=items, total=jobs.count_jobs(engine, status), limit=limit, offset=offset)
        return page.model_dump_json().encode()

    # Serialized here, once (a returned model would be validated and encoded again), and reused by every
    # poller until the database changes.
    return Response(await cache.get(("list", status, limit, offset, view), build), media_type="application/json")


@router.get("/jobs/{job_id}", response_model=JobPublic, tags=["jobs"])
async def get_job(job_id: int, engine: EngineDep, cache: CacheDep) -> Response:
    """One job: status, progress, metrics, timings, error."""

    def build() -> bytes:
        with read_session(engine) as session:
            return JobPublic.model_validate(_job(session, job_id)).model_dump_json().encode()

    return Response(await cache.get(("job", job_id), build), media_type="application/json")


@router.post("/jobs/{job_id}/stop", status_code=202, response_model=JobPublic, tags=["jobs"])
def stop_job(job_id: int, engine: EngineDep) -> Job:
    """QUEUED ends STOPPED now; RUNNING checkpoints at its next step and ends STOPPED. 409 if already finished."""
    try:
        return jobs.request_stop(engine, job_id, "requested through the API")
    except jobs.JobNotFound as e:
        raise Problem(404, str(e), [{"field": "job_id", "message": "no such job"}]) from None
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "status", "message": str(e)}]) from None


@router.post("/jobs/{job_id}/retry", status_code=202, response_model=JobPublic, tags=["jobs"])
def retry_job(job_id: int, engine: EngineDep, response: Response) -> Job:
    """Queue a FAILED or STOPPED job again (resuming from its newest checkpoint). 409 otherwise."""
    try:
        job = jobs.retry(engine, job_id)
    except jobs.JobNotFound as e:
        raise Problem(404, str(e), [{"field": "job_id", "message": "no such job"}]) from None
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "status", "message": str(e)}]) from None
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.delete("/jobs/{job_id}", status_code=204, tags=["jobs"])
def delete_job(job_id: int, engine: EngineDep) -> Response:
    """Delete a job that is not running (409 while it runs); its output folder is kept."""
    try:
        jobs.delete_job(engine, job_id)
    except jobs.JobNotFound as e:
        raise Problem(404, str(e), [{"field": "job_id", "message": "no such job"}]) from None
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "status", "message": str(e)}]) from None
    return Response(status_code=204)


def _sse(event: str, data: dict[str, Any], seq: int) -> bytes:
    return f"id: {seq}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: int, engine: EngineDep) -> StreamingResponse:
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
def job_logs(job_id: int, session: SessionDep, stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stderr",
             tail: Annotated[int, Query(ge=1, le=10_000)] = 200,
             offset: Annotated[int | None, Query(ge=0)] = None) -> LogChunk:
    """The trainer's log: the last `tail` lines, or (with `offset`) the bytes from there on (follow with next_offset)."""
    job = _job(session, job_id)
    path = output_dir(job) / "logs" / f"{stream}.log"
    chunk = LogChunk(job_id=job_id, stream=stream, path=str(path))
    try:
        size = path.stat().st_size
    except OSError:
        return chunk  # not started yet
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
    return LogChunk(job_id=job_id, stream=stream, path=str(path), size=size, offset=start,
                    next_offset=start + len(data), text=text)


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList, tags=["files"])
def list_artifacts(job_id: int, session: SessionDep) -> ArtifactList:
    """Every file in the job's output folder, with sizes."""
    job = _job(session, job_id)
    files = [ArtifactFile(path=rel, size=real.stat().st_size) for real, rel in walk_files(output_dir(job))]
    return ArtifactList(job_id=job_id, output_dir=str(output_dir(job)), files=files,
                        total_bytes=sum(f.size for f in files))


@router.get("/jobs/{job_id}/artifacts.zip", tags=["files"], response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download_artifacts_zip(job_id: int, session: SessionDep, include_checkpoints: bool = False) -> StreamingResponse:
    """The output folder as a zip, streamed (checkpoints left out unless asked for)."""
    job = _job(session, job_id)
    files = walk_files(output_dir(job), include_checkpoints)
    if not files:
        raise Problem(404, f"job {job_id} has no output files yet", [{"field": "job_id", "message": "no files"}])
    return StreamingResponse(zip_stream(files), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="job-{job_id}.zip"'})


@router.get("/jobs/{job_id}/artifacts/{path:path}", tags=["files"], response_class=FileResponse)
def download_artifact(job_id: int, path: str, session: SessionDep) -> FileResponse:
    """One file of the output folder; anything outside it (.., absolute, symlinks) is a 404."""
    job = _job(session, job_id)
    real = safe_file(output_dir(job), path)
    if real is None:
        raise Problem(404, f"no artifact {path!r} in job {job_id}'s output folder", [{"field": "path", "message":
                      "no such file inside the output folder"}])
    return FileResponse(real, filename=real.name)


@router.post("/templates", status_code=201, response_model=TemplatePublic, tags=["templates"])
def create_template(spec: TemplateCreate, engine: EngineDep, response: Response) -> Any:
    """Save a job recipe under a unique name."""
    check_paths(JobCreate(config=spec.config, launch=spec.launch))
    try:
        template = templates.create_template(engine, spec)
    except templates.TemplateExists as e:
        raise Problem(409, str(e), [{"field": "name", "message": str(e)}]) from None
    response.headers["Location"] = f"/templates/{template.id}"
    return template


@router.get("/templates", response_model=list[TemplatePublic], tags=["templates"])
def list_templates(engine: EngineDep, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                   offset: Annotated[int, Query(ge=0)] = 0) -> Any:
    return templates.list_templates(engine, limit, offset)


@router.post("/templates/{template_id}/queue", status_code=202, response_model=JobPublic, tags=["templates"])
def queue_template(template_id: int, engine: EngineDep, settings: SettingsDep, response: Response,
                   overrides: Annotated[TemplateQueue | None, Body()] = None) -> Job:
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
    return _queue(engine, settings, spec, response, {"source": "template", "template_id": template_id})


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

    app.add_middleware(Guard, token=settings.api_token or None, max_body=settings.max_body_bytes)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
