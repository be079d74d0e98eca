"""TrainConfig validation: every rejection names its field, booleans parse like a human means them."""

import json

import pytest
from pydantic import ValidationError

from plugin.config import TrainConfig, error_list

BASE = {"train_name_or_path": "data.jsonl"}


def make(**kw):
    return TrainConfig(**{**BASE, **kw})


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"not_a_key": 1}, r"not_a_key\n  Extra inputs are not permitted"),
        ({"ibn_w": -1.0}, r"ibn_w\n  Input should be greater than or equal to 0"),
        ({"cosine_tau": 0}, r"cosine_tau\n  Input should be greater than 0"),
        ({"batch_size": 0}, r"batch_size\n  Input should be greater than or equal to 1"),
        ({"pooling_strategy": "median"}, r"pooling_strategy\n  Input should be 'cls', 'cls_avg', 'mean', 'max' or 'last'"),
        ({"text_prompt": "query: "}, r"text_prompt\n  Value error, text_prompt must contain the placeholder \{text\}"),
        ({"query_prompt": "q"}, r"query_prompt must contain the placeholder \{text\}"),
        ({"fp16": True, "bf16": True}, r"fp16 and bf16 cannot both be set: choose one precision"),
        ({"cosine_w": 0, "ibn_w": 0, "cln_w": 0, "angle_w": 0}, r"all loss weights are 0"),
        ({"column_rename_mapping": "a-b"}, r"column_rename_mapping entry 'a-b' must look like 'old:new'"),
        ({"learning_rate": 0}, r"learning_rate\n  Input should be greater than 0"),
        ({"data_format": "D"}, r"data_format\n  Input should be 'auto', 'A', 'B' or 'C'"),
        ({"warmup_ratio": 1.5}, r"warmup_ratio\n  Input should be less than 1"),
        ({"maxlen": 2}, r"maxlen\n  Input should be greater than or equal to 8"),
        ({"fp16": "maybe"}, r"fp16\n  Input should be a valid boolean"),
        ({"wise_alpha": 0}, r"wise_alpha\n  Input should be greater than 0"),
        ({"wise_alpha": 0.8, "apply_lora": True}, r"wise_alpha < 1 averages full-precision full weights"),
    ],
)
def test_rejections_name_the_field(kw, message):
    with pytest.raises(ValidationError, match=message):
        make(**kw)


def test_missing_train_data_is_named():
    with pytest.raises(ValidationError, match=r"train_name_or_path\n  Field required"):
        TrainConfig()


@pytest.mark.parametrize("raw, expected", [("0", False), ("1", True), ("false", False), ("true", True), (0, False), (1, True)])
def test_booleans_parse_strings_and_ints(raw, expected):
    # angle-emb's argparse type=bool made `--fp16 0` True; here it is False.
    assert make(fp16=raw).fp16 is expected


def test_rename_mapping_string_and_pooling_alias():
    cfg = make(column_rename_mapping="sentence1:text1; sentence2:text2", pooling_strategy="avg")
    assert cfg.column_rename_mapping == {"sentence1": "text1", "sentence2": "text2"}
    assert cfg.pooling_strategy == "mean"


def test_round_trip_through_json():
    cfg = make(ibn_w=20.0, text_prompt="Represent: {text}", report_to="tensorboard", bf16="1")
    again = TrainConfig.model_validate(json.loads(cfg.model_dump_json()))
    assert again == cfg
    assert again.reporters == ["tensorboard"]


def test_wandb_project_turns_on_wandb():
    assert make(wandb_project="p").reporters == ["wandb"]


def test_error_list_flattens_for_api():
    with pytest.raises(ValidationError) as exc:
        make(batch_size=0, bogus=1)
    fields = {e["field"]: e["message"] for e in error_list(exc.value)}
    assert fields["bogus"] == "unknown config key 'bogus'"
    assert "greater than or equal to 1" in fields["batch_size"]


def test_docs_config_md_is_current():
    from pathlib import Path

    from plugin.config import config_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert doc.read_text() == config_markdown(), "regenerate docs/config.md (command in config_markdown's docstring)"


@pytest.mark.parametrize(("extra", "multiple"), [
    ({}, 1), ({"bf16": True}, 8), ({"fp16": True}, 8), ({"bf16": True, "pad_to_multiple_of": 1}, 1),
    ({"pad_to_multiple_of": 16}, 16),
])
def test_pad_multiple_defaults_to_8_under_mixed_precision_only(extra, multiple):
    assert TrainConfig(train_name_or_path="x.jsonl", **extra).effective_pad_multiple == multiple
