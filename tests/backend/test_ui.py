"""The lab page (GET /) in a real headless Chromium against a real `main.py serve`.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_ui.py -q
    ANGLE_LAB_SCREENSHOT_DIR=docs/img HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/backend/test_ui.py -q

Debian's chromium (/usr/bin/chromium) driven by the `playwright` package; no browser is ever
downloaded. The browser tests skip, saying why, when either is missing; the HTTP checks still run.

One server for the module, with a worker and a bearer token: the page's token path (paste it,
send it on every fetch, the event stream read through fetch, downloads fetched with the header)
is the one that runs, and it is the stricter one. Screenshots of the form, the jobs list and the
job page go to pytest's tmp dir and, when ANGLE_LAB_SCREENSHOT_DIR is set, there as lab-*.png.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.ui import STATIC_DIR
from tests.backend.test_api import Server
from tests.conftest import _sentence, write_jsonl

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # the browser tests skip; the HTTP checks below still run
    sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "lab-page-token"
JOB_TIMEOUT_MS = 120_000  # a tiny job takes ~20 s on two busy cores; the limit only catches a hang


# ------------------------------------------------------------------ server and data
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def lab(base: Path) -> Iterator[Server]:
    server = Server(base, worker=True, extra_env={"ANGLE_LAB_API_TOKEN": TOKEN})
    yield server
    server.close()


@pytest.fixture(scope="module")
def auth(lab: Server) -> Iterator[httpx.Client]:
    """The test's own API client, with the token (lab.client has none)."""
    with httpx.Client(base_url=lab.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def data(base: Path) -> dict[str, Path]:
    """Format A train and dev files (the rows of tests/conftest.py's data_a)."""
    rows = [{"text1": _sentence(i, 1), "text2": _sentence(i, 2 + i % 3), "label": float(i % 6)} for i in range(48)]
    return {"train": write_jsonl(base / "train.jsonl", rows), "dev": write_jsonl(base / "dev.jsonl", rows[:16])}


# ------------------------------------------------------------------ the page over plain HTTP
def _static_files() -> list[str]:
    return sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())


def test_page_and_static_files_load_without_a_token_and_the_api_still_needs_one(lab: Server) -> None:
    with httpx.Client(base_url=lab.url, timeout=30) as anon:
        page = anon.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/js/app.js">' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert anon.head("/").status_code == 200
        for rel in _static_files():
            r = anon.get(f"/static/{rel}")
            assert r.status_code == 200 and r.headers["cache-control"] == "no-cache", rel
        assert anon.get("/health").status_code == 200
        for path in ("/jobs", "/plugin", "/openapi.json", "/templates", "/jobs/1/artifacts.zip"):
            assert anon.get(path).status_code == 401, path
        missing = anon.get("/static/js/nope.js")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    # The exemption is by path: a path that only starts like the static folder reaches no API route.
    # (http.client sends the path as written; httpx would normalize the '..' away.)
    conn = http.client.HTTPConnection("127.0.0.1", lab.port, timeout=30)
    try:
        conn.request("GET", "/static/../plugin")
        r = conn.getresponse()
        assert r.status == 404 and b"parameters" not in r.read()
    finally:
        conn.close()


def test_the_page_works_offline_no_url_leaves_the_server() -> None:
    for rel in _static_files():
        text = (STATIC_DIR / rel).read_text()
        # The SVG namespace is a name, not a request.
        urls = [u for u in re.findall(r"https?://[^\s\"'`)]+", text) if not u.startswith("http://www.w3.org/")]
        assert not urls, f"{rel} refers to {urls}: the page must load with no network beyond its own server"


# ------------------------------------------------------------------ browser fixtures
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` (setup.sh does it when run as root)")
    if sync_playwright is None:
        pytest.skip("the playwright Python package is missing: `.venv/bin/pip install playwright` (setup.sh does it)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 960}, accept_downloads=True)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


def _page(ctx: BrowserContext) -> Page:
    """A new tab whose uncaught script errors fail the test (console 401s are expected: they ask for the token)."""
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.script_errors = errors  # type: ignore[attr-defined]
    return page


@pytest.fixture()
def shots(tmp_path: Path) -> Any:
    """shots(page, name): a screenshot under the test's tmp dir and, if asked for, ANGLE_LAB_SCREENSHOT_DIR."""
    def take(page: Page, name: str) -> Path:
        path = tmp_path / f"lab-{name}.png"
        page.screenshot(path=str(path))
        if os.environ.get("ANGLE_LAB_SCREENSHOT_DIR"):
            out = Path(os.environ["ANGLE_LAB_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / path.name)
        return path
    return take


def _field(page: Page, key: str) -> Any:
    return page.locator(f'[data-field="{key}"]')


def _fill(page: Page, values: dict[str, Any]) -> None:
    """Type into config fields the way a person does (select options are picked, checkboxes set)."""
    for name, value in values.items():
        control = _field(page, f"config.{name}").locator("input, select").first
        if not control.is_visible():  # in a folded group: unfold it
            _field(page, f"config.{name}").locator("xpath=ancestor::details[1]/summary").click()
        tag = control.evaluate("el => el.tagName + ':' + (el.type || '')")
        if tag == "INPUT:checkbox":
            control.set_checked(bool(value))
        elif tag.startswith("SELECT"):
            control.select_option(str(value))
        else:
            control.fill(str(value))


# ------------------------------------------------------------------ the form
def test_form_checks_fields_and_shows_the_servers_422_next_to_them(
        context: BrowserContext, lab: Server, auth: httpx.Client, data: dict[str, Path], base: Path, shots: Any) -> None:
    page = _page(context)
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    page.goto(lab.url + "/")

    # No token stored: the page itself loads and asks for one.
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#token-reason")).to_contain_text("requires an API token")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    expect(_field(page, "config.train_name_or_path")).to_be_visible()
    assert page.evaluate("localStorage.getItem('angle-lab-token')") == TOKEN

    # Rendered from the manifest: its groups in order, help texts, enums as selects, bounds as hints.
    manifest = auth.get("/plugin").json()
    groups = [g for g, names in manifest["parameter_groups"].items() if names]
    assert page.locator("details.group > summary").all_inner_texts() == [*groups, "Launch"]
    assert _field(page, "config.train_name_or_path").locator(".help").inner_text() == \
        manifest["parameters_ui"]["train_name_or_path"]["ui:help"]
    options = _field(page, "config.pooling_strategy").locator("select option").all_text_contents()  # a folded group
    assert options == manifest["parameters"]["pooling_strategy"]["enum"]
    assert "≥ 8 · ≤ 32768" in _field(page, "config.maxlen").locator(".hint").text_content()

    # Presets set the loss weights for each data format.
    page.click('[data-preset="C"]')
    assert [_field(page, f"config.{k}").locator("input").input_value() for k in ("ibn_w", "cln_w")] == ["1", "1"]
    page.click('[data-preset="A"]')
    weights = {k: _field(page, f"config.{k}").locator("input").input_value() for k in ("cosine_w", "ibn_w", "angle_w")}
    assert weights == {"cosine_w": "1", "ibn_w": "0", "angle_w": "0.02"}
    assert _field(page, "config.data_format").locator("select").input_value() == "A"

    # Client-side checks: nothing is sent, each complaint sits under its own field.
    _fill(page, {"train_name_or_path": str(data["train"]), "text_prompt": "Represent this:", "batch_size": 0,
                 "learning_rate": "fast"})
    page.click("#queue-job")
    expect(_field(page, "config.text_prompt").locator(".error")).to_contain_text("{text}")
    expect(_field(page, "config.batch_size").locator(".error")).to_have_text("must be ≥ 1")
    expect(_field(page, "config.learning_rate").locator(".error")).to_have_text("must be a number")
    assert _field(page, "config.train_name_or_path").locator(".error").inner_text() == ""
    assert not [u for u in posted if u.endswith("/jobs")]

    # The server's check (a data file that does not exist) comes back as a 422 problem, shown by that field.
    missing = base / "no-such-train.jsonl"
    _fill(page, {"train_name_or_path": str(missing), "text_prompt": "Represent this: {text}", "batch_size": 8,
                 "learning_rate": "8e-5"})
    with page.expect_response(lambda r: r.url.endswith("/jobs") and r.request.method == "POST") as answer:
        page.click("#queue-job")
    assert answer.value.status == 422 and answer.value.headers["content-type"] == "application/problem+json"
    expect(_field(page, "config.train_name_or_path").locator(".error")).to_contain_text("no such file or folder")
    assert _field(page, "config.text_prompt").locator(".error").inner_text() == ""
    assert auth.get("/jobs").json()["total"] == 0
    shots(page, "form")

    # Save as a template: only what differs from the defaults, so each queued job still gets its own folder.
    _fill(page, {"train_name_or_path": str(data["train"])})
    page.fill("#template-name", "tiny-a")
    page.click("#save-template")
    expect(page.locator(".notice")).to_contain_text("Saved template “tiny-a”")
    [saved] = auth.get("/templates").json()
    assert saved["config"] == {"train_name_or_path": str(data["train"]), "data_format": "A", "cosine_w": 1.0,
                               "ibn_w": 0.0, "text_prompt": "Represent this: {text}", "batch_size": 8,
                               "learning_rate": 8e-5, "warmup_ratio": 0.1, "backbone_dropout": 0.0,
                               "freeze_embeddings": True, "maxlen": 64, "epochs": 1}
    page.click("#save-template")  # the same name again: the server's 409 lands by the name box
    expect(page.locator("#template-name-error")).to_contain_text("tiny-a")

    # Loading it back fills the form from the saved keys.
    page.click("text=Reset to defaults")
    assert _field(page, "config.batch_size").locator("input").input_value() == "32"
    page.select_option("#template-select", label="tiny-a")
    page.click("#load-template")
    assert _field(page, "config.batch_size").locator("input").input_value() == "8"
    assert _field(page, "config.train_name_or_path").locator("input").input_value() == str(data["train"])
    assert page.script_errors == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------ a job, end to end
def test_a_queued_job_is_watched_to_100_and_its_zip_downloads(
        context: BrowserContext, lab: Server, auth: httpx.Client, data: dict[str, Path], tiny_bert: str,
        base: Path, shots: Any) -> None:
    context.add_init_script(f"localStorage.setItem('angle-lab-token', {json.dumps(TOKEN)})")
    page = _page(context)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if r.url.endswith("/events") else None)
    page.goto(lab.url + "/#/")
    page.click('[data-preset="A"]')
    _fill(page, {"model_name_or_path": tiny_bert, "train_name_or_path": str(data["train"]),
                 "valid_name_or_path": str(data["dev"]), "maxlen": 32, "batch_size": 8, "epochs": 1, "max_steps": 4,
                 "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "no",
                 "evaluate_before_training": False})
    page.click("#queue-job")
    page.wait_for_url(re.compile(r"#/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    job = auth.get(f"/jobs/{job_id}").json()
    assert job["config"]["max_steps"] == 4 and job["config"]["valid_name_or_path"] == str(data["dev"])
    assert job["config"]["save_dir"].endswith(f"job-{job_id}")  # no save_dir sent: the job's own folder
    # Every value the page shows for the progress bar, to check it only ever grows.
    expect(page.locator("main > .progress")).to_be_visible()
    page.evaluate("""() => {
        window.seen = [];
        const bar = document.querySelector("main > .progress");
        new MutationObserver(() => window.seen.push(Number(bar.getAttribute("aria-valuenow"))))
            .observe(bar, {attributes: true, attributeFilter: ["aria-valuenow"]});
    }""")

    # While it trains, a second job waits in the queue (one job at a time): stop it, retry it, stop it.
    other = auth.post("/jobs", json={"config": {"model_name_or_path": tiny_bert,
                                                "train_name_or_path": str(data["train"])}}).json()["id"]
    second = _page(context)
    second.goto(f"{lab.url}/#/jobs/{other}")
    expect(second.locator("#retry-job")).to_be_disabled()
    second.click("#stop-job")
    expect(second.locator(".page-head .badge")).to_have_text("STOPPED")
    expect(second.locator("#stop-job")).to_be_disabled()
    second.click("#retry-job")
    expect(second.locator(".page-head .badge")).to_have_text("QUEUED")
    second.click("#stop-job")
    expect(second.locator(".page-head .badge")).to_have_text("STOPPED")
    second.goto(f"{lab.url}/#/jobs")  # the list, left open: it must follow the first job by itself

    bar = page.locator("main > .progress")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=JOB_TIMEOUT_MS)
    expect(page.locator(".page-head .badge")).to_have_text("COMPLETE", timeout=JOB_TIMEOUT_MS)
    seen = page.evaluate("window.seen")
    assert seen and seen == sorted(seen) and seen[-1] == 100, seen
    assert f"{lab.url}/jobs/{job_id}/events" in streams  # watched through the event stream, not by reloading

    # The finished job's page: charts, the eval history, the log tail, no stop or retry.
    expect(page.locator("figure.chart").first).to_have_attribute("data-points", "4")  # loss at each of 4 steps
    evals = page.locator(".eval-table tbody tr")
    expect(evals).to_have_count(2)  # eval every 2 steps of 4
    assert evals.first.locator("td").first.inner_text() == "2"
    expect(page.locator(".metrics")).to_contain_text("train_loss")
    expect(page.locator("#log-tail")).not_to_have_text("")
    assert page.locator("#stop-job").is_disabled() and page.locator("#retry-job").is_disabled()
    expect(page.locator(".artifacts")).to_contain_text("model.safetensors")
    shots(page, "job")

    # Downloads go through fetch with the token: the zip, then one file.
    with page.expect_download() as download:
        page.click("#download-zip")
    assert download.value.suggested_filename == f"job-{job_id}.zip"
    zip_path = base / "downloaded.zip"
    download.value.save_as(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert {"model.safetensors", "config.json", "metrics.json", "train_config.json"} <= names
        metrics_in_zip = json.loads(zf.read("metrics.json"))
    with page.expect_download() as download:
        page.locator(".artifacts a", has_text=re.compile(r"^metrics\.json$")).click()
    assert json.loads(Path(download.value.path()).read_text()) == metrics_in_zip

    # The list page followed along: the first job done, the second stopped.
    row = second.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".badge")).to_have_text("COMPLETE")
    expect(second.locator(f'tr[data-job-id="{other}"] .badge')).to_have_text("STOPPED")
    shots(second, "jobs")
    assert page.script_errors == [] and second.script_errors == []  # type: ignore[attr-defined]


def test_eval_history_is_drawn_per_matryoshka_dim(context: BrowserContext, lab: Server) -> None:
    """The job page's eval section on a history with per-dim keys, rendered by its own module in the browser."""
    page = _page(context)
    page.goto(lab.url + "/")  # the page's origin, so its modules import; no token needed for that
    out = page.evaluate("""async () => {
        const {splitMetric, evalSection} = await import("/static/js/job.js");
        const history = [
            {step: 10, epoch: 0.5, eval_spearman: 0.71, "eval_spearman@256": 0.70, "eval_spearman@64": 0.62,
             "eval_ndcg@10": 0.5, eval_runtime: 1.2},
            {step: 20, epoch: 1.0, eval_spearman: 0.80, "eval_spearman@256": 0.79, "eval_spearman@64": 0.74,
             "eval_ndcg@10": 0.6, eval_runtime: 1.1},
        ];
        const el = evalSection(history);
        return {
            split: ["eval_spearman@256", "eval_ndcg@10", "eval_ndcg@10@64"].map(splitMetric),
            charts: [...el.querySelectorAll("figure")].map((f) => [f.querySelector("figcaption").textContent,
                [...f.querySelectorAll(".legend-item")].map((i) => i.textContent), f.dataset.points]),
            headers: [...el.querySelectorAll("th")].map((th) => th.textContent),
            rows: el.querySelectorAll("tbody tr").length,
        };
    }""")
    assert out["split"] == [{"metric": "spearman", "dim": 256}, {"metric": "ndcg@10", "dim": None},
                            {"metric": "ndcg@10", "dim": 64}]
    assert out["charts"] == [["spearman", ["full", "dim 256", "dim 64"], "6"], ["ndcg@10", [], "2"]]
    assert out["headers"] == ["step", "epoch", "spearman", "spearman @256", "spearman @64", "ndcg@10"]
    assert out["rows"] == 2
    assert page.script_errors == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------ live curves, before/after, using the model
def test_loss_curve_grows_live_and_the_finished_job_compares_before_and_after(
        context: BrowserContext, lab: Server, auth: httpx.Client, data: dict[str, Path], tiny_bert: str,
        shots: Any) -> None:
    import subprocess
    import sys

    context.add_init_script(f"localStorage.setItem('angle-lab-token', {json.dumps(TOKEN)})")
    page = _page(context)
    # logging_steps left at its default (100): 300 steps log every step; valid and test data with matryoshka
    # dims give several metrics before and after.
    config = {"model_name_or_path": tiny_bert, "train_name_or_path": str(data["train"]),
              "valid_name_or_path": str(data["dev"]), "test_name_or_path": str(data["dev"]), "maxlen": 32,
              "batch_size": 8, "max_steps": 300, "eval_strategy": "no", "save_strategy": "no",
              "matryoshka_dims": [16, 8]}
    job_id = auth.post("/jobs", json={"config": config}).json()["id"]
    page.goto(f"{lab.url}/#/jobs/{job_id}")
    expect(page.locator("figure.chart").first).to_be_visible()
    # Each time the charts are drawn: the loss chart's point count and the status shown then.
    page.evaluate("""() => {
        window.lossPoints = [];
        const charts = document.querySelector("figure.chart").parentElement;
        new MutationObserver(() => window.lossPoints.push([Number(charts.firstChild.dataset.points),
            document.querySelector(".page-head .badge").textContent])).observe(charts, {childList: true});
    }""")
    # 300 steps: a slower job than the others here, so a longer limit on a loaded machine (still only a hang check).
    expect(page.locator(".page-head .badge")).to_have_text("COMPLETE", timeout=3 * JOB_TIMEOUT_MS)

    seen = page.evaluate("window.lossPoints")
    counts = [n for n, _ in seen]
    assert counts == sorted(counts), counts  # the curve only grows
    live = {n for n, status in seen if status == "RUNNING" and 0 < n < 300}
    assert len(live) >= 2, f"the loss curve did not grow while the job ran: {seen}"
    loss_chart = page.locator("figure.chart").first
    expect(loss_chart).to_have_attribute("data-points", "300")
    assert len(loss_chart.locator("polyline").get_attribute("points").split()) == 300

    # Every metric before and after, in metrics.json's order: the table's cells and one bar each.
    metrics = auth.get(f"/jobs/{job_id}").json()["job_data"]["metrics"]
    names = list(dict.fromkeys(k.split("/", 1)[1] for k in metrics if k.startswith(("before/", "after/"))))
    assert {"valid_spearman", "test_spearman", "test_spearman@16", "test_spearman@8"} <= set(names)
    rows = page.locator(".compare-table tbody tr")
    assert [rows.nth(i).get_attribute("data-metric") for i in range(rows.count())] == names
    for i, name in enumerate(names):
        before, after, change = (float(t) for t in rows.nth(i).locator("td").all_inner_texts())
        b, a = metrics[f"before/{name}"], metrics[f"after/{name}"]
        assert before == pytest.approx(b, rel=1e-3, abs=1e-4) and after == pytest.approx(a, rel=1e-3, abs=1e-4)
        assert change == pytest.approx(a - b, rel=1e-3, abs=1e-4)
    bars = page.locator("figure.bars rect.bar")
    assert bars.count() == 2 * len(names)
    assert sorted({bars.nth(i).get_attribute("data-series") for i in range(bars.count())}) == ["after", "before"]
    expect(page.locator(".metrics table.kv")).to_contain_text("train_loss")  # the other final numbers stay

    # How to use it: the folder the server wrote and the zip's URL (the token only as a variable).
    output_dir = auth.get(f"/jobs/{job_id}/artifacts").json()["output_dir"]
    python = page.locator("#usage-python").inner_text()
    assert f"SentenceTransformer({json.dumps(output_dir)})" in python
    expect(page.locator("#zip-url")).to_have_text(f"{lab.url}/jobs/{job_id}/artifacts.zip")
    zip_steps = page.locator("#usage-zip").inner_text()
    assert f"{lab.url}/jobs/{job_id}/artifacts.zip" in zip_steps and "$ANGLE_LAB_API_TOKEN" in zip_steps
    assert TOKEN not in page.locator("#use-model").inner_text()
    page.locator(".compare").scroll_into_view_if_needed()
    shots(page, "job-done")
    # The snippet as shown runs and embeds.
    done = subprocess.run([sys.executable, "-c", python + "\nprint(embeddings.shape)"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and done.stdout.strip().endswith("(2, 32)"), done.stderr[-2000:]
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_comparison_of_metrics_scored_only_after_training(context: BrowserContext, lab: Server) -> None:
    """The comparison on metrics without a before value (no evaluate_before_training), by its own module."""
    page = _page(context)
    page.goto(lab.url + "/")
    out = page.evaluate("""async () => {
        const {comparisonSection, usageSection} = await import("/static/js/job.js");
        const el = comparisonSection({"before/test_spearman": 0.8, "after/test_spearman": 0.85,
            "after/test_spearman@64": 0.7, "before/valid_mrr@10": 0.5, "after/valid_mrr@10": 0.25, "train_loss": 0.3});
        const usage = usageSection(7, "/runs/job-7", "http://lab:8000");
        return {
            rows: [...el.querySelectorAll("tbody tr")].map((tr) => [...tr.children].map((c) => c.textContent)),
            classes: [...el.querySelectorAll("td.change")].map((td) => td.className),
            bars: [...el.querySelectorAll("rect.bar")].map((r) => `${r.dataset.label}/${r.dataset.series}`),
            empty: comparisonSection({train_loss: 0.3}).textContent,
            python: usage.querySelector("#usage-python").textContent,
            zip: usage.querySelector("#usage-zip").textContent,
        };
    }""")
    assert out["rows"] == [["test_spearman", "0.8", "0.85", "+0.05"], ["test_spearman@64", "–", "0.7", "–"],
                           ["valid_mrr@10", "0.5", "0.25", "-0.25"]]
    assert out["classes"] == ["num change up", "num change", "num change down"]
    assert out["bars"] == ["test_spearman/before", "test_spearman/after", "test_spearman@64/after",
                           "valid_mrr@10/before", "valid_mrr@10/after"]
    assert "appear when it ends" in out["empty"]
    assert 'SentenceTransformer("/runs/job-7")' in out["python"]
    assert "curl -fL -o job-7.zip http://lab:8000/jobs/7/artifacts.zip" in out["zip"]  # no token stored: no header
    assert page.script_errors == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------ essentials, presets, the filter, uploaded datasets
def _signed_in_page(ctx: BrowserContext, url: str) -> Page:
    ctx.add_init_script(f"localStorage.setItem('angle-lab-token', {json.dumps(TOKEN)})")
    page = _page(ctx)
    page.goto(url)
    return page


def _value(page: Page, name: str) -> str:
    return _field(page, f"config.{name}").locator("input, select").first.input_value()


def test_essentials_come_first_presets_set_the_recipe_and_the_filter_finds_fields(
        context: BrowserContext, lab: Server, auth: httpx.Client, shots: Any) -> None:
    from plugin.manifest import ESSENTIALS
    from plugin.quickstart import RECOMMENDED_B

    page = _signed_in_page(context, lab.url + "/")
    essentials = page.locator("section.essentials")
    expect(essentials).to_be_visible()
    assert essentials.locator(".field").evaluate_all("els => els.map(e => e.dataset.field)") == \
        [f"config.{n}" for n in ESSENTIALS]
    assert page.locator("details.group[open]").count() == 0  # every other group starts folded
    assert not _field(page, "config.pooling_strategy").is_visible()

    # The presets are the server's (GET /presets, from plugin/quickstart.py): B sets the whole retrieval recipe ...
    assert auth.get("/presets").json()["B"]["values"] == {"data_format": "B", **RECOMMENDED_B}
    page.click('[data-preset="B"]')
    assert {n: _value(page, n) for n in ("data_format", "learning_rate", "batch_size", "mini_batch_size", "maxlen",
                                         "epochs", "ibn_w", "cosine_w", "ibn_tau")} == {
        "data_format": "B", "learning_rate": "0.0001", "batch_size": "64", "mini_batch_size": "", "maxlen": "256",
        "epochs": "3", "ibn_w": "1", "cosine_w": "0", "ibn_tau": "20"}
    page.click('[data-preset="C"]')
    assert (_value(page, "cln_w"), _value(page, "train_group_size")) == ("1", "4")
    assert not _field(page, "config.mine_hard_negatives").locator("input").is_checked()  # C keeps its own negatives
    # ... and A puts back what B/C set and A's recipe does not (mini batches off, mining off, the default group size).
    page.click('[data-preset="A"]')
    assert {n: _value(page, n) for n in ("data_format", "learning_rate", "batch_size", "mini_batch_size", "maxlen",
                                         "train_group_size", "cosine_w", "ibn_w")} == {
        "data_format": "A", "learning_rate": "0.00008", "batch_size": "32", "mini_batch_size": "", "maxlen": "64",
        "train_group_size": "2", "cosine_w": "1", "ibn_w": "0"}
    assert not _field(page, "config.mine_hard_negatives").locator("input").is_checked()

    # The filter shows only the fields whose name, title or help match, and opens the groups holding them.
    page.fill("#field-filter", "matryoshka")
    visible = page.locator(".field:visible").evaluate_all("els => els.map(e => e.dataset.field)")
    assert visible and "config.matryoshka_dims" in visible
    for key in visible:
        text = _field(page, key.split(".", 1)[0] + "." + key.split(".", 1)[1]).inner_text().lower()
        assert "matryoshka" in text or "matryoshka" in key, key
    expect(page.locator("section.essentials")).to_be_hidden()
    expect(page.locator('details.group[data-group="Matryoshka & Espresso"]')).to_have_attribute("open", "")
    expect(page.locator('details.group[data-group="Logging"]')).to_be_hidden()
    shots(page, "filter")
    page.fill("#field-filter", "no field is called this")
    expect(page.locator("#filter-empty")).to_be_visible()
    page.fill("#field-filter", "")
    expect(page.locator("section.essentials")).to_be_visible()
    assert page.locator(".field[hidden]").count() == 0
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_datasets_upload_good_and_bad_files_pick_one_in_the_form_and_delete_it(
        context: BrowserContext, lab: Server, auth: httpx.Client, base: Path, data: dict[str, Path], shots: Any) -> None:
    page = _signed_in_page(context, lab.url + "/#/datasets")
    expect(page.locator("#upload-form")).to_be_visible()

    # A good file: stored, and the page says what the server found and shows its first rows.
    good = base / "ui-pairs.jsonl"
    good.write_bytes(data["train"].read_bytes())
    page.set_input_files("#dataset-file", str(good))
    page.click("#upload-dataset")
    expect(page.locator("#upload-result .notice")).to_contain_text("ui-pairs.jsonl: format A, 48 rows")
    expect(page.locator("#upload-result .notice")).to_contain_text("dataset:ui-pairs.jsonl")
    assert page.locator("#upload-result table.preview thead th").all_inner_texts() == ["text1", "text2", "label"]
    assert page.locator("#upload-result table.preview tbody tr").count() == 5
    expect(page.locator('#datasets-table tr[data-dataset="ui-pairs.jsonl"]')).to_be_visible()
    shots(page, "datasets")

    # A bad file: refused, the row and the column named, nothing stored.
    bad = base / "ui-bad.csv"
    bad.write_text("text1,text2,label\na,b,1\nc,d,very similar\n")
    page.set_input_files("#dataset-file", str(bad))
    page.click("#upload-dataset")
    refusal = page.locator("#upload-result .form-error")
    expect(refusal).to_contain_text("ui-bad.csv: row 2")
    expect(refusal.locator(".where")).to_have_text("row 2, column label")
    assert "ui-bad.csv" not in {d["name"] for d in auth.get("/datasets").json()["items"]}

    # The form picks it: its ref goes into the data field and its format into data_format.
    page.click('nav a[data-nav="new"]')
    page.select_option("#dataset-pick", "dataset:ui-pairs.jsonl")
    page.click("#use-train")
    assert _value(page, "train_name_or_path") == "dataset:ui-pairs.jsonl"
    assert _value(page, "data_format") == "A"

    # Deleting from the page.
    page.click('nav a[data-nav="datasets"]')
    page.locator('#datasets-table tr[data-dataset="ui-pairs.jsonl"] button.delete-dataset').click()
    expect(page.locator('#datasets-table tr[data-dataset="ui-pairs.jsonl"]')).to_have_count(0)
    assert "ui-pairs.jsonl" not in {d["name"] for d in auth.get("/datasets").json()["items"]}
    assert page.script_errors == []  # type: ignore[attr-defined]
