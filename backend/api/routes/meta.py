"""Meta: the plugin manifest (index.json) and the health check.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from backend import jobs

router = APIRouter()


class Health(BaseModel):
    status: str
    database: bool
    worker: bool | None


@lru_cache
def _manifest() -> dict[str, Any]:
    from plugin.manifest import build_manifest

    return build_manifest()


@router.get("/plugin", tags=["meta"])
def get_plugin_manifest() -> dict[str, Any]:
    """The Transformer Lab plugin manifest (index.json), generated from TrainConfig."""
    return _manifest()


def health(request: Request) -> Health:
    """Liveness: database reachable, worker thread alive (None when the server runs without one)."""
    ok = True
    try:
        jobs.count_jobs(request.app.state.engine)
    except Exception:  # noqa: BLE001 - reported, not raised
        ok = False
    thread = request.app.state.worker_thread
    return Health(status="ok" if ok else "degraded", database=ok, worker=None if thread is None else thread.is_alive())


