"""Evaluation: STS Spearman for format A, retrieval MRR@10 / NDCG@10 for B and C.

The metric functions are pure (numpy in, float out); `evaluate` wires them
to an Encoder and a set of validated examples.

    .venv/bin/python -m pytest tests/plugin/test_evaluate.py
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import spearmanr

from .data import Examples, apply_prompt

PRIMARY_METRIC = {"A": "spearman", "B": "ndcg@10", "C": "ndcg@10"}


def spearman(scores: np.ndarray, labels: np.ndarray) -> float:
    rho = spearmanr(scores, labels).statistic
    return float(0.0 if math.isnan(rho) else rho)


def retrieval_metrics(sim: np.ndarray, relevant: list[set[int]], k: int = 10) -> dict[str, float]:
    """MRR@k, NDCG@k (binary relevance) and recall@k of a (queries x docs) similarity matrix."""
    top = np.argsort(-sim, axis=1)[:, :k]  # fewer than k docs: all of them
    mrr = ndcg = recall = 0.0
    for q, rel in enumerate(relevant):
        hits = [r for r, d in enumerate(top[q]) if d in rel]
        if hits:
            mrr += 1.0 / (hits[0] + 1)
        dcg = sum(1.0 / math.log2(r + 2) for r in hits)
        ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(rel), k)))
        ndcg += dcg / ideal if ideal else 0.0
        recall += len(hits) / len(rel) if rel else 0.0
    n = max(len(relevant), 1)
    return {f"mrr@{k}": mrr / n, f"ndcg@{k}": ndcg / n, f"recall@{k}": recall / n}


def _first(value: str | list[str]) -> str:
    return value if isinstance(value, str) else value[0]


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def evaluate(encoder, examples: Examples, prompts: dict[str, str | None], batch_size: int = 64) -> dict[str, float]:
    """Score an encoder; keys: spearman (A) or mrr@10, ndcg@10, recall@10 (B/C)."""
    if examples.format == "A":
        t1 = [apply_prompt(_first(t), prompts.get("text1")) for t in examples.texts["text1"]]
        t2 = [apply_prompt(_first(t), prompts.get("text2")) for t in examples.texts["text2"]]
        emb = encoder.encode(t1 + t2, batch_size=batch_size, normalize=True)
        a, b = emb[: len(t1)], emb[len(t1):]
        return {"spearman": spearman((a * b).sum(1), np.asarray(examples.labels))}
    # B/C: each query must retrieve its positive(s) among all documents of the set.
    doc_ids: dict[str, int] = {}
    relevant = []
    for i, query_pos in enumerate(examples.texts["positive"]):
        relevant.append({doc_ids.setdefault(d, len(doc_ids)) for d in _as_list(query_pos)})
        for d in _as_list(examples.texts["negative"][i]) if "negative" in examples.texts else []:
            doc_ids.setdefault(d, len(doc_ids))
    queries = [apply_prompt(_first(q), prompts.get("query")) for q in examples.texts["query"]]
    docs = [apply_prompt(d, prompts.get("positive")) for d in doc_ids]
    q = encoder.encode(queries, batch_size=batch_size, normalize=True)
    d = encoder.encode(docs, batch_size=batch_size, normalize=True)
    return retrieval_metrics(q @ d.T, relevant)
