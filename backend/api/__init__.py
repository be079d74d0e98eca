"""HTTP API for the job queue (FastAPI), with the worker running inside the server process.

    python main.py serve [--host 127.0.0.1] [--port 8000] [--db URL] [--no-worker]
    ANGLE_LAB_API_TOKEN=secret python main.py serve --host 0.0.0.0      # a public bind needs a token

Routes: POST/GET /jobs, GET/DELETE /jobs/{id}, POST /jobs/{id}/stop|retry, GET /jobs/{id}/events (SSE),
/logs, /artifacts, /artifacts/{path}, /artifacts.zip; POST/GET /templates, POST /templates/{id}/queue;
GET /plugin (index.json), GET /health, and the lab page at / (backend/ui.py). Every 4xx is
application/problem+json with one {field, message} per problem. OpenAPI at /openapi.json, docs at /docs.

Every caller stays inside the service's data (README, "Security"): a job writes only under the output
roots (<data_dir>/runs and ANGLE_LAB_OUTPUT_ROOTS) and reads only hub names or paths under the data roots
(<data_dir>/datasets, ANGLE_LAB_DATA_ROOTS, the output roots); the file routes serve only a job's own folder
there. Without a token only loopback Host names are answered and writes must come from the same origin.

Layout: deps.py (problem+json, dependencies), guard.py (middleware), confine.py (paths), routes/ (one router
per resource: jobs, files, templates, meta), app.py (this factory and `serve`).
"""

from backend.api.app import create_app, serve

__all__ = ["create_app", "serve"]
