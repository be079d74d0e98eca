"""index.json is generated from TrainConfig and current; form strings coerce to exact types.

    .venv/bin/python -m pytest tests/plugin/test_manifest.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from plugin.config import DEFAULT_MODEL, TrainConfig, error_list
from plugin.manifest import (
    ESSENTIALS,
    INDEX_JSON,
    REPO_ROOT,
    _coerce,
    build_manifest,
    coerce_form_values,
    manifest_text,
)

BASE = {"train_name_or_path": "data.jsonl"}


def test_committed_index_json_is_current() -> None:
    assert INDEX_JSON.is_file(), "index.json missing: run .venv/bin/python -m plugin.manifest --write"
    assert INDEX_JSON.read_text() == manifest_text(), \
        "index.json is stale: run .venv/bin/python -m plugin.manifest --write"


def test_command_prints_the_manifest() -> None:
    out = subprocess.run([sys.executable, "-m", "plugin.manifest"], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == build_manifest()


def test_every_field_has_a_parameter_and_ui_entry() -> None:
    m = build_manifest()
    fields = set(TrainConfig.model_fields)
    assert set(m["parameters"]) == fields
    assert fields <= set(m["parameters_ui"])
    assert sorted(m["parameters_ui"]["ui:order"]) == sorted(fields)
    assert sorted(n for names in m["parameter_groups"].values() for n in names) == sorted(fields)
    for name, field in TrainConfig.model_fields.items():
        group = field.json_schema_extra["group"]  # type: ignore[index]
        assert m["parameters_ui"][name]["ui:group"] == group
        if field.description:
            assert m["parameters_ui"][name]["ui:help"].startswith(field.description)
    assert m["required"] == ["train_name_or_path"]
    assert m["parameters_ui"]["ui:order"][:len(ESSENTIALS)] == ESSENTIALS


def test_plugin_header() -> None:
    m = build_manifest()
    assert m["plugin-format"] == "python" and m["type"] == "trainer" and m["train_type"] == "embedding"
    assert m["setup-script"] == "setup.sh" and m["training_template_format"] == "none"
    assert all((REPO_ROOT / f).exists() for f in m["files"]) and "main.py" in m["files"]
    # The keys Transformer Lab's plugin.schema.json requires (transformerlab-api test/plugins).
    for key in ("name", "uniqueId", "description", "plugin-format", "type", "version", "files", "setup-script",
                "supported_hardware_architectures"):
        assert key in m, key
    assert {"cpu", "cuda", "amd"} == set(m["supported_hardware_architectures"])
    assert "BertModel" in m["model_architectures"]


@pytest.mark.parametrize(("name", "expected"), [
    ("pooling_strategy", {"type": "string", "default": "mean", "enum": ["cls", "cls_avg", "mean", "max", "last"]}),
    ("angle_w", {"type": "number", "default": 0.02, "minimum": 0.0}),
    ("learning_rate", {"type": "number", "default": 1e-5, "exclusiveMinimum": 0.0, "maximum": 1.0}),
    ("maxlen", {"type": "integer", "default": 512, "minimum": 8, "maximum": 32768}),
    ("max_train_samples", {"type": "integer", "default": None, "minimum": 1, "nullable": True}),
    ("tokenizer_padding_side", {"type": "string", "default": "none", "enum": ["none", "left", "right"]}),
    ("epochs", {"type": "integer", "default": 10, "required": True}),
    ("model_name_or_path", {"type": "string", "default": ""}),
    ("train_name_or_path", {"type": "string", "default": ""}),
    ("evaluate_before_training", {"type": "boolean", "default": True}),
    ("report_to", {"type": "string", "default": "none"}),
    ("column_rename_mapping", {"type": "string", "default": ""}),
])
def test_parameter_schema(name: str, expected: dict[str, Any]) -> None:
    param = build_manifest()["parameters"][name]
    for key, value in expected.items():
        assert param[key] == value, (name, key)
    assert param["title"]


@pytest.mark.parametrize(("form", "expected"), [
    ({"fp16": "false"}, {"fp16": False}),
    ({"fp16": "False"}, {"fp16": False}),
    ({"group_by_length": "true"}, {"group_by_length": True}),
    ({"group_by_length": "0"}, {"group_by_length": False}),
    ({"angle_w": "0.02"}, {"angle_w": 0.02}),
    ({"learning_rate": "8e-5"}, {"learning_rate": 8e-5}),
    ({"epochs": "3"}, {"epochs": 3}),
    ({"max_steps": "-1"}, {"max_steps": -1}),
    ({"max_train_samples": ""}, {"max_train_samples": None}),
    ({"max_train_samples": "16"}, {"max_train_samples": 16}),
    ({"tokenizer_padding_side": ""}, {"tokenizer_padding_side": None}),
    ({"tokenizer_padding_side": "none"}, {"tokenizer_padding_side": "none"}),  # TrainConfig reads it as None
    ({"normalize_embeddings": "on"}, {"normalize_embeddings": True}),  # a checked checkbox
    ({"ibn_label_threshold": ""}, {"ibn_label_threshold": None}),
    ({"ibn_label_threshold": "4"}, {"ibn_label_threshold": 4.0}),
    ({"report_to": "none,wandb"}, {"report_to": ["none", "wandb"]}),
    ({"report_to": '["tensorboard"]'}, {"report_to": ["tensorboard"]}),
    ({"pooling_strategy": "cls"}, {"pooling_strategy": "cls"}),
    ({"column_rename_mapping": "sentence1:text1"}, {"column_rename_mapping": "sentence1:text1"}),
    ({"column_rename_mapping": '{"a": "text1"}'}, {"column_rename_mapping": {"a": "text1"}}),
    ({"epochs": ""}, {}),  # untouched number box: the default stays
    ({"warmup_ratio": 0.1}, {"warmup_ratio": 0.1}),  # non-strings pass through
])
def test_coerce_form_values_exact(form: dict[str, Any], expected: dict[str, Any]) -> None:
    out = coerce_form_values({**BASE, **form})
    assert out == {**BASE, **expected}
    for key, value in expected.items():
        assert type(out[key]) is type(value), (key, out[key])  # exact type: 3 is not 3.0, False is not 0


@pytest.mark.parametrize(("text", "annotation", "expected"), [
    ("768,512", list[int], [768, 512]),
    ("768, 512 ,", list[int], [768, 512]),
    ("0.5,1", list[float], [0.5, 1.0]),
    ("a,b", list[str], ["a", "b"]),
    ("yes", bool, True),
    ("off", bool, False),
    ("7", Literal[7, 8], 7),
])
def test_coerce_generic_types(text: str, annotation: Any, expected: Any) -> None:
    out = _coerce(text, annotation)
    assert out == expected
    if isinstance(expected, list):
        assert [type(v) for v in out] == [type(v) for v in expected]
    else:
        assert type(out) is type(expected)


@pytest.mark.parametrize(("form", "field"), [
    ({"epochs": "three"}, "epochs"),
    ({"fp16": "maybe"}, "fp16"),
    ({"angle_w": "-1"}, "angle_w"),
    ({"pooling_strategy": "median"}, "pooling_strategy"),
    ({"report_to": "none,mlflow"}, "report_to.1"),
    ({"no_such_key": "1"}, "no_such_key"),
])
def test_coerce_then_validation_names_the_field(form: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        coerce_form_values({**BASE, **form})
    assert field in [e["field"] for e in error_list(info.value)]


def untouched_form() -> dict[str, Any]:
    """What a browser's FormData sends for the untouched manifest form: every value a string, a checked
    checkbox "on", an unchecked one absent, a select its default (or its first option when that is null)."""
    form: dict[str, Any] = {}
    for name, p in build_manifest()["parameters"].items():
        default = p.get("default")
        if p["type"] == "boolean":
            if default:
                form[name] = "on"
        elif "enum" in p:
            form[name] = str(default if default is not None else p["enum"][0])
        else:
            form[name] = "" if default is None else str(default)
    return form


def test_untouched_form_is_the_default_config() -> None:
    form = {**untouched_form(), "train_name_or_path": "data.jsonl", "model_name_or_path": DEFAULT_MODEL}
    config = TrainConfig.model_validate(coerce_form_values(form, checkboxes=True))
    assert config == TrainConfig(train_name_or_path="data.jsonl")


def test_unchecked_checkbox_is_false_and_none_choice_is_none() -> None:
    form = {**untouched_form(), "train_name_or_path": "data.jsonl", "model_name_or_path": DEFAULT_MODEL}
    del form["normalize_embeddings"]  # the user unticked it: FormData leaves it out
    config = TrainConfig.model_validate(coerce_form_values({**form, "attn_implementation": "sdpa"}, checkboxes=True))
    assert config.normalize_embeddings is False and config.attn_implementation == "sdpa"
    assert config.torch_dtype is None and config.tokenizer_padding_side is None  # "none" selected
