"""Data loading: formats, renames, prompts, sampling, and errors that name file, row and column."""

import json

import pytest
import torch

from plugin.data import (
    Collator,
    DataError,
    PairDataset,
    column_prompts,
    load_examples,
    padded_width,
    positive_threshold,
)
from tests.conftest import minilm_path, write_jsonl


def test_detects_formats(data_a, data_b, data_c):
    assert load_examples(str(data_a)).format == "A"
    assert load_examples(str(data_b)).format == "B"
    ex = load_examples(str(data_c))
    assert ex.format == "C" and isinstance(ex.texts["positive"][0], list)


def test_rename_mapping_then_detection(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 3}])
    ex = load_examples(str(f), rename={"sentence1": "text1", "sentence2": "text2", "score": "label"})
    assert ex.format == "A" and ex.labels == [3.0]


@pytest.mark.parametrize("suffix, body", [
    (".csv", 'text1,text2,label\n"a, quoted",b,1.5\n'),
    (".tsv", "text1\ttext2\tlabel\ta \"q\"\tb\t1.5\n".replace("label\t", "label\n")),
    (".json", json.dumps([{"text1": "a, quoted", "text2": "b", "label": 1.5}])),
])
def test_delimited_and_json_files(tmp_path, suffix, body):
    f = tmp_path / f"d{suffix}"
    f.write_text(body)
    ex = load_examples(str(f))
    assert ex.format == "A" and ex.labels == [1.5] and ex.texts["text2"] == ["b"]


def test_parquet_and_folder_of_splits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"query": ["q1", "q2"], "positive": ["p1", "p2"]}), tmp_path / "train.parquet")
    write_jsonl(tmp_path / "dev.jsonl", [{"query": "q", "positive": "p"}])
    assert len(load_examples(str(tmp_path), split="train")) == 2
    assert len(load_examples(str(tmp_path), split="dev")) == 1


@pytest.mark.parametrize("rows, fmt, message", [
    ([{"text1": "a", "text2": "b"}], "A", r"row 1: column 'label' is missing \(format A needs text1, text2, label\)"),
    ([{"text1": "a", "text2": "b", "label": 1}, {"text1": "a", "text2": "b", "label": "high"}], "auto",
     r"row 2, column 'label': label must be a number, got 'high'"),
    ([{"query": "q", "positive": ""}], "auto", r"row 1, column 'positive': empty text"),
    ([{"query": "q", "positive": []}], "auto", r"row 1, column 'positive': expected a non-empty string or list"),
    ([{"foo": "q"}], "auto", r"cannot detect the data format from columns \['foo'\]"),
    ([{"text1": "a", "text2": "b", "label": float("nan")}], "A", r"label must be finite"),
])
def test_row_errors_name_file_row_and_column(tmp_path, rows, fmt, message):
    f = tmp_path / "bad.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=message) as exc:
        load_examples(str(f), data_format=fmt)
    assert str(f) in str(exc.value)


def test_empty_unreadable_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl: no rows \(empty file\)"):
        load_examples(str(empty))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text1": "a"}\n{not json\n')
    with pytest.raises(DataError, match=r"broken.jsonl: row 2 is not valid JSON"):
        load_examples(str(broken))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match=r"bin.csv: cannot read file"):
        load_examples(str(binary))
    with pytest.raises(DataError, match=r"nope.jsonl: file not found"):
        load_examples(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match=r"unsupported file type '.txt'"):
        (tmp_path / "x.txt").write_text("a")
        load_examples(str(tmp_path / "x.txt"))


def test_positive_threshold_semantics():
    assert positive_threshold([0.0, 1.0, 1.0], None) == 1.0          # binary: exact positives
    assert positive_threshold([0.0, 2.5, 5.0], None) == pytest.approx(4.0)  # STS 0-5: near-paraphrases only
    assert positive_threshold([0.0, 0.5, 1.0], None) == pytest.approx(0.8)
    assert positive_threshold([0.0, 5.0], 3.0) == 3.0


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def test_prompts_and_list_sampling_per_epoch(data_c, tokenizer):
    ex = load_examples(str(data_c))
    prompts = column_prompts("C", None, "query: {text}", "doc: {text}")
    ds = PairDataset(ex, tokenizer, 32, prompts, seed=1)
    assert ds.texts[ds[0]["text_idx"][0]].startswith("query: ")
    assert ds.texts[ds[0]["text_idx"][1]].startswith("doc: ")
    picks = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        picks.add(ds[0]["text_idx"][1])
    assert len(picks) == 2  # both positives of row 0 get drawn across epochs
    ds.set_epoch(3)
    assert ds[0] == ds[0]  # deterministic within an epoch


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_stacks_columns_and_pads(data_a, tokenizer, side):
    ex = load_examples(str(data_a))
    ds = PairDataset(ex, tokenizer, 32, column_prompts("A", None, None, None), seed=0)
    batch = Collator(ds, tokenizer.pad_token_id, side)([ds[0], ds[1], ds[2]])
    assert batch["input_ids"].shape[0] == 6 and batch["labels"].tolist() == [0.0, 1.0, 2.0]
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths == [len(ds.token_ids[i]) for i in batch["text_idx"].tolist()]
    edge = batch["attention_mask"][:, -1 if side == "left" else 0]
    assert edge.all()  # real tokens sit on the side opposite the padding


@pytest.mark.parametrize(("longest", "multiple", "maxlen", "width"), [
    (13, None, 64, 13), (13, 8, 64, 16), (16, 8, 64, 16), (61, 8, 64, 64), (61, 8, 62, 62), (70, 8, 64, 70),
])
def test_padded_width(longest, multiple, maxlen, width):
    # (70, 8, 64): a text longer than maxlen (never produced: texts are truncated) is not cut by padding.
    assert padded_width(longest, multiple, maxlen) == width


def test_collator_pads_to_a_multiple_without_changing_the_tokens(data_a, tokenizer):
    ex = load_examples(str(data_a))
    ds = PairDataset(ex, tokenizer, 32, column_prompts("A", None, None, None), seed=0)
    items = [ds[0], ds[1], ds[2]]
    plain = Collator(ds, tokenizer.pad_token_id)(items)
    rounded = Collator(ds, tokenizer.pad_token_id, multiple_of=8, maxlen=32)(items)
    width = plain["input_ids"].shape[1]
    assert rounded["input_ids"].shape[1] == -(-width // 8) * 8
    assert torch.equal(rounded["input_ids"][:, :width], plain["input_ids"])
    assert torch.equal(rounded["attention_mask"].sum(1), plain["attention_mask"].sum(1))
