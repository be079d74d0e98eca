"""Transformer Lab's plugin input: `main.py --input_file plugin_input.json` with {"config": {...}}.

    python main.py --input_file plugin_input.json      # by hand; TL itself runs backend/tlab_plugin.py's path

Pure functions only: what TL sends, turned into our config. The TL SDK calls live in backend/tlab_plugin.py.

The host's form sends every value as a string (pydantic parses "false" as
False, unlike bool("false")) and mixes its own bookkeeping keys with the
parameters. Those keys are renamed to ours when ours is absent, or dropped;
any other unknown key still fails validation, so a typo is never silent.
Launch options (num_processes, ...) arrive flat in the same form and are
split off into the job's `launch`.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.models import LaunchOptions
from plugin.config import TrainConfig
from plugin.manifest import coerce_form_values

RENAMES = {"model_name": "model_name_or_path", "dataset_name": "train_name_or_path", "output_dir": "save_dir"}
# Every key Transformer Lab adds to a plugin's config next to the form's values (../shared/tlab/CONTRACT.md,
# TL's TrainingModalLoRA.tsx), plus sweep and template bookkeeping: consumed below or ignored by name.
HOST_KEYS = {"plugin_name", "template_name", "template_id", "adaptor_name", "model_architecture", "job_id",
             "experiment_name", "experiment_id", "run_name", "type", "name", "description", "model_path",
             "dataset", "formatting_template", "embedding_model", "embedding_model_architecture",
             "foundation_model_file_path", "embedding_model_file_path", "chatml_formatted_column", "run_sweeps",
             "sweep_config", "sweep_metric", "lower_is_better", "model_name", "dataset_name", "output_dir"}
# Split files a TL dataset folder may hold next to its training file, as our folder reader names splits.
VALID_SPLITS = ("valid", "validation", "dev")
DATA_FIELDS = ("train_name_or_path", "valid_name_or_path", "test_name_or_path")
NOT_EXPORTED = {"checkpoints", "logs", "wandb"}  # run-time folders of a save_dir; the model folder is the rest


def split_input(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(config, launch, ignored host keys) from the parsed input file; raises ValueError on a bad shape."""
    config = data.get("config", {})
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as e:
            raise ValueError(f"config is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError("'config' must be an object")
    config = {k: v for k, v in config.items() if not k.startswith("_")}  # host-private keys
    for host_key, ours in RENAMES.items():
        if config.get(host_key) not in (None, "") and ours not in config:
            config[ours] = config.pop(host_key)
    ignored = sorted(k for k in config if k in HOST_KEYS or k in RENAMES)
    launch = {k: config.pop(k) for k in list(config) if k in LaunchOptions.model_fields}
    config = {k: v for k, v in config.items() if k not in ignored}
    return config, launch, ignored


@dataclass
class PluginForm:
    """A TL plugin job's config, read: TrainConfig values (typed, validated), launch options, host keys."""

    config: dict[str, Any]
    launch: dict[str, Any]
    host: dict[str, Any] = field(default_factory=dict)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def tl_dataset_splits(folder: str) -> dict[str, Any]:
    """valid_* settings for a TL dataset folder that holds a validation split next to its training data."""
    path = Path(folder)
    if not path.is_dir():
        return {}
    stems = {p.stem for p in path.iterdir() if p.is_file()}
    for split in VALID_SPLITS:
        if split in stems:
            return {"valid_name_or_path": folder, "valid_split_name": split}
    return {}


def plugin_form(raw: dict[str, Any], resolve_dataset: Callable[[str], str],
                model_keys: tuple[str, ...] = ("embedding_model_file_path", "embedding_model"),
                form: bool | None = None) -> PluginForm:
    """What TL's plugin input file holds under "config", as our job: raises ValueError naming the field.

    - Host keys are taken out by name (HOST_KEYS); any other unknown key still fails, naming it.
    - The backbone is the form's model_name_or_path when set, else the model chosen in TL
      (the first of `model_keys` set: embedding_model_file_path, then embedding_model), else TrainConfig's default.
    - The data is the form's train_name_or_path when set, else TL's dataset_name resolved by
      `resolve_dataset` (TL's SDK: a local dataset folder, or a hub id).
    - DOM strings are parsed as TrainConfig declares them; when the values are a whole form's submission
      (strings; `form` None guesses so), an absent checkbox is False. save_dir is the caller's: TL decides
      where a job's files go.
    """
    config = {k: v for k, v in raw.items() if not k.startswith("_")}  # host-private keys
    host = {k: config.pop(k) for k in list(config) if k in HOST_KEYS}
    launch = {k: config.pop(k) for k in list(config) if k in LaunchOptions.model_fields}
    config.pop("save_dir", None)
    if _blank(config.get("model_name_or_path")):
        config.pop("model_name_or_path", None)
        chosen = next((host[k] for k in model_keys if not _blank(host.get(k))), None)
        if chosen is not None:
            config["model_name_or_path"] = str(chosen)
    if _blank(config.get("train_name_or_path")):
        dataset = host.get("dataset_name")
        if _blank(dataset):
            raise ValueError("train_name_or_path: no training data; choose a dataset in Transformer Lab "
                             "or type a path in the form")
        try:
            config["train_name_or_path"] = resolve_dataset(str(dataset))
        except Exception as e:  # noqa: BLE001 - TL's SDK raises plain Exception for a missing dataset
            raise ValueError(f"dataset_name: {e}") from None
        if _blank(config.get("valid_name_or_path")):
            config.update(tl_dataset_splits(config["train_name_or_path"]))
    if form is None:
        form = any(isinstance(v, str) for k, v in config.items() if k in TrainConfig.model_fields)
    return PluginForm(coerce_form_values(config, checkboxes=form), launch, host)


def task_form(parameters: dict[str, Any], resolve_dataset: Callable[[str], str]) -> PluginForm:
    """A TL task's parameters (task.yaml `parameters`, TrainConfig's names; values may be strings).

    Not a form submission: a boolean that is absent keeps its default. TL's examples name the model
    `model_name`, so that is a backbone too when model_name_or_path is unset. A data field naming a
    dataset installed in TL (`resolve_dataset` gives its folder; anything else comes back unchanged,
    a hub name) reads that folder, with its validation split when the task names none.
    """
    parameters = dict(parameters)
    for key in DATA_FIELDS:
        value = parameters.get(key)
        if isinstance(value, str) and value.strip() and not Path(value).expanduser().exists():
            parameters[key] = resolve_dataset(value.strip())
    train = parameters.get("train_name_or_path")
    if isinstance(train, str) and _blank(parameters.get("valid_name_or_path")):
        parameters.update(tl_dataset_splits(train))
    return plugin_form(parameters, resolve_dataset,
                       model_keys=("embedding_model_file_path", "embedding_model", "model_name"), form=False)


def model_folder_name(host: dict[str, Any]) -> str:
    """The trained model's folder under TL's workspace/models: "<template>_<job id>", as TL's own trainer names it."""
    raw = f"{host.get('template_name') or 'angle-lab'}_{host.get('job_id') or 'job'}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip(".-") or "angle-lab-model"


def export_model_folder(save_dir: Path, target: Path) -> None:
    """Copy the finished model (a sentence-transformers folder, its card and metrics) without run-time files."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in save_dir.iterdir():
        if entry.name in NOT_EXPORTED:
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target / entry.name)


def model_architecture(model_dir: Path, fallback: str | None = None) -> str:
    """The saved backbone's class name (TL's model list filters plugins by it)."""
    try:
        return str(json.loads((model_dir / "config.json").read_text())["architectures"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return fallback or "BertModel"
