"""Queue operations on the `job` table: the only module that writes job rows.

    python -c "from backend import jobs; help(jobs)"

Every function is one short transaction. State changes are compare-and-set
(`UPDATE ... WHERE status IN (...)`), so two processes racing for the same job
(two workers claiming, a runner finishing while a worker recovers) cannot both
win. Writes that merge into job_data read the row under the write lock (BEGIN
IMMEDIATE on SQLite, SELECT ... FOR UPDATE on PostgreSQL): concurrent writers
never lose each other's keys.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, case, func, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from backend.db import read_session, write_session
from backend.models import ACTIVE, FINAL, JOB_TYPE_TRAIN, Job, JobCreate, JobStatus, utcnow

HISTORY_LIMIT = 500  # entries kept per appended list in job_data (eval history, loss curve)
LEFTOVER_SKIP_MAX = 1000  # ids skipped at most past leftover job-N folders before one is used anyway
DEFAULT_MAX_ATTEMPTS = 3
# Per-attempt keys: dropped when a job goes back to the queue so the next attempt starts clean.
ATTEMPT_KEYS = ("stop", "error", "traceback", "errors", "result", "child", "exit_code", "phase", "eta_s")


class JobNotFound(LookupError):
    pass


class JobStateError(RuntimeError):
    """The job is not in a state that allows the operation (e.g. stopping a COMPLETE job)."""


def _values(statuses: Iterable[JobStatus]) -> list[str]:
    return [s.value for s in statuses]


def _locked(session: Session, job_id: int) -> Job:
    job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
    if job is None:
        raise JobNotFound(f"job {job_id} does not exist")
    return job


def _merge(job_data: Mapping[str, Any], data: Mapping[str, Any] | None,
           append: Mapping[str, list[Any]] | None = None, drop: Iterable[str] = ()) -> dict[str, Any]:
    out = {k: v for k, v in job_data.items() if k not in set(drop)}
    out.update(data or {})
    for key, items in (append or {}).items():
        out[key] = (list(out.get(key) or []) + list(items))[-HISTORY_LIMIT:]
    return out


# ------------------------------------------------------------------ create / read
def _default_save_dir(config: dict[str, Any], job_id: int, runs_dir: Path, explicit: bool) -> dict[str, Any]:
    """Give each job its own output folder unless the user chose one; make a chosen relative one absolute.

    Relative paths are resolved here, in the submitting process, because the
    runner and trainer may run elsewhere (another cwd, another worker).
    """
    config = dict(config)
    save_dir = config.get("save_dir")
    if not explicit or not isinstance(save_dir, str) or not save_dir:
        config["save_dir"] = str(runs_dir / f"job-{job_id}")
    else:
        config["save_dir"] = str(Path(save_dir).expanduser().resolve())
    return config


def create_job(engine: Engine, spec: JobCreate, runs_dir: Path, job_data: dict[str, Any] | None = None) -> Job:
    """Queue a validated job. The full config is stored (defaults included) so a later change of
    defaults does not change what an old job trains."""
    explicit = "save_dir" in spec.config.model_fields_set
    config = spec.config.model_dump(mode="json")
    return _insert(engine, config, spec.launch.model_dump(mode="json"), runs_dir, explicit, spec.type, job_data)


def create_raw_job(engine: Engine, config: dict[str, Any], launch: dict[str, Any] | None, runs_dir: Path,
                   job_type: str = JOB_TYPE_TRAIN, job_data: dict[str, Any] | None = None) -> Job:
    """Queue a job without validating it (a Transformer Lab input file, an import): the runner validates
    it before anything runs and fails it with the validation messages."""
    explicit = "save_dir" in config
    return _insert(engine, dict(config), dict(launch or {}), runs_dir, explicit, job_type, job_data)


def _insert(engine: Engine, config: dict[str, Any], launch: dict[str, Any], runs_dir: Path, explicit: bool,
            job_type: str, job_data: dict[str, Any] | None) -> Job:
    with write_session(engine) as s:
        now = utcnow()
        for _ in range(LEFTOVER_SKIP_MAX):
            job = Job(type=job_type, status=JobStatus.QUEUED.value, config=config, launch=launch,
                      job_data=dict(job_data or {}), created_at=now, updated_at=now)
            s.add(job)
            s.flush()  # assigns the id the default output folder is named after
            assert job.id is not None
            job.config = _default_save_dir(config, job.id, runs_dir, explicit)
            if explicit or not Path(job.config["save_dir"]).exists():
                break
            # A job-N folder no row owns (the database was reset, or a row deleted before ids stayed unique):
            # a new job must not inherit its files, so this id is skipped (ids only grow, on both databases).
            s.delete(job)
            s.flush()
        _check_save_dir_free(s, job)
        s.add(job)
    return job


def _save_dir_of(s: Session) -> ColumnElement[Any]:
    """config.save_dir in SQL. On SQLite only where the stored JSON is standard: a row written before NaN was
    refused (`NaN`, `Infinity`) would make json_extract fail the whole query."""
    expr = Job.config["save_dir"].as_string()  # type: ignore[index]
    if s.get_bind().dialect.name == "sqlite":
        return case((func.json_valid(Job.config) == 1, expr), else_=None)
    return expr


def _check_save_dir_free(s: Session, job: Job) -> None:
    # Two live jobs writing checkpoints into one folder would resume from each other's checkpoints.
    # Compared in SQL (JSON path), not by loading every live row: a queue of N jobs made each insert O(N).
    other = s.exec(select(Job.id, Job.status).where(
        Job.id != job.id, Job.status.in_(_values((JobStatus.QUEUED, *ACTIVE))),
        _save_dir_of(s) == job.config["save_dir"],
    )).first()
    if other is not None:
        raise JobStateError(
            f"config.save_dir {job.config['save_dir']!r} is already used by job {other[0]} ({other[1]}); "
            "choose another folder or wait for that job to finish"
        )


def get_job(engine: Engine, job_id: int) -> Job:
    with read_session(engine) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return job


def list_jobs(engine: Engine, status: JobStatus | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
    with read_session(engine) as s:
        query = select(Job).order_by(Job.id.desc()).offset(offset).limit(limit)
        if status is not None:
            query = query.where(Job.status == status.value)
        return list(s.exec(query).all())


def count_jobs(engine: Engine, status: JobStatus | None = None) -> int:
    with read_session(engine) as s:
        query = select(func.count()).select_from(Job)
        if status is not None:
            query = query.where(Job.status == status.value)
        return int(s.exec(query).one())


def read_status(engine: Engine, job_id: int) -> JobStatus:
    """The cheap read a training loop does to notice a stop request."""
    with read_session(engine) as s:
        status = s.exec(select(Job.status).where(Job.id == job_id)).first()
        if status is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return JobStatus(status)


# ------------------------------------------------------------------ claim
def _claim_values(pid: int, host: str, now: datetime) -> dict[str, Any]:
    return {"status": JobStatus.RUNNING.value, "pid": pid, "host": host, "updated_at": now,
            "started_at": func.coalesce(Job.started_at, now)}


def claim_next(engine: Engine, pid: int, host: str) -> Job | None:
    """Atomically move the oldest QUEUED job to RUNNING for this runner; None when the queue is empty.

    SKIP LOCKED lets PostgreSQL workers pass over a row another worker is
    claiming; the status check in the UPDATE is what makes the claim exclusive
    on both backends (on SQLite BEGIN IMMEDIATE already serializes claimers).
    """
    for _ in range(20):
        with write_session(engine) as s:
            job_id = s.exec(
                select(Job.id).where(Job.status == JobStatus.QUEUED.value)
                .order_by(Job.created_at, Job.id).limit(1).with_for_update(skip_locked=True)
            ).first()
            if job_id is None:
                return None
            won = s.exec(  # type: ignore[call-overload]
                update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                .values(**_claim_values(pid, host, utcnow()))
            ).rowcount
            if won == 1:
                return s.get(Job, job_id, populate_existing=True)
    return None  # lost every race: let the caller poll again


def claim(engine: Engine, job_id: int, pid: int, host: str) -> Job:
    """Move one given QUEUED job to RUNNING (running a job by id, outside the worker)."""
    with write_session(engine) as s:
        job = _locked(s, job_id)
        if job.status != JobStatus.QUEUED.value:
            raise JobStateError(f"job {job_id} is {job.status}, not QUEUED: it cannot be started")
        s.exec(update(Job).where(Job.id == job_id).values(**_claim_values(pid, host, utcnow())))  # type: ignore[call-overload]
        return s.get(Job, job_id, populate_existing=True)  # type: ignore[return-value]


# ------------------------------------------------------------------ while running
def record_progress(engine: Engine, job_id: int, progress: int | None = None,
                    data: Mapping[str, Any] | None = None, append: Mapping[str, list[Any]] | None = None) -> JobStatus:
    """Merge progress into job_data and touch the heartbeat; returns the status (STOPPING: stop now).

    Only an active job is touched: a late write from a trainer whose job was
    already finished or recovered must not resurrect it.
    """
    with write_session(engine) as s:
        job = _locked(s, job_id)
        if job.status not in _values(ACTIVE):
            return JobStatus(job.status)
        job.job_data = _merge(job.job_data, data, append)
        if progress is not None:
            job.progress = max(0, min(100, int(progress)))
        job.updated_at = utcnow()
        s.add(job)
        return JobStatus(job.status)


def heartbeat(engine: Engine, job_id: int) -> JobStatus:
    """Touch updated_at of an active job; returns its status."""
    return record_progress(engine, job_id)


def request_stop(engine: Engine, job_id: int, reason: str = "requested by user", requeue: bool = False) -> Job:
    """QUEUED -> STOPPED at once; RUNNING -> STOPPING (the trainer checkpoints and stops at its next step).

    requeue=True (a worker shutting down) puts the job back in the queue once
    it has checkpointed, instead of ending it STOPPED. `job_data.stop` is set
    either way: it is also Transformer Lab's stop flag.
    """
    with write_session(engine) as s:
        job = _locked(s, job_id)
        now = utcnow()
        stop = {"requested_at": now.isoformat(), "reason": reason, "requeue": requeue}
        if job.status == JobStatus.QUEUED.value:
            job.status, job.finished_at = JobStatus.STOPPED.value, now
        elif job.status == JobStatus.RUNNING.value:
            job.status = JobStatus.STOPPING.value
        elif job.status == JobStatus.STOPPING.value:
            if not requeue:  # a user's stop wins over a pending requeue
                stop = {**job.job_data.get("stop", {}), "requeue": False, "reason": reason}
            else:
                stop = job.job_data.get("stop", stop)
        else:
            raise JobStateError(f"job {job_id} is already {job.status}: there is nothing to stop")
        job.job_data = _merge(job.job_data, {"stop": stop})
        job.updated_at = now
        s.add(job)
        return job


# ------------------------------------------------------------------ endings
def finish(engine: Engine, job_id: int, status: JobStatus, data: Mapping[str, Any] | None = None,
           progress: int | None = None, from_statuses: Iterable[JobStatus] = ACTIVE) -> Job:
    """End a job (COMPLETE, FAILED or STOPPED) if it is still in one of `from_statuses`."""
    if status not in FINAL:
        raise ValueError(f"finish() needs a final status, got {status}")
    with write_session(engine) as s:
        job = _locked(s, job_id)
        if job.status not in _values(from_statuses):
            raise JobStateError(f"job {job_id} is {job.status}: it cannot become {status.value}")
        now = utcnow()
        job.status, job.finished_at, job.updated_at, job.pid = status.value, now, now, None
        job.job_data = _merge(job.job_data, data)
        if progress is not None:
            job.progress = progress
        s.add(job)
        return job


def fail(engine: Engine, job_id: int, error: str, data: Mapping[str, Any] | None = None) -> Job:
    """FAILED with an error message, from QUEUED too (a job rejected before it ever ran)."""
    return finish(engine, job_id, JobStatus.FAILED, {**(data or {}), "error": error},
                  from_statuses=(JobStatus.QUEUED, *ACTIVE))


def requeue(engine: Engine, job_id: int, reason: str, bump_attempt: bool,
            expected_updated_at: datetime | None = None) -> Job | None:
    """Put an active job back in the queue, resuming from its newest checkpoint.

    expected_updated_at makes it a compare-and-set on the heartbeat: a recovery
    decided on a stale heartbeat does nothing if the job has since shown life.
    Returns None when that check fails.
    """
    with write_session(engine) as s:
        job = _locked(s, job_id)
        if job.status not in _values(ACTIVE):
            raise JobStateError(f"job {job_id} is {job.status}: only a running job can be requeued")
        if expected_updated_at is not None and job.updated_at != expected_updated_at:
            return None
        now = utcnow()
        entry = {"at": now.isoformat(), "attempt": job.attempt, "reason": reason,
                 "step": job.job_data.get("step"), "last_checkpoint": job.job_data.get("last_checkpoint")}
        job.job_data = _merge(job.job_data, {}, {"recoveries": [entry]}, drop=ATTEMPT_KEYS)
        job.config = {**job.config, "resume_from_checkpoint": "last"}
        job.status, job.pid, job.host, job.updated_at = JobStatus.QUEUED.value, None, None, now
        if bump_attempt:
            job.attempt += 1
        s.add(job)
        return job


def retry(engine: Engine, job_id: int) -> Job:
    """FAILED or STOPPED -> QUEUED again (a user's retry), resuming from its newest checkpoint if any.

    The attempt counter restarts: launch.max_attempts limits crash recoveries
    within one try, and a user's retry is a new try (recorded in job_data.retries).
    """
    with write_session(engine) as s:
        job = _locked(s, job_id)
        if job.status not in (JobStatus.FAILED.value, JobStatus.STOPPED.value):
            raise JobStateError(f"job {job_id} is {job.status}: only a FAILED or STOPPED job can be retried")
        now = utcnow()
        entry = {"at": now.isoformat(), "from_status": job.status, "attempt": job.attempt,
                 "error": job.job_data.get("error"), "last_checkpoint": job.job_data.get("last_checkpoint")}
        job.job_data = _merge(job.job_data, {}, {"retries": [entry]}, drop=ATTEMPT_KEYS)
        if job.job_data.get("last_checkpoint"):
            job.config = {**job.config, "resume_from_checkpoint": "last"}
        job.status, job.pid, job.host, job.finished_at, job.updated_at = JobStatus.QUEUED.value, None, None, None, now
        job.attempt = 1
        _check_save_dir_free(s, job)
        s.add(job)
        return job


def delete_job(engine: Engine, job_id: int, runs_dir: Path | None = None) -> None:
    """Remove a job row that is not running. With `runs_dir`, its output folder goes too when it lies inside
    that folder and no other job's output is in it (folders elsewhere are the user's own and stay)."""
    with write_session(engine) as s:
        job = _locked(s, job_id)
        if job.status in _values(ACTIVE):
            raise JobStateError(f"job {job_id} is {job.status}: stop it before deleting it")
        s.delete(job)
        folder = _own_run_folder(s, job, runs_dir) if runs_dir is not None else None
    if folder is not None:  # after the commit: a failed delete must not have removed files
        shutil.rmtree(folder, ignore_errors=True)


def _own_run_folder(s: Session, job: Job, runs_dir: Path) -> Path | None:
    save_dir = job.config.get("save_dir")
    if not isinstance(save_dir, str) or not save_dir:
        return None
    try:
        folder, root = Path(save_dir).resolve(), runs_dir.resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    if folder == root or not folder.is_relative_to(root) or not folder.is_dir():
        return None
    path = _save_dir_of(s)
    shared = s.exec(select(Job.id).where(Job.id != job.id, or_(
        path == save_dir, path == str(folder), path.startswith(str(folder) + "/", autoescape=True),
    )).limit(1)).first()
    return None if shared is not None else folder


def stale_jobs(engine: Engine, older_than_s: float) -> list[Job]:
    """Active jobs whose heartbeat is older than `older_than_s` seconds."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with read_session(engine) as s:
        return list(s.exec(select(Job).where(Job.status.in_(_values(ACTIVE)), Job.updated_at < cutoff)).all())


def recover(engine: Engine, job: Job, reason: str) -> str:
    """Decide the fate of a stale job whose runner is gone; returns what was done.

    A job being stopped ends STOPPED (its last checkpoint is on disk); any other
    goes back to the queue with attempt+1 until launch.max_attempts, then FAILED.
    """
    assert job.id is not None
    try:
        if job.status == JobStatus.STOPPING.value and not (job.job_data.get("stop") or {}).get("requeue"):
            finish(engine, job.id, JobStatus.STOPPED, {"note": f"stopped while its runner was gone: {reason}"})
            return "stopped"
        max_attempts = int((job.launch or {}).get("max_attempts") or DEFAULT_MAX_ATTEMPTS)
        if job.attempt >= max_attempts:
            fail(engine, job.id, f"gave up after {job.attempt} attempt(s) (launch.max_attempts={max_attempts}): {reason}")
            return "failed"
        done = requeue(engine, job.id, reason, bump_attempt=True, expected_updated_at=job.updated_at)
        return "requeued" if done is not None else "alive"
    except JobStateError:
        return "raced"  # someone else (its runner, another worker) ended it first
