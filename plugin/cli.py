"""Command line: flags derived from TrainConfig, with angle-trainer's spellings.

    .venv/bin/python -m plugin.train --train_name_or_path ../shared/data/stsb/train.jsonl \
        --valid_name_or_path ../shared/data/stsb/dev.jsonl --test_name_or_path ../shared/data/stsb/test.jsonl \
        --epochs 1 --save_dir runs/stsb
    .venv/bin/python -m plugin.train --config job.json --fp16 0

Values go to pydantic as strings, so "0"/"1"/"true"/"false" parse as booleans
(angle-emb's `--fp16 0` means True; here it means False). Flags override --config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import TrainConfig, error_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="angle-lab-train", description="Fine-tune a sentence embedding model with AnglE.")
    parser.add_argument("--config", help="JSON file with TrainConfig fields; flags override it.")
    for name, field in TrainConfig.model_fields.items():
        required = " (required)" if field.is_required() else f" (default: {field.get_default(call_default_factory=True)!r})"
        parser.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, metavar="VALUE",
                            help=(field.description or "") + required)
    return parser


def read_json_object(path: str, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object; errors exit naming the flag and file."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: {what} {path}: {e}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"error: {what} {path}: expected a JSON object")
    return value


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config", None)
    if config_file:
        values = read_json_object(config_file, "--config")
        values = values.get("config", values) if "config" in values and isinstance(values["config"], dict) else values
    values.update(args)
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as e:
        lines = "\n".join(f"  {err['field']}: {err['message']}" for err in error_list(e))
        raise SystemExit(f"error: invalid config\n{lines}") from None


def metrics_table(metrics: dict[str, float]) -> str:
    keys = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(("before/", "after/"))})
    lines = ["| metric (x100) | before | after |", "| --- | --- | --- |"]
    for k in keys:
        b, a = metrics.get(f"before/{k}"), metrics.get(f"after/{k}")
        lines.append(f"| {k} | {'-' if b is None else f'{100 * b:.2f}'} | {'-' if a is None else f'{100 * a:.2f}'} |")
    for k in ("train_loss", "train_runtime", "train_pairs_per_second", "global_step"):
        if k in metrics:
            lines.append(f"| {k} | | {metrics[k]:.4g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import logging

    from .data import DataError
    from .trainer import train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    try:
        result = train(config)
    except DataError as e:
        print(f"error: data: {e}", file=sys.stderr)
        return 2
    print(metrics_table(result.metrics))
    print(f"model saved to {result.save_dir}" + (" (stopped early)" if result.stopped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
