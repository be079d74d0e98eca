"""The jobs layer against a real SQLite file and, where one can be started, a real PostgreSQL server.

    .venv/bin/python -m pytest tests/backend/test_jobs.py -q
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from backend import jobs
from backend.models import JobCreate, JobStatus, LaunchOptions
from backend.procs import hostname
from backend.settings import Settings
from backend.worker import recover_stale
from plugin.config import TrainConfig, error_list

from .conftest import REPO


def spec(**config) -> JobCreate:
    return JobCreate(config=TrainConfig(train_name_or_path="train.jsonl", **config))


def test_create_then_claim_oldest_first(engine, tmp_path):
    ids = [jobs.create_job(engine, spec(), tmp_path / "runs").id for _ in range(3)]
    first = jobs.get_job(engine, ids[0])
    assert first.status == "QUEUED" and first.attempt == 1 and first.progress == 0
    # Each job gets its own output folder unless the user chose one.
    assert first.config["save_dir"] == str(tmp_path / "runs" / f"job-{ids[0]}")
    claimed = [jobs.claim_next(engine, pid=123, host="h") for _ in range(4)]
    assert [j.id for j in claimed[:3]] == ids and claimed[3] is None
    assert all(j.status == "RUNNING" and j.pid == 123 and j.host == "h" and j.started_at for j in claimed[:3])


def test_explicit_relative_save_dir_is_made_absolute_and_not_shared(engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = jobs.create_job(engine, spec(save_dir="out/a"), tmp_path / "runs")
    assert job.config["save_dir"] == str(tmp_path / "out" / "a")
    with pytest.raises(jobs.JobStateError, match=r"config.save_dir .* already used by job"):
        jobs.create_job(engine, spec(save_dir=str(tmp_path / "out" / "a")), tmp_path / "runs")
    jobs.request_stop(engine, job.id)  # once that job has ended, the folder is free again
    assert jobs.create_job(engine, spec(save_dir="out/a"), tmp_path / "runs").id != job.id


CLAIMER = textwrap.dedent("""
    import os, sys, time
    from backend.db import make_engine
    from backend import jobs
    engine = make_engine(sys.argv[1])
    got = []
    while (job := jobs.claim_next(engine, os.getpid(), "h")) is not None:
        got.append(job.id)
    print(" ".join(map(str, got)))
""")


def test_claim_is_atomic_across_processes(engine, db_url, tmp_path):
    ids = {jobs.create_job(engine, spec(), tmp_path / "runs").id for _ in range(40)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, db_url], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    claimed = [int(x) for out, _ in outs for x in out.split()]
    assert sorted(claimed) == sorted(ids), "every job claimed exactly once"
    for proc, (out, _) in zip(procs, outs, strict=True):  # and the row names the process that won it
        assert all(jobs.get_job(engine, int(x)).pid == proc.pid for x in out.split())


def test_stop_requests(engine, tmp_path):
    queued = jobs.create_job(engine, spec(), tmp_path / "runs")
    assert jobs.request_stop(engine, queued.id).status == "STOPPED"  # never ran: ends at once
    running = jobs.create_job(engine, spec(), tmp_path / "runs")
    jobs.claim_next(engine, 1, "h")
    job = jobs.request_stop(engine, running.id, reason="user clicked stop")
    assert job.status == "STOPPING" and job.job_data["stop"]["reason"] == "user clicked stop"
    # The trainer learns about it on its next progress write or status read.
    assert jobs.record_progress(engine, running.id, 40, {"step": 4}) == JobStatus.STOPPING
    assert jobs.read_status(engine, running.id) == JobStatus.STOPPING
    jobs.finish(engine, running.id, JobStatus.STOPPED)
    with pytest.raises(jobs.JobStateError, match="already STOPPED"):
        jobs.request_stop(engine, running.id)


def test_endings_are_compare_and_set(engine, tmp_path):
    job = jobs.create_job(engine, spec(), tmp_path / "runs")
    with pytest.raises(jobs.JobStateError, match="cannot become COMPLETE"):
        jobs.finish(engine, job.id, JobStatus.COMPLETE)  # QUEUED never completes
    jobs.claim_next(engine, 1, "h")
    jobs.record_progress(engine, job.id, 50, {"step": 5, "loss": 0.5}, {"eval_history": [{"step": 5}]})
    done = jobs.finish(engine, job.id, JobStatus.COMPLETE, {"metrics": {"m": 1.0}}, progress=100)
    assert done.status == "COMPLETE" and done.progress == 100 and done.finished_at and done.pid is None
    assert done.job_data["loss"] == 0.5 and done.job_data["eval_history"] == [{"step": 5}]
    # A late write (a trainer that outlived its job) changes nothing, and a second ending is refused.
    assert jobs.record_progress(engine, job.id, 10, {"step": 1}) == JobStatus.COMPLETE
    assert jobs.get_job(engine, job.id).job_data["step"] == 5
    with pytest.raises(jobs.JobStateError):
        jobs.finish(engine, job.id, JobStatus.FAILED)


def test_recover_requeues_resumes_then_gives_up(engine, tmp_path):
    job = jobs.create_job(engine, JobCreate(config=TrainConfig(train_name_or_path="t.jsonl"),
                                            launch=LaunchOptions(max_attempts=2)), tmp_path / "runs")
    jobs.claim_next(engine, 1, "h")
    jobs.record_progress(engine, job.id, 30, {"step": 30, "last_checkpoint": "/x/checkpoint-30", "error": "old"})
    stale = jobs.get_job(engine, job.id)
    assert jobs.recover(engine, stale, "runner gone") == "requeued"
    again = jobs.get_job(engine, job.id)
    assert again.status == "QUEUED" and again.attempt == 2 and again.pid is None
    assert again.config["resume_from_checkpoint"] == "last"
    assert "error" not in again.job_data and again.job_data["step"] == 30
    assert again.job_data["recoveries"][0]["last_checkpoint"] == "/x/checkpoint-30"
    jobs.claim_next(engine, 2, "h")
    assert jobs.recover(engine, jobs.get_job(engine, job.id), "runner gone again") == "failed"
    failed = jobs.get_job(engine, job.id)
    assert failed.status == "FAILED" and "max_attempts=2" in failed.job_data["error"]


def test_recover_is_a_no_op_when_the_job_showed_life(engine, tmp_path):
    job = jobs.create_job(engine, spec(), tmp_path / "runs")
    jobs.claim_next(engine, 1, "h")
    seen = jobs.get_job(engine, job.id)
    time.sleep(0.01)
    jobs.heartbeat(engine, job.id)  # the runner beat between the staleness check and the recovery
    assert jobs.recover(engine, seen, "looked stale") == "alive"
    assert jobs.get_job(engine, job.id).status == "RUNNING"


def test_recover_stale_checks_the_runner_process(engine, db_url, tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=db_url, stale_after_s=0.2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        a = jobs.create_job(engine, spec(), tmp_path / "runs")
        b = jobs.create_job(engine, spec(), tmp_path / "runs")
        stopping = jobs.create_job(engine, spec(), tmp_path / "runs")
        jobs.claim_next(engine, dead.pid, hostname())
        jobs.claim_next(engine, alive.pid, hostname())
        jobs.claim_next(engine, dead.pid, hostname())
        jobs.request_stop(engine, stopping.id)
        time.sleep(0.5)
        actions = dict(recover_stale(engine, settings))
        assert actions == {a.id: "requeued", stopping.id: "stopped"}
        assert jobs.get_job(engine, b.id).status == "RUNNING"  # its runner lives: left alone
    finally:
        alive.kill()
        alive.wait()


def test_validation_messages_name_the_field():
    with pytest.raises(ValidationError) as exc:
        JobCreate.model_validate({"config": {"train_name_or_path": "t", "epochs": 0, "bogus": 1},
                                  "launch": {"num_processes": 0, "mixed_precision": "fp8"}})
    fields = {e["field"] for e in error_list(exc.value)}
    assert fields == {"config.epochs", "config.bogus", "launch.num_processes", "launch.mixed_precision"}


def test_sqlite_file_uses_wal_and_busy_timeout(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000


def test_default_database_lives_in_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path / "d")
    assert settings.db_url == f"sqlite:///{tmp_path / 'd' / 'jobs.db'}"
    assert settings.runs_dir == tmp_path / "d" / "runs"


def test_raw_jobs_keep_what_was_submitted(engine, tmp_path):
    job = jobs.create_raw_job(engine, {"train_name_or_path": "t", "epochs": "0"}, {"num_processes": "2"},
                              tmp_path / "runs")
    stored = jobs.get_job(engine, job.id)
    assert stored.config["epochs"] == "0" and stored.launch == {"num_processes": "2"}
    assert Path(stored.config["save_dir"]).name == f"job-{job.id}"
