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


@lru_cache
def _presets() -> dict[str, Any]:
    # Served from plugin/quickstart.py, so the page's presets are always the recipes the benchmarks chose.
    from plugin import quickstart

    recipes = {"A": ("graded pairs", "text1, text2, label", "RECOMMENDED_A"),
               "B": ("query → positive (retrieval)", "query, positive", "RECOMMENDED_B"),
               "C": ("query, positive, hard negatives", "query, positive, negative", "RECOMMENDED_C")}
    return {fmt: {"label": f"{fmt} · {label}", "columns": columns,
                  "values": {"data_format": fmt, **getattr(quickstart, name, {})}}
            for fmt, (label, columns, name) in recipes.items()}


@router.get("/presets", tags=["meta"])
def get_presets() -> dict[str, Any]:
    """Per data format, the recommended recipe (plugin/quickstart.py RECOMMENDED_A/B/C) the lab page's presets set."""
    return _presets()


def health(request: Request) -> Health:
    """Liveness: database reachable, worker thread alive (None when the server runs without one)."""
    ok = True
    try:
        jobs.count_jobs(request.app.state.engine)
    except Exception:  # noqa: BLE001 - reported, not raised
        ok = False
    thread = request.app.state.worker_thread
    return Health(status="ok" if ok else "degraded", database=ok, worker=None if thread is None else thread.is_alive())


