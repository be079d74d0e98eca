"""One rank of one job: what `accelerate launch ... main.py train-job --job_id N` runs in every process.

    ANGLE_LAB_DATABASE_URL=sqlite:///data/jobs.db accelerate launch --cpu main.py train-job --job_id 7

(the runner builds that command; run by hand only to debug). The main process
reports into the job row; the exit code tells the runner how it went: 0 with a
`result` in job_data means train() returned, anything else is a failure.
"""

from __future__ import annotations

import os
import time
import traceback

from backend import jobs
from backend.db import get_engine
from backend.models import JobCreate

TRACEBACK_CHARS = 4000


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def train_job(job_id: int, db_url: str, process_started_at: float) -> int:
    is_main = int(os.environ.get("RANK", "0")) == 0
    engine = get_engine(db_url)
    job = jobs.get_job(engine, job_id)
    # The runner validated this row already; validating again costs a millisecond and keeps the child honest.
    spec = JobCreate.model_validate({"type": job.type, "config": job.config, "launch": job.launch})
    stack_import_at = time.time()
    # The training stack (torch, transformers, the plugin) loads only after the cheap checks above.
    from backend.progress import JobProgressCallback
    from plugin import train

    wandb_project = None
    if spec.launch.log_to_wandb:
        wandb_project = spec.config.wandb_project or "angle-lab"
        os.environ.setdefault("WANDB_DIR", spec.config.save_dir)
    callback = JobProgressCallback(
        engine, job_id,
        interval_s=_env_float("ANGLE_LAB_PROGRESS_INTERVAL_S", 2.0),
        stop_poll_s=_env_float("ANGLE_LAB_STOP_POLL_S", 0.5),
        runner_pid=_env_int("ANGLE_LAB_RUNNER_PID"), runner_start=_env_int("ANGLE_LAB_RUNNER_START"),
        wandb_project=wandb_project,
        # One W&B run per job, continued across resumes.
        wandb_run_id=f"angle-lab-job-{job_id}-{int(job.created_at.timestamp())}",
        wandb_config=job.config,
    )
    if is_main:
        jobs.record_progress(engine, job_id, data={"phase": "loading", "timings": {
            "process_started_at": process_started_at, "stack_import_at": stack_import_at, "train_called_at": time.time(),
        }})
    try:
        result = train(spec.config, callbacks=[callback])
    except BaseException as exc:
        if is_main:
            tb = traceback.format_exc()
            crash = {"phase": "crashed", "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": tb[-TRACEBACK_CHARS:]}
            if callback.last_step is not None:
                crash["step"] = callback.last_step
            jobs.record_progress(engine, job_id, data=crash)
        raise
    if is_main:
        jobs.record_progress(engine, job_id, data={
            "phase": "finished", "stopped_by": callback.stopped_by,
            "result": {"save_dir": result.save_dir, "global_step": result.global_step, "max_steps": result.max_steps,
                       "stopped": result.stopped, "stopped_by": callback.stopped_by},
            "metrics": result.metrics, "step": result.global_step, "max_steps": result.max_steps,
            "artifacts": sorted(str(p) for p in _artifacts(result.save_dir)),
        })
    return 0


def _artifacts(save_dir: str) -> list[str]:
    """Top-level files of the output folder (the model, metrics, card), not checkpoints or logs."""
    try:
        return [os.path.join(save_dir, n) for n in os.listdir(save_dir)
                if n not in ("checkpoints", "logs", "wandb")]
    except OSError:
        return []
