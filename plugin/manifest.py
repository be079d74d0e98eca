"""index.json (Transformer Lab's plugin manifest) generated from TrainConfig, and form-value coercion.

    .venv/bin/python -m plugin.manifest > index.json      # or: .venv/bin/python -m plugin.manifest --write

TrainConfig is the single source of truth: every field becomes one entry of
`parameters` (title, type, default, enum, bounds from its JSON schema) and one
of `parameters_ui` (its description as ui:help, its group).
tests/plugin/test_manifest.py fails when the committed index.json is stale.

The host's form sends every value as a string; `coerce_form_values` turns
them into the exact types TrainConfig declares before validating them.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from .config import NONE_CHOICE, NONE_CHOICE_FIELDS, TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
INDEX_JSON = REPO_ROOT / "index.json"

GROUPS = ["Data", "Model & pooling", "Losses", "LLM & LoRA", "Matryoshka & Espresso", "Training", "Logging"]  # form order
MODEL_ARCHITECTURES = ["BertModel", "XLMRobertaModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"]
# What the plugin folder needs at run time (Transformer Lab copies the whole folder; this names the parts).
PLUGIN_FILES = ["main.py", "setup.sh", "pyproject.toml", "index.json", "plugin", "backend"]
# Shown first in a host's form; the rest follow group by group.
ESSENTIALS = ["train_name_or_path", "valid_name_or_path", "model_name_or_path", "data_format", "epochs",
              "batch_size", "learning_rate", "warmup_ratio", "bf16", "fp16"]
# Fields a host fills from its own pickers when the form leaves them empty (backend/tlab.py).
HOST_FILLED = {
    "model_name_or_path": "leave empty to train the embedding model chosen in Transformer Lab.",
    "train_name_or_path": "leave empty to train on the dataset chosen in Transformer Lab.",
}
SCHEMA_KEYS = ("enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength")
TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}


def _version() -> str:
    # From pyproject.toml, not installed metadata: the output must not depend on when the venv was built.
    # (A regex, not tomllib: that needs Python 3.11 and the project supports 3.10.)
    found = re.search(r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    return found.group(1) if found else "0.0.0"



def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """Optional[X] is anyOf [X, null] in the schema; the form shows X (an empty box means None)."""
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        return {**{k: v for k, v in prop.items() if k != "anyOf"}, **branches[0]}
    return prop


def _parameter(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    field = TrainConfig.model_fields[name]
    prop = _non_null(prop)
    kind = prop.get("type", "string")
    out: dict[str, Any] = {"title": prop.get("title", name)}
    if kind in ("array", "object"):
        # The host form edits text: a list is "a,b", a mapping "old:new;old2:new2" (both parsed back on the way in).
        out["type"] = "string"
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            out["default"] = ",".join(str(v) for v in default)
        elif isinstance(default, dict):
            out["default"] = ";".join(f"{k}:{v}" for k, v in default.items())
        item_enum = (prop.get("items") or {}).get("enum")
        if item_enum:
            out["examples"] = item_enum
        return out
    out["type"] = kind
    if not field.is_required():
        out["default"] = field.get_default(call_default_factory=True)
    for key in SCHEMA_KEYS:
        if key in prop:
            out[key] = prop[key]
    if name in NONE_CHOICE_FIELDS:
        # A select cannot submit null, and an untouched one submits its first option: "none" comes first.
        out["enum"], out["default"] = [NONE_CHOICE, *prop["enum"]], NONE_CHOICE
    elif name in HOST_FILLED:
        out["default"] = ""  # empty: the host's own choice (see HOST_FILLED)
    elif not field.is_required() and field.get_default() is None:
        out["nullable"] = True  # "" in the form means None
    elif kind != "boolean":
        out["required"] = True  # a value is always needed; an empty box would be an error
    return out


def _help(name: str, prop: dict[str, Any]) -> str:
    text = prop.get("description") or prop.get("title", name)
    if name in NONE_CHOICE_FIELDS:
        text += ' "none": unset.'
    if name in HOST_FILLED:
        text += f" In Transformer Lab: {HOST_FILLED[name]}"
    return text


def build_manifest() -> dict[str, Any]:
    schema = TrainConfig.model_json_schema()
    props: dict[str, dict[str, Any]] = schema["properties"]
    parameters = {name: _parameter(name, prop) for name, prop in props.items()}
    required = schema.get("required", [])
    ui: dict[str, Any] = {}
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, prop in props.items():
        group = prop.get("group", "Training")
        groups.setdefault(group, []).append(name)
        ui[name] = {"ui:help": _help(name, prop), "ui:group": group}
    # Hosts render the fields in this order (rjsf's ui:order): what most runs set first, then group by group.
    ui["ui:order"] = [*ESSENTIALS, *(name for g in groups.values() for name in g if name not in ESSENTIALS)]
    return {
        "name": "AnglE embedding trainer",
        "uniqueId": "angle_lab_trainer",
        "description": "Fine-tune sentence-embedding models with AnglE (cosine/CoSENT, in-batch negatives, "
                       "contrastive and angle losses); saves a sentence-transformers model.",
        "plugin-format": "python",
        "type": "trainer",
        "train_type": "embedding",
        "version": _version(),
        "model_architectures": MODEL_ARCHITECTURES,
        "supported_hardware_architectures": ["cpu", "cuda", "amd"],
        "files": PLUGIN_FILES,
        "setup-script": "setup.sh",
        # No chat/completion formatting: pairs and triplets are read as they are.
        "training_template_format": "none",
        "parameters": parameters,
        "required": required,  # our lab page's list; Transformer Lab reads parameters[k].required
        "parameter_groups": groups,
        "parameters_ui": ui,
    }


def manifest_text() -> str:
    return json.dumps(build_manifest(), indent=2, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ form coercion
def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """(X, True) for X | None, else (annotation, False)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return annotation, False


def _coerce(text: str, annotation: Any) -> Any:
    """One string to `annotation`; a string that does not parse is returned as is so that
    TrainConfig's validation names the field and the problem."""
    origin = typing.get_origin(annotation)
    s = text.strip()
    if annotation is bool:
        low = s.lower()
        return True if low in TRUE else False if low in FALSE else text
    if annotation is int:
        try:
            return int(s)
        except ValueError:
            return text
    if annotation is float:
        try:
            return float(s)
        except ValueError:
            return text
    if origin is Literal:
        for choice in typing.get_args(annotation):
            if not isinstance(choice, str) and str(choice) == s:
                return choice
        return s
    if origin is list:
        if s.startswith("["):
            try:
                return json.loads(s)
            except json.JSONDecodeError:
                return text
        (item,) = typing.get_args(annotation) or (str,)
        return [_coerce(part, item) for part in s.split(",") if part.strip()]
    if origin is dict:
        if s.startswith("{"):
            try:
                return json.loads(s)
            except json.JSONDecodeError:
                return text
        return text  # "old:new;..." is parsed by TrainConfig's own validator
    return text


def coerce_form_values(values: dict[str, Any], checkboxes: bool = False) -> dict[str, Any]:
    """Host-form strings -> TrainConfig's exact types, then validated by TrainConfig.

    "false" -> False, "on" -> True, "0.02" -> 0.02, "768,512" -> [768, 512] for list fields,
    "" -> None for optional fields. Non-string values pass through unchanged.
    `checkboxes`: the values are a whole HTML form's submission (FormData), where an unchecked
    checkbox sends nothing at all, so every boolean field that is absent is False.
    Returns the coerced values (only the keys given, plus those booleans); raises pydantic's
    ValidationError (see plugin.config.error_list) when they are not a valid config.
    """
    out: dict[str, Any] = {}
    if checkboxes:
        out.update({name: False for name, field in TrainConfig.model_fields.items()
                    if field.annotation is bool and name not in values})
    for key, value in values.items():
        field = TrainConfig.model_fields.get(key)
        if field is None or not isinstance(value, str):
            out[key] = value  # unknown keys are left for validation to reject
            continue
        annotation, optional = _strip_optional(field.annotation)
        if value.strip() == "" and optional:
            out[key] = None
        elif value.strip() == "" and annotation in (bool, int, float):
            continue  # an untouched box for a required-typed number/bool: keep the default
        else:
            out[key] = _coerce(value, annotation)
    TrainConfig.model_validate(out)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--write"]:
        INDEX_JSON.write_text(manifest_text())
        print(f"wrote {INDEX_JSON}", file=sys.stderr)
        return 0
    if argv:
        print("usage: python -m plugin.manifest [--write]", file=sys.stderr)
        return 2
    sys.stdout.write(manifest_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
