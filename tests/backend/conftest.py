"""Fixtures for the job service: a real SQLite file per test, an optional throwaway PostgreSQL server,
and helpers to run main.py as real processes.

    .venv/bin/python -m pytest tests/backend -q
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from backend.db import init_db as create_tables
from backend.db import make_engine

REPO = Path(__file__).resolve().parents[2]
PG_BIN_DIRS = [Path(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll until predicate() is truthy; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ------------------------------------------------------------------ SQLite
@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture()
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    create_tables(engine)
    yield engine
    engine.dispose()


# ------------------------------------------------------------------ PostgreSQL
def _pg_bin() -> Path | None:  # Debian keeps the server binaries off PATH
    for d in PG_BIN_DIRS:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL server in a temp folder; yields a URL to its `postgres` database."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed: pip install 'psycopg[binary]'")
    # Not under pytest's tmp dir: its parents are private to us, and the server may run as another user.
    base = Path(tempfile.mkdtemp(prefix="angle-lab-pg-"))
    data = base / "data"
    # initdb refuses to run as root: run the server as the `postgres` system user in that case.
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing: cannot start PostgreSQL as a non-root user")
        try:
            import pwd

            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(base, pg_user.pw_uid, pg_user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda cmd: subprocess.run(prefix + cmd, check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
         f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=100", "start"])
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test against a SQLite file and, where it can be started, a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    server = request.getfixturevalue("pg_server")
    from sqlalchemy import create_engine, text

    name = f"t{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    create_tables(eng)
    yield eng
    eng.dispose()


# ------------------------------------------------------------------ processes
@pytest.fixture()
def lab_env(tmp_path: Path) -> dict[str, str]:
    """Environment for main.py subprocesses: own data dir, fast heartbeats and recovery."""
    env = {**os.environ, "ANGLE_LAB_DATA_DIR": str(tmp_path / "lab"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "TOKENIZERS_PARALLELISM": "false", "ANGLE_LAB_HEARTBEAT_INTERVAL_S": "0.5",
           "ANGLE_LAB_STALE_AFTER_S": "3", "ANGLE_LAB_RECOVER_INTERVAL_S": "0.5", "ANGLE_LAB_POLL_INTERVAL_S": "0.2",
           "ANGLE_LAB_PROGRESS_INTERVAL_S": "0.5", "ANGLE_LAB_STOP_POLL_S": "0.1", "ANGLE_LAB_KILL_GRACE_S": "5"}
    env.pop("ANGLE_LAB_DATABASE_URL", None)
    return env


def main_py(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def run_main(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def tiny_config(tiny_bert: str, data_a: Path, tmp_path: Path) -> dict[str, Any]:
    """A valid, fast TrainConfig for the tiny random BERT (6 steps)."""
    return {"model_name_or_path": tiny_bert, "train_name_or_path": str(data_a), "epochs": 1, "batch_size": 8,
            "evaluate_before_training": False, "eval_strategy": "no", "logging_steps": 1,
            "save_dir": str(tmp_path / "out")}
