"""AnglE losses as small pure functions on embeddings.

Notation: u, v are (B, H) embeddings of the two sides of B pairs, y (B,) their
labels, c_i = cos(u_i, v_i), tau a scale (angle-emb calls it a temperature and
multiplies by it). All losses compute in float32, whatever the autocast dtype.

References: Li & Li, "AnglE-optimized Text Embeddings", arXiv 2309.12871;
Su, "CoSENT" (2022); van den Oord et al., InfoNCE (2018).

    .venv/bin/python -m pytest tests/plugin/test_losses.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_NEG_INF = -1e12


def _ranked_logsumexp(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(1 + sum over pairs with y_i < y_j of exp(s_i - s_j)).

    The shared core of CoSENT and the angle loss: it pushes every pair ranked
    lower by its label below every pair ranked higher.
    """
    diff = scores[:, None] - scores[None, :]
    lower = y[:, None] < y[None, :]
    diff = diff.masked_fill(~lower, _NEG_INF).flatten()
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)


def cosine_loss(u: torch.Tensor, v: torch.Tensor, y: torch.Tensor, tau: float = 20.0) -> torch.Tensor:
    """CoSENT: L = log(1 + sum_{y_i < y_j} exp(tau (c_i - c_j))), c_i = cos(u_i, v_i).

    Only the order of the labels matters, so 0-5 and 0-1 scores give the same loss.
    """
    c = F.cosine_similarity(u.float(), v.float(), dim=-1)
    return _ranked_logsumexp(tau * c, y.float())


def angle_difference(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """s_i = |sum_k (re_k + im_k)| of the complex quotient u_i / v_i, normalized.

    Each embedding is split in halves as a complex vector z = a + ib (u) and
    w = c + id (v); elementwise u/v has real part (a c + b d) and imaginary
    part (b c - a d), both divided here by |u||v| so the result is
    scale-free. This is the AnglE paper's angle difference as angle-emb computes it.
    """
    u, v = u.float(), v.float()
    a, b = torch.chunk(u, 2, dim=1)
    c, d = torch.chunk(v, 2, dim=1)
    norm = (u.norm(dim=1, keepdim=True) * v.norm(dim=1, keepdim=True)).clamp(min=1e-12)
    re = (a * c + b * d) / norm
    im = (b * c - a * d) / norm
    return (re + im).sum(dim=1).abs()


def angle_loss(u: torch.Tensor, v: torch.Tensor, y: torch.Tensor, tau: float = 20.0) -> torch.Tensor:
    """Angle loss: L = log(1 + sum_{y_i < y_j} exp(tau (s_i - s_j))), s = angle_difference(u, v).

    As in the paper and angle-emb 0.6.1; H must be even (the halves are the
    real and imaginary parts).
    """
    if u.size(-1) % 2:
        raise ValueError(f"angle loss needs an even embedding size, got {u.size(-1)}")
    return _ranked_logsumexp(tau * angle_difference(u, v), y.float())


def info_nce(q: torch.Tensor, docs: torch.Tensor, tau: float = 20.0) -> torch.Tensor:
    """L = mean_i CE(tau cos(q_i, docs), i): q_i's positive is docs[i], every other row a negative.

    docs has B rows (in-batch negatives, format B) or more (B positives then
    hard negatives: the contrastive loss of format C).
    """
    logits = tau * F.normalize(q.float(), dim=-1) @ F.normalize(docs.float(), dim=-1).T
    return F.cross_entropy(logits, torch.arange(q.size(0), device=q.device))


def ibn_pair_loss(u: torch.Tensor, v: torch.Tensor, positive: torch.Tensor, tau: float = 20.0) -> torch.Tensor:
    """In-batch negatives for labelled pairs (format A).

    All 2B texts z = [u; v] score each other with tau cos (self excluded);
    for each pair marked positive, each side must pick its partner:
    L = mean over positive rows r of CE(tau cos(z_r, z_{!=r}), partner(r)).
    Rows of non-positive pairs contribute nothing and are not counted, so a
    batch of negatives gives 0, not a diluted mean (angle-emb averages over all rows).
    """
    b = u.size(0)
    z = F.normalize(torch.cat([u, v]).float(), dim=-1)
    logits = (tau * z @ z.T).masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), _NEG_INF)
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    rows = torch.cat([positive, positive]).bool()
    if not rows.any():
        return logits.sum() * 0.0  # keeps the graph (and DDP's gradient sync) intact
    return F.cross_entropy(logits[rows], partner[rows])


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float = 20.0) -> torch.Tensor:
    """KL(p_teacher || p_student) of each text's in-batch similarity distribution.

    p(r) = softmax_j(tau cos(x_r, x_j)), j != r, over the N texts of the
    batch; the teacher's embeddings need not have the student's width.
    """
    n = student.size(0)
    eye = torch.eye(n, dtype=torch.bool, device=student.device)
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    s_logits = (tau * s @ s.T).masked_fill(eye, _NEG_INF)
    t_logits = (tau * t @ t.T).masked_fill(eye, _NEG_INF)
    return F.kl_div(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), log_target=True, reduction="batchmean")


def kd_loss(q: torch.Tensor, docs: torch.Tensor, teacher_scores: torch.Tensor, tau: float = 20.0,
            temperature: float = 1.0) -> torch.Tensor:
    """KL distillation from a teacher's scores of each query's own documents (FlagEmbedding's kl_div).

    q (B, H); docs (B, G, H): query i's group [positive, negative_1 .. negative_{G-1}];
    teacher_scores (B, G), e.g. a reranker's pos_scores + neg_scores for the same documents.
        s_ij = tau cos(q_i, d_ij)              the student's scores (scale tau, as the InfoNCE terms)
        p_ij = softmax_j(t_ij / temperature)   the teacher's distribution
        L    = mean_i KL(p_i || softmax_j(s_ij)) = mean_i sum_j p_ij (log p_ij - log softmax_j(s_ij))
    FlagEmbedding minimizes the cross-entropy -sum_j p_ij log softmax_j(s_ij) instead: it differs by
    the teacher's entropy, a constant, so the gradient is the same; KL is 0 when the student agrees.
    """
    s = tau * torch.einsum("bh,bgh->bg", F.normalize(q.float(), dim=-1), F.normalize(docs.float(), dim=-1))
    log_p = F.log_softmax(teacher_scores.float() / temperature, dim=-1)
    return F.kl_div(F.log_softmax(s, dim=-1), log_p, log_target=True, reduction="batchmean")
