"""Distillation: kd_loss from teacher scores (FlagEmbedding's jsonl) and the embedding teacher."""

from __future__ import annotations

import math

import pytest
import torch

from plugin import TrainConfig, train
from plugin import losses as L
from plugin.data import DataError, PairDataset, load_examples
from plugin.llm import load_backbone
from plugin.model import AnglEModel, load, load_tokenizer
from plugin.objective import kd_term, objective
from plugin.trainer import _teacher_encoder
from tests.conftest import WORDS, _sentence, write_jsonl

E1, E2 = [1.0, 0.0], [0.0, 1.0]
FAST = {"epochs": 1, "batch_size": 8, "evaluate_before_training": False, "eval_strategy": "no",
        "save_strategy": "no", "logging_steps": 1, "warmup_steps": 0, "learning_rate": 1e-3}


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_kd_loss_by_hand():
    q, docs = t([E1]), t([[E1, E2]])  # student scores s = tau [1, 0]
    # equal teacher scores: p = [1/2, 1/2]; KL = sum p (log p - log softmax(s)) = log(1/2) + log(1 + e) - 1/2
    expected = math.log(0.5) + math.log(1 + math.e) - 0.5
    assert L.kd_loss(q, docs, t([[0.0, 0.0]]), tau=1.0).item() == pytest.approx(expected, abs=1e-6)
    # teacher [2, 0] at temperature 2 is softmax([1, 0]): the student's own distribution, KL 0
    assert L.kd_loss(q, docs, t([[2.0, 0.0]]), tau=1.0, temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)
    # batchmean: the mean over queries
    two = L.kd_loss(t([E1, E1]), t([[E1, E2], [E1, E2]]), t([[0.0, 0.0], [2.0, 0.0]]), tau=1.0, temperature=2.0)
    assert two.item() == pytest.approx(expected / 2, abs=1e-6)


def test_kd_loss_gradient_flows_to_query_and_documents():
    q = torch.randn(3, 8, requires_grad=True)
    docs = torch.randn(3, 4, 8, requires_grad=True)
    L.kd_loss(q, docs, torch.randn(3, 4)).backward()
    assert q.grad.abs().sum() > 0 and docs.grad.abs().sum() > 0


def test_objective_adds_kd_over_each_querys_group():
    cfg = TrainConfig(train_name_or_path="x", train_group_size=3, kd_w=0.5, cosine_w=1.0, kd_temperature=2.0)
    emb = torch.randn(4 * 5, 8)  # 5 examples: query, positive, 2 negatives
    scores = torch.randn(5, 3)
    loss, parts = objective(emb, "C", cfg, teacher_scores=scores)
    q, p, n1, n2 = emb.split(5)
    expected = 0.5 * L.kd_loss(q, torch.stack([p, n1, n2], 1), scores, cfg.ibn_tau, 2.0)
    assert parts["kd"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"contrastive", "cosine", "angle", "kd"}
    assert loss.item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-6)
    # every positive and negative of the batch competes in the contrastive term
    contrastive = (L.info_nce(q, p, 20.0) + L.info_nce(q, torch.cat([p, n1, n2]), 20.0)) / 2
    assert parts["contrastive"].item() == pytest.approx(contrastive.item(), rel=1e-6)
    # KD alone: objective defers to kd_term (the trainer adds it outside the modifiers)
    only = cfg.model_copy(update={"ibn_w": 0.0, "cln_w": 0.0, "angle_w": 0.0, "cosine_w": 0.0})
    assert objective(emb, "C", only)[0].item() == 0.0
    assert kd_term(emb, "C", only, scores).item() == pytest.approx(expected.item(), rel=1e-6)


def flag_rows(n: int = 24) -> list[dict]:
    # Scores encode the text they belong to, so the sampled scores can be checked against the sampled texts.
    return [{"query": _sentence(i, 1), "pos": [_sentence(i, 2)], "neg": [f"{WORDS[i % 17]} neg {k}" for k in range(4)],
             "pos_scores": [10.0], "neg_scores": [float(k) for k in range(4)]} for i in range(n)]


def test_flag_embedding_rows_with_scores_sample_aligned_groups(tmp_path):
    data = write_jsonl(tmp_path / "kd.jsonl", flag_rows())
    ex = load_examples(str(data))
    assert ex.format == "C" and ex.scores is not None and ex.scores["negative"][0] == [0.0, 1.0, 2.0, 3.0]
    tok = load_tokenizer(_minilm())
    ds = PairDataset(ex, tok, 32, {}, seed=3, n_negatives=3)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            texts = [ds.texts[j] for j in item["text_idx"]]
            assert len(texts) == 5 and item["teacher_scores"][0] == 10.0
            negs = texts[2:]
            assert len(set(negs)) == 3  # 3 of the 4 negatives, no repeats
            assert item["teacher_scores"][1:] == [float(n.rsplit(" ", 1)[1]) for n in negs]


def _minilm() -> str:
    from tests.conftest import minilm_path

    return minilm_path()


@pytest.mark.parametrize("row, message", [
    ({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0]},
     r"row 1: column 'neg_scores' is missing \(teacher scores need pos_scores and neg_scores in every row\)"),
    ({"query": "q", "pos": ["p"], "neg": ["n", "m"], "pos_scores": [1.0], "neg_scores": [0.5]},
     r"row 1, column 'neg_scores': expected a list of 2 numbers, one per text, got \[0.5\]"),
])
def test_bad_scores_name_row_and_column(tmp_path, row, message):
    with pytest.raises(DataError, match=message):
        load_examples(str(write_jsonl(tmp_path / "s.jsonl", [row])))


def test_kd_without_scores_fails_before_model_load(tmp_path, data_c):
    cfg = TrainConfig(model_name_or_path=str(tmp_path / "no-model"), train_name_or_path=str(data_c), kd_w=1.0)
    with pytest.raises(DataError) as err:
        train(cfg)
    assert str(err.value) == (f"{data_c}: kd_w > 0 needs teacher scores: format C rows with pos_scores and "
                              "neg_scores, one per pos and neg text (FlagEmbedding's jsonl)")


def test_kd_trains_with_group_size_3(tiny_bert, tmp_path):
    data = write_jsonl(tmp_path / "kd.jsonl", flag_rows())
    cfg = TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data), save_dir=str(tmp_path / "o"),
                      train_group_size=3, kd_w=1.0, ibn_w=0.0, cln_w=0.0, angle_w=0.0, max_steps=2, **FAST)
    result = train(cfg)
    assert result.global_step == 2 and result.metrics["train_loss"] > 0  # KD alone trains


def build_other_vocab_bert(path) -> str:
    """A tiny BERT whose tokenizer (a 30-word WordPiece vocab) shares nothing with the student's."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "neg", *"0123456789"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(path)
    return str(path)


def test_teacher_is_the_starting_model_or_embeds_with_its_own_tokenizer(tiny_bert, tmp_path, data_b):
    student = AnglEModel(load_backbone(tiny_bert), "mean")
    tok = load_tokenizer(tiny_bert)
    # The student's own model as teacher: self-distillation sharing its weights, nothing loaded twice.
    for name in (None, tiny_bert):
        cfg = TrainConfig(train_name_or_path="x", model_name_or_path=tiny_bert, teacher_name_or_path=name,
                          teacher_pooling_strategy="cls", distill_w=1.0)
        t_enc = _teacher_encoder(cfg, student, tok)
        assert t_enc.model.backbone is student.backbone and t_enc.model.pooling_strategy == "cls"
    # Another vocabulary: the teacher tokenizes the texts itself (the student's input_ids are never reused).
    other = build_other_vocab_bert(tmp_path / "teacher")
    texts = ["cat dog", "red bus fast"]
    assert load_tokenizer(other)(texts)["input_ids"] != tok(texts)["input_ids"]
    cfg = TrainConfig(train_name_or_path="x", model_name_or_path=tiny_bert, teacher_name_or_path=other,
                      distill_w=1.0, maxlen=32)
    t_enc = _teacher_encoder(cfg, student, tok)
    assert t_enc.model.hidden_size == 16
    assert torch.allclose(torch.as_tensor(t_enc.encode(texts)), torch.as_tensor(load(other).encode(texts)), atol=1e-6)
    result = train(TrainConfig(model_name_or_path=tiny_bert, train_name_or_path=str(data_b), distill_w=1.0,
                               teacher_name_or_path=other, save_dir=str(tmp_path / "o"), max_steps=2, **FAST))
    assert result.global_step == 2 and result.metrics["teacher_encode_seconds"] > 0
