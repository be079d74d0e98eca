"""ReadCache against a real SQLite file: bytes are reused until another connection commits.

    .venv/bin/python -m pytest tests/backend/test_readcache.py -q
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from sqlalchemy.engine import Engine

from backend import jobs
from backend.db import make_engine
from backend.readcache import ReadCache
from tests.backend.conftest import REPO


def _counting_build(engine: Engine, calls: list[int]) -> Callable[[], bytes]:
    def build() -> bytes:
        calls.append(1)
        return str(jobs.count_jobs(engine)).encode()

    return build


def test_reuses_bytes_until_a_commit_from_another_connection(sqlite_engine: Engine, tmp_path: Path) -> None:
    cache = ReadCache(sqlite_engine)
    calls: list[int] = []
    build = _counting_build(sqlite_engine, calls)
    assert cache.enabled
    assert anyio.run(cache.get, "n", build) == b"0"
    assert anyio.run(cache.get, "n", build) == b"0" and len(calls) == 1 and cache.hits == 1

    # A commit from another process (as a trainer's progress write) is seen by the very next read.
    url = str(sqlite_engine.url)
    code = ("from backend.db import make_engine; from backend.jobs import create_raw_job; "
            f"from pathlib import Path; create_raw_job(make_engine({url!r}), {{'train_name_or_path': 'x'}}, None, "
            f"Path({str(tmp_path)!r}))")
    subprocess.run([sys.executable, "-c", code], cwd=str(REPO), check=True)
    assert anyio.run(cache.get, "n", build) == b"1" and len(calls) == 2

    # So is one from this process's own engine (a POST /jobs), and each key is built once per version.
    jobs.create_raw_job(sqlite_engine, {"train_name_or_path": "x"}, None, tmp_path)
    assert anyio.run(cache.get, "n", build) == b"2" and len(calls) == 3
    assert anyio.run(cache.get, "other", build) == b"2" and len(calls) == 4
    assert anyio.run(cache.get, "n", build) == b"2" and len(calls) == 4
    cache.close()


def test_a_failed_build_is_not_stored(sqlite_engine: Engine) -> None:
    cache = ReadCache(sqlite_engine)

    def missing() -> bytes:
        raise LookupError("job 7 does not exist")

    for _ in range(2):
        with pytest.raises(LookupError, match="job 7"):
            anyio.run(cache.get, ("job", 7), missing)
    assert cache.misses == 2 and cache.hits == 0
    cache.close()


def test_off_for_in_memory_sqlite() -> None:
    engine = make_engine("sqlite://")
    cache = ReadCache(engine)
    calls: list[int] = []
    assert not cache.enabled and cache.version() is None
    for _ in range(3):
        anyio.run(cache.get, "k", lambda: calls.append(1) or b"x")  # type: ignore[func-returns-value]
    assert len(calls) == 3
