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


# ------------------------------------------------------------------ how often a real run logs
# The SHORT budget (bench/train_stsb.py) and the default job: STS-B's 5749 training pairs, 1 epoch at batch 32.
SHORT_PAIRS, SHORT_BATCH = 5749, 32


@pytest.mark.parametrize(("overrides", "interval"), [
    ({}, 1),  # 180 steps: every step
    ({"max_steps": 10_000}, 50),  # logging_steps=100 would draw 100 points; 200 at least
    ({"max_steps": 100_000}, 100),  # long enough: logging_steps as set
    ({"max_steps": 10_000, "logging_steps": 10}, 10),  # a smaller interval asked for is kept
    ({"gradient_accumulation_steps": 4, "epochs": 8}, 1),  # 45 optimizer steps an epoch, 360 in all
    ({"gradient_accumulation_steps": 4, "epochs": 40}, 9),  # 1800 steps
])
def test_log_interval_gives_every_run_a_curve(overrides, interval):
    from plugin.trainer import log_interval

    config = TrainConfig(**{"train_name_or_path": "t", "epochs": 1, "batch_size": SHORT_BATCH, **overrides})
    assert log_interval(config, SHORT_PAIRS) == interval


def test_a_short_sized_run_logs_every_step_into_the_job_row(sqlite_engine, tiny_bert, tmp_path):
    """SHORT's 180 steps with the default logging_steps (100) used to log one loss; now every step is a point."""
    from plugin import train
    from tests.conftest import _sentence, write_jsonl

    rows = [{"text1": _sentence(i, 1), "text2": _sentence(i, 2 + i % 3), "label": float(i % 6)}
            for i in range(SHORT_PAIRS)]
    config = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(write_jsonl(tmp_path / "a.jsonl", rows)),
                         epochs=1, batch_size=SHORT_BATCH, maxlen=16, evaluate_before_training=False,
                         eval_strategy="no", save_strategy="no", save_dir=str(tmp_path / "out"))
    job = jobs.create_job(sqlite_engine, JobCreate(config=config), tmp_path / "runs")
    jobs.claim_next(sqlite_engine, 1, "h")
    result = train(config, callbacks=[JobProgressCallback(sqlite_engine, job.id, interval_s=2.0, stop_poll_s=60)])

    d = jobs.get_job(sqlite_engine, job.id).job_data
    steps_logged = [e["step"] for e in d["loss_history"]]
    assert result.global_step == 180 and steps_logged == list(range(1, 181))
    assert all(e["loss"] > 0 and e["learning_rate"] >= 0 for e in d["loss_history"])
    # The row carries the latest loss (throttled writes, but the end is always written) and its step.
    assert d["loss"] == d["loss_history"][-1]["loss"] and d["loss_step"] == d["step"] == 180
