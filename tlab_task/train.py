"""Transformer Lab task (TL since April 2026): one angle-lab training run reported through the `lab` SDK.

    python tlab_task/train.py        # what task.yaml's `run` says; TL sets _TFL_JOB_ID / _TFL_EXPERIMENT_ID

The parameters are TrainConfig's names (lab.get_config(), i.e. the job's job_data["parameters"]).
Training runs in this process through plugin.train with two callbacks: the lab SDK's own
(lab.get_hf_callback(): progress, log lines, each checkpoint copied into TL's checkpoints) and
LabReport below (the latest loss and eval metrics, and TL's Stop button: job_data.stop checkpoints
and ends the run at the next step). A job TL resumes from a checkpoint (lab.get_checkpoint_to_resume())
continues from it. The model goes to TL with lab.save_model; the job ends with lab.finish or lab.error.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: plugin/, backend/

from lab import Dataset, lab  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from backend.tlab import export_model_folder, model_architecture, model_folder_name, task_form  # noqa: E402
from plugin.config import TrainConfig, error_list  # noqa: E402

STOP_POLL_S = 1.0


class LabReport(TrainerCallback):
    """Latest metrics into TL's job (lab.update_progress), and TL's Stop flag out of it."""

    def __init__(self) -> None:
        self.stopped_by: str | None = None
        self._last_poll = 0.0
        self.latest: dict[str, float] = {}  # TL keeps only the last snapshot: the loss must stay in it

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        if numbers and state.max_steps:
            self.latest.update(numbers)
            lab.update_progress(min(95, int(100 * state.global_step / state.max_steps)), metrics=dict(self.latest),
                                step=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        now = time.monotonic()
        if self.stopped_by or now - self._last_poll < STOP_POLL_S:
            return
        self._last_poll = now
        if lab.get_job_data().get("stop"):
            self.stopped_by = "stopped in Transformer Lab"
            control.should_save = True  # HF saves in this step's save phase, then leaves the loop
            control.should_training_stop = True


def resolve_dataset(dataset_id: str) -> str:
    """A dataset installed in TL's workspace is its folder; anything else is a hub id."""
    async def folder() -> str:
        return str(await (await Dataset.get(dataset_id)).get_dir())

    try:
        return asyncio.run(folder())
    except FileNotFoundError:  # not installed in TL: a hub id
        return dataset_id


def config_from_lab(job_dir: Path) -> TrainConfig:
    form = task_form(lab.get_config(), resolve_dataset)
    config = {**form.config, "save_dir": str(job_dir / "angle-lab")}
    checkpoint = lab.get_checkpoint_to_resume()
    if checkpoint:
        config["resume_from_checkpoint"] = checkpoint
    return TrainConfig.model_validate(config)


def main() -> int:
    from plugin import train

    lab.init()
    job_dir = Path(asyncio.run(lab.job.get_dir()))
    try:
        config = config_from_lab(job_dir)
    except ValidationError as e:
        lab.error("invalid parameters: " + "; ".join(f"{err['field']}: {err['message']}" for err in error_list(e)))
        return 1
    except ValueError as e:
        lab.error(str(e))
        return 1
    if config.resume_from_checkpoint:
        print(f"resuming from {config.resume_from_checkpoint}", flush=True)
        lab.log(f"resuming from {config.resume_from_checkpoint}")
    report = LabReport()
    try:
        result = train(config, callbacks=[lab.get_hf_callback(), report])
    except Exception as e:  # noqa: BLE001 - every failure ends the job as failed, with its message
        lab.error(f"{type(e).__name__}: {e}")
        raise
    if result.stopped:
        checkpoints = sorted((Path(config.save_dir) / "checkpoints").glob("checkpoint-*"),
                             key=lambda p: int(p.name.split("-")[1]))
        last = str(checkpoints[-1]) if checkpoints else None
        asyncio.run(lab.job.update_job_data_fields({
            "completion_status": "stopped", "last_checkpoint": last,
            "completion_details": f"{report.stopped_by or 'stopped'} at step {result.global_step} of "
                                  f"{result.max_steps}; checkpoint kept at {last}"}))
        asyncio.run(lab.job.update_status("STOPPED"))
        return 0
    export = job_dir / "model"
    export_model_folder(Path(result.save_dir), export)
    name = model_folder_name({"template_name": "angle-lab", "job_id": lab.job.id})
    saved = lab.save_model(str(export), name=name, architecture=model_architecture(export),
                           pipeline_tag="sentence-similarity")
    lab.finish(f"Trained {result.global_step} steps; model saved to {saved}",
               score={k: v for k, v in result.metrics.items() if k.startswith("after/")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
