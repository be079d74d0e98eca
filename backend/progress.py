"""TrainerCallback that keeps a job row current from inside training, and carries stop requests back in.

    python main.py train-job --job_id N     # (started by the runner under accelerate) uses it

Only the world's main process touches the database (and W&B); every process
takes part in one tiny broadcast per step so that a stop decided on the main
process stops all of them at the same step (a rank that kept going would hang
in the next collective).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from sqlalchemy.engine import Engine
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from backend import jobs
from backend.models import ACTIVE, JobStatus
from backend.procs import process_alive

log = logging.getLogger(__name__)

TRAIN_KEYS = {"loss": "loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm", "epoch": "epoch"}


class JobProgressCallback(TrainerCallback):
    def __init__(self, engine: Engine, job_id: int, interval_s: float = 2.0, stop_poll_s: float = 0.5,
                 runner_pid: int | None = None, runner_start: int | None = None,
                 wandb_project: str | None = None, wandb_run_id: str | None = None,
                 wandb_config: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.job_id = job_id
        self.interval_s = interval_s
        self.stop_poll_s = stop_poll_s
        self.runner_pid, self.runner_start = runner_pid, runner_start
        self.wandb_project, self.wandb_run_id, self.wandb_config = wandb_project, wandb_run_id, wandb_config
        self._wandb: Any = None
        self._own_wandb_run = False
        self._pending: dict[str, Any] = {}
        self._append: dict[str, list[Any]] = {}
        self._last_write = -math.inf
        self._last_poll = -math.inf
        self._stop_reason: str | None = None
        self._t0 = time.monotonic()
        self._step0 = 0
        self.stopped_by: str | None = None  # why training was told to stop, for the caller
        self.first_step_at: float | None = None  # wall clock of the first step (overhead benchmark)
        self.last_step: int | None = None  # the step reached, for the crash report (writes are throttled)

    # ------------------------------------------------------------ helpers
    def _progress(self, state: TrainerState) -> int:
        if not state.max_steps:
            return 0
        return min(100, int(100 * state.global_step / state.max_steps))

    def _eta(self, state: TrainerState) -> float | None:
        done = state.global_step - self._step0
        if done <= 0 or not state.max_steps:
            return None
        rate = done / max(time.monotonic() - self._t0, 1e-9)
        return round((state.max_steps - state.global_step) / rate, 1)

    def _write(self, state: TrainerState, force: bool = False) -> bool:
        """Write pending progress if due; True when it wrote (and so learned the job's status)."""
        now = time.monotonic()
        if not force and now - self._last_write < self.interval_s:
            return False
        data = {**self._pending, "step": state.global_step, "max_steps": state.max_steps, "eta_s": self._eta(state),
                "progress_writer": {"pid": os.getpid(), "rank": int(os.environ.get("RANK", "0"))}}
        if state.epoch is not None:
            data["epoch"] = round(float(state.epoch), 4)
        try:
            status = jobs.record_progress(self.engine, self.job_id, self._progress(state), data, self._append)
        except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill hours of training
            log.warning("progress write for job %s failed (will retry): %s", self.job_id, exc)
            return False
        self._pending, self._append = {}, {}
        self._last_write = now
        self._check_status(status)
        return True

    def _check_status(self, status: JobStatus) -> None:
        if status == JobStatus.STOPPING:
            self._stop_reason = "stop requested"
        elif status not in ACTIVE:
            # Finished or requeued by someone else (a recovery that took us for dead): this run is obsolete.
            self._stop_reason = f"the job is {status.value}"

    def _poll_stop(self, status_known: bool) -> None:
        """Main process only: has a stop been requested, or has our runner died (we would be an orphan)?"""
        now = time.monotonic()
        if self._stop_reason or now - self._last_poll < self.stop_poll_s:
            return
        self._last_poll = now
        if self.runner_pid and not process_alive(self.runner_pid, self.runner_start):
            # Nobody would map our exit code: checkpoint and end, the worker's recovery resumes the job.
            self._stop_reason = f"runner process {self.runner_pid} is gone"
            return
        if status_known:  # a progress write just now returned the status
            return
        try:
            self._check_status(jobs.read_status(self.engine, self.job_id))
        except Exception as exc:  # noqa: BLE001
            log.warning("stop check for job %s failed: %s", self.job_id, exc)

    @staticmethod
    def _agree(flag: bool) -> bool:
        """Every rank adopts the main process's decision."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return flag
        import torch

        tensor = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    # ------------------------------------------------------------ W&B
    def _wandb_start(self, args: TrainingArguments, state: TrainerState) -> None:
        if not self.wandb_project:
            return
        import wandb

        self._wandb = wandb
        if wandb.run is None:  # HF's own WandbCallback (report_to wandb) may have started one already
            wandb.init(project=self.wandb_project, id=self.wandb_run_id, name=f"job-{self.job_id}", resume="allow",
                       config=self.wandb_config, dir=os.environ.get("WANDB_DIR") or args.output_dir)
            self._own_wandb_run = True
        run = wandb.run
        url = getattr(run, "url", None)  # None offline; older wandb spells it get_url()
        if url is None and callable(getattr(run, "get_url", None)):
            url = run.get_url()
        self._pending["wandb"] = {"run_id": run.id, "url": url, "dir": run.dir, "project": run.project,
                                  "mode": os.environ.get("WANDB_MODE", "online")}

    def _wandb_log(self, logs: dict[str, Any], state: TrainerState) -> None:
        # When HF's WandbCallback owns the run it already logs these; logging them twice would clash on steps.
        if self._wandb is not None and self._own_wandb_run:
            self._wandb.log({k: v for k, v in logs.items() if isinstance(v, int | float)}, step=state.global_step)

    # ------------------------------------------------------------ TrainerCallback
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self._t0, self._step0 = time.monotonic(), state.global_step
        if not state.is_world_process_zero:
            return
        self._pending.update({"phase": "training", "train_started_at": time.time()})
        self._wandb_start(args, state)
        self._write(state, force=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self.last_step = state.global_step
        if state.is_world_process_zero:
            if self.first_step_at is None:
                self.first_step_at = time.time()
                self._pending["first_step_at"] = self.first_step_at
            self._poll_stop(status_known=self._write(state))
        if self._agree(self._stop_reason is not None) and not control.should_training_stop:
            # Save first: HF writes the checkpoint in this step's save phase, then leaves the loop.
            control.should_save = True
            control.should_training_stop = True
            self.stopped_by = self._stop_reason or "stop requested"

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        for key, name in TRAIN_KEYS.items():
            if key in logs:
                self._pending[name] = logs[key]
        if "loss" in logs:
            # Which step the latest loss is from: progress is written each step, the loss only when logged.
            self._pending["loss_step"] = state.global_step
            entry = {"step": state.global_step, "loss": logs["loss"]}
            if "learning_rate" in logs:  # the lab page charts both from this one history
                entry["learning_rate"] = logs["learning_rate"]
            self._append.setdefault("loss_history", []).append(entry)
        evals = {k: v for k, v in logs.items() if k.startswith("eval_")}
        if evals:
            self._pending["eval"] = evals
            self._append.setdefault("eval_history", []).append({"step": state.global_step, "epoch": state.epoch, **evals})
        self._wandb_log(logs, state)
        self._write(state, force=bool(evals))

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if state.is_world_process_zero:
            self._pending["last_checkpoint"] = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            self._write(state, force=True)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._pending["phase"] = "stopping" if self.stopped_by else "saving"
        if self.stopped_by:
            self._pending["stopped_by"] = self.stopped_by
        self._write(state, force=True)
        if self._wandb is not None and self._own_wandb_run:
            self._wandb.finish()
