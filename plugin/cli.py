"""Command line: flags derived from TrainConfig, with angle-trainer's spellings.

    .venv/bin/python -m plugin.train --train_name_or_path ../shared/data/stsb/train.jsonl \
        --valid_name_or_path ../shared/data/stsb/dev.jsonl --test_name_or_path ../shared/data/stsb/test.jsonl \
        --epochs 1 --save_dir runs/stsb
    .venv/bin/python -m plugin.train --config job.json --fp16 0

Values go to pydantic as strings, so "0"/"1"/"true"/"false" parse as booleans
(angle-emb's `--fp16 0` means True; here it means False). Flags override --config.
`--help` lists the flags in the manifest's groups (the lab form's), each with its type,
choices, bounds and default; `main.py queue|quickstart --help` list them too.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from .config import TrainConfig, error_list
from .helpformat import FlagHelpFormatter

PROG = "angle-lab-train"
OTHER_GROUP = "Other"
# argparse would print every one of ~100 flags in the usage line; the groups below list them.
USAGE = "%(prog)s [-h] [--config FILE.json] [--FIELD VALUE ...]"
BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


# ---------------------------------------------------------------- TrainConfig flags
def _without_none(annotation: Any) -> Any:
    """Optional[X] -> X: the flag takes X; leaving it out is what gives None."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def type_text(annotation: Any) -> str:
    """How a field's value is typed on the command line: "int", "one of: a, b", "comma-separated list of int"."""
    annotation = _without_none(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of: " + ", ".join(str(v) for v in typing.get_args(annotation))
    if origin is list:
        return f"comma-separated list of {type_text(typing.get_args(annotation)[0]).replace('one of: ', '')}"
    if origin is dict:
        return 'mapping "old:new;old2:new2"'
    if annotation is bool:
        return "bool: 1/0, true/false"
    return {int: "int", float: "float", str: "text"}.get(annotation, str(annotation))


def _metavar(annotation: Any) -> str:
    annotation = _without_none(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "CHOICE"
    return {list: "LIST", dict: "MAPPING"}.get(origin) or {int: "INT", float: "FLOAT", bool: "BOOL"}.get(annotation, "TEXT")


def _bounds_text(field: FieldInfo) -> str:
    """">= 1, <= 32768" from the field's constraints (pydantic keeps them as annotated_types objects)."""
    found = []
    for meta in field.metadata:
        for attr, sign in BOUNDS:
            if getattr(meta, attr, None) is not None:
                found.append(f"{sign} {getattr(meta, attr)}")
    return ", ".join(found)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "default: unset"
    if isinstance(value, bool):
        return f"default: {str(value).lower()}"
    if isinstance(value, list):
        return f"default: {','.join(map(str, value))}"
    if isinstance(value, dict):
        return f"default: {';'.join(f'{k}:{v}' for k, v in value.items()) or 'empty'}"
    return f"default: {value}"


def field_help(field: FieldInfo) -> str:
    """The field's description, then its type, bounds and default, as `--help` shows them."""
    notes = [type_text(field.annotation), _bounds_text(field), default_text(field)]
    return f"{field.description or ''} ({'; '.join(n for n in notes if n)})".strip()


def _group_of(field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("group") or OTHER_GROUP)


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, in argument groups named and ordered as the manifest's (and the lab form's)."""
    from .manifest import GROUPS

    fields = TrainConfig.model_fields
    names = [*GROUPS, *sorted({_group_of(f) for f in fields.values()} - set(GROUPS))]
    groups = {name: parser.add_argument_group(name) for name in names}
    for name, field in fields.items():
        # Values stay strings: pydantic parses them ("0"/"1" as booleans, "a,b" as lists), so no argparse type.
        groups[_group_of(field)].add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS,
                                              metavar=_metavar(field.annotation), help=field_help(field))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, usage=USAGE, formatter_class=FlagHelpFormatter,
                                     description="Fine-tune a sentence embedding model with AnglE.",
                                     epilog="Values are parsed by TrainConfig; see docs/config.md for every field.")
    parser.add_argument("--config", metavar="FILE.json", help="JSON file with TrainConfig fields; flags override it.")
    add_train_flags(parser)
    return parser


class TrainFlagsHelp(argparse.Action):
    """-h/--help for commands that pass TrainConfig flags through (main.py queue, quickstart): both kinds listed.

    Those commands parse only their own options and hand the rest to TrainConfig, so the
    flags are added to the parser just for printing, when help is asked for.
    """

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show this help message, with every TrainConfig flag, and exit")
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        # The command's own usage line, plus the TrainConfig flags in short (the groups list them all).
        own = parser.format_usage().removeprefix("usage: ").strip().replace("%", "%%")
        parser.usage = f"{own} [--config FILE.json] [--FIELD VALUE ...]"
        parser.add_argument("--config", metavar="FILE.json", help="JSON file with TrainConfig fields; flags override it.")
        add_train_flags(parser)
        parser.print_help()
        parser.exit()


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

    config = parse_config(argv)  # first: --help and flag errors answer without importing torch (~5 s)
    from .data import DataError
    from .trainer import train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
