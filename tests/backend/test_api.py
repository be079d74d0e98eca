"""The HTTP API against a real `python main.py serve` (uvicorn on 127.0.0.1, random port, SQLite file).

    .venv/bin/python -m pytest tests/backend/test_api.py -q

Two servers per module: one without a worker (queued jobs stay put, so state errors are
deterministic) and one with the worker inside, which trains a tiny job end to end.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.backend.conftest import REPO, _free_port, wait_for
from tests.conftest import _sentence, write_jsonl

PROBLEM = "application/problem+json"


class Server:
    def __init__(self, base: Path, worker: bool, extra_env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / f"server-{self.port}.log"
        env = {**os.environ, "ANGLE_LAB_DATA_DIR": str(base / "lab"), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
               "TOKENIZERS_PARALLELISM": "false", "ANGLE_LAB_POLL_INTERVAL_S": "0.2",
               "ANGLE_LAB_PROGRESS_INTERVAL_S": "0.2", "ANGLE_LAB_STOP_POLL_S": "0.1",
               "ANGLE_LAB_HEARTBEAT_INTERVAL_S": "0.5", "ANGLE_LAB_KILL_GRACE_S": "5",
               # API callers read only under the data roots: pytest's temp folder holds the tests' data and models.
               "ANGLE_LAB_DATA_ROOTS": str(base.parent)}
        for key in ("ANGLE_LAB_DATABASE_URL", "ANGLE_LAB_API_TOKEN"):  # from the caller's shell, never wanted here
            env.pop(key, None)
        env.update(extra_env or {})
        self.db = base / f"jobs-{self.port}.db"
        args = ["serve", "--port", str(self.port), "--db", f"sqlite:///{self.db}"] + ([] if worker else ["--no-worker"])
        self._log_file = open(self.log, "w")  # a file, not a pipe: a chatty server must never block on a full pipe
        self.proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=str(REPO), env=env,
                                     stdout=self._log_file, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        wait_for(self._up, 60, f"server on port {self.port} (log: {self.log})")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            return self.client.get("/health").status_code in (200, 401)
        except httpx.TransportError:
            return False

    def job_count(self) -> int:
        return int(self.client.get("/jobs", params={"limit": 1}).json()["total"])

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def train_file(base: Path) -> Path:
    # The same rows as tests/conftest.py's data_a (format A), in a module-wide folder.
    rows = [{"text1": _sentence(i, 1), "text2": _sentence(i, 2 + i % 3), "label": float(i % 6)} for i in range(48)]
    return write_jsonl(base / "a.jsonl", rows)


@pytest.fixture(scope="module")
def config(tiny_bert: str, train_file: Path) -> dict[str, Any]:
    return {"model_name_or_path": tiny_bert, "train_name_or_path": str(train_file), "epochs": 1, "batch_size": 8,
            "evaluate_before_training": False, "eval_strategy": "no", "logging_steps": 1}


@pytest.fixture(scope="module")
def api(base: Path) -> Iterator[Server]:
    server = Server(base, worker=False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def api_worker(base: Path) -> Iterator[Server]:
    server = Server(base, worker=True)
    yield server
    server.close()


# ------------------------------------------------------------------ end to end
def _sse_events(client: httpx.Client, job_id: int, on_event: Any = None) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    event = None
    with client.stream("GET", f"/jobs/{job_id}/events", timeout=httpx.Timeout(30, read=60)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event:
                events.append((event, json.loads(line[len("data: "):])))
                if on_event:
                    on_event(*events[-1])
    return events


@pytest.fixture(scope="module")
def trained(api_worker: Server, config: dict[str, Any]) -> dict[str, Any]:
    """One job submitted over HTTP, watched over SSE until the stream ends."""
    before = api_worker.job_count()
    r = api_worker.client.post("/jobs", json={"config": config})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "QUEUED" and api_worker.job_count() == before + 1
    delete_while_running: list[httpx.Response] = []

    def on_event(event: str, data: dict[str, Any]) -> None:
        if event == "status" and data["status"] == "RUNNING" and not delete_while_running:
            delete_while_running.append(api_worker.client.delete(f"/jobs/{job['id']}"))

    events = _sse_events(api_worker.client, job["id"], on_event)
    final = api_worker.client.get(f"/jobs/{job['id']}").json()
    return {"id": job["id"], "events": events, "job": final, "delete_while_running": delete_while_running}


def test_job_trains_end_to_end_and_its_zip_loads_in_sentence_transformers(
        api_worker: Server, trained: dict[str, Any], base: Path) -> None:
    job = trained["job"]
    log = api_worker.log.read_text()
    assert job["status"] == "COMPLETE", f"{job['job_data'].get('error')}\n{job['job_data'].get('stderr_tail')}\n{log}"
    assert job["progress"] == 100
    listing = api_worker.client.get(f"/jobs/{job['id']}/artifacts").json()
    names = {f["path"]: f["size"] for f in listing["files"]}
    assert "model.safetensors" in names and names["model.safetensors"] > 0
    assert listing["total_bytes"] == sum(names.values())

    r = api_worker.client.get(f"/jobs/{job['id']}/artifacts.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    folder = base / "unzipped"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        assert not any(n.startswith("checkpoints/") for n in zf.namelist())  # left out unless asked for
        zf.extractall(folder)
        # One file through the single-file route is byte-identical to its zip member.
        one = api_worker.client.get(f"/jobs/{job['id']}/artifacts/config.json")
        assert one.status_code == 200 and one.content == zf.read("config.json")

    from sentence_transformers import SentenceTransformer

    import plugin

    texts = ["a small red car", "the happy dog runs fast", "blue bird"]
    ours = plugin.load(job["config"]["save_dir"]).encode(texts)
    st = SentenceTransformer(str(folder), device="cpu").encode(texts)
    assert np.asarray(st).shape == np.asarray(ours).shape
    assert float(np.max(np.abs(np.asarray(st) - np.asarray(ours)))) < 1e-5

    logs = api_worker.client.get(f"/jobs/{job['id']}/logs", params={"stream": "stdout", "tail": 5}).json()
    assert logs["size"] > 0 and len(logs["text"].splitlines()) <= 5
    follow = api_worker.client.get(f"/jobs/{job['id']}/logs", params={"stream": "stdout", "offset": 0}).json()
    assert follow["next_offset"] == follow["size"] and f"job {job['id']} attempt 1" in follow["text"]


def test_sse_progress_is_monotone_and_ends_with_the_final_status(trained: dict[str, Any]) -> None:
    events = trained["events"]
    progress = [d for e, d in events if e == "progress"]
    statuses = [d["status"] for e, d in events if e == "status"]
    assert len(progress) >= 2
    values = [p["progress"] for p in progress]
    steps = [p["step"] or 0 for p in progress]
    assert values == sorted(values) and steps == sorted(steps), (values, steps)
    assert values[-1] == 100 and steps[-1] == 6  # 48 rows / batch 8, one epoch
    assert statuses[-1] == "COMPLETE" and events[-1][0] == "status"  # the stream closes after the final status
    assert "RUNNING" in statuses
    assert any(e == "metrics" and d["metrics"] for e, d in events)


def test_delete_while_running_is_409_then_allowed_once_finished(api_worker: Server, trained: dict[str, Any]) -> None:
    [r] = trained["delete_while_running"]
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM and "RUNNING" in r.json()["detail"]
    stop = api_worker.client.post(f"/jobs/{trained['id']}/stop")
    assert stop.status_code == 409 and stop.json()["errors"][0]["field"] == "status"


# ------------------------------------------------------------------ bad input: 4xx naming the problem, no row written
@pytest.fixture(scope="module")
def fixtures_for_bad_input(api: Server, config: dict[str, Any], base: Path) -> dict[str, Any]:
    """A STOPPED job, a QUEUED job, a job whose output folder has a file and a symlink out, a template."""
    c = api.client
    stopped = c.post("/jobs", json={"config": config}).json()["id"]
    assert c.post(f"/jobs/{stopped}/stop").json()["status"] == "STOPPED"
    out = base / "lab" / "runs" / "art-out"  # a job writes only in the runs dir (or an output root)
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "ok.txt").write_text("inside")
    (base / "secret.txt").write_text("outside")
    (out / "leak.txt").symlink_to(base / "secret.txt")
    queued = c.post("/jobs", json={"config": {**config, "save_dir": str(out)}}).json()["id"]
    template = c.post("/templates", json={"name": "tiny", "config": config})
    assert template.status_code == 201, template.text
    return {"stopped": stopped, "queued": queued, "out": str(out), "template": template.json()["id"]}


def _cfg(**kw: Any) -> dict[str, Any]:
    """A marker replaced by the valid config with these changes (None deletes the key)."""
    return {"__config__": kw}


BAD = [
    # (id, method, path, body, status, field)
    ("malformed-json", "POST", "/jobs", b'{"config": {', 400, "body"),
    ("not-json-at-all", "POST", "/jobs", b"epochs=3", 400, "body"),
    ("empty-body", "POST", "/jobs", b"", 422, "body"),
    ("body-is-a-list", "POST", "/jobs", [1, 2], 422, "body"),
    ("missing-config", "POST", "/jobs", {}, 422, "config"),
    ("config-not-object", "POST", "/jobs", {"config": "epochs=3"}, 422, "config"),
    ("unknown-top-key", "POST", "/jobs", {**_cfg(), "priority": 1}, 422, "priority"),
    ("unknown-config-key", "POST", "/jobs", _cfg(epoch=2), 422, "config.epoch"),
    ("epochs-wrong-type", "POST", "/jobs", _cfg(epochs="three"), 422, "config.epochs"),
    ("epochs-zero", "POST", "/jobs", _cfg(epochs=0), 422, "config.epochs"),
    ("batch-negative", "POST", "/jobs", _cfg(batch_size=-8), 422, "config.batch_size"),
    ("negative-weight", "POST", "/jobs", _cfg(angle_w=-0.1), 422, "config.angle_w"),
    ("zero-temperature", "POST", "/jobs", _cfg(ibn_tau=0), 422, "config.ibn_tau"),
    ("unknown-pooling", "POST", "/jobs", _cfg(pooling_strategy="median"), 422, "config.pooling_strategy"),
    ("all-weights-zero", "POST", "/jobs", _cfg(cosine_w=0, ibn_w=0, cln_w=0, angle_w=0), 422, "config"),
    ("fp16-and-bf16", "POST", "/jobs", _cfg(fp16=True, bf16=True), 422, "config"),
    ("lr-too-big", "POST", "/jobs", _cfg(learning_rate=2.0), 422, "config.learning_rate"),
    ("prompt-no-placeholder", "POST", "/jobs", _cfg(text_prompt="query: "), 422, "config.text_prompt"),
    ("unknown-reporter", "POST", "/jobs", _cfg(report_to=["mlflow"]), 422, "config.report_to.0"),
    ("bad-rename-mapping", "POST", "/jobs", _cfg(column_rename_mapping="a-b"), 422, "config.column_rename_mapping"),
    ("maxlen-too-small", "POST", "/jobs", _cfg(maxlen=4), 422, "config.maxlen"),
    # The tiny model is 32 wide: checked against its config.json before a row is written.
    ("matryoshka-above-hidden", "POST", "/jobs", _cfg(matryoshka_dims=[64, 16]), 422, "config.matryoshka_dims"),
    ("ese-above-hidden", "POST", "/jobs", _cfg(apply_ese=True, ese_compression_size=48), 422,
     "config.ese_compression_size"),
    ("missing-train-data", "POST", "/jobs", _cfg(train_name_or_path=None), 422, "config.train_name_or_path"),
    ("empty-train-data", "POST", "/jobs", _cfg(train_name_or_path=""), 422, "config.train_name_or_path"),
    ("missing-data-file", "POST", "/jobs", _cfg(train_name_or_path="/nonexistent/a.jsonl"), 422,
     "config.train_name_or_path"),
    ("missing-valid-file", "POST", "/jobs", _cfg(valid_name_or_path="dev.jsonl"), 422, "config.valid_name_or_path"),
    ("missing-model-folder", "POST", "/jobs", _cfg(model_name_or_path="/nonexistent/model"), 422,
     "config.model_name_or_path"),
    ("unknown-launch-key", "POST", "/jobs", {**_cfg(), "launch": {"gpus": 2}}, 422, "launch.gpus"),
    ("launch-zero-processes", "POST", "/jobs", {**_cfg(), "launch": {"num_processes": 0}}, 422,
     "launch.num_processes"),
    ("launch-bad-precision", "POST", "/jobs", {**_cfg(), "launch": {"mixed_precision": "fp8"}}, 422,
     "launch.mixed_precision"),
    ("launch-missing-config-file", "POST", "/jobs", {**_cfg(), "launch": {"config_file": "/nonexistent.yaml"}}, 422,
     "launch.config_file"),
    ("wrong-job-type", "POST", "/jobs", {**_cfg(), "type": "EVAL"}, 422, "type"),
    ("save-dir-in-use", "POST", "/jobs", _cfg(save_dir="{out}"), 409, "config.save_dir"),
    ("oversized-body", "POST", "/jobs", _cfg(text_prompt="{text}" + "x" * (1 << 21)), 413, "body"),
    ("unknown-job", "GET", "/jobs/999999", None, 404, "job_id"),
    ("job-id-not-int", "GET", "/jobs/abc", None, 422, "job_id"),
    ("bad-status-filter", "GET", "/jobs?status=DONE", None, 422, "status"),
    ("limit-zero", "GET", "/jobs?limit=0", None, 422, "limit"),
    ("negative-offset", "GET", "/jobs?offset=-1", None, 422, "offset"),
    ("stop-finished-job", "POST", "/jobs/{stopped}/stop", None, 409, "status"),
    ("stop-unknown-job", "POST", "/jobs/999999/stop", None, 404, "job_id"),
    ("retry-queued-job", "POST", "/jobs/{queued}/retry", None, 409, "status"),
    ("delete-unknown-job", "DELETE", "/jobs/999999", None, 404, "job_id"),
    ("events-unknown-job", "GET", "/jobs/999999/events", None, 404, "job_id"),
    ("logs-bad-stream", "GET", "/jobs/{queued}/logs?stream=syslog", None, 422, "stream"),
    ("artifact-dotdot", "GET", "/jobs/{queued}/artifacts/sub/%2E%2E/%2E%2E/secret.txt", None, 404, "path"),
    ("artifact-dotdot-encoded-slash", "GET", "/jobs/{queued}/artifacts/..%2F..%2Fsecret.txt", None, 404, "path"),
    ("artifact-absolute", "GET", "/jobs/{queued}/artifacts//etc/passwd", None, 404, "path"),
    ("artifact-symlink-out", "GET", "/jobs/{queued}/artifacts/leak.txt", None, 404, "path"),
    ("artifact-missing", "GET", "/jobs/{queued}/artifacts/nope.bin", None, 404, "path"),
    ("zip-unknown-job", "GET", "/jobs/999999/artifacts.zip", None, 404, "job_id"),
    ("template-unknown", "POST", "/templates/999999/queue", None, 404, "template_id"),
    ("template-duplicate-name", "POST", "/templates", {"name": "tiny", **_cfg()}, 409, "name"),
    ("template-bad-override", "POST", "/templates/{template}/queue", {"config": {"epochs": -1}}, 422,
     "config.epochs"),
    ("template-unknown-override", "POST", "/templates/{template}/queue", {"config": {"epochz": 1}}, 422,
     "config.epochz"),
]


def _body(body: Any, config: dict[str, Any], fx: dict[str, Any]) -> Any:
    if isinstance(body, dict):
        out = {}
        for k, v in body.items():
            if k == "__config__":
                cfg = {**config, **{kk: vv for kk, vv in v.items() if vv is not None}}
                for kk in [kk for kk, vv in v.items() if vv is None]:
                    cfg.pop(kk)
                if isinstance(cfg.get("save_dir"), str):
                    cfg["save_dir"] = cfg["save_dir"].format(**fx)
                out["config"] = cfg
            else:
                out[k] = v
        return out
    return body


@pytest.mark.parametrize(("case", "method", "path", "body", "status", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_naming_the_problem(api: Server, config: dict[str, Any], fixtures_for_bad_input: dict,
                                               case: str, method: str, path: str, body: Any, status: int,
                                               field: str) -> None:
    fx = fixtures_for_bad_input
    before = api.job_count()
    kwargs: dict[str, Any] = {}
    body = _body(body, config, fx)
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body}
    r = api.client.request(method, path.format(**fx), **kwargs)
    assert r.status_code == status, (case, r.status_code, r.text[:500])
    assert r.headers["content-type"] == PROBLEM, r.headers["content-type"]
    problem = r.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert field in [e["field"] for e in problem["errors"]], (case, problem["errors"])
    assert all(e["message"] for e in problem["errors"])
    assert api.job_count() == before, f"{case} wrote a job row"


def test_a_symlink_inside_and_plain_files_are_served(api: Server, fixtures_for_bad_input: dict) -> None:
    """The positive side of the path checks: files really inside the output folder are served."""
    q = fixtures_for_bad_input["queued"]
    r = api.client.get(f"/jobs/{q}/artifacts/sub/ok.txt")
    assert r.status_code == 200 and r.text == "inside"
    listed = [f["path"] for f in api.client.get(f"/jobs/{q}/artifacts").json()["files"]]
    assert listed == ["sub/ok.txt"]  # the symlink leading out is not listed


# ------------------------------------------------------------------ the other routes
def test_job_lifecycle_without_worker(api: Server, config: dict[str, Any], fixtures_for_bad_input: dict) -> None:
    c = api.client
    job = c.post("/jobs", json={"config": config, "launch": {"max_attempts": 2}})
    assert job.status_code == 202
    jid = job.json()["id"]
    assert job.json()["launch"]["max_attempts"] == 2 and job.json()["config"]["save_dir"].endswith(f"job-{jid}")
    assert [j["id"] for j in c.get("/jobs", params={"status": "QUEUED"}).json()["items"]][0] == jid
    assert c.post(f"/jobs/{jid}/stop").json()["status"] == "STOPPED"
    retried = c.post(f"/jobs/{jid}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "QUEUED"
    assert retried.headers["location"] == f"/jobs/{jid}"
    assert retried.json()["job_data"]["retries"][0]["from_status"] == "STOPPED"
    # Lists are summaries (a few config keys, scalar job_data); view=full gives whole rows.
    summary = c.get("/jobs", params={"status": "QUEUED"}).json()["items"][0]
    assert set(summary["config"]) <= {"model_name_or_path", "train_name_or_path", "save_dir"}
    assert "retries" not in summary["job_data"] and summary["progress"] == 0
    full = c.get("/jobs", params={"status": "QUEUED", "view": "full"}).json()["items"][0]
    assert full["config"] == retried.json()["config"] and full["job_data"]["retries"]
    assert c.get("/jobs", params={"view": "everything"}).status_code == 422
    page = c.get("/jobs", params={"limit": 1, "offset": 1}).json()
    assert page["limit"] == 1 and page["offset"] == 1 and len(page["items"]) == 1 and page["items"][0]["id"] != jid
    before = api.job_count()
    assert c.delete(f"/jobs/{jid}").status_code == 204
    assert c.get(f"/jobs/{jid}").status_code == 404 and api.job_count() == before - 1


def _in_another_process(db: Path, statement: str) -> None:
    """Run `statement` against the server's database from a separate Python process (as a trainer would)."""
    code = ("from backend.db import make_engine; from backend.jobs import claim, finish, record_progress; "
            f"from backend.models import JobStatus; e = make_engine('sqlite:///{db}'); {statement}")
    subprocess.run([sys.executable, "-c", code], cwd=str(REPO), check=True)


def test_polled_reads_see_another_process_write_at_once(api: Server, config: dict[str, Any]) -> None:
    """GET /jobs and /jobs/{id} reuse their serialized bytes between writes (backend/readcache.py); a write
    from another process shows in the very next read."""
    c = api.client
    jid = c.post("/jobs", json={"config": config}).json()["id"]
    first = [c.get(f"/jobs/{jid}").json() for _ in range(3)]
    assert first[0] == first[1] == first[2] and first[0]["status"] == "QUEUED"
    assert c.get("/jobs", params={"limit": 5}).json()["items"][0]["id"] == jid
    _in_another_process(api.db, f"claim(e, {jid}, 1, 'test'); record_progress(e, {jid}, 42, {{'step': 21}})")
    job = c.get(f"/jobs/{jid}").json()
    assert job["status"] == "RUNNING" and job["progress"] == 42 and job["job_data"]["step"] == 21
    summary = c.get("/jobs", params={"limit": 5}).json()["items"][0]
    assert summary["id"] == jid and summary["status"] == "RUNNING" and summary["progress"] == 42
    _in_another_process(api.db, f"finish(e, {jid}, JobStatus.STOPPED)")
    assert c.get(f"/jobs/{jid}").json()["status"] == "STOPPED"


def test_templates_queue_jobs_with_overrides(api: Server, fixtures_for_bad_input: dict) -> None:
    c = api.client
    tid = fixtures_for_bad_input["template"]
    listed = c.get("/templates").json()
    assert [t["name"] for t in listed if t["id"] == tid] == ["tiny"]
    assert "save_dir" not in listed[0]["config"]  # only what the user set is stored
    a = c.post(f"/templates/{tid}/queue", json={"config": {"epochs": 2}})
    b = c.post(f"/templates/{tid}/queue")
    assert a.status_code == b.status_code == 202
    assert a.json()["config"]["epochs"] == 2 and b.json()["config"]["epochs"] == 1
    assert a.json()["config"]["save_dir"] != b.json()["config"]["save_dir"]  # each job its own folder
    assert a.json()["job_data"]["template_id"] == tid


def test_plugin_manifest_health_and_openapi(api: Server) -> None:
    from plugin.manifest import build_manifest

    assert api.client.get("/plugin").json() == build_manifest()
    assert api.client.get("/health").json() == {"status": "ok", "database": True, "worker": None}
    spec = api.client.get("/openapi.json").json()
    ops = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"create_job", "list_jobs", "get_job", "stop_job", "retry_job", "delete_job", "job_events",
            "download_artifacts_zip", "queue_template", "health"} <= ops
    body = spec["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/JobCreate")
    assert spec["components"]["schemas"]["JobCreate"]["properties"]["config"]["$ref"].endswith("/TrainConfig")


def test_token_protects_every_route_but_health(base: Path) -> None:
    server = Server(base, worker=False, extra_env={"ANGLE_LAB_API_TOKEN": "s3cret"})
    try:
        c = server.client
        assert c.get("/health").status_code == 200
        for path in ("/jobs", "/plugin", "/openapi.json", "/templates"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert c.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        server.close()


def test_public_bind_without_token_is_refused(base: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANGLE_LAB_API_TOKEN"}
    env["ANGLE_LAB_DATA_DIR"] = str(base / "lab-refused")
    r = subprocess.run([sys.executable, str(REPO / "main.py"), "serve", "--host", "0.0.0.0", "--port", "1"],
                       cwd=str(REPO), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ANGLE_LAB_API_TOKEN" in r.stderr and "0.0.0.0" in r.stderr


def test_sse_of_a_finished_job_sends_its_state_and_closes(api: Server, fixtures_for_bad_input: dict) -> None:
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(_sse_events(api.client, fixtures_for_bad_input["stopped"])))
    t.start()
    t.join(20)
    assert not t.is_alive(), "the stream of a finished job did not close"
    [events] = done
    assert events[-1] == ("status", {**events[-1][1], "status": "STOPPED"})
