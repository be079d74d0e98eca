"""Run one job: validate it, start the trainer under `accelerate launch` in its own process group,
watch it (heartbeat, stop requests, grace period, SIGTERM then SIGKILL), and let the child's exit
code decide the job's fate.

    python main.py --job_id 7            # run QUEUED job 7 in the foreground (this module does the work)

The rule that Transformer Lab's wrapper breaks and this one keeps: a non-zero
exit is never COMPLETE. COMPLETE needs exit code 0 *and* a result the trainer
wrote itself after train() returned.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from subprocess import DEVNULL, Popen
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Engine

from backend import jobs
from backend.launcher import Standby
from backend.models import FINAL, Job, JobCreate, JobStatus, LaunchOptions
from backend.procs import group_alive, hostname, signal_group, start_time
from backend.settings import REPO_ROOT, Settings
from plugin.config import error_list

log = logging.getLogger(__name__)

MAIN_PY = REPO_ROOT / "main.py"
STDERR_TAIL_LINES = 40
STDERR_TAIL_CHARS = 4000


def validate(job: Job) -> JobCreate:
    """The job row as a JobCreate; raises ValueError with one 'field: message' line per problem."""
    try:
        spec = JobCreate.model_validate({"type": job.type, "config": job.config, "launch": job.launch})
    except ValidationError as e:
        raise ValueError("; ".join(f"{err['field']}: {err['message']}" for err in error_list(e))) from None
    launch = spec.launch
    if launch.config_file and not Path(launch.config_file).is_file():
        raise ValueError(f"launch.config_file: no such file {launch.config_file!r}")
    if launch.log_to_wandb and importlib.util.find_spec("wandb") is None:
        raise ValueError("launch.log_to_wandb: the wandb package is not installed (pip install 'angle-lab[wandb]')")
    return spec


def gpu_visible() -> bool:
    """Cheap check first (no torch import in the worker when there is plainly no GPU device)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd")):
        return False
    import torch

    return bool(torch.cuda.is_available())


def free_port() -> int:
    # torchrun's default port 29500 would collide when two multi-process jobs run on one machine.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_command(job_id: int, launch: LaunchOptions, cpu: bool) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command line for a job, and the extra environment it needs."""
    # --quiet: on a failure the launcher exits 1 instead of adding its own traceback after the trainer's.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    env: dict[str, str] = {}
    explicit = launch.model_fields_set
    if launch.config_file:
        cmd += ["--config_file", str(Path(launch.config_file).resolve())]
    n = launch.num_processes
    if cpu:
        if n == 1:
            cmd += ["--cpu"]
        else:
            # accelerate 1.x's --cpu starts one process unless MPI is set up; its torchrun launcher
            # (--multi_gpu) starts N, and ACCELERATE_USE_CPU makes HF Trainer pick the gloo backend.
            cmd += ["--multi_gpu"]
            env["ACCELERATE_USE_CPU"] = "true"
    elif n > 1:
        cmd += ["--multi_gpu"]
    if not launch.config_file or "num_processes" in explicit:
        cmd += ["--num_processes", str(n)]
    if not launch.config_file or "mixed_precision" in explicit:
        cmd += ["--mixed_precision", launch.mixed_precision]
    if not launch.config_file:
        cmd += ["--num_machines", "1", "--dynamo_backend", "no"]
    if cpu and not launch.config_file:
        # accelerate's own default, passed explicitly so it stops warning about it in every job's log.
        cmd += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // n))]
    if n > 1:
        cmd += ["--main_process_port", str(free_port())]
    cmd += [str(MAIN_PY), "train-job", "--job_id", str(job_id)]
    return cmd, env


def _tail(path: Path, offset: int) -> str:
    """The last lines this attempt wrote to a log file."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-STDERR_TAIL_LINES:])[-STDERR_TAIL_CHARS:]


class JobRunner:
    """Runs one job to an end state; `stop()` may be called from another thread (worker shutdown, ^C)."""

    def __init__(self, engine: Engine, job_id: int, settings: Settings, standby: Standby | None = None) -> None:
        self.engine, self.job_id, self.settings = engine, job_id, settings
        self.standby = standby  # a pre-started launcher to use instead of starting `accelerate launch` now
        self.standby_used = False
        self._stop_reason: str | None = None
        self._stop_requeue = False
        self._stop_sent = threading.Event()
        self.proc: Popen[bytes] | None = None

    def stop(self, reason: str, requeue: bool = False) -> None:
        self._stop_reason, self._stop_requeue = reason, requeue
        self._stop_sent.clear()

    def kill(self) -> None:
        """Hard stop (a second ^C): the whole process group, now."""
        if self.proc is not None:
            signal_group(self.proc.pid, signal.SIGKILL)

    # ---------------------------------------------------------------- main entry
    def run(self, claimed: bool = False) -> JobStatus:
        """Run the job (claiming it first unless the worker already did) and return its final status."""
        job = jobs.get_job(self.engine, self.job_id)
        try:
            spec = validate(job)
        except ValueError as e:
            # Rejected before anything ran: no folder, no process, just the reason.
            jobs.fail(self.engine, self.job_id, f"invalid job: {e}", {"phase": "validation"})
            return JobStatus.FAILED
        if not claimed:
            job = jobs.claim(self.engine, self.job_id, os.getpid(), hostname())
        return self._launch_and_watch(job, spec)

    def _launch_and_watch(self, job: Job, spec: JobCreate) -> JobStatus:
        save_dir = Path(spec.config.save_dir)
        logs = save_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out_path, err_path = logs / "stdout.log", logs / "stderr.log"
        cpu = spec.launch.use_cpu if spec.launch.use_cpu is not None else not gpu_visible()
        cmd, extra_env = build_command(self.job_id, spec.launch, cpu)
        env = {**os.environ, **extra_env,
               "ANGLE_LAB_DATABASE_URL": self.engine.url.render_as_string(hide_password=False),
               "ANGLE_LAB_RUNNER_PID": str(os.getpid()),
               "ANGLE_LAB_RUNNER_START": str(start_time(os.getpid()) or ""),
               "ANGLE_LAB_PROGRESS_INTERVAL_S": str(self.settings.progress_interval_s),
               "ANGLE_LAB_STOP_POLL_S": str(self.settings.stop_poll_s),
               "PYTHONUNBUFFERED": "1"}
        header = f"\n===== job {self.job_id} attempt {job.attempt} at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n"
        for path in (out_path, err_path):
            with open(path, "ab") as f:
                f.write(header.encode())
        err_offset = err_path.stat().st_size
        launched_at = time.time()
        self.proc = self.standby.hand_over(cmd[3:], env, out_path, err_path) if self.standby else None
        prewarmed = self.standby_used = self.proc is not None
        if self.proc is None:
            with open(out_path, "ab") as out_f, open(err_path, "ab") as err_f:
                # Own session = own process group: stop/kill reach accelerate, torchrun and every rank at once.
                # Files, not pipes: a trainer must not die of SIGPIPE when its runner dies.
                self.proc = Popen(cmd, stdin=DEVNULL, stdout=out_f, stderr=err_f, env=env, cwd=str(REPO_ROOT),
                                  start_new_session=True)
        child = {"pid": self.proc.pid, "pgid": self.proc.pid, "start": start_time(self.proc.pid),
                 "command": cmd[1:], "launched_at": launched_at,
                 "prewarmed": prewarmed}
        runner = {"pid": os.getpid(), "host": hostname(), "start": start_time(os.getpid())}
        jobs.record_progress(self.engine, self.job_id, data={
            "phase": "launching", "child": child, "runner": runner, "output_dir": str(save_dir),
            "logs": {"stdout": str(out_path), "stderr": str(err_path)},
        })
        rc, forced = self._watch(spec.launch.stop_grace_s)
        return self._conclude(rc, forced, err_path, err_offset)

    def _watch(self, stop_grace_s: float) -> tuple[int, bool]:
        """Wait for the child, heartbeating; enforce the stop grace period. Returns (exit code, killed by us)."""
        assert self.proc is not None
        pgid = self.proc.pid
        next_beat = 0.0
        stop_since: float | None = None
        term_at: float | None = None
        grace = stop_grace_s
        while (rc := self.proc.poll()) is None:
            now = time.monotonic()
            if self._stop_reason and not self._stop_sent.is_set():
                try:
                    jobs.request_stop(self.engine, self.job_id, self._stop_reason, requeue=self._stop_requeue)
                    self._stop_sent.set()
                except jobs.JobStateError:
                    self._stop_sent.set()
                except Exception as exc:  # noqa: BLE001 - retry on the next tick
                    log.warning("job %s: stop request failed: %s", self.job_id, exc)
                next_beat = 0.0
            if now >= next_beat:
                next_beat = now + self.settings.heartbeat_interval_s
                try:
                    status = jobs.heartbeat(self.engine, self.job_id)
                except Exception as exc:  # noqa: BLE001 - the database may come back; training goes on
                    log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
                    status = None
                if status == JobStatus.STOPPING and stop_since is None:
                    stop_since = now
                elif status in FINAL or status == JobStatus.QUEUED:
                    # Someone else decided this job's fate (a recovery that thought us dead): stand down now.
                    stop_since, grace = stop_since or now, 0.0
            if stop_since is not None:
                if term_at is None and now - stop_since > grace:
                    log.warning("job %s: no stop after %.0fs, sending SIGTERM to its process group", self.job_id, grace)
                    signal_group(pgid, signal.SIGTERM)
                    term_at = now
                elif term_at is not None and now - term_at > self.settings.kill_grace_s and group_alive(pgid):
                    log.warning("job %s: still alive %.0fs after SIGTERM, sending SIGKILL", self.job_id,
                                self.settings.kill_grace_s)
                    signal_group(pgid, signal.SIGKILL)
            time.sleep(0.2)
        # Ranks or helpers that outlived the launcher would hold memory and ports: clear the group.
        if group_alive(pgid):
            signal_group(pgid, signal.SIGKILL)
        return rc, term_at is not None

    def _conclude(self, rc: int, forced: bool, err_path: Path, err_offset: int) -> JobStatus:
        job = jobs.get_job(self.engine, self.job_id)
        if job.status not in (JobStatus.RUNNING.value, JobStatus.STOPPING.value):
            return JobStatus(job.status)  # already decided elsewhere
        data: dict[str, Any] = job.job_data
        result = data.get("result")
        stop = data.get("stop") or {}
        finished = {"exit_code": rc, "phase": "done"}
        try:
            if rc == 0 and result and not result.get("stopped"):
                jobs.finish(self.engine, self.job_id, JobStatus.COMPLETE, finished, progress=100)
                return JobStatus.COMPLETE
            if stop and (rc == 0 and result or forced):
                note = "stopped at a step boundary with a checkpoint" if rc == 0 else \
                    f"did not stop within the grace period; killed (exit code {rc}); the newest checkpoint is kept"
                if stop.get("requeue"):
                    jobs.requeue(self.engine, self.job_id, f"{stop.get('reason', 'preempted')}: {note}", bump_attempt=False)
                    return JobStatus.QUEUED
                jobs.finish(self.engine, self.job_id, JobStatus.STOPPED, {**finished, "note": note})
                return JobStatus.STOPPED
            if rc == 0 and result:
                error = f"training ended early without a stop request ({result.get('stopped_by') or 'unknown reason'})"
            elif rc == 0:
                error = data.get("error") or "the trainer exited with code 0 but reported no result"
            else:
                error = data.get("error") or f"the trainer exited with code {rc}"
            jobs.finish(self.engine, self.job_id, JobStatus.FAILED,
                        {**finished, "error": error, "stderr_tail": _tail(err_path, err_offset)})
            return JobStatus.FAILED
        except jobs.JobStateError:
            return JobStatus(jobs.get_job(self.engine, self.job_id).status)


def run_job(engine: Engine, job_id: int, settings: Settings, claimed: bool = False) -> JobStatus:
    return JobRunner(engine, job_id, settings).run(claimed=claimed)
