"""Matryoshka, AdaptiveLayer, Matryoshka2d and Espresso: the loss formulas by hand, gradients,
size checks, per-dim/per-layer evaluation, encode(dim=k), and short end-to-end runs on a tiny BERT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from plugin import TrainConfig, load, train
from plugin import losses as L
from plugin.data import load_examples
from plugin.evaluate import evaluate, split_metric_key
from plugin.llm import load_backbone
from plugin.model import AnglEModel, Encoder, load_tokenizer
from plugin.modifiers import (
    adaptive_layer_loss,
    check_model_fit,
    espresso_loss,
    matryoshka_loss,
    preflight,
    sample_layers,
    similarity_kl,
    total_loss,
)
from plugin.objective import objective

FAST = {"epochs": 1, "batch_size": 8, "evaluate_before_training": False, "eval_strategy": "no",
        "save_strategy": "no", "logging_steps": 1, "warmup_steps": 0, "learning_rate": 1e-3}
A_LOSSES = {"cosine_w": 1.0, "ibn_w": 1.0, "angle_w": 0.02}


def cfg(**kw) -> TrainConfig:
    return TrainConfig(train_name_or_path="unused.jsonl", **{**A_LOSSES, **kw})


def batch_a(n: int = 8, h: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2 * n, h, generator=g), torch.arange(n, dtype=torch.float32) % 6


def tiny_model(path: str) -> tuple[AnglEModel, object]:
    torch.manual_seed(0)
    return AnglEModel(load_backbone(path), "mean"), load_tokenizer(path)


def tokens(tok, texts: list[str]) -> dict[str, torch.Tensor]:
    return tok(texts, padding=True, return_tensors="pt")


TEXTS = ["a cat sat", "a dog ran far away", "red car", "blue bus goes fast", "happy bird", "sad fish swims",
         "green plane", "small train"]


# ------------------------------------------------------------------ Matryoshka
def test_prefix_losses_are_scale_free_so_no_renormalization_is_needed():
    emb, y = batch_a()
    c = cfg()
    prefix = emb[:, :8]
    rescaled = 3.0 * F.normalize(prefix, dim=-1)
    assert objective(prefix, "A", c, y)[0].item() == pytest.approx(objective(rescaled, "A", c, y)[0].item(), rel=1e-5)


def test_matryoshka_is_the_weighted_sum_of_the_objective_at_each_prefix_by_hand():
    emb, y = batch_a()
    c = cfg(matryoshka_dims=[32, 16, 8], matryoshka_weights=[1.0, 0.5, 0.25])
    loss, _ = total_loss(emb, "A", c, y, positive_label=4.0)
    u, v = emb[:8], emb[8:]
    by_hand = 0.0
    for d, w in ((32, 1.0), (16, 0.5), (8, 0.25)):  # the AnglE losses written out, not via objective()
        ud, vd = u[:, :d], v[:, :d]
        by_hand += w * (L.cosine_loss(ud, vd, y, 20.0) + L.ibn_pair_loss(ud, vd, y >= 4.0, 20.0)
                        + 0.02 * L.angle_loss(ud, vd, y, 20.0))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    unweighted = matryoshka_loss(emb, lambda e: objective(e, "A", c, y, 4.0)[0], [32, 16, 8])
    assert unweighted.item() == pytest.approx(sum(objective(emb[:, :d], "A", c, y, 4.0)[0].item()
                                                  for d in (32, 16, 8)), rel=1e-6)


def test_without_modifiers_total_loss_is_the_objective():
    emb, y = batch_a()
    assert total_loss(emb, "A", cfg(), y)[0].item() == objective(emb, "A", cfg(), y)[0].item()


def test_matryoshka_gradients_reach_every_prefix_and_the_backbone(tiny_bert):
    emb, y = batch_a()
    emb.requires_grad_(True)
    total_loss(emb, "A", cfg(matryoshka_dims=[16, 8]), y)[0].backward()
    assert emb.grad[:, :8].abs().sum() > 0 and emb.grad[:, 8:16].abs().sum() > 0
    assert emb.grad[:, 16:].abs().sum() == 0  # dims past the widest prefix are not trained

    model, tok = tiny_model(tiny_bert)
    out = model(**tokens(tok, TEXTS))
    loss, _ = total_loss(out, "A", cfg(matryoshka_dims=[32, 8]), torch.arange(4.0))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in model.named_parameters() if "encoder.layer.0.attention.self.query" in n)


# ------------------------------------------------------------------ size checks
def test_dims_above_the_hidden_size_fail_naming_matryoshka_dims():
    with pytest.raises(ValueError, match=r"matryoshka_dims \[64, 16\] has \[64\] above the model's hidden size 32"):
        check_model_fit(cfg(matryoshka_dims=[64, 16]), hidden_size=32, num_layers=2)
    with pytest.raises(ValueError, match=r"matryoshka_dims \[15\] are odd"):
        check_model_fit(cfg(matryoshka_dims=[32, 15]), hidden_size=32, num_layers=2)
    check_model_fit(cfg(matryoshka_dims=[32, 15], angle_w=0.0), hidden_size=32, num_layers=2)  # odd is fine without angle


def test_ese_compression_above_the_hidden_size_fails():
    with pytest.raises(ValueError, match=r"ese_compression_size \(48\) is above the model's hidden size 32"):
        check_model_fit(cfg(apply_ese=True, ese_compression_size=48), hidden_size=32, num_layers=2)
    with pytest.raises(ValueError, match="do not combine it with adaptive_layers or matryoshka_dims"):
        check_model_fit(cfg(apply_ese=True, ese_compression_size=16, adaptive_layers=True), 32, 2)


def test_preflight_reads_only_config_json(tiny_bert, tmp_path):
    assert preflight(cfg(model_name_or_path=tiny_bert, matryoshka_dims=[64, 16]))[0][0] == "matryoshka_dims"
    assert preflight(cfg(model_name_or_path=tiny_bert, matryoshka_dims=[32, 16])) == []
    assert preflight(cfg(model_name_or_path=tiny_bert, apply_ese=True, ese_compression_size=48))[0][0] == \
        "ese_compression_size"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    assert preflight(cfg(model_name_or_path=str(tmp_path), matryoshka_dims=[32]))[0][0] == "matryoshka_dims"
    # Unreadable offline: no verdict, the trainer checks once the model is loaded.
    assert preflight(cfg(model_name_or_path="nobody/not-a-model", matryoshka_dims=[99999])) == []
    assert preflight(cfg(model_name_or_path=tiny_bert)) == []


def test_train_rejects_dims_above_the_hidden_size_before_training(tiny_bert, data_a, tmp_path):
    c = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data_a), save_dir=str(tmp_path / "o"),
                    matryoshka_dims=[64, 32], **FAST)
    with pytest.raises(ValueError, match=r"matryoshka_dims \[64, 32\] has \[64\] above the model's hidden size 32"):
        train(c)
    assert not (tmp_path / "o" / "checkpoints").exists()


# ------------------------------------------------------------------ layers
def test_forward_all_layers_returns_each_layer_pooled(tiny_bert):
    model, tok = tiny_model(tiny_bert)
    model.eval()
    batch = tokens(tok, TEXTS[:3])
    with torch.no_grad():
        stack = model(**batch, all_layers=True)
        last = model(**batch)
        hidden = model.backbone(**batch, output_hidden_states=True).hidden_states
    assert stack.shape == (2, 3, 32)
    torch.testing.assert_close(stack[-1], last)
    m = batch["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(stack[0], (hidden[1] * m).sum(1) / m.sum(1))  # layer 1, mean-pooled


def test_sample_layers():
    assert sample_layers(6, 10) == [1, 2, 3, 4, 5]
    got = sample_layers(12, 3, torch.Generator().manual_seed(0))
    assert len(got) == 3 == len(set(got)) and all(1 <= x <= 11 for x in got)


def test_adaptive_layer_loss_formula_by_hand():
    g = torch.Generator().manual_seed(1)
    layers = torch.randn(4, 16, 32, generator=g)
    y = torch.arange(8.0) % 6
    c = cfg()

    def f(e):
        return objective(e, "A", c, y)[0]

    got = adaptive_layer_loss(layers, f, [1, 3], last_weight=2.0, prior_weight=0.5, kl_weight=0.7, kl_temperature=0.3)
    expected = 2.0 * f(layers[3])
    for layer in (1, 3):
        h = layers[layer - 1]
        expected += 0.5 * f(h) / (layer * 2)
        p_t = F.softmax((F.normalize(layers[3], dim=-1) @ F.normalize(layers[3], dim=-1).T / 0.3)
                        .masked_fill(torch.eye(16, dtype=torch.bool), -1e12), -1)
        log_p_s = F.log_softmax((F.normalize(h, dim=-1) @ F.normalize(h, dim=-1).T / 0.3)
                                .masked_fill(torch.eye(16, dtype=torch.bool), -1e12), -1)
        expected += 0.7 * 0.3 * (p_t * (p_t.clamp_min(1e-30).log() - log_p_s)).sum() / 16
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_adaptive_layers_train_the_shallow_layer(tiny_bert):
    model, tok = tiny_model(tiny_bert)
    out = model(**tokens(tok, TEXTS), all_layers=True)
    # Only the shallow layer's terms: the last layer must get no gradient (the KL teacher is detached).
    c = cfg(adaptive_layers=True, adaptive_last_layer_weight=0.0)
    loss, _ = total_loss(out, "A", c, torch.arange(4.0))
    loss.backward()
    grad = {n: p.grad for n, p in model.named_parameters()}
    assert grad["backbone.encoder.layer.0.output.dense.weight"].abs().sum() > 0
    last = grad["backbone.encoder.layer.1.output.dense.weight"]
    assert last is None or last.abs().sum() == 0


def test_matryoshka2d_is_adaptive_around_matryoshka():
    layers = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(2))
    y = torch.arange(8.0)
    c = cfg(adaptive_layers=True, adaptive_n_layers_per_step=5, matryoshka_dims=[32, 8], adaptive_kl_div_weight=0.0)
    got, _ = total_loss(layers, "A", c, y)

    def mat(e):
        return objective(e, "A", c, y)[0] + objective(e[:, :8], "A", c, y)[0]

    expected = mat(layers[2]) + mat(layers[0]) / (1 * 2) + mat(layers[1]) / (2 * 2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


# ------------------------------------------------------------------ Espresso
def test_espresso_formula_by_hand_and_gradients():
    layers = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(3), requires_grad=True)
    y = torch.arange(8.0)
    c = cfg(apply_ese=True, ese_compression_size=8, ese_kl_temperature=1.0)
    got, _ = total_loss(layers, "A", c, y)

    def f(e):
        return objective(e, "A", c, y)[0]

    h = layers[2]
    expected = f(h) + f(h[:, :8]) + similarity_kl(h[:, :8], h, 1.0)
    expected += sum((f(layers[i - 1][:, :8]) + similarity_kl(layers[i - 1][:, :8], h, 1.0)) / (1 + math.log(i))
                    for i in (1, 2)) / 2
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    got.backward()
    assert layers.grad[0, :, :8].abs().sum() > 0 and layers.grad[0, :, 8:].abs().sum() == 0  # shallow: the slice only
    assert layers.grad[2].abs().sum() > 0


def test_espresso_runs_on_the_tiny_bert(tiny_bert):
    model, tok = tiny_model(tiny_bert)
    out = model(**tokens(tok, TEXTS), all_layers=True)
    loss, _ = total_loss(out, "A", cfg(apply_ese=True, ese_compression_size=16), torch.arange(4.0))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.backbone.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0


def test_espresso_loss_with_a_single_layer_is_the_last_layer_terms():
    layers = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(4))
    y = torch.arange(8.0)
    c = cfg()

    def f(e):
        return objective(e, "A", c, y)[0]

    got = espresso_loss(layers, f, 8)
    assert got.item() == pytest.approx((f(layers[0]) + f(layers[0][:, :8])
                                        + similarity_kl(layers[0][:, :8], layers[0], 1.0)).item(), rel=1e-6)


# ------------------------------------------------------------------ encode(dim) and evaluation
def test_encode_dim_is_the_normalized_prefix(tiny_bert):
    model, tok = tiny_model(tiny_bert)
    enc = Encoder(model, tok, maxlen=32)
    raw = enc.encode(TEXTS, normalize=False)
    short = enc.encode(TEXTS, dim=8)
    assert short.shape == (8, 8)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(short, raw[:, :8] / np.linalg.norm(raw[:, :8], axis=1, keepdims=True), atol=1e-6)
    assert enc.encode("one text", dim=8).shape == (8,)
    stack = enc.encode(TEXTS, all_layers=True, dim=16)
    assert stack.shape == (2, 8, 16)
    np.testing.assert_allclose(stack[-1], enc.encode(TEXTS, dim=16), atol=1e-6)
    with pytest.raises(ValueError, match="dim must be between 1 and the hidden size 32"):
        enc.encode(TEXTS, dim=33)


def test_evaluate_reports_every_dim_and_layer(tiny_bert, data_a, data_b):
    model, tok = tiny_model(tiny_bert)
    enc = Encoder(model, tok, maxlen=32)
    ex = load_examples(str(data_a))
    m = evaluate(enc, ex, {}, dims=[32, 16, 8], layers=[1])
    assert set(m) == {"spearman", "spearman@32", "spearman@16", "spearman@8", "spearman@L1"}
    assert m["spearman@32"] == pytest.approx(m["spearman"])
    assert m == pytest.approx({**evaluate(enc, ex, {}), **{k: v for k, v in m.items() if "@" in k}})
    from plugin.evaluate import spearman

    e = enc.encode([t for t in ex.texts["text1"]] + list(ex.texts["text2"]), dim=8)
    assert m["spearman@8"] == pytest.approx(spearman((e[:48] * e[48:]).sum(1), np.asarray(ex.labels)), abs=1e-6)
    mb = evaluate(enc, load_examples(str(data_b)), {}, dims=[16], layers=[1])
    assert {"ndcg@10", "mrr@10@16", "ndcg@10@16", "recall@10@L1"} <= set(mb)
    assert split_metric_key("ndcg@10@16") == ("ndcg@10", "16") and split_metric_key("spearman@L1") == ("spearman", "L1")


# ------------------------------------------------------------------ end to end
def test_train_matryoshka_writes_per_dim_metrics_and_card(tiny_bert, data_a, tmp_path):
    c = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data_a), test_name_or_path=str(data_a),
                    save_dir=str(tmp_path / "m"), matryoshka_dims=[32, 16, 8], **{**FAST, **A_LOSSES,
                                                                                     "evaluate_before_training": True})
    result = train(c)
    assert result.global_step == 6
    metrics = json.loads((Path(result.save_dir) / "metrics.json").read_text())
    for stage in ("before", "after"):
        for d in (32, 16, 8):
            assert -1.0 <= metrics[f"{stage}/test_spearman@{d}"] <= 1.0
    card = (Path(result.save_dir) / "README.md").read_text()
    assert "## Metrics by embedding size and layer (x100)" in card
    assert "| metric | full | 32 dims | 16 dims | 8 dims |" in card
    assert f"| test_spearman after | {100 * metrics['after/test_spearman']:.2f} |" in card
    assert "Matryoshka: losses at dims [32, 16, 8]" in card
    assert "test_spearman@16" not in card  # per-dim keys live in their own table
    st_cfg = json.loads((Path(result.save_dir) / "config_sentence_transformers.json").read_text())
    assert st_cfg["matryoshka_dims"] == [32, 16, 8] and st_cfg["truncate_dim"] is None

    # The saved model at 8 dims: ours (load path) and sentence-transformers' truncate_dim agree.
    from sentence_transformers import SentenceTransformer

    ours = load(result.save_dir, truncate_dim=8).encode(TEXTS)
    st = SentenceTransformer(result.save_dir, device="cpu", truncate_dim=8).encode(TEXTS)
    st = st / np.linalg.norm(st, axis=1, keepdims=True)  # ST truncates after its Normalize module
    assert ours.shape == (8, 8) and np.abs(ours - st).max() < 1e-5


@pytest.mark.parametrize("fixture, extra, keys", [
    ("data_c", {"adaptive_layers": True, "matryoshka_dims": [32, 16]}, ["ndcg@10@16", "ndcg@10@L1"]),
    ("data_b", {"apply_ese": True, "ese_compression_size": 16}, ["ndcg@10@16", "ndcg@10@L1"]),
])
def test_train_adaptive_and_espresso_end_to_end(request, tiny_bert, tmp_path, fixture, extra, keys):
    data = request.getfixturevalue(fixture)
    c = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data), test_name_or_path=str(data),
                    save_dir=str(tmp_path / "m"), **{**FAST, **extra})
    result = train(c)
    assert result.global_step == 6 and np.isfinite(result.metrics["train_loss"])
    for k in keys:
        assert 0.0 <= result.metrics[f"after/test_{k}"] <= 1.0
    card = (Path(result.save_dir) / "README.md").read_text()
    assert "layer 1" in card
