"""Database engine and sessions: SQLite (WAL, busy_timeout, BEGIN IMMEDIATE for writes) or PostgreSQL.

    python -c "from backend.db import get_engine, init_db; init_db(get_engine()); print('ok')"

Many processes share one SQLite file (worker, runners, every trainer's progress
callback, the API). Three settings make that safe:
- WAL: readers never block the writer and the writer never blocks readers.
- busy_timeout: a writer that finds the file locked waits instead of failing.
- BEGIN IMMEDIATE for write transactions: in WAL mode a transaction that starts
  as a reader and later writes fails at once with SQLITE_BUSY (busy_timeout does
  not apply to that upgrade) if another process committed in between. Taking the
  write lock at BEGIN makes every read-modify-write wait its turn instead.
On PostgreSQL the same read-modify-writes lock their row with SELECT ... FOR UPDATE.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

BUSY_TIMEOUT_MS = 30_000
_WRITE = "angle_lab_write"

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def make_engine(url: str) -> Engine:
    """A new engine for `url`; SQLite files get WAL, busy_timeout and BEGIN IMMEDIATE writes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pool_pre_ping: a worker outlives server restarts; a dead pooled connection is replaced, not raised.
        return create_engine(url, pool_pre_ping=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is always DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: switching to WAL may itself wait for a lock
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes, fast commits
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


def get_engine(url: str | None = None) -> Engine:
    """One shared engine per URL in this process (default: the settings' database)."""
    if url is None:
        from backend.settings import get_settings

        url = get_settings().db_url
    with _engines_lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def init_db(engine: Engine) -> None:
    """Create the tables if they are missing (idempotent, safe to race from several processes)."""
    import backend.models  # noqa: F401 - registers the tables on SQLModel.metadata

    # Inside one write transaction so that two processes starting together do not both try CREATE TABLE.
    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE: True})
        with conn.begin():
            SQLModel.metadata.create_all(conn)


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A short write transaction: BEGIN IMMEDIATE on SQLite, committed on exit, rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        session.connection(execution_options={_WRITE: True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
