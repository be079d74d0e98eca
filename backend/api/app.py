"""The app factory: routers, the lab page, error handlers, the middleware, the in-process worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend import ui
from backend.api.deps import problem, request_errors
from backend.api.guard import Guard, is_loopback
from backend.api.routes import datasets as datasets_routes
from backend.api.routes import files as files_routes
from backend.api.routes import jobs as jobs_routes
from backend.api.routes import meta as meta_routes
from backend.api.routes import templates as templates_routes
from backend.db import get_engine, init_db
from backend.readcache import ReadCache
from backend.settings import Settings, get_settings

log = logging.getLogger(__name__)




# ------------------------------------------------------------------ app
def _stop_worker(worker: Any, thread: threading.Thread, settings: Settings) -> None:
    """As the worker's own first SIGTERM: running jobs checkpoint and go back to the queue."""
    worker.shutdown.set()
    for runner, _ in list(worker.runners.values()):
        runner.stop("server shutting down", requeue=True)
    thread.join(timeout=settings.kill_grace_s + 30)
    if thread.is_alive():
        log.warning("worker still busy after shutdown grace: killing %d trainer(s)", len(worker.runners))
        for runner, _ in list(worker.runners.values()):
            runner.kill()


def create_app(settings: Settings | None = None, db_url: str | None = None, run_worker: bool = True) -> FastAPI:
    settings = settings or get_settings()
    engine = get_engine(db_url or settings.db_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        init_db(engine)
        worker = None
        if run_worker:
            from backend.worker import Worker

            worker = Worker(engine, settings)
            app.state.worker_thread = threading.Thread(target=worker.run, name="worker", daemon=True)
            app.state.worker_thread.start()
        yield
        if worker is not None:
            await anyio.to_thread.run_sync(_stop_worker, worker, app.state.worker_thread, settings)
        app.state.read_cache.close()

    app = FastAPI(title="angle-lab", version="0.1.0", lifespan=lifespan,
                  description="Queue, watch and download AnglE sentence-embedding training jobs.",
                  generate_unique_id_function=lambda route: route.name)
    app.state.engine, app.state.settings, app.state.worker_thread = engine, settings, None
    app.state.read_cache = ReadCache(engine)
    for routes in (jobs_routes, files_routes, templates_routes, meta_routes, datasets_routes):
        app.include_router(routes.router)
    app.add_api_route("/health", meta_routes.health, methods=["GET"], response_model=meta_routes.Health,
                      tags=["meta"], name="health")
    ui.mount(app)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, errors = request_errors(exc)
        return problem(status, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        errors = getattr(exc, "errors", None)
        if errors is None:  # raised by the framework: an unknown route (404), a wrong method (405), a big body (413)
            errors = [{"field": "body" if exc.status_code == 413 else "url", "message": str(exc.detail)}]
        return problem(exc.status_code, str(exc.detail), errors, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _on_crash(_request: Request, _exc: Exception) -> JSONResponse:
        # A bug answers in the same shape as every other error; the traceback goes to the server log only.
        message = "internal server error (the server log has the details)"
        return problem(500, message, [{"field": "server", "message": message}])

    app.add_middleware(Guard, token=settings.api_token or None, max_body=settings.max_body_bytes,
                       allowed_hosts=settings.allowed_hosts, max_upload=settings.max_upload_bytes)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, db_url: str | None = None, run_worker: bool = True) -> int:
    """Run the API (and the worker) with uvicorn until SIGTERM/^C."""
    import uvicorn

    settings = get_settings()
    if not is_loopback(host) and not settings.api_token:
        raise SystemExit(f"error: refusing to serve on {host}: a non-loopback address needs a token; "
                         "set ANGLE_LAB_API_TOKEN (clients then send 'Authorization: Bearer <token>') "
                         "or bind to 127.0.0.1")
    # timeout_graceful_shutdown: an open event stream must not keep ^C from ending the server.
    uvicorn.run(create_app(settings, db_url, run_worker), host=host, port=port, log_level="info", access_log=False,
                timeout_graceful_shutdown=5)
    return 0
