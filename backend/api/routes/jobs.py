"""Jobs: queue, list, read, stop, retry, delete, and follow one as Server-Sent Events.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from backend import jobs
from backend.api.confine import queue_job
from backend.api.deps import (
    CacheDep,
    EngineDep,
    JobId,
    Offset,
    Problem,
    SettingsDep,
    job_or_404,
    reply,
    to_json,
)
from backend.db import json_safe, read_session
from backend.models import (
    FINAL,
    JobCreate,
    JobList,
    JobPublic,
    JobStatus,
    JobSummary,
)

SSE_POLL_S = 0.25  # how often an event stream looks at its job row
SSE_KEEPALIVE_S = 15.0  # a comment line so proxies do not close an idle stream
PROGRESS_KEYS = ("step", "max_steps", "epoch", "loss", "learning_rate", "eta_s", "phase")



router = APIRouter()


@router.post("/jobs", status_code=202, response_model=JobPublic, tags=["jobs"])
def create_job(spec: JobCreate, engine: EngineDep, settings: SettingsDep) -> Response:
    """Validate and queue a training job; Location points to it."""
    return queue_job(engine, settings, spec, {"source": "api"})


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
            return to_json(job_or_404(session, job_id), JobPublic)

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


