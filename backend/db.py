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

JSON columns are written as standard JSON only (a NaN loss becomes null): SQLite's
json_extract and PostgreSQL's json type both refuse NaN and Infinity.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

BUSY_TIMEOUT_MS = 30_000
_WRITE = "angle_lab_write"

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as None and lone surrogates (no UTF-8 encoder takes them) as U+FFFD."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def json_dumps(value: Any) -> str:
    """The JSON columns' serializer: standard JSON, so json_extract never fails on a stored row."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:  # a NaN loss, an unvalidated config from a file: rare, so only then walk the value
        return json.dumps(json_safe(value), allow_nan=False)


def make_engine(url: str) -> Engine:
    """A new engine for `url`; SQLite files get WAL, busy_timeout and BEGIN IMMEDIATE writes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pool_pre_ping: a worker outlives server restarts; a dead pooled connection is replaced, not raised.
        return create_engine(url, pool_pre_ping=True, json_serializer=json_dumps)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
                           json_serializer=json_dumps)

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
            if conn.dialect.name == "sqlite":
                for table in ("job", "job_template"):
                    _autoincrement(conn, table)


def _autoincrement(conn: Connection, name: str) -> None:
    """Rebuild a SQLite table made before ids were AUTOINCREMENT (ids are then never reused, not even the
    newest one after it is deleted: a new job must not get a deleted job's id, and with it its folder)."""
    sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).scalar()
    if sql is None or "AUTOINCREMENT" in sql.upper():
        return
    old = f"{name}__before_autoincrement"
    conn.exec_driver_sql(f'ALTER TABLE "{name}" RENAME TO "{old}"')
    for (index,) in conn.exec_driver_sql(  # the indexes moved with the old table; their names are needed again
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (old,)).all():
        conn.exec_driver_sql(f'DROP INDEX "{index}"')
    table = SQLModel.metadata.tables[name]
    table.create(conn)
    old_columns = {row[1] for row in conn.exec_driver_sql(f'PRAGMA table_info("{old}")').all()}
    columns = ", ".join(f'"{c.name}"' for c in table.columns if c.name in old_columns)
    # Copying the ids sets sqlite_sequence to the largest one.
    conn.exec_driver_sql(f'INSERT INTO "{name}" ({columns}) SELECT {columns} FROM "{old}"')
    conn.exec_driver_sql(f'DROP TABLE "{old}"')


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
