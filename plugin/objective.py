"""The AnglE objective of one batch: the weighted losses of plugin/losses.py, per data format.

    .venv/bin/python -m pytest -q tests/plugin/test_losses.py tests/plugin/test_modifiers.py

Pure math on embeddings: plugin/modifiers.py wraps it (Matryoshka, AdaptiveLayer, Espresso) and
plugin/trainer.py calls it through them.
"""

from __future__ import annotations

import torch

from . import losses as L
from .config import TrainConfig


def n_columns(fmt: str, config: TrainConfig) -> int:
    """Texts per example in a collated batch: 2 for A and B; C: query, positive and train_group_size - 1 negatives."""
    return {"A": 2, "B": 2}.get(fmt, 1 + config.train_group_size)


def kd_term(emb: torch.Tensor, fmt: str, config: TrainConfig, teacher_scores: torch.Tensor | None) -> torch.Tensor | None:
    """kd_w KL(softmax(teacher scores / kd_temperature) || softmax(ibn_tau cos(q, [p, n_1..]))), format C."""
    if not (config.kd_w and teacher_scores is not None and fmt == "C"):
        return None
    q, *docs = emb.split(emb.size(0) // n_columns(fmt, config))
    return config.kd_w * L.kd_loss(q, torch.stack(docs, dim=1), teacher_scores, config.ibn_tau, config.kd_temperature)


def objective(
    emb: torch.Tensor,
    fmt: str,
    config: TrainConfig,
    labels: torch.Tensor | None = None,
    positive_label: float = 1.0,
    teacher: torch.Tensor | None = None,
    teacher_scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted AnglE loss of one batch; emb holds the columns stacked (column-major).

    A: cosine_w CoSENT + ibn_w in-batch negatives (pairs with label >=
       positive_label) + angle_w angle.
    B: ibn_w InfoNCE(query -> positive among the batch's positives).
    C: query, positive, then G - 1 negative columns (G = train_group_size):
       (ibn_w InfoNCE(q, P) + cln_w InfoNCE(q, [P; N_1; ..; N_{G-1}])) / 2, every
       positive and negative of the batch competing, plus CoSENT and angle on
       (q, p) -> 1, (q, n_k) -> 0; + kd_w kd_loss with teacher_scores (B, G).
    Any format: + distill_w KL to the teacher's in-batch similarities.
    """
    n_cols = n_columns(fmt, config)
    cols = emb.split(emb.size(0) // n_cols)
    parts: dict[str, torch.Tensor] = {}
    c = config
    if fmt == "A":
        u, v = cols
        assert labels is not None
        if c.cosine_w:
            parts["cosine"] = c.cosine_w * L.cosine_loss(u, v, labels, c.cosine_tau)
        if c.ibn_w:
            parts["ibn"] = c.ibn_w * L.ibn_pair_loss(u, v, labels >= positive_label, c.ibn_tau)
        if c.angle_w:
            parts["angle"] = c.angle_w * L.angle_loss(u, v, labels, c.angle_tau)
    elif fmt == "B":
        q, p = cols
        if c.ibn_w:
            parts["ibn"] = c.ibn_w * L.info_nce(q, p, c.ibn_tau)
    else:
        q, p, *negs = cols
        n = torch.cat(negs)
        if c.ibn_w or c.cln_w:
            parts["contrastive"] = (c.ibn_w * L.info_nce(q, p, c.ibn_tau)
                                    + c.cln_w * L.info_nce(q, torch.cat([p, n]), c.ibn_tau)) / 2
        u, v = torch.cat([q] * (1 + len(negs))), torch.cat([p, n])
        y = torch.cat([torch.ones(q.size(0)), torch.zeros(n.size(0))]).to(emb.device)
        if c.cosine_w:
            parts["cosine"] = c.cosine_w * L.cosine_loss(u, v, y, c.cosine_tau)
        if c.angle_w:
            parts["angle"] = c.angle_w * L.angle_loss(u, v, y, c.angle_tau)
    if c.distill_w and teacher is not None:
        parts["distill"] = c.distill_w * L.distill_loss(emb, teacher, c.distill_tau)
    kd = kd_term(emb, fmt, c, teacher_scores)
    if kd is not None:
        parts["kd"] = kd
    if not parts and c.kd_w and fmt == "C":
        # KD alone, its scores not passed here: the caller adds kd_term (AnglETrainer does, outside the modifiers).
        return emb.sum() * 0.0, parts
    if not parts:
        raise ValueError(f"no loss applies to format {fmt} with these weights (format B uses ibn_w and distill_w)")
    return sum(parts.values()), parts  # type: ignore[return-value]
