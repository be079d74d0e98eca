"""End to end with real processes: main.py, the worker, `accelerate launch`, the tiny random BERT, a real
SQLite file. Each test launches the trainer for real (about 10-20 s each on 2 CPU cores).

    .venv/bin/python -m pytest tests/backend/test_runner.py -q
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from backend import jobs
from backend.db import make_engine
from backend.models import Job, JobCreate, JobStatus, LaunchOptions
from backend.runner import JobRunner, build_command, validate
from backend.settings import Settings
from backend.tlab import split_input
from plugin.config import TrainConfig
from plugin.trainer import last_complete_checkpoint

from .conftest import main_py, run_main, wait_for

pytestmark = pytest.mark.timeout(240)


def lab_engine(env: dict[str, str]):
    """The engine on the same SQLite file the subprocesses use (ANGLE_LAB_DATA_DIR/jobs.db)."""
    from backend.db import init_db

    engine = make_engine(f"sqlite:///{Path(env['ANGLE_LAB_DATA_DIR']) / 'jobs.db'}")
    init_db(engine)
    return engine


def queue(engine, env, config: dict, launch: dict | None = None) -> int:
    spec = JobCreate(config=TrainConfig(**config), launch=LaunchOptions(**(launch or {})))
    return jobs.create_job(engine, spec, Path(env["ANGLE_LAB_DATA_DIR"]) / "runs").id


def test_queue_worker_complete(tiny_config, lab_env, tmp_path):
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps(tiny_config))
    queued = run_main(["queue", "--config", str(cfg)], lab_env)
    assert queued.returncode == 0, queued.stderr
    job_id = int(queued.stdout.strip())
    worker = run_main(["worker", "--exit-when-idle"], lab_env, timeout=200)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    job = jobs.get_job(lab_engine(lab_env), job_id)
    d = job.job_data
    assert job.status == "COMPLETE" and job.progress == 100 and job.finished_at and job.attempt == 1, d.get("error")
    assert d["exit_code"] == 0 and d["step"] == d["max_steps"] == 6
    assert d["metrics"]["global_step"] == 6 and d["metrics"]["train_loss"] > 0
    assert len(d["loss_history"]) == 6 and d["learning_rate"] > 0 and d["epoch"] == 1.0
    save_dir = Path(d["result"]["save_dir"])
    assert save_dir == Path(tiny_config["save_dir"]) and (save_dir / "model.safetensors").is_file()
    assert json.loads((save_dir / "metrics.json").read_text())["global_step"] == 6
    assert str(save_dir / "metrics.json") in d["artifacts"]
    # Its output went to log files in its output folder.
    assert "train_loss" in Path(d["logs"]["stdout"]).read_text()
    assert Path(d["logs"]["stderr"]).parent == save_dir / "logs"


def test_invalid_config_fails_with_the_message_and_touches_nothing(tiny_config, lab_env):
    engine = lab_engine(lab_env)
    bad = {**tiny_config, "epochs": 0, "pooling_strategy": "median"}
    job_id = jobs.create_raw_job(engine, bad, {"num_processes": 0}, Path(lab_env["ANGLE_LAB_DATA_DIR"])).id
    run = run_main(["--job_id", str(job_id)], lab_env)
    assert run.returncode == 1
    job = jobs.get_job(engine, job_id)
    assert job.status == "FAILED" and job.started_at is None
    for field in ("config.epochs", "config.pooling_strategy", "launch.num_processes"):
        assert field in job.job_data["error"]
    assert "child" not in job.job_data and not Path(tiny_config["save_dir"]).exists()
    assert "config.epochs" in run.stdout


def test_transformer_lab_input_file(tiny_config, lab_env, tmp_path):
    # Host values arrive as strings and with host bookkeeping keys.
    form = {"model_name": tiny_config["model_name_or_path"], "dataset_name": tiny_config["train_name_or_path"],
            "template_name": "my-template", "_tlab_internal": "x", "epochs": "0", "batch_size": "8",
            "normalize_embeddings": "false", "num_processes": "1", "save_dir": tiny_config["save_dir"]}
    config, launch, ignored = split_input({"experiment": {"id": 1}, "config": json.dumps(form)})
    assert config["normalize_embeddings"] == "false" and launch == {"num_processes": "1"}
    assert ignored == ["template_name"] and "model_name" not in config
    ok = Job(type="TRAIN", config={**config, "epochs": "2"}, launch=launch)
    parsed = validate(ok)
    assert parsed.config.normalize_embeddings is False and parsed.config.epochs == 2  # "false" is False here
    path = tmp_path / "plugin_input_5.json"
    path.write_text(json.dumps({"experiment": {"id": 1}, "config": form}))
    run = run_main(["--input_file", str(path)], lab_env)
    assert run.returncode == 1 and "config.epochs" in run.stdout
    job = jobs.list_jobs(lab_engine(lab_env))[0]
    assert job.status == "FAILED" and job.job_data["source"] == "transformerlab"


def test_crash_mid_run_is_failed_with_the_error(tiny_config, lab_env):
    engine = lab_engine(lab_env)
    # A real failure at step 5: the checkpoint folder's name is taken by a file.
    blocker = Path(tiny_config["save_dir"]) / "checkpoints" / "checkpoint-5"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    job_id = queue(engine, lab_env, {**tiny_config, "max_steps": 30, "save_strategy": "steps", "save_steps": 5})
    run = run_main(["--job_id", str(job_id)], lab_env, timeout=200)
    assert run.returncode == 1
    job = jobs.get_job(engine, job_id)
    d = job.job_data
    assert job.status == "FAILED" and job.progress < 100 and d["exit_code"] != 0
    assert "checkpoint-5" in d["error"] and "Error" in d["error"].split(":")[0]
    assert "Traceback" in d["traceback"] and "Traceback" in d["stderr_tail"]
    assert 4 <= d["step"] < 30


def test_nonzero_exit_is_never_complete(tmp_path, sqlite_engine):
    """Even a trainer that reported a finished result is FAILED when its process exits non-zero."""
    job = jobs.create_job(sqlite_engine, JobCreate(config=TrainConfig(train_name_or_path="t")), tmp_path / "runs")
    jobs.claim_next(sqlite_engine, os.getpid(), "h")
    jobs.record_progress(sqlite_engine, job.id, 100, {"result": {"stopped": False, "global_step": 6}})
    err = tmp_path / "stderr.log"
    err.write_text("RuntimeError: NCCL watchdog timeout on rank 1\n")
    runner = JobRunner(sqlite_engine, job.id, Settings(data_dir=tmp_path))
    assert runner._conclude(1, False, err, 0) == JobStatus.FAILED
    d = jobs.get_job(sqlite_engine, job.id).job_data
    assert d["error"] == "the trainer exited with code 1" and "NCCL watchdog" in d["stderr_tail"]


def test_stop_mid_run_checkpoints_and_ends_stopped(tiny_config, lab_env):
    engine = lab_engine(lab_env)
    # save_strategy "no": the checkpoint on disk can only come from the stop.
    job_id = queue(engine, lab_env, {**tiny_config, "max_steps": 400, "save_strategy": "no"})
    runner = main_py(["--job_id", str(job_id), "--quiet"], lab_env)
    try:
        wait_for(lambda: jobs.get_job(engine, job_id).job_data.get("step", 0) >= 3, 150, "training to reach step 3")
        stop = run_main(["stop", "--job_id", str(job_id)], lab_env)
        assert stop.returncode == 0 and "STOPPING" in stop.stdout
        out, _ = runner.communicate(timeout=120)
    finally:
        runner.kill()
    job = jobs.get_job(engine, job_id)
    d = job.job_data
    assert job.status == "STOPPED" and runner.returncode == 1, out
    assert d["result"]["stopped"] and d["stopped_by"] == "stop requested" and d["exit_code"] == 0
    ckpt = Path(d["last_checkpoint"])
    assert ckpt.name == f"checkpoint-{d['result']['global_step']}" and (ckpt / "trainer_state.json").is_file()
    assert 3 <= d["result"]["global_step"] < 400


def test_kill9_worker_and_trainer_then_resume_from_checkpoint(tiny_config, lab_env):
    engine = lab_engine(lab_env)
    # Enough steps that the first attempt cannot finish between the poll and the kill on a fast, quiet host
    # (at 24 it could: the resume then started from the final checkpoint and trained no step).
    max_steps = 120
    job_id = queue(engine, lab_env, {**tiny_config, "max_steps": max_steps, "save_strategy": "steps",
                                     "save_steps": 5, "save_total_limit": 2})
    worker = main_py(["worker"], lab_env)
    try:
        data = wait_for(lambda: (d := jobs.get_job(engine, job_id).job_data).get("last_checkpoint")
                        and d.get("step", 0) >= 7 and d, 150, "a checkpoint and two more steps")
        os.kill(worker.pid, signal.SIGKILL)
        os.killpg(data["child"]["pgid"], signal.SIGKILL)
        worker.wait(timeout=10)
        killed = jobs.get_job(engine, job_id)
        assert killed.status == "RUNNING"  # nobody is left to say otherwise: the row alone shows the crash
        seen = len(killed.job_data["loss_history"])
        # The resume takes the newest complete checkpoint on disk. The row can name an older one: the
        # kill may land after a checkpoint's trainer_state.json is written but before its row write.
        ckpt_row = int(Path(killed.job_data["last_checkpoint"]).name.split("-")[1])
        ckpt = last_complete_checkpoint(Path(tiny_config["save_dir"]) / "checkpoints")
        ckpt_step = int(Path(ckpt).name.split("-")[1])
        assert ckpt_row <= ckpt_step < max_steps, "the first attempt finished before the kill: nothing to resume"
        worker = main_py(["worker"], lab_env)
        wait_for(lambda: jobs.get_job(engine, job_id).status in ("COMPLETE", "FAILED"), 180, "the resumed run to end")
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=60)
    job = jobs.get_job(engine, job_id)
    d = job.job_data
    assert job.status == "COMPLETE" and job.attempt == 2, (d.get("error"), out)
    assert d["recoveries"][0]["attempt"] == 1 and "runner pid" in d["recoveries"][0]["reason"]
    assert d["result"]["global_step"] == max_steps
    resumed_steps = [e["step"] for e in d["loss_history"][seen:]]
    # global_step continued from the checkpoint: the second attempt's first step follows it.
    assert resumed_steps[0] == ckpt_step + 1 and resumed_steps[-1] == max_steps
    assert f"===== job {job_id} attempt 2" in Path(d["logs"]["stdout"]).read_text()  # one log, both attempts


def test_two_processes_gloo_one_writer(tiny_config, lab_env):
    engine = lab_engine(lab_env)
    job_id = queue(engine, lab_env, tiny_config, {"num_processes": 2})
    db = Path(lab_env["ANGLE_LAB_DATA_DIR"]) / "jobs.db"
    # Audit every write to the row: which process's progress it carried.
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            CREATE TABLE audit (pid INTEGER, rank INTEGER);
            CREATE TRIGGER audit_job AFTER UPDATE ON job BEGIN
              INSERT INTO audit VALUES (json_extract(NEW.job_data, '$.progress_writer.pid'),
                                        json_extract(NEW.job_data, '$.progress_writer.rank'));
            END;""")
    run = run_main(["--job_id", str(job_id)], lab_env, timeout=220)
    job = jobs.get_job(engine, job_id)
    assert job.status == "COMPLETE", (job.job_data.get("error"), job.job_data.get("stderr_tail"), run.stdout)
    # 48 pairs, batch 8 per process, 2 processes: 3 steps (one process alone takes 6).
    assert job.job_data["result"]["max_steps"] == 3 and job.progress == 100
    with sqlite3.connect(db) as conn:
        writers = conn.execute("SELECT DISTINCT pid, rank FROM audit WHERE pid IS NOT NULL").fetchall()
    assert len(writers) == 1 and writers[0][1] == 0
    assert "--multi_gpu" in job.job_data["child"]["command"]


def test_launch_command_follows_launch_options():
    cmd, env = build_command(3, LaunchOptions(), cpu=True)
    assert cmd[cmd.index("--num_processes") + 1] == "1" and "--cpu" in cmd and not env
    assert cmd[-4:] == [cmd[-4], "train-job", "--job_id", "3"] and cmd[-4].endswith("main.py")
    cmd, env = build_command(3, LaunchOptions(num_processes=2, mixed_precision="bf16"), cpu=True)
    assert "--multi_gpu" in cmd and env == {"ACCELERATE_USE_CPU": "true"} and "--main_process_port" in cmd
    assert cmd[cmd.index("--mixed_precision") + 1] == "bf16"
