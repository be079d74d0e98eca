"""Uploaded datasets (POST/GET/DELETE /datasets) against a real `main.py serve`, no worker (queued jobs stay put).

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_datasets.py -q
"""

from __future__ import annotations

import csv
import io
import json
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backend.test_api import PROBLEM, Server
from tests.conftest import _sentence

LIMIT = 3 << 20  # the server's max_upload_bytes: bigger than max_body_bytes (1 MiB), which still holds elsewhere
ROWS_A = [{"text1": _sentence(i, 1), "text2": _sentence(i, 2), "label": float(i % 6)} for i in range(20)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="module")
def lab(base: Path) -> Iterator[Server]:
    server = Server(base, worker=False, extra_env={"ANGLE_LAB_MAX_UPLOAD_BYTES": str(LIMIT)})
    yield server
    server.close()


@pytest.fixture()
def client(lab: Server) -> httpx.Client:
    return lab.client


def datasets_dir(base: Path) -> Path:
    return base / "lab" / "datasets"


def upload(client: httpx.Client, name: str, body: bytes) -> httpx.Response:
    return client.post("/datasets", params={"name": name}, content=body,
                       headers={"content-type": "application/octet-stream"})


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def delimited(rows: list[dict[str, Any]], delimiter: str) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def beir_zip(prefix: str = "scifact/", extra: dict[str, bytes] | None = None) -> bytes:
    files = {
        "corpus.jsonl": jsonl([{"_id": f"d{i}", "title": f"T{i}", "text": _sentence(i, 3)} for i in range(6)]),
        "queries.jsonl": jsonl([{"_id": f"q{i}", "text": _sentence(i, 1)} for i in range(6)]),
        "qrels/train.tsv": b"query-id\tcorpus-id\tscore\n" + b"".join(f"q{i}\td{i}\t1\n".encode() for i in range(6)),
        "qrels/dev.tsv": b"query-id\tcorpus-id\tscore\nq0\td1\t1\nq1\td2\t1\n",
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out.getvalue()


def assert_problem(r: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    [error] = [e for e in r.json()["errors"] if e["field"] == field]
    return error


def assert_nothing_left(base: Path, *names: str) -> None:
    root = datasets_dir(base)
    assert not any((root / ".uploads").iterdir()), "a refused upload left its temp file"
    for name in names:
        assert not (root / name).exists()


# ------------------------------------------------------------------ good files
@pytest.mark.parametrize(("name", "body"), [
    ("a.jsonl", jsonl(ROWS_A)), ("a.json", json.dumps(ROWS_A).encode()), ("a.csv", delimited(ROWS_A, ",")),
    ("a.tsv", delimited(ROWS_A, "\t")), ("a.parquet", parquet(ROWS_A)),
])
def test_each_file_type_is_stored_and_described(client: httpx.Client, base: Path, name: str, body: bytes) -> None:
    r = upload(client, name, body)
    assert r.status_code == 201, r.text
    d = r.json()
    assert (d["name"], d["ref"], d["kind"], d["format"], d["rows"]) == (name, f"dataset:{name}", "file", "A", 20)
    assert d["columns"] == ["text1", "text2", "label"]
    assert d["preview"][0]["text1"] == ROWS_A[0]["text1"] and len(d["preview"]) == 5
    assert Path(d["path"]) == datasets_dir(base) / name and Path(d["path"]).read_bytes() == body
    assert r.headers["location"] == f"/datasets/{name}"
    listed = {x["name"]: x for x in client.get("/datasets").json()["items"]}
    assert listed[name] == d
    assert client.get(f"/datasets/{name}").json() == d
    assert client.delete(f"/datasets/{name}").status_code == 204
    assert name not in {x["name"] for x in client.get("/datasets").json()["items"]}
    assert_problem(client.get(f"/datasets/{name}"), 404, "name")


def test_formats_b_and_c_are_detected(client: httpx.Client) -> None:
    rows_c = [{"query": _sentence(i, 1), "positive": _sentence(i, 2), "negative": _sentence(i, 3)} for i in range(8)]
    assert upload(client, "c.jsonl", jsonl(rows_c)).json()["format"] == "C"
    rows_b = [{"query": r["query"], "positive": r["positive"]} for r in rows_c]
    assert upload(client, "b.csv", delimited(rows_b, ",")).json()["format"] == "B"


# ------------------------------------------------------------------ bad files: refused, the row and column named
@pytest.mark.parametrize(("name", "body", "row", "column"), [
    ("missing-label.jsonl", jsonl([*ROWS_A[:3], {"text1": "a", "text2": "b"}]), "4", "label"),
    ("bad-label.csv", delimited([*ROWS_A[:2], {**ROWS_A[2], "label": "high"}], ","), "3", "label"),
    ("empty-text.jsonl", jsonl([ROWS_A[0], {**ROWS_A[1], "text2": ""}]), "2", "text2"),
])
def test_a_bad_file_is_refused_naming_row_and_column(
        client: httpx.Client, base: Path, name: str, body: bytes, row: str, column: str) -> None:
    error = assert_problem(upload(client, name, body), 422, "body")
    assert (error["row"], error["column"]) == (row, column), error
    assert error["message"].startswith(f"{name}: row {row}") and str(base) not in error["message"]
    assert_nothing_left(base, name)


@pytest.mark.parametrize(("name", "body", "says"), [
    ("broken.jsonl", b'{"text1": "a", "text2": "b", "label": 1}\n{"text1": \n', "row 2 is not valid JSON"),
    ("cols.jsonl", jsonl([{"a": 1, "b": 2}]), "cannot detect the data format"),
    ("nothing.jsonl", b"", "empty"),
    ("junk.parquet", b"not a parquet file at all", "cannot read file"),
    ("binary.csv", b"\xff\xfe\x00bad", "cannot read file"),
])
def test_unreadable_files_are_refused_never_a_500(client: httpx.Client, base: Path, name: str, body: bytes,
                                                  says: str) -> None:
    error = assert_problem(upload(client, name, body), 422, "body")
    assert says in error["message"]
    assert_nothing_left(base, name)


# ------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["../x.jsonl", "a/b.jsonl", "a\\b.jsonl", "x..jsonl", "bad\x01.jsonl", ".hidden.jsonl",
                                  "notes.txt", "run.exe", "", " a.jsonl", ".zip", "x" * 300 + ".jsonl"])
def test_bad_names_are_refused_naming_the_field(client: httpx.Client, base: Path, name: str) -> None:
    assert_problem(upload(client, name, jsonl(ROWS_A)), 422, "name")
    assert sorted(p.name for p in datasets_dir(base).parent.iterdir() if p.suffix == ".jsonl") == []


def test_a_missing_name_is_a_422_naming_it(client: httpx.Client) -> None:
    assert_problem(client.post("/datasets", content=jsonl(ROWS_A)), 422, "name")


def test_a_taken_name_is_a_409_and_the_first_file_stays(client: httpx.Client, base: Path) -> None:
    assert upload(client, "twice.jsonl", jsonl(ROWS_A)).status_code == 201
    assert_problem(upload(client, "twice.jsonl", jsonl(ROWS_A[:3])), 409, "name")
    assert client.get("/datasets/twice.jsonl").json()["rows"] == 20


# ------------------------------------------------------------------ size: own limit for uploads only
def test_uploads_have_their_own_size_limit(client: httpx.Client, base: Path) -> None:
    big = jsonl([{**ROWS_A[i % 20], "text1": ROWS_A[i % 20]["text1"] + " x" * 200} for i in range(4000)])
    assert (1 << 20) < len(big) < LIMIT
    assert upload(client, "big.jsonl", big).status_code == 201  # past max_body_bytes: that limit is not this one's
    over = big * 2
    assert_problem(upload(client, "over.jsonl", over), 413, "body")  # Content-Length says so
    chunks = (over[i:i + 65536] for i in range(0, len(over), 65536))  # chunked: counted as it arrives
    r = client.post("/datasets", params={"name": "over2.jsonl"}, content=chunks)
    assert_problem(r, 413, "body")
    assert_nothing_left(base, "over.jsonl", "over2.jsonl")
    # Every other route keeps the 1 MiB body limit.
    assert_problem(client.post("/jobs", content=b"{" + b" " * (1 << 20) + b"}",
                               headers={"content-type": "application/json"}), 413, "body")


# ------------------------------------------------------------------ BEIR folders as zips
@pytest.mark.parametrize("prefix", ["scifact/", ""])
def test_a_beir_zip_is_unpacked_and_checked(client: httpx.Client, base: Path, prefix: str) -> None:
    name = f"beir{len(prefix)}"
    r = upload(client, f"{name}.zip", beir_zip(prefix))
    assert r.status_code == 201, r.text
    d = r.json()
    assert (d["name"], d["kind"], d["format"], d["splits"], d["rows"]) == (name, "beir", "B", ["dev", "train"], 2)
    folder = datasets_dir(base) / name
    assert (folder / "corpus.jsonl").is_file() and (folder / "qrels" / "train.tsv").is_file()
    assert d["preview"][0]["query"] == _sentence(0, 1)


def _symlink_zip() -> bytes:
    out = io.BytesIO(beir_zip())
    with zipfile.ZipFile(out, "a") as zf:
        info = zipfile.ZipInfo("scifact/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return out.getvalue()


def _bomb_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("scifact/corpus.jsonl", b" " * (LIMIT * 20 + 1))
    return out.getvalue()


@pytest.mark.parametrize(("body", "says"), [
    (beir_zip(extra={"../evil.txt": b"x"}), "points outside"),
    (beir_zip(extra={"/abs.txt": b"x"}), "points outside"),
    (_symlink_zip(), "symbolic link"),
    (_bomb_zip(), "unpacks to more than"),
    (beir_zip(prefix="a/b/"), "must hold a BEIR folder"),
    (b"PK\x03\x04 not really", "not a readable zip"),
    (beir_zip(extra={"scifact/qrels/test.tsv": b"query-id\tcorpus-id\tscore\nq0\tnope\t1\n"}), "test.tsv"),
])
def test_unsafe_or_wrong_zips_are_refused(client: httpx.Client, base: Path, body: bytes, says: str) -> None:
    error = assert_problem(upload(client, "bad.zip", body), 422, "body")
    assert says in error["message"], error
    assert_nothing_left(base, "bad")
    assert not (base / "evil.txt").exists() and not (base / "lab" / "evil.txt").exists()


# ------------------------------------------------------------------ jobs name uploads; delete waits for them
def test_a_job_names_an_upload_and_the_upload_is_kept_while_the_job_is_queued(client: httpx.Client, base: Path) -> None:
    assert upload(client, "train.jsonl", jsonl(ROWS_A)).status_code == 201
    r = client.post("/jobs", json={"config": {"train_name_or_path": "dataset:train.jsonl", "epochs": 1}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["config"]["train_name_or_path"] == str(datasets_dir(base) / "train.jsonl")
    missing = client.post("/jobs", json={"config": {"train_name_or_path": "dataset:nope.jsonl",
                                                    "valid_name_or_path": "dataset:../jobs.db"}})
    assert_problem(missing, 422, "config.train_name_or_path")
    assert_problem(missing, 422, "config.valid_name_or_path")

    refused = assert_problem(client.delete("/datasets/train.jsonl"), 409, "name")
    assert f"job {job['id']}" in refused["message"] and refused["job_id"] == str(job["id"])
    assert (datasets_dir(base) / "train.jsonl").is_file()
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert client.delete("/datasets/train.jsonl").status_code == 204
    assert not (datasets_dir(base) / "train.jsonl").exists()


def test_a_job_reading_a_file_inside_an_uploaded_beir_folder_blocks_its_delete(client: httpx.Client, base: Path) -> None:
    assert upload(client, "held.zip", beir_zip()).status_code == 201
    r = client.post("/jobs", json={"config": {"train_name_or_path": "dataset:held", "epochs": 1,
                                              "mine_hard_negatives": True}})
    assert r.status_code == 202, r.text
    assert_problem(client.delete("/datasets/held"), 409, "name")
    client.delete(f"/jobs/{r.json()['id']}")
    assert client.delete("/datasets/held").status_code == 204


@pytest.mark.parametrize("name", ["..", "...", "%2e%2e", ".meta", ".uploads", "nope"])
def test_delete_never_leaves_the_datasets_folder(client: httpx.Client, base: Path, name: str) -> None:
    r = client.delete(f"/datasets/{name}")
    assert r.status_code in (404, 405) and r.headers["content-type"] == PROBLEM
    assert (base / "lab").is_dir() and (datasets_dir(base) / ".uploads").is_dir()


def test_a_template_keeps_the_ref_and_queueing_it_resolves_it(client: httpx.Client, base: Path) -> None:
    assert upload(client, "tpl.jsonl", jsonl(ROWS_A)).status_code == 201
    assert_problem(client.post("/templates", json={"name": "t-missing", "config": {
        "train_name_or_path": "dataset:gone.jsonl"}}), 422, "config.train_name_or_path")
    r = client.post("/templates", json={"name": "t-upload", "config": {"train_name_or_path": "dataset:tpl.jsonl"}})
    assert r.status_code == 201, r.text
    assert r.json()["config"]["train_name_or_path"] == "dataset:tpl.jsonl"
    queued = client.post(f"/templates/{r.json()['id']}/queue", json={})
    assert queued.status_code == 202, queued.text
    assert queued.json()["config"]["train_name_or_path"] == str(datasets_dir(base) / "tpl.jsonl")
    assert_problem(client.delete("/datasets/tpl.jsonl"), 409, "name")
    client.delete(f"/jobs/{queued.json()['id']}")
