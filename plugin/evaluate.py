"""Evaluation: STS Spearman for format A, retrieval MRR@10 / NDCG@10 for B and C.

The metric functions are pure (numpy in, float out); `evaluate` wires them
to an Encoder and a set of validated examples.

    .venv/bin/python -m pytest tests/plugin/test_evaluate.py
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr

from .data import Examples, apply_prompt

PRIMARY_METRIC = {"A": "spearman", "B": "ndcg@10", "C": "ndcg@10"}
# A metric key is a base name plus an optional variant: "spearman", "spearman@256" (first 256
# dims), "ndcg@10@L3" (layer 3). Base names may hold "@" themselves (mrr@10), hence the pattern.
_VARIANT_KEY = re.compile(r"^(spearman|(?:mrr|ndcg|recall)@\d+)(?:@(L?\d+))?$")


def split_metric_key(key: str) -> tuple[str, str]:
    """("ndcg@10", "128") for "ndcg@10@128", ("spearman", "L3") for "spearman@L3", (key, "") otherwise."""
    m = _VARIANT_KEY.match(key)
    return (m.group(1), m.group(2) or "") if m else (key, "")


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


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def embedding_variants(encoder, texts: list[str], batch_size: int, dims: Sequence[int] = (),
                       layers: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """Unit vectors per key suffix: "" the full embedding, "@d" its first d dims renormalized,
    "@Ll" layer l's pooled state; all from one encoding pass."""
    if layers:
        stack = encoder.encode(texts, batch_size=batch_size, normalize=True, all_layers=True)  # (L, N, H)
        full = stack[-1]
    else:
        full = encoder.encode(texts, batch_size=batch_size, normalize=True)
    out = {"": full}
    # The prefix of a unit vector, renormalized, is the prefix of the raw vector normalized.
    out.update({f"@{d}": _unit(full[:, :d]) for d in dims})
    out.update({f"@L{layer}": stack[layer - 1] for layer in layers})
    return out


def evaluate(encoder, examples: Examples, prompts: dict[str, str | None], batch_size: int = 64,
             dims: Sequence[int] | None = None, layers: Sequence[int] | None = None) -> dict[str, float]:
    """Score an encoder; keys: spearman (A) or mrr@10, ndcg@10, recall@10 (B/C).

    dims: also score each prefix (Matryoshka): spearman@256, ndcg@10@128, ...
    layers: also each shallower layer's output (AdaptiveLayer): spearman@L3, ...
    """
    dims, layers = list(dims or []), list(layers or [])
    if examples.format == "A":
        t1 = [apply_prompt(_first(t), prompts.get("text1")) for t in examples.texts["text1"]]
        t2 = [apply_prompt(_first(t), prompts.get("text2")) for t in examples.texts["text2"]]
        labels = np.asarray(examples.labels)
        variants = embedding_variants(encoder, t1 + t2, batch_size, dims, layers)
        return {f"spearman{v}": spearman((e[: len(t1)] * e[len(t1):]).sum(1), labels) for v, e in variants.items()}
    # B/C: each query must retrieve its positive(s) among all documents of the set.
    doc_ids: dict[str, int] = {}
    relevant = []
    for i, query_pos in enumerate(examples.texts["positive"]):
        relevant.append({doc_ids.setdefault(d, len(doc_ids)) for d in _as_list(query_pos)})
        for d in _as_list(examples.texts["negative"][i]) if "negative" in examples.texts else []:
            doc_ids.setdefault(d, len(doc_ids))
    queries = [apply_prompt(_first(q), prompts.get("query")) for q in examples.texts["query"]]
    docs = [apply_prompt(d, prompts.get("positive")) for d in doc_ids]
    q = embedding_variants(encoder, queries, batch_size, dims, layers)
    d = embedding_variants(encoder, docs, batch_size, dims, layers)
    return {f"{k}{v}": m for v in q for k, m in retrieval_metrics(q[v] @ d[v].T, relevant).items()}
