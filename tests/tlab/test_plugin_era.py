"""The plugin through Transformer Lab's real plugin harness and SDK (TL <= 0.30).

    .venv/bin/python -m pytest -q tests/tlab/test_plugin_era.py

TL's install (a venv in the plugin folder, setup.sh run with it active) and TL's run (plugin_harness.py
with TL's command line, cwd TL's own, an input file holding the form and every host key) are done as
TL does them (see tests/tlab/conftest.py for what stands in for TL's pinned stack). TL's job record is
created and read with the `lab` SDK, as TL's API does. The form is an untouched manifest form as a
browser's FormData sends it, with a few boxes changed.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.plugin.test_manifest import untouched_form
from tests.tlab.conftest import HARNESS, TL, write_pairs

EXPERIMENT = "alpha"
JOB_READ = ("import asyncio, json; from lab import Job\n"
            "print(json.dumps(asyncio.run(Job('{job}').get_json_data(uncached=True))))")


def create_job(tl: TL, job_id: str) -> None:
    """TL's API creates the job record (RUNNING) before it starts the harness."""
    tl.lab("import asyncio, json; from lab import Job\n"
           f"async def go():\n j = await Job.create({job_id!r}); await j.update_status('RUNNING')\n"
           " await j.update_job_data_field('plugin', 'angle_lab_trainer')\n"
           "asyncio.run(go()); print('null')")


def host_keys(tl: TL, job_id: str, embedding_model: str, dataset_id: str) -> dict[str, Any]:
    """Every key TL adds next to the form's values (../shared/tlab/CONTRACT.md), as strings."""
    return {
        "template_name": "angle-test", "plugin_name": "angle_lab_trainer",
        "model_name": "HuggingFaceTB/SmolLM2-135M-Instruct", "model_architecture": "LlamaForCausalLM",
        "foundation_model_file_path": "", "embedding_model": embedding_model,
        "embedding_model_architecture": "BertModel", "embedding_model_file_path": "",
        "dataset_name": dataset_id, "formatting_template": "", "type": "embedding",
        "chatml_formatted_column": "messages", "run_sweeps": "false", "job_id": job_id,
        "output_dir": str(tl.workspace / "experiments" / EXPERIMENT / "jobs" / job_id), "adaptor_name": "angle-test",
    }


def start_harness(tl: TL, job_id: str, form: dict[str, Any], tmp_path: Path) -> subprocess.Popen[str]:
    temp = tl.workspace / "temp"
    temp.mkdir(exist_ok=True)
    input_file = temp / f"plugin_input_{job_id}.json"
    input_file.write_text(json.dumps({"experiment": {"id": EXPERIMENT, "name": EXPERIMENT}, "config": form}))
    cwd = tmp_path / "tl-cwd"  # TL runs plugins in its own working directory, not the plugin's
    cwd.mkdir(exist_ok=True)
    log = open(tmp_path / f"job-{job_id}.log", "w")  # noqa: SIM115 - TL sends output to the job's log file
    return subprocess.Popen([str(tl.python), str(HARNESS), "--plugin_dir", str(tl.folder), "--input_file",
                             str(input_file), "--experiment_name", EXPERIMENT], cwd=cwd, env=tl.env(),
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def job_file(tl: TL, job_id: str) -> Path:
    return tl.workspace / "jobs" / job_id / "index.json"


def peek(tl: TL, job_id: str) -> dict[str, Any]:
    """TL's job JSON read straight from disk while the job runs (cheap; a torn read is just skipped)."""
    try:
        return json.loads(job_file(tl, job_id).read_text())
    except (OSError, ValueError):
        return {}


def form_for(tl: TL, job_id: str, tiny_bert: str, dataset_id: str, **changed: str) -> dict[str, Any]:
    form = {**untouched_form(), "epochs": "1", "batch_size": "8", "maxlen": "32", "eval_batch_size": "16",
            "logging_steps": "1", **changed}
    return {**form, **host_keys(tl, job_id, tiny_bert, dataset_id)}


def log_of(tmp_path: Path, job_id: str) -> str:
    return (tmp_path / f"job-{job_id}.log").read_text()


def test_untouched_form_trains_reports_and_lists_the_model(tl_plugin: TL, tiny_bert: str, tmp_path: Path) -> None:
    tl = tl_plugin
    tl.install_dataset("angle-pairs", write_pairs(tmp_path / "data", n=96))
    create_job(tl, "11")
    proc = start_harness(tl, "11", form_for(tl, "11", tiny_bert, "angle-pairs", max_steps="24"), tmp_path)
    seen: list[int] = []
    while proc.poll() is None:
        progress = peek(tl, "11").get("progress")
        if isinstance(progress, int) and (not seen or seen[-1] != progress):
            seen.append(progress)
        time.sleep(0.2)
    assert proc.returncode == 0, log_of(tmp_path, "11")[-4000:]
    job = tl.lab(JOB_READ.format(job="11"))
    d = job["job_data"]
    assert d["completion_status"] == "success", d
    assert job["status"] == "COMPLETE" and job["progress"] == 100
    assert any(0 < p < 100 for p in seen), seen  # progress rose during training, not just at the end
    assert d["step"] == d["max_steps"] == 24 and isinstance(d["loss"], float)
    assert any(k.startswith("eval_") for k in d["eval"])  # the dev split of TL's dataset was evaluated
    assert "after/valid_spearman" in d["metrics"]
    # The model is in TL's model list: workspace/models/<name>/index.json, as TL's SDK writes it.
    model_dir = tl.workspace / "models" / d["trained_model"]
    assert d["trained_model"] == "angle-test_11" and d["trained_model_path"] == str(model_dir)
    meta = json.loads((model_dir / "index.json").read_text())
    assert meta["model_id"] == f"TransformerLab/{d['trained_model']}" and meta["json_data"]["architecture"] == "BertModel"
    assert not (model_dir / "checkpoints").exists()
    from sentence_transformers import SentenceTransformer

    vectors = SentenceTransformer(str(model_dir), device="cpu").encode(["a red car", "a blue bus"])
    assert vectors.shape == (2, 32)
    # TL's chosen embedding model was the backbone; our own jobs table holds the job too.
    assert json.loads((model_dir / "train_config.json").read_text())["model_name_or_path"] == tiny_bert
    log = log_of(tmp_path, "11")
    assert "angle-lab job" in log and "step 24/24" in log  # TL's job log shows progress lines


def test_stop_button_checkpoints_and_says_stopped(tl_plugin: TL, tiny_bert: str, tmp_path: Path) -> None:
    tl = tl_plugin
    tl.install_dataset("angle-long", write_pairs(tmp_path / "data", n=96, dev=False))
    create_job(tl, "12")
    proc = start_harness(tl, "12", form_for(tl, "12", tiny_bert, "angle-long", max_steps="100000"), tmp_path)
    deadline = time.monotonic() + 240
    while proc.poll() is None and (peek(tl, "12").get("job_data") or {}).get("phase") != "training":
        assert time.monotonic() < deadline, log_of(tmp_path, "12")[-3000:]
        time.sleep(0.5)
    # TL's Stop button: job_data.stop = true, written with the lab SDK as TL's API does. The record is
    # one unlocked JSON file, so (like a user) press again until the job reacts.
    while proc.poll() is None:
        if not (peek(tl, "12").get("job_data") or {}).get("stop"):
            tl.lab("import asyncio; from lab import Job\n"
                   "asyncio.run(Job('12').update_job_data_field('stop', True)); print('null')")
        time.sleep(1.0)
        assert time.monotonic() < deadline, log_of(tmp_path, "12")[-3000:]
    assert proc.returncode == 0, log_of(tmp_path, "12")[-4000:]
    job = tl.lab(JOB_READ.format(job="12"))
    d = job["job_data"]
    assert job["status"] == "STOPPED" and d["completion_status"] == "stopped", d
    assert d["step"] < 100000 and Path(d["last_checkpoint"]).is_dir()
    assert "checkpoint kept" in d["completion_details"]


def test_bad_dataset_fails_naming_file_row_and_column(tl_plugin: TL, tiny_bert: str, tmp_path: Path) -> None:
    tl = tl_plugin
    tl.install_dataset("angle-bad", write_pairs(tmp_path / "data", n=32, bad_row=5, dev=False))
    create_job(tl, "13")
    proc = start_harness(tl, "13", form_for(tl, "13", tiny_bert, "angle-bad"), tmp_path)
    assert proc.wait(timeout=300) != 0
    job = tl.lab(JOB_READ.format(job="13"))
    d = job["job_data"]
    assert job["status"] == "FAILED" and d["completion_status"] == "failed"
    details = d["completion_details"]
    assert "train.jsonl" in details and "5" in details and "label" in details, details


def test_bad_form_values_fail_naming_each_field(tl_plugin: TL, tiny_bert: str, tmp_path: Path) -> None:
    tl = tl_plugin
    tl.install_dataset("angle-small", write_pairs(tmp_path / "data", n=16, dev=False))
    create_job(tl, "14")
    form = form_for(tl, "14", tiny_bert, "angle-small", learning_rat="1e-4", epochs="zero")  # a typo, a bad number
    proc = start_harness(tl, "14", form, tmp_path)
    assert proc.wait(timeout=120) == 1
    d = tl.lab(JOB_READ.format(job="14"))["job_data"]
    assert d["completion_status"] == "failed", d
    assert "learning_rat" in d["completion_details"] and "epochs" in d["completion_details"], d
