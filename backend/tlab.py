"""Transformer Lab's plugin input: `main.py --input_file plugin_input.json` with {"config": {...}}.

    python main.py --input_file plugin_input.json

The host's form sends every value as a string (pydantic parses "false" as
False, unlike bool("false")) and mixes its own bookkeeping keys with the
parameters. Those keys are renamed to ours when ours is absent, or dropped;
any other unknown key still fails validation, so a typo is never silent.
Launch options (num_processes, ...) arrive flat in the same form and are
split off into the job's `launch`.
"""

from __future__ import annotations

import json
from typing import Any

from backend.models import LaunchOptions

RENAMES = {"model_name": "model_name_or_path", "dataset_name": "train_name_or_path", "output_dir": "save_dir"}
HOST_KEYS = {"plugin_name", "template_name", "template_id", "adaptor_name", "model_architecture", "job_id",
             "experiment_name", "experiment_id", "run_name", "type", "name", "description", "model_path",
             "dataset", "formatting_template", "embedding_model", "embedding_model_architecture"}


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
