"""Every caller stays inside the service's data: one test per item of issue 20, against a real
`main.py serve` (uvicorn on 127.0.0.1, a SQLite file) and, where the database matters, the jobs layer
on SQLite and PostgreSQL.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/backend/test_security.py

The module's server has no worker and no token: what it accepts is what a tokenless lab machine accepts.
Its data roots are <data_dir>/datasets and a `shared/data` folder given relative to the project (as the
README's ../shared/data); its output roots are <data_dir>/runs and a `models` folder. Everything under
`outside/` stands for the rest of the disk: no request may read it, write it or learn what is in it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from backend import jobs, templates
from backend.db import init_db, make_engine, write_session
from backend.models import Job, JobCreate, JobStatus, Template, TemplateCreate
from plugin.config import TrainConfig
from tests.backend.conftest import REPO, run_main
from tests.backend.test_api import PROBLEM, Server
from tests.conftest import _sentence, write_jsonl

INT64_MAX = 2**63 - 1


# ------------------------------------------------------------------ the lab and the rest of the disk
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest.fixture(scope="module")
def tree(base: Path) -> dict[str, Path]:
    rows = [{"text1": _sentence(i, 1), "text2": _sentence(i, 2), "label": float(i % 6)} for i in range(16)]
    lab = base / "lab"
    (lab / "datasets").mkdir(parents=True)
    (base / "shared" / "data").mkdir(parents=True)
    (base / "models").mkdir()
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    (outside / "README.md").write_text("my own notes\n")
    (outside / "credentials.csv").write_text("text1,text2,label\naws_key,AKIASECRETVALUE,1\n")
    (outside / "accelerate.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
    return {"lab": lab, "runs": lab / "runs", "train": write_jsonl(lab / "datasets" / "train.jsonl", rows),
            "shared": base / "shared" / "data", "pairs": write_jsonl(base / "shared" / "data" / "pairs.jsonl", rows),
            "models": base / "models", "outside": outside, "secret": outside / "secret.txt"}


@pytest.fixture(scope="module")
def api(base: Path, tree: dict[str, Path]) -> Iterator[Server]:
    env = {"ANGLE_LAB_DATA_ROOTS": os.path.relpath(tree["shared"], REPO),  # relative to the project: ../...
           "ANGLE_LAB_OUTPUT_ROOTS": str(tree["models"]), "ANGLE_LAB_ALLOWED_HOSTS": "lab.internal"}
    server = Server(base, worker=False, extra_env=env)
    yield server
    server.close()


@pytest.fixture(scope="module")
def config(tree: dict[str, Path]) -> dict[str, Any]:
    """A valid job (the default model is a hub name that resolves to the offline copy)."""
    return {"train_name_or_path": str(tree["train"]), "epochs": 1, "batch_size": 8}


@pytest.fixture()
def db(api: Server) -> Iterator[Engine]:
    """The server's own SQLite file, written from this process as a command-line user or an older version would."""
    engine = make_engine(f"sqlite:///{api.db}")
    yield engine
    engine.dispose()


def _problem(r: httpx.Response, status: int, field: str) -> dict[str, Any]:
    """Assert a problem+json answer naming `field`; return the body."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"] == PROBLEM, r.headers["content-type"]
    body = r.json()
    assert body["status"] == status and body["detail"], body
    assert field in [e["field"] for e in body["errors"]], body["errors"]
    return body


def _message(body: dict[str, Any], field: str) -> str:
    return next(e["message"] for e in body["errors"] if e["field"] == field)


def _post_raw(client: httpx.Client, path: str, text: str) -> httpx.Response:
    """A body as written (JSON escapes such as \\ud800, non-standard tokens such as NaN reach the server as is)."""
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


def _cli_job(db: Engine, config: dict[str, Any], status: JobStatus = JobStatus.STOPPED) -> int:
    """A row the API would refuse: queued from the command line (free paths) or stored before this change."""
    job = jobs.create_raw_job(db, config, None, Path("/nonexistent-runs"))
    assert job.id is not None
    if status == JobStatus.STOPPED:
        jobs.request_stop(db, job.id)
    return job.id


# ------------------------------------------------------------------ 1. nothing outside a job's own folder is read
def test_1_no_caller_reads_a_file_outside_the_output_roots(api: Server, tree: dict[str, Path], db: Engine,
                                                           config: dict[str, Any]) -> None:
    c = api.client
    before = api.job_count()
    for save_dir in ("/etc", "../../etc", "~/.ssh", "/", str(tree["lab"]), str(api.db.parent), str(tree["outside"]),
                     str(tree["runs"]), "."):
        _problem(c.post("/jobs", json={"config": {**config, "save_dir": save_dir}}), 422, "config.save_dir")
    assert api.job_count() == before, "a refused save_dir wrote a job row"

    # A row pointing outside (from the command line, which keeps free paths, or from before) is never served.
    (tree["outside"] / "logs").mkdir()
    (tree["outside"] / "logs" / "stderr.log").write_text("TOP SECRET LOG\n")
    for folder, name in ((tree["outside"], "secret.txt"), (api.db.parent, api.db.name), (Path("/etc"), "hostname"),
                         (tree["lab"], "datasets/train.jsonl")):
        jid = _cli_job(db, {**config, "save_dir": str(folder)})
        for path in (f"/jobs/{jid}/artifacts", f"/jobs/{jid}/artifacts.zip", f"/jobs/{jid}/artifacts/{name}",
                     f"/jobs/{jid}/logs", f"/jobs/{jid}/logs?stream=stdout&offset=0"):
            r = c.get(path)
            _problem(r, 404, "config.save_dir")
            assert b"SECRET" not in r.content and b"SQLite" not in r.content


# ------------------------------------------------------------------ 2. nothing outside the output roots is written
def test_2_a_job_writes_only_in_the_runs_dir_or_an_output_root(api: Server, tree: dict[str, Path],
                                                               config: dict[str, Any]) -> None:
    c = api.client
    before = api.job_count()
    refused = (str(tree["outside"]), str(tree["outside"] / "new"), str(REPO), str(REPO / "runs" / "x"), "../outside",
               "a/../../b", str(tree["models"]), str(tree["shared"] / "out"), str(tree["lab"] / "datasets" / "m"),
               str(tree["runs"] / "job-99999"), "job-99999")
    for save_dir in refused:
        body = _problem(c.post("/jobs", json={"config": {**config, "save_dir": save_dir}}), 422, "config.save_dir")
        assert "no such" not in body["detail"], body
    # Templates (and what a queue request overrides) follow the same rule: the lab page queues through them.
    _problem(c.post("/templates", json={"name": "out", "config": {**config, "save_dir": "/etc"}}), 422,
             "config.save_dir")
    tid = c.post("/templates", json={"name": "sec-2", "config": config}).json()["id"]
    _problem(c.post(f"/templates/{tid}/queue", json={"config": {"save_dir": str(tree["outside"])}}), 422,
             "config.save_dir")
    assert api.job_count() == before
    assert (tree["outside"] / "README.md").read_text() == "my own notes\n" and not (tree["outside"] / "new").exists()

    # A name is a folder in the runs dir; a path inside an output root is kept as given.
    for save_dir, expected in (("my-model", tree["runs"] / "my-model"), ("team/model-a", tree["runs"] / "team/model-a"),
                               (str(tree["runs"] / "abs"), tree["runs"] / "abs"),
                               (str(tree["models"] / "prod"), tree["models"] / "prod")):
        r = c.post("/jobs", json={"config": {**config, "save_dir": save_dir}})
        assert r.status_code == 202, r.text
        assert r.json()["config"]["save_dir"] == str(expected)
    queued = c.post(f"/templates/{tid}/queue", json={"config": {"save_dir": "from-template"}})
    assert queued.status_code == 202 and queued.json()["config"]["save_dir"] == str(tree["runs"] / "from-template")


# ------------------------------------------------------------------ 3. Host and Origin without a token
def test_3_a_tokenless_server_answers_loopback_hosts_and_same_origin_writes_only(api: Server,
                                                                                 config: dict[str, Any]) -> None:
    c, port = api.client, api.port
    jid = c.post("/jobs", json={"config": config}).json()["id"]
    tid = c.post("/templates", json={"name": "sec-3", "config": config}).json()["id"]
    before = api.job_count()
    rebind = {"Host": "rebind.evil.example"}  # a DNS-rebinding page reaches 127.0.0.1 under its own name
    for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", f"/jobs/{jid}/artifacts.zip"),
                         ("POST", f"/jobs/{jid}/stop"), ("GET", "/"), ("GET", "/health")):
        body = {"config": config} if (method, path) == ("POST", "/jobs") else None
        _problem(c.request(method, path, headers=rebind, json=body), 403, "host")
    for host in (f"rebind.evil.example:{port}", f"127.0.0.1:{port + 1}", "localhost.evil.example", "127.0.0.1.nip.io",
                 f"evil@127.0.0.1:{port}"):
        _problem(c.get("/jobs", headers={"Host": host}), 403, "host")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost", "LOCALHOST",
                 "lab.internal", f"lab.internal:{port}"):  # lab.internal: ANGLE_LAB_ALLOWED_HOSTS
        assert c.get("/jobs", headers={"Host": host}).status_code == 200, host

    # A write from another site is refused even with no body; reading is not writing.
    for headers, field in (({"Origin": "http://evil.example"}, "origin"), ({"Origin": f"http://localhost:{port}"}, "origin"),
                           ({"Origin": "null"}, "origin"), ({"Sec-Fetch-Site": "cross-site"}, "sec-fetch-site")):
        _problem(c.post(f"/jobs/{jid}/stop", headers=headers), 403, field)
        _problem(c.post(f"/templates/{tid}/queue", headers=headers), 403, field)
        _problem(c.delete(f"/jobs/{jid}", headers=headers), 403, field)
        _problem(c.post("/jobs", headers=headers, json={"config": config}), 403, field)
    assert c.get(f"/jobs/{jid}").json()["status"] == "QUEUED" and api.job_count() == before
    assert c.get("/jobs", headers={"Origin": "http://evil.example"}).status_code == 200
    same = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}  # what the lab page sends
    assert c.post(f"/jobs/{jid}/stop", headers=same).status_code == 202


def test_3_the_lab_page_still_writes_from_a_real_browser(api: Server, config: dict[str, Any]) -> None:
    """Chromium's own Origin and Sec-Fetch-* headers on the page's fetches pass the checks."""
    from tests.backend.test_ui import CHROMIUM, CHROMIUM_ARGS, sync_playwright

    if sync_playwright is None or not CHROMIUM.exists():
        pytest.skip("the playwright package or /usr/bin/chromium is missing")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(api.url + "/")
            page.wait_for_selector("#queue-job")
            status = page.evaluate("""async (config) => {
                const r = await fetch("/jobs", {method: "POST", headers: {"content-type": "application/json"},
                                                body: JSON.stringify({config})});
                const job = await r.json();
                return [r.status, (await fetch(`/jobs/${job.id}/stop`, {method: "POST"})).status];
            }""", config)
        finally:
            browser.close()
    assert status == [202, 202]


def test_3_with_a_token_any_host_is_served_to_token_holders(base: Path) -> None:
    server = Server(base, worker=False, extra_env={"ANGLE_LAB_API_TOKEN": "s3cret"})
    try:
        rebind = {"Host": "lab.example.org", "Origin": "http://elsewhere.example"}
        assert server.client.get("/jobs", headers=rebind).status_code == 401
        token = {**rebind, "Authorization": "Bearer s3cret"}
        assert server.client.get("/jobs", headers=token).status_code == 200
    finally:
        server.close()


# ------------------------------------------------------------------ 4. odd text: 422, never a 500
SURROGATE = "\ud800"  # json.dumps writes it as the escape \ud800, which json.loads turns back into a lone surrogate


def test_4_lone_surrogates_and_control_characters_are_a_422_naming_the_field(api: Server, db: Engine,
                                                                             config: dict[str, Any]) -> None:
    c = api.client
    before = api.job_count()
    cases = [
        ("config.model_name_or_path", {"config": {**config, "model_name_or_path": SURROGATE}}),
        ("config.train_name_or_path", {"config": {**config, "train_name_or_path": f"{SURROGATE}.jsonl"}}),
        ("config.save_dir", {"config": {**config, "save_dir": SURROGATE}}),
        ("config.save_dir", {"config": {**config, "save_dir": "a\x00b"}}),
        ("config.save_dir", {"config": {**config, "save_dir": "a\nb"}}),
        ("config.text_prompt", {"config": {**config, "text_prompt": f"{SURROGATE} {{text}}"}}),
        ("config.text_prompt", {"config": {**config, "text_prompt": "\x1b[2J {text}"}}),
        ("config.wandb_project", {"config": {**config, "wandb_project": "p\x7f"}}),
        ("config.lora_target_modules", {"config": {**config, "lora_target_modules": ["q_proj", "v\x00"]}}),
        ("config.column_rename_mapping", {"config": {**config, "column_rename_mapping": {SURROGATE: "text1"}}}),
        ("launch.config_file", {"config": config, "launch": {"config_file": "a\x00.yaml"}}),
        ("config", {"config": {**config, SURROGATE: 1}}),
    ]
    for field, body in cases:
        _problem(_post_raw(c, "/jobs", json.dumps(body)), 422, field)
    _problem(_post_raw(c, "/templates", json.dumps({"name": f"t{SURROGATE}", "config": config})), 422, "name")
    _problem(_post_raw(c, "/templates", json.dumps({"name": "t", "description": "\x00", "config": config})), 422,
             "description")
    assert api.job_count() == before, "odd text wrote a job row"
    # Lines in a prompt (an instruction, then the text) are fine.
    prompt = c.post("/jobs", json={"config": {**config, "text_prompt": "Instruct: match\nQuery: {text}"}})
    assert prompt.status_code == 202, prompt.text

    # A row stored before this change, with a lone surrogate where GET /jobs shows it, does not break the list.
    jid = _cli_job(db, {**config, "model_name_or_path": SURROGATE, "wandb_project": f"p{SURROGATE}"})
    for path in ("/jobs", "/jobs?view=full", f"/jobs/{jid}"):
        r = c.get(path)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", (path, r.text[:300])
    assert c.get(f"/jobs/{jid}").json()["config"]["model_name_or_path"] == "\ufffd"
    assert c.post(f"/jobs/{jid}/retry").status_code == 202 and c.post(f"/jobs/{jid}/stop").status_code == 202
    _problem(c.get(f"/jobs/{jid}/artifacts"), 404, "config.save_dir")


# ------------------------------------------------------------------ 5. numbers: finite or a 422
NON_FINITE = ("Infinity", "-Infinity", "NaN", "1e999")


def test_5_non_finite_numbers_are_a_422_and_old_rows_do_not_break_queueing(api: Server, db: Engine,
                                                                           config: dict[str, Any]) -> None:
    c = api.client
    before = api.job_count()
    train = json.dumps(config["train_name_or_path"])
    for token in NON_FINITE:
        for field, text in (
                ("config.cosine_w", f'{{"config": {{"train_name_or_path": {train}, "cosine_w": {token}}}}}'),
                ("config.ibn_tau", f'{{"config": {{"train_name_or_path": {train}, "ibn_tau": {token}}}}}'),
                ("config.weight_decay", f'{{"config": {{"train_name_or_path": {train}, "weight_decay": {token}}}}}'),
                ("config.ibn_label_threshold",
                 f'{{"config": {{"train_name_or_path": {train}, "ibn_label_threshold": {token}}}}}'),
                ("config.matryoshka_weights.1", f'{{"config": {{"train_name_or_path": {train}, '
                                                f'"matryoshka_dims": [384, 128], "matryoshka_weights": [1, {token}]}}}}'),
                ("launch.stop_grace_s", f'{{"config": {{"train_name_or_path": {train}}}, '
                                        f'"launch": {{"stop_grace_s": {token}}}}}')):
            _problem(_post_raw(c, "/jobs", text), 422, field)
        tid = c.post("/templates", json={"name": f"sec-5-{token}", "config": config}).json()["id"]
        _problem(_post_raw(c, f"/templates/{tid}/queue", f'{{"config": {{"kd_temperature": {token}}}}}'), 422,
                 "config.kd_temperature")
    assert api.job_count() == before, "a non-finite number wrote a job row"

    # A RUNNING row stored before this change, its config holding NaN (non-standard JSON that SQLite's
    # json_extract refuses), no longer fails every POST /jobs in the save_dir check.
    jid = _cli_job(db, {**config, "save_dir": str(api.db.parent / "legacy")}, JobStatus.QUEUED)
    with sqlite3.connect(api.db) as conn:
        legacy = {**config, "save_dir": str(api.db.parent / "legacy"), "weight_decay": float("nan")}
        conn.execute("UPDATE job SET config = ?, status = 'RUNNING' WHERE id = ?", (json.dumps(legacy), jid))
    try:
        assert c.post("/jobs", json={"config": config}).status_code == 202
        assert c.get("/jobs").status_code == 200 and c.get(f"/jobs/{jid}").json()["config"]["weight_decay"] is None
    finally:
        with sqlite3.connect(api.db) as conn:
            conn.execute("UPDATE job SET status = 'FAILED' WHERE id = ?", (jid,))


def test_5_the_database_holds_standard_json_only(engine: Engine, tmp_path: Path) -> None:
    """An unvalidated config from a file, and a NaN loss from a trainer, are written as null (both databases:
    PostgreSQL's json type refuses NaN outright, SQLite's json_extract fails on it)."""
    job = jobs.create_raw_job(engine, {"train_name_or_path": "t.jsonl", "weight_decay": float("inf")}, None, tmp_path)
    assert job.id is not None
    jobs.claim(engine, job.id, 1, "h")
    jobs.record_progress(engine, job.id, 5, {"loss": float("nan")}, {"losses": [{"step": 1, "loss": float("-inf")}]})
    stored = jobs.get_job(engine, job.id)
    assert stored.config["weight_decay"] is None and stored.job_data["loss"] is None
    assert stored.job_data["losses"] == [{"step": 1, "loss": None}]
    other = jobs.create_job(engine, JobCreate(config=TrainConfig(train_name_or_path="t.jsonl")), tmp_path)
    assert other.id != job.id


# ------------------------------------------------------------------ 6. ids and folders are never reused
def test_6_a_deleted_jobs_id_and_files_never_come_back(api: Server, tree: dict[str, Path],
                                                       config: dict[str, Any]) -> None:
    c = api.client
    newest = c.post("/jobs", json={"config": config}).json()
    folder = Path(newest["config"]["save_dir"])
    (folder / "logs").mkdir(parents=True)
    (folder / "logs" / "stdout.log").write_text("the deleted job's log\n")
    (folder / "model.safetensors").write_bytes(b"weights")
    assert c.post(f"/jobs/{newest['id']}/stop").status_code == 202
    assert c.delete(f"/jobs/{newest['id']}").status_code == 204
    assert not folder.exists(), "deleting a job left its run folder for the next job"
    new = c.post("/jobs", json={"config": config}).json()
    assert new["id"] > newest["id"] and new["config"]["save_dir"] != str(folder)
    assert c.get(f"/jobs/{new['id']}/artifacts").json()["files"] == []
    assert c.get(f"/jobs/{new['id']}/logs", params={"stream": "stdout"}).json()["text"] == ""

    # A folder another job's output shares stays until the last of them goes.
    shared = [c.post("/jobs", json={"config": {**config, "save_dir": "shared-out"}}).json()["id"]]
    c.post(f"/jobs/{shared[0]}/stop")
    shared.append(c.post("/jobs", json={"config": {**config, "save_dir": "shared-out"}}).json()["id"])
    c.post(f"/jobs/{shared[1]}/stop")
    (tree["runs"] / "shared-out").mkdir()
    assert c.delete(f"/jobs/{shared[0]}").status_code == 204 and (tree["runs"] / "shared-out").is_dir()
    assert c.delete(f"/jobs/{shared[1]}").status_code == 204 and not (tree["runs"] / "shared-out").exists()

    # A job-N folder no row owns (a database reset, a row deleted by an older version) is skipped, not inherited.
    last = c.post("/jobs", json={"config": config}).json()["id"]
    leftover = tree["runs"] / f"job-{last + 1}"
    leftover.mkdir()
    (leftover / "old.txt").write_text("someone else's")
    skipped = c.post("/jobs", json={"config": config}).json()
    assert skipped["id"] == last + 2 and (leftover / "old.txt").exists()
    with sqlite3.connect(api.db) as conn:
        tables = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE name IN ('job', 'job_template')"))
    assert all("AUTOINCREMENT" in sql for sql in tables.values()) and len(tables) == 2


def test_6_ids_only_grow_on_both_databases(engine: Engine, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    spec = JobCreate(config=TrainConfig(train_name_or_path="t.jsonl"))
    first, newest = jobs.create_job(engine, spec, runs), jobs.create_job(engine, spec, runs)
    assert first.id is not None and newest.id is not None
    folder = Path(newest.config["save_dir"])
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w")
    jobs.request_stop(engine, newest.id)
    jobs.delete_job(engine, newest.id, runs)
    assert not folder.exists()
    again = jobs.create_job(engine, spec, runs)
    assert again.id is not None and again.id > newest.id
    (runs / f"job-{again.id + 1}").mkdir()
    assert jobs.create_job(engine, spec, runs).id == again.id + 2
    # A folder outside the runs dir (a command-line job's own) is never removed.
    mine = tmp_path / "mine"
    mine.mkdir()
    own = jobs.create_job(engine, JobCreate(config=TrainConfig(train_name_or_path="t.jsonl", save_dir=str(mine))), runs)
    assert own.id is not None
    jobs.request_stop(engine, own.id)
    jobs.delete_job(engine, own.id, runs)
    assert mine.is_dir()
    # Templates too.
    t_spec = {"config": TrainConfig(train_name_or_path="t.jsonl")}
    t1 = templates.create_template(engine, TemplateCreate(name="a", **t_spec))
    with write_session(engine) as s:
        s.delete(s.get(Template, t1.id))
    t2 = templates.create_template(engine, TemplateCreate(name="b", **t_spec))
    assert t2.id is not None and t1.id is not None and t2.id > t1.id


def test_6_an_older_sqlite_file_moves_to_autoincrement(tmp_path: Path) -> None:
    """Tables made before ids were AUTOINCREMENT are rebuilt in place, rows and indexes kept."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        for table in (Job.__table__, Template.__table__):  # type: ignore[attr-defined]
            ddl = str(CreateTable(table).compile(dialect=engine.dialect))
            conn.exec_driver_sql(ddl.replace(" AUTOINCREMENT", ""))
            for index in table.indexes:
                conn.exec_driver_sql(str(CreateIndex(index).compile(dialect=engine.dialect)))
        assert "AUTOINCREMENT" not in conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name='job'").scalar()
    runs = tmp_path / "runs"
    spec = JobCreate(config=TrainConfig(train_name_or_path="t.jsonl", epochs=3))
    ids = [jobs.create_job(engine, spec, runs).id for _ in range(3)]
    with engine.begin() as conn:  # what an older version's DELETE did: the row went, its folder stayed
        conn.exec_driver_sql("DELETE FROM job WHERE id = ?", (ids[-1],))
    (runs / f"job-{ids[-1]}").mkdir(parents=True)
    init_db(engine)
    init_db(engine)  # idempotent
    with engine.begin() as conn:
        sql = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").all())
        indexes = {r[1] for r in conn.exec_driver_sql("PRAGMA index_list('job')").all()}
    assert "AUTOINCREMENT" in sql["job"] and "AUTOINCREMENT" in sql["job_template"]
    assert "ix_job_status_created" in indexes and not [n for n in sql if n.endswith("before_autoincrement")]
    assert [j.id for j in reversed(jobs.list_jobs(engine))] == ids[:2]
    assert jobs.get_job(engine, ids[0]).config["epochs"] == 3
    assert jobs.create_job(engine, spec, runs).id == ids[-1] + 1  # the deleted id (and its folder) is skipped
    engine.dispose()


# ------------------------------------------------------------------ 7. out-of-range numbers; symlinked logs
ID_ROUTES = [("GET", "/jobs/{id}", "job_id"), ("POST", "/jobs/{id}/stop", "job_id"),
             ("POST", "/jobs/{id}/retry", "job_id"), ("DELETE", "/jobs/{id}", "job_id"),
             ("GET", "/jobs/{id}/events", "job_id"), ("GET", "/jobs/{id}/logs", "job_id"),
             ("GET", "/jobs/{id}/artifacts", "job_id"), ("GET", "/jobs/{id}/artifacts.zip", "job_id"),
             ("GET", "/jobs/{id}/artifacts/config.json", "job_id"), ("POST", "/templates/{id}/queue", "template_id")]


def test_7_out_of_range_ids_and_offsets_are_a_422_and_logs_stay_in_the_folder(
        api: Server, tree: dict[str, Path], config: dict[str, Any]) -> None:
    c = api.client
    for method, route, field in ID_ROUTES:
        for big in (INT64_MAX + 1, 2**64, -(2**63) - 1, 10**30):
            _problem(c.request(method, route.format(id=big)), 422, field)
        _problem(c.request(method, route.format(id=INT64_MAX)), 404, field)
    jid = c.post("/jobs", json={"config": {**config, "save_dir": "symlinked-logs"}}).json()["id"]
    for path in ("/jobs", "/templates", f"/jobs/{jid}/logs"):
        _problem(c.get(path, params={"offset": 2**64}), 422, "offset")
    assert c.get(f"/jobs/{jid}/logs", params={"offset": INT64_MAX}).status_code == 200

    # A log file that is a symlink out of the job's folder is not followed.
    logs = tree["runs"] / "symlinked-logs" / "logs"
    logs.mkdir(parents=True)
    (logs / "stderr.log").symlink_to(tree["secret"])
    (logs / "stdout.log").write_text("inside\n")
    leaked = c.get(f"/jobs/{jid}/logs").json()
    assert leaked["text"] == "" and leaked["size"] == 0
    assert c.get(f"/jobs/{jid}/logs", params={"stream": "stdout"}).json()["text"] == "inside"
    assert "Traceback" not in api.log.read_text(), "a request made the server log a traceback"


# ------------------------------------------------------------------ 8. inputs: hub names or the data roots
INPUTS = ("train_name_or_path", "valid_name_or_path", "test_name_or_path", "model_name_or_path",
          "tokenizer_name_or_path", "teacher_name_or_path", "pretrained_lora_path", "resume_from_checkpoint")


def test_8_input_paths_are_hub_names_or_inside_the_data_roots(api: Server, tree: dict[str, Path], base: Path,
                                                              config: dict[str, Any]) -> None:
    c = api.client
    before = api.job_count()
    probes = (str(tree["secret"]), str(tree["outside"] / "missing.txt"), "../../../etc", "/etc/passwd", "/etc/nope",
              "~/.ssh/id_rsa", str(api.db), str(tree["lab"]), "./README.md", "plugin", str(tree["outside"]))
    for name in INPUTS:
        extra = {"apply_lora": True} if name == "pretrained_lora_path" else {}
        answers = set()
        for value in probes:
            body = _problem(c.post("/jobs", json={"config": {**config, **extra, name: value}}), 422, f"config.{name}")
            answers.add(_message(body, f"config.{name}"))
        assert len(answers) == 1, (name, answers)  # the same answer whether or not the path exists
    answers = set()
    for value in (str(tree["outside"] / "accelerate.yaml"), str(tree["outside"] / "nope.yaml"), "/etc/hostname"):
        body = _problem(c.post("/jobs", json={"config": config, "launch": {"config_file": value}}), 422,
                        "launch.config_file")
        answers.add(_message(body, "launch.config_file"))
    assert len(answers) == 1
    credentials = c.post("/jobs", json={"config": {**config, "train_name_or_path": str(tree["outside"] / "credentials.csv")}})
    assert credentials.status_code == 422 and "AKIA" not in credentials.text
    assert api.job_count() == before, "a refused input path wrote a job row"

    # Inside the roots: the datasets folder, an operator's root (given relative to the project, as the README's
    # ../shared/data), an earlier job's output, and hub names.
    relative = os.path.relpath(tree["pairs"], REPO)
    assert relative.startswith("../")
    checkpoint = tree["runs"] / "earlier" / "checkpoints" / "checkpoint-6"
    checkpoint.mkdir(parents=True)
    for changes in ({"train_name_or_path": relative}, {"train_name_or_path": str(tree["pairs"])},
                    {"valid_name_or_path": str(tree["train"])}, {"resume_from_checkpoint": str(checkpoint)},
                    {"resume_from_checkpoint": "last"}, {"train_name_or_path": "sentence-transformers/stsb"},
                    {"model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2"},
                    {"teacher_name_or_path": "BAAI/bge-small-en-v1.5"}):
        r = c.post("/jobs", json={"config": {**config, **changes}})
        assert r.status_code == 202, (changes, r.text)
    body = _problem(c.post("/jobs", json={"config": {**config, "valid_name_or_path": str(tree["shared"] / "nope.jsonl")}}),
                    422, "config.valid_name_or_path")
    assert "no such file" in body["detail"]  # inside a root, a missing file is named as such

    # The local command line keeps free paths: they are the user's own.
    job_file = base / "cli-job.json"
    job_file.write_text(json.dumps({**config, "valid_name_or_path": str(tree["outside"] / "credentials.csv"),
                                    "save_dir": str(tree["outside"] / "cli-out")}))
    env = {**os.environ, "ANGLE_LAB_DATA_DIR": str(tree["lab"]), "HF_HUB_OFFLINE": "1"}
    env.pop("ANGLE_LAB_DATA_ROOTS", None)
    done = run_main(["queue", "--config", str(job_file), "--db", f"sqlite:///{api.db}"], env)
    assert done.returncode == 0, done.stderr
    cli = c.get(f"/jobs/{int(done.stdout.split()[-1])}").json()
    assert cli["config"]["save_dir"] == str(tree["outside"] / "cli-out")
