"""The progress callback against a real SQLite job row, driven with real transformers Trainer objects.

    .venv/bin/python -m pytest tests/backend/test_progress.py -q
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from backend import jobs
from backend.models import JobCreate
from backend.progress import JobProgressCallback
from plugin.config import TrainConfig


@pytest.fixture()
def running_job(sqlite_engine, tmp_path):
    job = jobs.create_job(sqlite_engine, JobCreate(config=TrainConfig(train_name_or_path="t")), tmp_path / "runs")
    jobs.claim_next(sqlite_engine, 1, "h")
    return job.id


@pytest.fixture()
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path / "ckpt"), report_to="none", use_cpu=True)


def steps(cb, args, state, control, n):
    for _ in range(n):
        state.global_step += 1
        cb.on_step_end(args, state, control)


def test_writes_are_throttled_but_the_end_is_always_written(sqlite_engine, running_job, args):
    cb = JobProgressCallback(sqlite_engine, running_job, interval_s=60, stop_poll_s=60)
    state, control = TrainerState(max_steps=200, global_step=0), TrainerControl()
    cb.on_train_begin(args, state, control)
    steps(cb, args, state, control, 50)
    cb.on_log(args, state, control, logs={"loss": 0.75, "learning_rate": 1e-5, "epoch": 0.25})
    row = jobs.get_job(sqlite_engine, running_job)
    assert row.job_data["step"] == 0 and row.progress == 0  # only the forced write at train begin so far
    cb.on_train_end(args, state, control)
    row = jobs.get_job(sqlite_engine, running_job)
    assert row.job_data["step"] == 50 and row.job_data["max_steps"] == 200 and row.progress == 25
    assert row.job_data["loss"] == 0.75 and row.job_data["learning_rate"] == 1e-5
    assert row.job_data["loss_history"] == [{"step": 50, "loss": 0.75, "learning_rate": 1e-5}]


def test_progress_eta_and_eval_history(sqlite_engine, running_job, args):
    cb = JobProgressCallback(sqlite_engine, running_job, interval_s=0, stop_poll_s=60)
    state, control = TrainerState(max_steps=10, global_step=0), TrainerControl()
    cb.on_train_begin(args, state, control)
    steps(cb, args, state, control, 4)
    cb.on_log(args, state, control, logs={"eval_spearman": 0.61, "eval_loss": 1.5})
    cb.on_save(args, state, control)
    row = jobs.get_job(sqlite_engine, running_job)
    assert row.progress == 40 and row.job_data["eta_s"] is not None and row.job_data["eta_s"] >= 0
    assert row.job_data["eval"] == {"eval_spearman": 0.61, "eval_loss": 1.5}
    assert row.job_data["eval_history"][-1]["eval_spearman"] == 0.61
    assert row.job_data["last_checkpoint"].endswith("checkpoint-4")


def test_stop_request_stops_at_the_next_step_with_a_checkpoint(sqlite_engine, running_job, args):
    cb = JobProgressCallback(sqlite_engine, running_job, interval_s=60, stop_poll_s=0)
    state, control = TrainerState(max_steps=100, global_step=0), TrainerControl()
    cb.on_train_begin(args, state, control)
    steps(cb, args, state, control, 3)
    assert not control.should_training_stop
    jobs.request_stop(sqlite_engine, running_job)
    steps(cb, args, state, control, 1)
    assert control.should_training_stop and control.should_save and cb.stopped_by == "stop requested"


@pytest.mark.parametrize("interval_s", [60, 0], ids=["no-writes", "writing-every-step"])
def test_an_orphaned_trainer_stops_itself(sqlite_engine, running_job, args, interval_s):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    cb = JobProgressCallback(sqlite_engine, running_job, interval_s=interval_s, stop_poll_s=0, runner_pid=gone.pid)
    state, control = TrainerState(max_steps=100, global_step=0), TrainerControl()
    cb.on_train_begin(args, state, control)
    steps(cb, args, state, control, 1)
    assert control.should_training_stop and control.should_save
    assert cb.stopped_by == f"runner process {gone.pid} is gone"


def test_a_job_ended_elsewhere_stops_its_trainer(sqlite_engine, running_job, args):
    cb = JobProgressCallback(sqlite_engine, running_job, interval_s=0, stop_poll_s=60)
    state, control = TrainerState(max_steps=100, global_step=0), TrainerControl()
    cb.on_train_begin(args, state, control)
    jobs.requeue(sqlite_engine, running_job, "recovered by a worker", bump_attempt=True)
    steps(cb, args, state, control, 1)
    assert control.should_training_stop and cb.stopped_by == "the job is QUEUED"


def test_only_the_main_process_writes(sqlite_engine, running_job, args):
    before = jobs.get_job(sqlite_engine, running_job)
    cb = JobProgressCallback(sqlite_engine, running_job, interval_s=0, stop_poll_s=0)
    state = TrainerState(max_steps=10, global_step=0, is_world_process_zero=False)
    control = TrainerControl()
    cb.on_train_begin(args, state, control)
    steps(cb, args, state, control, 5)
    cb.on_log(args, state, control, logs={"loss": 1.0, "eval_x": 1.0})
    cb.on_train_end(args, state, control)
    after = jobs.get_job(sqlite_engine, running_job)
    assert after.job_data == before.job_data and after.updated_at == before.updated_at


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is an optional extra (pip install 'angle-lab[wandb]'), not installed by setup.sh")
def test_wandb_offline_gets_the_same_metrics(sqlite_engine, running_job, args, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cb = JobProgressCallback(sqlite_engine, running_job, interval_s=0, wandb_project="angle-lab-test",
                             wandb_run_id=f"job-{running_job}-test")
    state, control = TrainerState(max_steps=4, global_step=0), TrainerControl()
    cb.on_train_begin(args, state, control)
    steps(cb, args, state, control, 2)
    cb.on_log(args, state, control, logs={"loss": 0.5, "learning_rate": 1e-5})
    cb.on_train_end(args, state, control)
    info = jobs.get_job(sqlite_engine, running_job).job_data["wandb"]
    assert info["run_id"] == f"job-{running_job}-test" and info["mode"] == "offline"
    history = list((tmp_path / "wandb").glob("offline-run-*"))
    assert history, "an offline W&B run folder was written"
