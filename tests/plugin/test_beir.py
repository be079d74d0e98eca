"""BEIR folders: reading and its errors, corpus metrics by hand, corpus evaluation, mining, one training run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from plugin import TrainConfig, train
from plugin.beir import is_beir_dir, read_beir
from plugin.data import DataError, load_examples, read_source
from plugin.evaluate import (
    average_precision_at_k,
    corpus_metrics,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    split_metric_key,
)
from tests.conftest import _sentence, write_jsonl


def write_beir(root: Path, n_docs: int = 30, n_queries: int = 12) -> Path:
    """A tiny BEIR folder: doc i has title/text from _sentence; query q is relevant to docs 2q (and 2q+1 for even q)."""
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", [{"_id": f"d{i}", "title": f"title {i}", "text": _sentence(i, 2),
                                         "metadata": {}} for i in range(n_docs)])
    write_jsonl(root / "queries.jsonl", [{"_id": f"q{q}", "text": _sentence(2 * q, 1)} for q in range(n_queries)])
    (root / "qrels").mkdir(exist_ok=True)
    for split, qs in (("train", range(0, n_queries - 4)), ("dev", range(n_queries - 4, n_queries))):
        lines = ["query-id\tcorpus-id\tscore"]
        for q in qs:
            lines += [f"q{q}\td{2 * q}\t1"] + ([f"q{q}\td{2 * q + 1}\t1"] if q % 2 == 0 else [])
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------ metrics by hand
def test_metric_functions_by_hand():
    ranked = ["a", "x", "b", "y", "z"]
    rels = {"a": 1, "b": 1, "c": 1}  # c never retrieved
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG (3 relevant) = 1 + 1/log2(3) + 1/log2(4)
    assert ndcg_at_k(ranked, rels, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3) + 0.5))
    assert ndcg_at_k(ranked, rels, 1) == pytest.approx(1.0)
    assert recall_at_k(ranked, rels, 100) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, rels, 2) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "y", "b"], rels, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "y", "b"], rels, 2) == 0.0
    # AP: precision at ranks 1 and 3 = 1 and 2/3, over 3 relevant docs
    assert average_precision_at_k(ranked, rels, 100) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k(ranked, rels, 2) == pytest.approx(1 / 3)
    # graded relevance: linear gains
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 10) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(["x"], {}, 10) == recall_at_k(["x"], {}, 10) == average_precision_at_k(["x"], {}, 10) == 0.0
    assert split_metric_key("map@100@128") == ("map@100", "128")
    assert split_metric_key("recall@100") == ("recall@100", "")


def test_corpus_metrics_rank_the_whole_corpus():
    d = np.eye(4, dtype=np.float32)  # doc j points along axis j
    q = np.array([[1, 0, 0, 0], [0.1, 0.2, 0.9, 0.3]], dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    # query 0 ranks d0 first (relevant), query 1 ranks d2, d3, d1, d0: its relevant d1 is 3rd
    m = corpus_metrics(q, d, ["q0", "q1"], ["d0", "d1", "d2", "d3"], {"q0": {"d0": 1}, "q1": {"d1": 1}})
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 2)
    assert m["recall@100"] == 1.0 and m["map@100"] == pytest.approx((1 + 1 / 3) / 2)


# ------------------------------------------------------------------------ reading
def test_beir_folder_reads_as_format_b_pairs(tmp_path):
    root = write_beir(tmp_path / "beir")
    assert is_beir_dir(root) and not is_beir_dir(tmp_path)
    ex = load_examples(str(root), split="train")
    # train queries q0..q7, even ones with 2 relevant docs: 8 + 4 pairs
    assert ex.format == "B" and len(ex) == 12 and ex.beir is not None
    assert ex.texts["query"][0] == ex.texts["query"][1] == _sentence(0, 1)
    assert ex.texts["positive"][0] == f"title 0 {_sentence(0, 2)}"  # "title text"
    assert len(ex.beir.docs) == 30  # the whole corpus travels with the split
    dev = load_examples(str(root), split="dev")
    assert dev.beir.query_ids == ["q8", "q9", "q10", "q11"] and dev.beir.qrels["q8"] == {"d16": 1, "d17": 1}
    (label, rows), = read_source(str(root), split="dev")  # generic readers see the pairs too
    assert label.endswith("qrels/dev.tsv") and len(rows) == 6


@pytest.mark.parametrize("break_it, message", [
    (lambda r: (r / "qrels" / "dev.tsv").write_text("qid\tdid\tscore\nq1\td1\t1\n"),
     r"dev.tsv: line 1 must be the header query-id"),
    (lambda r: (r / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq9\tnope\t1\n"),
     r"dev.tsv: line 2, column 'corpus-id': 'nope' is not in .*corpus.jsonl"),
    (lambda r: (r / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq99\td1\t1\n"),
     r"dev.tsv: line 2, column 'query-id': 'q99' is not in .*queries.jsonl"),
    (lambda r: (r / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\thigh\n"),
     r"dev.tsv: line 2, column 'score': expected a number"),
    (lambda r: (r / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq9 d1 1\n"),
     r"dev.tsv: line 2: expected 3 TAB-separated columns"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d0", "text": "x"}\n{"_id": "d1"}\n'),
     r"corpus.jsonl: line 2, field 'text': expected a string"),
    (lambda r: (r / "corpus.jsonl").write_text('{"_id": "d0", "text": "x"}\n{"_id": "d0", "text": "y"}\n'),
     r"corpus.jsonl: line 2, field '_id': duplicate id 'd0' \(first on line 1\)"),
    (lambda r: (r / "queries.jsonl").write_text('{"_id": "q9", "text": "x"}\nnot json\n'),
     r"queries.jsonl: line 2 is not valid JSON"),
])
def test_bad_beir_files_name_file_line_and_field(tmp_path, break_it, message):
    root = write_beir(tmp_path / "beir")
    break_it(root)
    with pytest.raises(DataError, match=message):
        load_examples(str(root), split="dev")


def test_missing_split_lists_the_splits(tmp_path):
    root = write_beir(tmp_path / "beir")
    with pytest.raises(DataError, match=r"no qrels for split 'test'.*splits here: dev, train"):
        read_beir(root, "test")


# --------------------------------------------------------------- corpus evaluation
class CountingEncoder:
    def __init__(self, encoder):
        self.encoder, self.calls = encoder, []

    def encode(self, texts, **kw):
        self.calls.append(len(texts))
        return self.encoder.encode(texts, **kw)


def test_evaluate_ranks_the_corpus_once_per_evaluation(tiny_bert, tmp_path):
    from plugin.model import load

    root = write_beir(tmp_path / "beir")
    dev = load_examples(str(root), split="dev")
    enc = CountingEncoder(load(tiny_bert))
    m = evaluate(enc, dev, {"query": "query: {text}", "positive": None}, batch_size=8, dims=[16])
    assert set(m) == {"ndcg@10", "recall@100", "mrr@10", "map@100",
                      "ndcg@10@16", "recall@100@16", "mrr@10@16", "map@100@16"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert m["recall@100"] == 1.0  # 30 docs: everything is in the top 100
    assert sorted(enc.calls) == [4, 30]  # queries once, the corpus once, every dim from that one pass


# --------------------------------------------------------------------------- mining
def test_mine_cli_reads_a_beir_folder(tiny_bert, tmp_path, capsys):
    from plugin.mine import main

    root = write_beir(tmp_path / "beir")
    out = tmp_path / "mined.jsonl"
    assert main(["--input_file", str(root), "--split", "train", "--output_file", str(out),
                 "--model_name_or_path", tiny_bert, "--range_for_sampling", "2-20", "--negative_number", "5"]) == 0
    assert "mined 8 queries against 30 candidates" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    corpus = set(read_beir(root, "train").docs)
    assert len(rows) == 8 and len(rows[0]["pos"]) == 2  # one row per query, all its relevant docs
    for row in rows:
        assert len(row["neg"]) == 5 and set(row["neg"]) <= corpus and not set(row["neg"]) & set(row["pos"])


# ----------------------------------------------------------------- one training job
def test_one_job_from_beir_data_to_a_model_trained_on_mined_triplets(tiny_bert, tmp_path):
    root = write_beir(tmp_path / "beir")
    cfg = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(root), valid_name_or_path=str(root),
                      valid_split_name="dev", save_dir=str(tmp_path / "out"), mine_hard_negatives=True,
                      mine_range_for_sampling="2-20", mine_negative_number=4, train_group_size=3, epochs=2,
                      batch_size=4, learning_rate=1e-3, warmup_steps=0, logging_steps=1, matryoshka_dims=[32, 16],
                      query_prompt="query: {text}")
    result = train(cfg)
    assert result.global_step == 6 and not result.stopped  # 12 pairs / batch 4, 2 epochs
    metrics = json.loads((Path(result.save_dir) / "metrics.json").read_text())
    for stage in ("before", "after"):
        for key in ("ndcg@10", "recall@100", "mrr@10", "map@100", "ndcg@10@16"):
            assert 0.0 <= metrics[f"{stage}/valid_{key}"] <= 1.0
    assert metrics["best/valid_ndcg@10"] >= metrics["after/valid_ndcg@10"] - 1e-9  # best checkpoint by NDCG@10
    assert metrics["mine_seconds"] > 0
    mined = json.loads((Path(result.save_dir) / "checkpoints" / "mined_negatives.json").read_text())
    corpus = set(read_beir(root, "train").docs)
    assert len(mined["negative"]) == 12 and all(len(n) == 4 and set(n) <= corpus for n in mined["negative"])
    card = (Path(result.save_dir) / "README.md").read_text()
    assert "valid_map@100" in card and "valid_recall@100" in card and "format C" in card
    with pytest.raises(ValueError, match="mine_range_for_sampling must look like"):
        TrainConfig(train_name_or_path=str(root), mine_range_for_sampling="20-2")
