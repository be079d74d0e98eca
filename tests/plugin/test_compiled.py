"""Encoder.encode through torch.compile with frozen weights (plugin/compiled.py): same embeddings, fresh weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugin import load
from plugin.compiled import AUTO_MIN_TOKENS, wants_compile

TEXTS = [f"sentence number {i} " + "word " * (i % 13) for i in range(40)] + ["short"]


def test_wants_compile_auto_only_on_long_cpu_inputs_and_validates_the_mode():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert wants_compile("auto", cpu, AUTO_MIN_TOKENS, 22_000_000)
    assert not wants_compile("auto", cpu, AUTO_MIN_TOKENS - 1, 22_000_000)
    assert not wants_compile("auto", cuda, AUTO_MIN_TOKENS, 22_000_000)
    assert not wants_compile("auto", cpu, AUTO_MIN_TOKENS, 22_000_000, precision="bf16")  # measured 1.06x
    assert not wants_compile("auto", cpu, AUTO_MIN_TOKENS, 7_000_000_000)  # frozen constants copy the weights
    assert wants_compile("on", cuda, 1, 1) and not wants_compile("off", cpu, 10**9, 1)
    with pytest.raises(ValueError, match="compile must be one of auto, on, off, got 'yes'"):
        wants_compile("yes", cpu, 1, 1)


def test_encoder_rejects_an_unknown_compile_mode(tiny_bert):
    with pytest.raises(ValueError, match="compile must be one of"):
        load(tiny_bert, compile="always")


def test_compiled_encode_gives_the_eager_embeddings_and_follows_weight_updates(tiny_bert):
    eager, compiled = load(tiny_bert, compile="off"), load(tiny_bert, compile="on")
    np.testing.assert_allclose(compiled.encode(TEXTS), eager.encode(TEXTS), atol=1e-5)
    assert compiled._compiled.compiles == 1
    compiled.encode(TEXTS[:5])  # same weights: the compiled graph is reused
    assert compiled._compiled.compiles == 1

    # An optimizer step changes the weights in place: frozen constants must not serve stale embeddings.
    # Fused AdamW (HF's default) does not bump the tensors' version counters, so those cannot tell.
    for enc in (eager, compiled):
        params = list(enc.model.parameters())
        for p in params:
            p.grad = torch.ones_like(p)
        torch.optim.AdamW(params, lr=0.05, fused=True).step()
    np.testing.assert_allclose(compiled.encode(TEXTS), eager.encode(TEXTS), atol=1e-5)
    assert compiled._compiled.compiles == 2


def test_compile_failure_falls_back_to_eager_with_one_warning(tiny_bert, caplog, monkeypatch):
    enc, eager = load(tiny_bert, compile="on"), load(tiny_bert, compile="off")

    def broken(*args, **kwargs):
        raise RuntimeError("dynamo cannot trace this backbone")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: broken)
    with caplog.at_level("WARNING", logger="angle_lab"):
        np.testing.assert_allclose(enc.encode(TEXTS), eager.encode(TEXTS), atol=1e-6)
        enc.encode(TEXTS)
    assert enc._compiled.failed
    assert sum("torch.compile of the encoder failed" in r.message for r in caplog.records) == 1


def test_a_training_job_scores_the_same_with_compiled_evaluation(tiny_bert, tmp_path):
    """Before and after scores of a BEIR valid set: the weights change between the two evaluations,
    so each one must compile afresh rather than serve the starting weights' frozen graph."""
    from plugin import TrainConfig, train
    from tests.plugin.test_beir import write_beir

    root = write_beir(tmp_path / "beir")
    runs = {}
    for mode in ("off", "on"):
        cfg = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(root), valid_name_or_path=str(root),
                          valid_split_name="dev", save_dir=str(tmp_path / mode), epochs=1, batch_size=4,
                          learning_rate=1e-3, warmup_steps=0, encode_compile=mode)
        result = train(cfg)
        runs[mode] = {k: v for k, v in result.metrics.items() if "valid_" in k}
    assert {"before/valid_ndcg@10", "after/valid_ndcg@10", "best/valid_ndcg@10"} <= set(runs["on"])
    assert runs["on"]["before/valid_mrr@10"] != runs["on"]["after/valid_mrr@10"]  # training moved the scores
    assert runs["on"] == pytest.approx(runs["off"], abs=1e-6)
