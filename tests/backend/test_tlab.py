"""Transformer Lab's input read as our config (backend/tlab.py): pure functions, no TL code needed.

    .venv/bin/python -m pytest -q tests/backend/test_tlab.py

The end-to-end runs through TL's real harness and SDK are in tests/tlab/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.tlab import HOST_KEYS, model_folder_name, plugin_form, task_form
from plugin.config import DEFAULT_MODEL, TrainConfig, error_list
from tests.plugin.test_manifest import untouched_form

HOST = {"template_name": "t", "plugin_name": "angle_lab_trainer", "model_name": "some/llm",
        "model_architecture": "LlamaForCausalLM", "foundation_model_file_path": "", "embedding_model": "tl/embedder",
        "embedding_model_architecture": "BertModel", "embedding_model_file_path": "", "dataset_name": "my-pairs",
        "formatting_template": "", "type": "embedding", "chatml_formatted_column": "messages", "run_sweeps": "false",
        "job_id": "7", "output_dir": "/somewhere", "adaptor_name": "t"}


def no_dataset(name: str) -> str:
    raise AssertionError(f"resolver called for {name}")


def test_every_contract_host_key_is_known() -> None:
    assert set(HOST) <= HOST_KEYS


def test_untouched_form_takes_tl_model_and_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "my-pairs"
    folder.mkdir()
    (folder / "train.jsonl").write_text("{}\n")
    (folder / "dev.jsonl").write_text("{}\n")
    form = plugin_form({**untouched_form(), **HOST, "_private": "x"}, lambda name: str(tmp_path / name))
    config = TrainConfig.model_validate(form.config)
    assert config.model_name_or_path == "tl/embedder" and config.train_name_or_path == str(folder)
    assert config.valid_name_or_path == str(folder) and config.valid_split_name == "dev"
    assert config == TrainConfig(model_name_or_path="tl/embedder", train_name_or_path=str(folder),
                                 valid_name_or_path=str(folder), valid_split_name="dev")  # all else: defaults
    assert form.host["job_id"] == "7" and "save_dir" not in form.config


def test_form_values_win_over_the_host() -> None:
    raw = {**untouched_form(), **HOST, "model_name_or_path": "mine", "train_name_or_path": "data.jsonl",
           "embedding_model_file_path": "/tl/models/x", "epochs": "2", "learning_rate": "8e-5"}
    config = TrainConfig.model_validate(plugin_form(raw, no_dataset).config)
    assert (config.model_name_or_path, config.train_name_or_path, config.epochs) == ("mine", "data.jsonl", 2)
    raw["model_name_or_path"] = ""
    assert plugin_form(raw, no_dataset).config["model_name_or_path"] == "/tl/models/x"  # the file path first


def test_no_model_anywhere_is_the_default_and_no_data_names_the_field() -> None:
    raw = {**untouched_form(), "train_name_or_path": "d.jsonl"}
    assert TrainConfig.model_validate(plugin_form(raw, no_dataset).config).model_name_or_path == DEFAULT_MODEL
    with pytest.raises(ValueError, match="train_name_or_path: no training data"):
        plugin_form({**untouched_form()}, no_dataset)
    with pytest.raises(ValueError, match="dataset_name: No dataset named x installed"):
        plugin_form({**untouched_form(), "dataset_name": "x"},
                    lambda name: (_ for _ in ()).throw(Exception(f"No dataset named {name} installed.")))


@pytest.mark.parametrize(("changed", "field"), [({"learning_rat": "1e-4"}, "learning_rat"),
                                                ({"epochs": "zero"}, "epochs"),
                                                ({"pooling_strategy": "median"}, "pooling_strategy")])
def test_a_bad_value_or_a_misspelled_key_names_it(changed: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        plugin_form({**untouched_form(), **HOST, **changed}, lambda name: name)
    assert field in [e["field"] for e in error_list(info.value)]


def test_task_parameters_keep_absent_booleans_and_take_model_name() -> None:
    form = task_form({"model_name": "hub/model", "train_name_or_path": "d.jsonl", "epochs": "1"}, lambda name: name)
    config = TrainConfig.model_validate(form.config)
    assert config.model_name_or_path == "hub/model" and config.normalize_embeddings is True  # not a FormData


def test_model_folder_name_is_a_safe_name() -> None:
    assert model_folder_name({"template_name": "my template/../x", "job_id": "12"}) == "my-template-..-x_12"
    assert model_folder_name({}) == "angle-lab_job"


def test_task_data_naming_a_tl_dataset_reads_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "train.jsonl").write_text("{}\n")
    (folder / "validation.jsonl").write_text("{}\n")
    installed = {"pairs": str(folder)}
    form = task_form({"train_name_or_path": "pairs", "test_name_or_path": "org/hub-set", "valid_name_or_path": ""},
                     lambda name: installed.get(name, name))
    config = TrainConfig.model_validate(form.config)
    assert config.train_name_or_path == str(folder) and config.test_name_or_path == "org/hub-set"
    assert (config.valid_name_or_path, config.valid_split_name) == (str(folder), "validation")
