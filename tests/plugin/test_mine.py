"""Hard-negative mining (python -m plugin.mine): FlagEmbedding semantics, valid jsonl the trainer reads."""

from __future__ import annotations

import json
import random

import pytest

from plugin import TrainConfig, train
from plugin.mine import main, parse_range, sample_negatives
from tests.conftest import _sentence, write_jsonl


def test_sample_negatives_skips_top_ranks_positives_and_query():
    corpus = [f"d{i}" for i in range(10)]
    ranked = [3, 1, 4, 0, 5, 9, 2, 6]  # best first
    rng = random.Random(0)
    # ranks 2..6 are d4 d0 d5 d9 d2; d0 is a positive, d5 is the query itself
    got = sample_negatives(ranked, corpus, "d5", ["d0"], 2, 7, 10, rng)
    assert got == ["d4", "d9", "d2"]  # fewer candidates than asked: all of them, in rank order
    two = sample_negatives(ranked, corpus, "d5", ["d0"], 2, 7, 2, rng)
    assert len(two) == 2 and set(two) <= {"d4", "d9", "d2"}
    assert parse_range("10-210") == (10, 210)
    with pytest.raises(Exception, match="range must satisfy 0 <= start < end"):
        parse_range("5-5")


def read_out(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_mine_writes_flag_embedding_jsonl_that_trains(tiny_bert, tmp_path, capsys):
    rows = [{"query": _sentence(i, 1), "positive": _sentence(i, 2)} for i in range(24)]
    src = write_jsonl(tmp_path / "b.jsonl", rows)
    out = tmp_path / "mined.jsonl"
    args = ["--input_file", str(src), "--output_file", str(out), "--model_name_or_path", tiny_bert,
            "--range_for_sampling", "2-12", "--negative_number", "4", "--batch_size", "16"]
    assert main(args) == 0
    assert "mined 24 queries against" in capsys.readouterr().out
    mined = read_out(out)
    corpus = {r["positive"] for r in rows}
    assert len(mined) == 24
    for row, src_row in zip(mined, rows, strict=True):
        assert set(row) == {"query", "pos", "neg"} and row["pos"] == [src_row["positive"]]
        assert len(row["neg"]) == 4 and len(set(row["neg"])) == 4
        assert set(row["neg"]) <= corpus and src_row["positive"] not in row["neg"]
    assert main(args) == 0 and read_out(out) == mined  # seeded: the same negatives again

    # The trainer reads it directly: 1 positive + 2 sampled negatives per query (train_group_size 3).
    cfg = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(out), save_dir=str(tmp_path / "o"),
                      train_group_size=3, epochs=1, batch_size=8, max_steps=3, evaluate_before_training=False,
                      eval_strategy="no", save_strategy="no", warmup_steps=0, learning_rate=1e-3, cosine_w=0.5)
    result = train(cfg)
    assert result.global_step == 3 and result.metrics["train_loss"] > 0


def test_candidate_pool_and_existing_negatives(tiny_bert, tmp_path):
    rows = [{"query": _sentence(i, 1), "pos": [_sentence(i, 2)], "neg": ["old"], "neg_scores": [0.1]}
            for i in range(6)]
    pool = [{"text": f"pool text {w}"} for w in "abcdefghij"] + [{"text": rows[0]["pos"][0]}]
    src, pool_file = write_jsonl(tmp_path / "f.jsonl", rows), write_jsonl(tmp_path / "pool.jsonl", pool)
    out = tmp_path / "m.jsonl"
    assert main(["--input_file", str(src), "--output_file", str(out), "--model_name_or_path", tiny_bert,
                 "--candidate_pool", str(pool_file), "--range_for_sampling", "0-8", "--negative_number", "3"]) == 0
    mined = read_out(out)
    assert all(len(r["neg"]) == 3 and "neg_scores" not in r for r in mined)  # stale scores dropped
    assert all(set(r["neg"]) <= {p["text"] for p in pool} - set(r["pos"]) for r in mined)
    # a range beyond the pool: random non-positive negatives, so every row still has some
    assert main(["--input_file", str(src), "--output_file", str(out), "--model_name_or_path", tiny_bert,
                 "--candidate_pool", str(pool_file), "--range_for_sampling", "50-60", "--negative_number", "2"]) == 0
    assert all(len(r["neg"]) == 2 and not set(r["neg"]) & set(r["pos"]) for r in read_out(out))


def test_cli_help_and_bad_input(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    help_ = subprocess.run([sys.executable, "-m", "plugin.mine", "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert help_.returncode == 0 and "--range_for_sampling" in help_.stdout
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q"}])
    assert main(["--input_file", str(bad), "--output_file", str(tmp_path / "o.jsonl")]) == 1


def test_group_sampling_and_single_negative_unchanged(data_c, tmp_path):
    from transformers import AutoTokenizer

    from plugin.data import PairDataset, load_examples, sample_group
    from tests.conftest import minilm_path

    rng = random.Random(0)
    assert len(set(sample_group(rng, 5, 3))) == 3 and sorted(sample_group(rng, 4, 4)) == [0, 1, 2, 3]
    assert sorted(sample_group(rng, 2, 3)) in ([0, 0, 1], [0, 1, 1])  # fewer than asked: repeated, FlagEmbedding's way
    # train_group_size 2 (one negative): the same texts as the one-negative sampling always picked
    tok = AutoTokenizer.from_pretrained(minilm_path())
    ex = load_examples(str(data_c))
    ds = PairDataset(ex, tok, 32, {}, seed=7)
    ds.set_epoch(2)
    for i in range(len(ds)):
        old_rng, expected = random.Random(hash((7, 2, i))), []
        for col in ds.columns:
            opts = ds.cands[col][i]
            expected.append(old_rng.choice(opts) if len(opts) > 1 else opts[0])
        assert ds[i]["text_idx"] == expected
