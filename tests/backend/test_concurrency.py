"""8 processes hammer one job row in one SQLite file: no 'database is locked', no lost update.

    ANGLE_LAB_STRESS_SECONDS=30 .venv/bin/python -m pytest tests/backend/test_concurrency.py -q -s
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from backend import jobs
from backend.models import JobCreate
from plugin.config import TrainConfig

from .conftest import REPO

WRITERS = 8
SECONDS = float(os.environ.get("ANGLE_LAB_STRESS_SECONDS", "30"))

WRITER = textwrap.dedent("""
    import sys, time
    from backend.db import make_engine
    from backend import jobs
    url, job_id, me, start, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
    engine = make_engine(url)
    while time.time() < start:
        time.sleep(0.01)
    n = 0
    while time.time() < start + seconds:
        n += 1
        # Unthrottled (a real trainer writes every few seconds): the worst case for locking.
        jobs.record_progress(engine, job_id, n % 101, {me: n, "step": n}, {"loss_history": [{"w": me, "n": n}]})
    print(n)
""")


def test_eight_processes_write_progress_without_locks_or_lost_updates(sqlite_engine, sqlite_url, tmp_path):
    job = jobs.create_job(sqlite_engine, JobCreate(config=TrainConfig(train_name_or_path="t")), tmp_path / "runs")
    jobs.claim_next(sqlite_engine, os.getpid(), "h")
    start = time.time() + 3  # all writers begin together, after their imports
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, sqlite_url, str(job.id), f"w{i}", str(start), str(SECONDS)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(WRITERS)]
    # Meanwhile this process plays the API: stop flag reads and a stop request near the end.
    reads = 0
    while time.time() < start + SECONDS - 2:
        jobs.read_status(sqlite_engine, job.id)
        reads += 1
        time.sleep(0.05)
    jobs.request_stop(sqlite_engine, job.id)
    outs = [p.communicate(timeout=SECONDS + 60) for p in procs]
    errors = [err for _, err in outs if err.strip()]
    assert not any("locked" in e for e in errors), errors
    assert all(p.returncode == 0 for p in procs), errors
    counts = {f"w{i}": int(out) for i, (out, _) in enumerate(outs)}
    data = jobs.get_job(sqlite_engine, job.id).job_data
    # No lost update: every writer's last value is there, though all of them rewrote the same JSON document.
    assert {k: data[k] for k in counts} == counts
    assert data["stop"]["reason"] == "requested by user"  # nor was the stop request overwritten
    total = sum(counts.values())
    print(f"\n{WRITERS} writers x {SECONDS:.0f}s: {total} progress writes ({total / SECONDS:.0f}/s), {reads} status reads")
    assert total > WRITERS * SECONDS  # real contention: more than one write per writer per second
