"""Datasets: upload a data file or a zipped BEIR folder (checked on arrival), list them, delete one.

    curl -X POST 'localhost:8000/datasets?name=train.jsonl' --data-binary @train.jsonl \
         -H 'content-type: application/octet-stream'

The body is the file itself (no multipart: nothing to buffer or parse), streamed to a temp file under
<data_dir>/datasets/.uploads and validated there before it is moved into place.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from sqlmodel import Session, col, select

from backend import datasets
from backend.api.deps import EngineDep, Problem, SettingsDep, reply
from backend.models import DatasetList, DatasetPublic, Job, JobStatus
from backend.settings import Settings

router = APIRouter()
IN_USE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.STOPPING.value)  # a STOPPING job still reads


def _name_problem(name: str, field: str = "name") -> None:
    if (why := datasets.name_error(name)) is not None:
        raise Problem(422, f"{field}: {why}", [{"field": field, "message": why}])


def _root(settings: Settings) -> Path:
    root = settings.datasets_dir
    (root / datasets.UPLOADS_DIR).mkdir(parents=True, exist_ok=True)
    return root


async def _receive_to(request: Request, path: Path, limit: int) -> int:
    """Stream the body into `path`; 413 past `limit` bytes (a client may send more than its Content-Length)."""
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, f"upload larger than {limit} bytes",
                              [{"field": "body", "message": f"at most {limit} bytes (ANGLE_LAB_MAX_UPLOAD_BYTES)"}])
            out.write(chunk)
    return size


@router.post("/datasets", status_code=201, response_model=DatasetPublic, tags=["datasets"],
             responses={413: {"description": "larger than max_upload_bytes"},
                        422: {"description": "a bad name or file (the row and column named)"}})
async def upload_dataset(request: Request, settings: SettingsDep,
                         name: Annotated[str, Query(description="File name: train.jsonl, scifact.zip ...")]) -> Response:
    """Store the request body as dataset `name` after checking it the way training will read it."""
    _name_problem(name)
    root = _root(settings)
    if (root / datasets.stored_name(name)).exists():
        message = f"a dataset named {datasets.stored_name(name)!r} already exists: delete it first"
        raise Problem(409, message, [{"field": "name", "message": message}])
    suffix = Path(name).suffix.lower()  # the readers pick the parser by suffix
    upload = root / datasets.UPLOADS_DIR / f"{uuid.uuid4().hex}{suffix}"
    try:
        size = await _receive_to(request, upload, settings.max_upload_bytes)
        if size == 0:
            raise Problem(422, "body: the file is empty", [{"field": "body", "message": "the file is empty"}])
        info = await anyio.to_thread.run_sync(
            datasets.store, upload, name, root, settings.max_upload_bytes * datasets.ZIP_RATIO)
    except datasets.DatasetError as e:
        status = 409 if e.field == "name" else 422
        raise Problem(status, str(e), [e.as_error()]) from None
    finally:
        upload.unlink(missing_ok=True)
    return reply(info, DatasetPublic, 201, {"Location": f"/datasets/{info['name']}"})


@router.get("/datasets", response_model=DatasetList, tags=["datasets"])
def list_datasets(settings: SettingsDep) -> Response:
    """Uploaded datasets (and any put in <data_dir>/datasets by hand), newest first."""
    return reply({"items": datasets.list_datasets(settings.datasets_dir)}, DatasetList)


def _stored_or_404(settings: Settings, name: str) -> Path:
    path = datasets.dataset_path(settings.datasets_dir, name)
    if path is None:
        raise Problem(404, f"no dataset named {name!r}", [{"field": "name", "message": "no such dataset"}])
    return path


@router.get("/datasets/{name}", response_model=DatasetPublic, tags=["datasets"])
def get_dataset(name: Annotated[str, PathParam()], settings: SettingsDep) -> Response:
    """One dataset's description."""
    _stored_or_404(settings, name)
    return reply(datasets.describe_stored(settings.datasets_dir, name), DatasetPublic)


@router.delete("/datasets/{name}", status_code=204, tags=["datasets"])
def delete_dataset(name: Annotated[str, PathParam()], settings: SettingsDep, engine: EngineDep) -> Response:
    """Delete a dataset; 409 naming the job while a queued or running job reads it."""
    path = _stored_or_404(settings, name).resolve()
    with Session(engine) as session:
        active = session.exec(select(Job).where(col(Job.status).in_(IN_USE)).order_by(col(Job.id))).all()
    for job in active:
        if (field := datasets.uses(job.config or {}, path)) is not None:
            message = f"job {job.id} ({job.status}) reads this dataset ({field}): stop or delete it first"
            raise Problem(409, message, [{"field": "name", "message": message, "job_id": str(job.id)}])
    datasets.remove(settings.datasets_dir, name)
    return Response(status_code=204)
