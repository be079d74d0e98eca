"""Serialized GET responses, reused until the database changes.

    python -c "from backend.readcache import ReadCache; from backend.db import get_engine; print(ReadCache(get_engine()).enabled)"

Pollers ask for the same job row hundreds of times between two writes (a trainer
writes its progress every 2 s, a runner its heartbeat every 5 s), and loading
rows with their JSON columns through the ORM and serializing them costs a few ms
each time. SQLite says cheaply whether anything changed: `PRAGMA data_version`
on a connection changes whenever *another* connection (in any process) commits.
One private, read-only connection asks it before every cached read; while the
value stays the same the bytes built last time are still exact.

The version is read *before* the build, so a commit that lands during a build can
only make the stored bytes newer than their version says, and the next read
rebuilds them: a reader never gets a response older than a commit it could see.
On other databases (PostgreSQL) and in-memory SQLite the cache is off and every
read builds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

import anyio
from sqlalchemy.engine import Engine

MAX_ENTRIES = 1024  # (route, query) keys kept per database version; past it, responses are built, not kept


class ReadCache:
    def __init__(self, engine: Engine) -> None:
        url = engine.url
        path = url.database if url.get_backend_name() == "sqlite" else None
        self._path = path if path and path != ":memory:" else None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._version: int | None = None
        self._entries: dict[Hashable, bytes] = {}
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._path is not None

    def version(self) -> int | None:
        """The database's change counter as this process sees it (None when the cache is off)."""
        if self._path is None:
            return None
        with self._lock:
            if self._conn is None:  # opened on first use: the file exists once the app has started
                # mode=ro: this connection never commits (its own commits would not change its data_version).
                uri = Path(self._path).expanduser().absolute().as_uri() + "?mode=ro"  # as_uri escapes ? and #
                self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=1)
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    async def get(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """The bytes `build()` returned for `key` at the current database version, building them if needed.

        A hit is answered on the event loop (no thread hop); a miss runs `build` in a worker thread.
        `build` may raise (a 404, say): nothing is stored then.
        """
        version = self.version()
        if version is None:
            return await anyio.to_thread.run_sync(build)
        with self._lock:
            if version != self._version:
                self._version, self._entries = version, {}
            body = self._entries.get(key)
        if body is not None:
            self.hits += 1
            return body
        self.misses += 1
        body = await anyio.to_thread.run_sync(build)
        with self._lock:
            if self._version == version and len(self._entries) < MAX_ENTRIES:
                self._entries[key] = body
        return body

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
