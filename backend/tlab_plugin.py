"""Transformer Lab's plugin contract (TL up to 0.30): TL's harness imports main.py and calls main.main().

    <plugin>/venv/bin/python <TL>/plugin_sdk/plugin_harness.py --plugin_dir <plugin> \\
        --input_file <workspace>/temp/plugin_input_<job>.json --experiment_name <name>

main.main() sees --plugin_dir and calls run(). The job then goes the same way as every other job
here (our jobs table -> runner -> `accelerate launch` -> trainer -> progress callback -> our row),
and this module is one more sink at the end: it copies the row's progress, step, loss and eval
metrics into TL's job record through TL's own SDK (`tlab_trainer`, whose `job` is the `lab` SDK's
Job), carries TL's Stop button (`job_data.stop`) back to the runner, and at the end writes
`completion_status`/`completion_details` and puts the model in `workspace/models/<name>/` with the
index.json TL's model list reads. The TL SDK is imported only here, only when TL runs us.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from backend import jobs
from backend.db import get_engine, init_db
from backend.models import JobCreate, JobStatus
from backend.runner import JobRunner
from backend.settings import get_settings
from backend.tlab import PluginForm, export_model_folder, model_architecture, model_folder_name, plugin_form
from plugin.config import error_list

log = logging.getLogger(__name__)

STOP_POLL_S = 0.5  # how often TL's stop flag is read
MIRROR_EVERY_S = 2.0  # at most one progress write to TL's job record per this many seconds
# Our row's job_data keys that TL's job_data gets too (TL's UI shows job_data; its own trainers use these names).
MIRRORED = ("phase", "step", "max_steps", "epoch", "loss", "learning_rate", "grad_norm", "eval", "last_checkpoint")


def _message(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "invalid parameters: " + "; ".join(f"{err['field']}: {err['message']}" for err in error_list(e))
    return str(e)


class TLabJob:
    """TL's job record, written through TL's plugin SDK (sync calls over the `lab` SDK's async Job)."""

    def __init__(self) -> None:
        # On sys.path because TL's harness lives in the folder that holds this package.
        from transformerlab.sdk.v1.tlab_plugin import _run_async_from_sync
        from transformerlab.sdk.v1.train import tlab_trainer

        self.trainer = tlab_trainer
        self._sync = _run_async_from_sync
        self.job = tlab_trainer.job  # parses TL's command line and reads its input file
        self.params = tlab_trainer.params

    @property
    def form(self) -> dict[str, Any]:
        return dict(self.params.get("_config") or {})

    def job_dir(self) -> Path:
        return Path(self._sync(self.job.get_dir()))

    def update(self, progress: int | None = None, **fields: Any) -> None:
        if progress is not None:
            self._sync(self.job.update_progress(progress))
        if fields:
            self._sync(self.job.update_job_data_fields(fields))

    def stop_requested(self) -> bool:
        return bool((self._sync(self.job.get_job_data()) or {}).get("stop"))

    def end(self, status: str, completion: str, details: str, **fields: Any) -> None:
        """completion_status and details first, then the status: TL's UI reads them together."""
        self.update(completion_status=completion, completion_details=details,
                    end_time=time.strftime("%Y-%m-%d %H:%M:%S"), **fields)
        self._sync(self.job.update_status(status))

    def resolve_dataset(self, dataset_id: str) -> str:
        from transformerlab.plugin import get_dataset_path

        return str(get_dataset_path(dataset_id))

    def register_model(self, name: str, architecture: str, description: str) -> None:
        # pipeline_tag given, parent_model not: the SDK would ask the hub for the parent's tag.
        self.trainer.create_transformerlab_model(name, architecture, {"description": description},
                                                 pipeline_tag="sentence-similarity")

    def models_dir(self) -> Path:
        from transformerlab.plugin import WORKSPACE_DIR

        return Path(WORKSPACE_DIR) / "models"


def _mirror(tl: TLabJob, row: Any, last: dict[str, Any]) -> None:
    """Copy what changed in our row into TL's record (progress below 100 until the job has ended)."""
    d = row.job_data
    fields = {k: d[k] for k in MIRRORED if d.get(k) is not None}
    if d.get("eta_s") is not None:
        fields["estimated_time_remaining"] = int(d["eta_s"])
    progress = min(int(row.progress), 99)
    changed = {k: v for k, v in fields.items() if last.get(k) != v}
    if changed or last.get("progress") != progress:
        tl.update(progress if last.get("progress") != progress else None, **changed)
        last.update(changed, progress=progress)
        print(progress_line(row.status, progress, d), flush=True)  # TL shows this process's output as the job's log


def progress_line(status: str, progress: int, d: dict[str, Any]) -> str:
    parts = [f"{status} {progress:3d}%"]
    if d.get("max_steps"):
        parts.append(f"step {d.get('step', 0)}/{d['max_steps']}")
    if isinstance(d.get("loss"), int | float):
        parts.append(f"loss {d['loss']:.4f}")
    parts += [f"{k} {v:.4f}" for k, v in (d.get("eval") or {}).items() if isinstance(v, int | float)]
    if d.get("phase"):
        parts.append(f"({d['phase']})")
    return "  ".join(parts)


def _watch(tl: TLabJob, runner: JobRunner, engine: Any, job_id: int, thread: threading.Thread) -> None:
    # TL's job record is one JSON file that every writer reads, changes and rewrites whole (no lock), and
    # TL's Stop button is one such write: read often, write seldom, so that write is rarely overtaken.
    last: dict[str, Any] = {}
    stop_sent = False
    next_write = 0.0
    while thread.is_alive():
        thread.join(STOP_POLL_S)
        try:
            if not stop_sent and tl.stop_requested():
                runner.stop("stopped in Transformer Lab")
                stop_sent = True
            if time.monotonic() >= next_write:
                next_write = time.monotonic() + MIRROR_EVERY_S
                _mirror(tl, jobs.get_job(engine, job_id), last)
        except Exception as exc:  # noqa: BLE001 - a busy JSON file must not end a training run
            log.warning("Transformer Lab job update failed (will retry): %s", exc)


def _conclude(tl: TLabJob, form: PluginForm, row: Any) -> int:
    d = row.job_data
    if row.status == JobStatus.COMPLETE.value:
        save_dir = Path(row.config["save_dir"])
        name = model_folder_name(form.host)
        target = tl.models_dir() / name
        export_model_folder(save_dir, target)
        base = row.config["model_name_or_path"]
        tl.register_model(name, model_architecture(target, form.host.get("embedding_model_architecture")), f"AnglE fine-tune of {base} (angle-lab)")
        tl.update(100, metrics=d.get("metrics") or {}, trained_model=name, trained_model_path=str(target))
        tl.end("COMPLETE", "success", f"Trained {d.get('step')} steps; model {name} saved to {target}")
        return 0
    if row.status == JobStatus.STOPPED.value:
        checkpoint = d.get("last_checkpoint")
        tl.end("STOPPED", "stopped", f"Stopped at step {d.get('step')} of {d.get('max_steps')}; checkpoint kept at "
               f"{checkpoint}", last_checkpoint=checkpoint)
        return 0
    error = str(d.get("error") or f"the job ended {row.status}")
    print(f"error: {error}\n{d.get('stderr_tail') or ''}", flush=True)
    tl.end("FAILED", "failed", error, error=error, stderr_tail=d.get("stderr_tail"))
    return 1


def run() -> int:
    """One TL plugin job from TL's input file to TL's job record; the exit code is non-zero when it failed."""
    tl = TLabJob()
    tl.update(0, start_time=time.strftime("%Y-%m-%d %H:%M:%S"), template_name=tl.params.get("template_name"),
              model_name=tl.params.get("embedding_model") or tl.params.get("model_name"))
    try:
        form = plugin_form(tl.form, tl.resolve_dataset)
        # Checkpoints and logs live in TL's folder for this job; the model is copied to workspace/models at the end.
        config = {**form.config, "save_dir": str(tl.job_dir() / "angle-lab")}
        spec = JobCreate.model_validate({"config": config, "launch": form.launch})
    except (ValueError, ValidationError) as e:
        tl.end("FAILED", "failed", _message(e))
        print(f"error: {_message(e)}", flush=True)
        return 1
    settings = get_settings()
    engine = get_engine(settings.db_url)
    init_db(engine)
    row = jobs.create_job(engine, spec, settings.runs_dir,
                          job_data={"source": "transformerlab", "tlab_job_id": str(tl.params.get("job_id"))})
    assert row.id is not None
    print(f"Transformer Lab job {tl.params.get('job_id')}: angle-lab job {row.id}, files in {config['save_dir']}",
          flush=True)
    tl.update(angle_lab_job_id=row.id, output_dir=config["save_dir"])
    runner = JobRunner(engine, row.id, settings)
    # TL (or a person) ending this process: checkpoint and stop, as the Stop button does.
    signal.signal(signal.SIGTERM, lambda *_: runner.stop("the Transformer Lab plugin process got SIGTERM"))
    thread = threading.Thread(target=runner.run, name=f"angle-lab-job-{row.id}", daemon=True)
    thread.start()
    _watch(tl, runner, engine, row.id, thread)
    row = jobs.get_job(engine, row.id)
    _mirror(tl, row, {})
    try:
        return _conclude(tl, form, row)
    except Exception as e:  # noqa: BLE001 - e.g. a full disk while copying the model: say so in TL
        tl.end("FAILED", "failed", f"training finished but the model could not be saved for Transformer Lab: {e}")
        raise
