"""The task through Transformer Lab's task contract (TL since April 2026) and its `lab` SDK 0.1.46.

    .venv/bin/python -m pytest -q tests/tlab/test_task_era.py

task.yaml is checked with TL's own TaskYamlSpec. Then a copy of the repository gets a venv with the
lab SDK, task.yaml's `setup` runs in it, and each job runs task.yaml's `run` there with the job made
the way TL's launcher makes it (the lab SDK: an experiment, a job, its parameters in job_data).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO
from tests.tlab.conftest import SHARED_TLAB, TL, write_pairs

EXPERIMENT = "alpha"
TASK_YAML = REPO / "tlab_task" / "task.yaml"


def task() -> dict[str, Any]:
    return yaml.safe_load(TASK_YAML.read_text())


def test_task_yaml_is_valid_for_transformer_lab() -> None:
    spec = importlib.util.spec_from_file_location("tl_task_schema", SHARED_TLAB / "task-era" / "task_schema.py")
    assert spec is not None and spec.loader is not None
    schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schema)
    parsed = schema.TaskYamlSpec.model_validate(task())  # extra keys are forbidden there
    assert parsed.run == "python tlab_task/train.py" and "setup.sh" in (parsed.setup or "")
    from plugin.config import TrainConfig

    assert set(parsed.parameters or {}) <= set(TrainConfig.model_fields)  # TrainConfig's names


def create_job(tl: TL, parameters: dict[str, Any], **job_data: Any) -> str:
    """What TL's launcher does before `run`: a job in the experiment, the task's parameters in its job_data."""
    return tl.lab(
        "import asyncio, json; from lab import Experiment\n"
        "async def go():\n"
        f" exp = await Experiment.create_or_get({EXPERIMENT!r}, create_new=True)\n"
        " job = await exp.create_job()\n"
        f" await job.update_job_data_fields({{'parameters': {parameters!r}, **{job_data!r}}})\n"
        " return job.id\n"
        "print(json.dumps(asyncio.run(go())))")


def read_job(tl: TL, job_id: str) -> dict[str, Any]:
    return tl.lab("import asyncio, json; from lab import Job\n"
                  "async def go():\n"
                  f" return await (await Job.get({job_id!r}, {EXPERIMENT!r})).get_json_data(uncached=True)\n"
                  "print(json.dumps(asyncio.run(go())))")


def peek(tl: TL, job_id: str) -> dict[str, Any]:
    """TL's job JSON straight from disk while the job runs (a torn read is just skipped)."""
    try:
        return json.loads((job_dir(tl, job_id) / "index.json").read_text())
    except (OSError, ValueError):
        return {}


def start_run(tl: TL, job_id: str, log: Path) -> subprocess.Popen[str]:
    out = open(log, "w")  # noqa: SIM115
    return subprocess.Popen(["/bin/bash", "-c", f"source venv/bin/activate && {task()['run']}"], cwd=tl.folder,
                            env=tl.env(_TFL_JOB_ID=job_id, _TFL_EXPERIMENT_ID=EXPERIMENT),
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def job_dir(tl: TL, job_id: str) -> Path:
    return tl.workspace / "experiments" / EXPERIMENT / "jobs" / job_id


def parameters(tiny_bert: str, dataset_id: str, **changed: str) -> dict[str, Any]:
    """task.yaml's parameters, as TL stores them, pointed at a tiny model and a dataset in TL's workspace."""
    return {**task()["parameters"], "model_name_or_path": tiny_bert, "train_name_or_path": dataset_id,
            "valid_name_or_path": "", "column_rename_mapping": "", "maxlen": "32", "batch_size": "8",
            "eval_batch_size": "16", "logging_steps": "1", **changed}


def test_task_trains_reports_and_saves_the_model(tl_task: TL, tiny_bert: str, tmp_path: Path) -> None:
    tl = tl_task
    tl.install_dataset("pairs", write_pairs(tmp_path / "data", n=64))
    job_id = create_job(tl, parameters(tiny_bert, "pairs", max_steps="12", save_steps="4"))
    proc = start_run(tl, job_id, tmp_path / "run.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-4000:]
    job = read_job(tl, job_id)
    d = job["job_data"]
    assert job["status"] == "COMPLETE" and job["progress"] == 100 and d["completion_status"] == "success", d
    assert isinstance(d["current_metrics"]["loss"], float)  # lab.update_progress(metrics=...) while training
    assert "after/valid_spearman" in d["score"]  # the dev split found in TL's dataset folder
    assert (job_dir(tl, job_id) / "checkpoints" / "checkpoint-4").is_dir()  # lab.get_hf_callback() copied it
    models = list((job_dir(tl, job_id) / "models").iterdir())
    assert len(models) == 1 and not (models[0] / "checkpoints").exists()
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(models[0]), device="cpu").encode(["a red car"]).shape == (1, 32)


def test_stop_then_resume_from_the_checkpoint(tl_task: TL, tiny_bert: str, tmp_path: Path) -> None:
    tl = tl_task
    tl.install_dataset("long", write_pairs(tmp_path / "data", n=96, dev=False))
    first = create_job(tl, parameters(tiny_bert, "long", max_steps="100000", save_steps="1000000"))
    proc = start_run(tl, first, tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while proc.poll() is None:
        d = peek(tl, first).get("job_data") or {}  # read from disk: a lab SDK process per poll would slow training
        if d.get("current_metrics") and not d.get("stop"):  # training has begun: press Stop
            tl.lab("import asyncio; from lab import Job\n"
                   f"async def go():\n await (await Job.get({first!r}, {EXPERIMENT!r})).update_job_data_field("
                   "'stop', True)\nasyncio.run(go()); print('null')")
        assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(1.0)
    assert proc.returncode == 0, (tmp_path / "first.log").read_text()[-4000:]
    job = read_job(tl, first)
    d = job["job_data"]
    assert job["status"] == "STOPPED" and d["completion_status"] == "stopped", d
    step = int(Path(d["last_checkpoint"]).name.split("-")[1])
    assert (job_dir(tl, first) / "checkpoints" / f"checkpoint-{step}").is_dir()  # in TL's checkpoints too
    # TL's "resume from checkpoint": a new job naming the parent job and the checkpoint.
    second = create_job(tl, parameters(tiny_bert, "long", max_steps=str(step + 3)),
                        parent_job_id=first, resumed_from_checkpoint=f"checkpoint-{step}")
    proc = start_run(tl, second, tmp_path / "second.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-4000:]
    d = read_job(tl, second)["job_data"]
    assert d["completion_status"] == "success" and f"Trained {step + 3} steps" in d["completion_details"], d
    assert "resuming from" in (tmp_path / "second.log").read_text()


def test_bad_parameter_is_a_failed_job_naming_it(tl_task: TL, tiny_bert: str, tmp_path: Path) -> None:
    tl = tl_task
    tl.install_dataset("small", write_pairs(tmp_path / "data", n=16, dev=False))
    job_id = create_job(tl, parameters(tiny_bert, "small", ibn_tau="-1"))
    proc = start_run(tl, job_id, tmp_path / "run.log")
    assert proc.wait(timeout=300) == 1
    job = read_job(tl, job_id)
    assert job["status"] == "FAILED" and job["job_data"]["completion_status"] == "failed"
    assert "ibn_tau" in job["job_data"]["completion_details"]
