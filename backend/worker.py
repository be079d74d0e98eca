"""The worker loop: recover stale jobs, claim the oldest QUEUED job, run up to max_concurrent_jobs at once.

    python main.py worker                       # until SIGTERM / ^C
    python main.py worker --exit-when-idle      # drain the queue, then exit

Shutdown: the first SIGTERM/SIGINT asks every running job to checkpoint and
puts it back in the queue (it resumes on the next worker); a second one kills
the trainers' process groups at once (recovery requeues those jobs later).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from sqlalchemy.engine import Engine

from backend import jobs
from backend.launcher import Standby
from backend.models import Job, utcnow
from backend.procs import hostname, kill_group, process_alive
from backend.runner import JobRunner
from backend.settings import Settings

log = logging.getLogger(__name__)


def runner_alive(job: Job) -> bool | None:
    """Is the job's runner process alive? None when it runs on another host (only the heartbeat can tell)."""
    if job.host and job.host != hostname():
        return None
    runner = job.job_data.get("runner") or {}
    return process_alive(job.pid, runner.get("start") if runner.get("pid") == job.pid else None)


def recover_stale(engine: Engine, settings: Settings) -> list[tuple[int, str]]:
    """Requeue (or end) RUNNING/STOPPING jobs whose heartbeat is stale and whose runner is gone."""
    done = []
    for job in jobs.stale_jobs(engine, settings.stale_after_s):
        assert job.id is not None
        alive = runner_alive(job)
        if alive:
            continue  # its runner lives: a slow database or a long pause, not a crash
        child = job.job_data.get("child") or {}
        if alive is False and child.get("pgid") and process_alive(child.get("pid"), child.get("start")):
            # An orphaned trainer still runs: stop it before another attempt writes to the same folder.
            log.warning("job %s: killing orphaned trainer group %s", job.id, child["pgid"])
            kill_group(child["pgid"], settings.kill_grace_s)
        age = (utcnow() - job.updated_at).total_seconds()
        reason = f"no heartbeat for {age:.0f}s and runner pid {job.pid} on {job.host or '?'} is gone"
        action = jobs.recover(engine, job, reason)
        log.warning("job %s: %s (%s)", job.id, action, reason)
        done.append((job.id, action))
    return done


class Worker:
    def __init__(self, engine: Engine, settings: Settings, max_concurrent_jobs: int | None = None,
                 exit_when_idle: bool = False) -> None:
        self.engine, self.settings = engine, settings
        self.max_concurrent = max_concurrent_jobs or settings.max_concurrent_jobs
        self.exit_when_idle = exit_when_idle
        self.runners: dict[int, tuple[JobRunner, threading.Thread]] = {}
        self.shutdown = threading.Event()
        self._signals = 0
        self.standby: Standby | None = None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning("signal %s: checkpointing %d running job(s) and requeueing them; again to kill",
                        signum, len(self.runners))
            self.shutdown.set()
            for runner, _ in list(self.runners.values()):
                runner.stop("worker shutting down", requeue=True)
        else:
            for runner, _ in list(self.runners.values()):
                runner.kill()
            os._exit(128 + signum)

    def _run_one(self, runner: JobRunner) -> None:
        try:
            status = runner.run(claimed=True)
            log.info("job %s ended %s", runner.job_id, status.value)
        except Exception as exc:  # a runner bug must not leave the job RUNNING forever
            log.exception("job %s: runner crashed", runner.job_id)
            try:
                jobs.fail(self.engine, runner.job_id, f"runner error: {type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - already ended, or the database is gone: recovery handles it
                pass

    def _keep_standby(self) -> None:
        """One pre-started launcher waits while a slot is free (see backend/launcher.py)."""
        if not self.settings.prewarm_launcher or self.shutdown.is_set():
            return
        if self.standby is not None and not self.standby.alive():
            self.standby = None
        if self.standby is None and len(self.runners) < self.max_concurrent:
            self.standby = Standby()

    def _reap(self) -> None:
        for job_id, (runner, thread) in list(self.runners.items()):
            if thread.is_alive():
                continue
            del self.runners[job_id]
            spare = runner.standby
            if spare is not None and not runner.standby_used:  # the job never launched (invalid): reuse it
                if self.standby is None and spare.alive():
                    self.standby = spare
                else:
                    spare.close()

    def _start(self, job: Job) -> None:
        assert job.id is not None
        standby, self.standby = self.standby, None
        runner = JobRunner(self.engine, job.id, self.settings, standby=standby)
        thread = threading.Thread(target=self._run_one, args=(runner,), name=f"job-{job.id}", daemon=True)
        self.runners[job.id] = (runner, thread)
        thread.start()
        log.info("job %s claimed (attempt %s)", job.id, job.attempt)

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        me, host = os.getpid(), hostname()
        next_recovery = 0.0
        log.info("worker %s on %s: up to %d job(s) at once", me, host, self.max_concurrent)
        while True:
            self._reap()
            if self.shutdown.is_set():
                if self.standby is not None:
                    self.standby.close()
                    self.standby = None
                if not self.runners:
                    return 0
                time.sleep(0.2)
                continue
            now = time.monotonic()
            if now >= next_recovery:
                next_recovery = now + self.settings.recover_interval_s
                try:
                    recover_stale(self.engine, self.settings)
                except Exception:  # noqa: BLE001 - try again next round
                    log.exception("recovery failed")
            claimed = False
            while len(self.runners) < self.max_concurrent and not self.shutdown.is_set():
                try:
                    job = jobs.claim_next(self.engine, me, host)
                except Exception:  # noqa: BLE001 - database hiccup: poll again
                    log.exception("claim failed")
                    job = None
                if job is None:
                    break
                claimed = True
                self._start(job)
            if self.exit_when_idle and not claimed and not self.runners:
                if self.standby is not None:
                    self.standby.close()
                return 0
            self._keep_standby()
            self.shutdown.wait(self.settings.poll_interval_s)
