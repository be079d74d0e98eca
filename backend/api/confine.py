"""What an API caller's job may read and write (README, "Security"): inputs are hub names or paths
inside the data roots, outputs folders inside the output roots; the file routes serve only those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import Response
from sqlalchemy.engine import Engine

from backend import jobs
from backend.api.deps import Problem, reply
from backend.models import (
    Job,
    JobCreate,
    JobPublic,
)
from backend.settings import REPO_ROOT, Settings
from plugin.modifiers import preflight

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
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




# ------------------------------------------------------------------ confinement: what a job may read and write
def resolve_path(value: str, base: Path = REPO_ROOT) -> Path | None:
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
        path = resolve_path(value)
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
    path = resolve_path(value, runs)
    if path is None:
        return None, OUTSIDE_OUTPUT
    why = output_error(path, settings)
    if why is None and path.is_relative_to(runs) and DEFAULT_RUN_NAME.fullmatch(path.relative_to(runs).parts[0]):
        why = "job-N folders in <data_dir>/runs belong to job N: choose another name, or leave save_dir empty"
    return (None, why) if why else (path, None)


DATASET_FIELDS = ("train_name_or_path", "valid_name_or_path", "test_name_or_path")


def resolve_dataset_refs(spec: JobCreate, settings: Settings) -> None:
    """`dataset:<name>` (an upload, GET /datasets) becomes its path in <data_dir>/datasets; 422 if none."""
    from backend.datasets import DATASET_REF, dataset_path

    errors = []
    for name in DATASET_FIELDS:
        value = getattr(spec.config, name)
        if not isinstance(value, str) or not value.startswith(DATASET_REF):
            continue
        path = dataset_path(settings.datasets_dir, value[len(DATASET_REF):])
        if path is None:
            errors.append({"field": f"config.{name}", "message": f"no uploaded dataset {value!r} (GET /datasets)"})
        else:
            setattr(spec.config, name, str(path))
    if errors:
        raise Problem(422, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)


def check_spec(spec: JobCreate, settings: Settings) -> Path | None:
    """What the schema cannot check: paths confined and existing, sizes against the model's config.json.
    Returns the absolute save_dir when the caller chose one. Raises a 422 naming every bad field."""
    if any(str(getattr(spec.config, name) or "").startswith("dataset:") for name in DATASET_FIELDS):
        # A template keeps its dataset:<name> refs (resolved when queued): check the paths on a copy.
        spec = spec.model_copy(deep=True)
        resolve_dataset_refs(spec, settings)
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


def queue_job(engine: Engine, settings: Settings, spec: JobCreate, job_data: dict[str, Any] | None = None) -> Response:
    resolve_dataset_refs(spec, settings)
    save_dir = check_spec(spec, settings)
    if save_dir is not None:
        spec.config.save_dir = str(save_dir)  # absolute here: the runner and trainer run in another cwd
    try:
        job = jobs.create_job(engine, spec, settings.runs_dir, job_data=job_data)
    except jobs.JobStateError as e:
        raise Problem(409, str(e), [{"field": "config.save_dir", "message": str(e)}]) from None
    return reply(job, JobPublic, 202, {"Location": f"/jobs/{job.id}"})


def output_dir(job: Job, settings: Settings) -> Path:
    """The job's own folder when it lies where jobs may write (a row from before confinement, or a job queued
    from the command line, may point anywhere: those are not served). 404 otherwise."""
    save_dir = job.config.get("save_dir")
    path = resolve_path(save_dir) if isinstance(save_dir, str) and save_dir else None
    if path is None or output_error(path, settings) is not None:
        message = "the job's output folder is outside the output roots: not served over HTTP"
        raise Problem(404, message, [{"field": "config.save_dir", "message": message}])
    return path


