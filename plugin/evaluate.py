"""Evaluation: STS Spearman for format A, retrieval MRR@10 / NDCG@10 for B and C, corpus retrieval for BEIR.

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
_VARIANT_KEY = re.compile(r"^(spearman|(?:mrr|ndcg|recall|map)@\d+)(?:@(L?\d+))?$")


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


# ------------------------------------------------- corpus retrieval (BEIR), one query at a time
# ranked: document ids, best first; rels: {doc id: graded relevance}, relevant when > 0.
def ndcg_at_k(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    """NDCG@k = DCG@k / IDCG@k, DCG@k = sum_{i=1..k} rel(d_i) / log2(i + 1) (linear gain, as trec_eval and BEIR),
    IDCG@k the DCG of the ideal order (relevances sorted descending); 0 when nothing is relevant."""
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: Sequence[str], rels: dict[str, int], k: int = 100) -> float:
    """Recall@k = |relevant docs among the top k| / |relevant docs|; 0 when nothing is relevant."""
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    """MRR@k (per query: reciprocal rank) = 1 / rank of the first relevant doc within the top k, else 0."""
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def average_precision_at_k(ranked: Sequence[str], rels: dict[str, int], k: int = 100) -> float:
    """AP@k (MAP@k is its mean over queries) = sum over ranks i <= k holding a relevant doc of precision@i,
    divided by the number of relevant docs (trec_eval's map_cut, as BEIR reports); 0 when nothing is relevant."""
    n_rel = sum(r > 0 for r in rels.values())
    hits, total = 0, 0.0
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel if n_rel else 0.0


CORPUS_METRICS = (("ndcg@10", ndcg_at_k, 10), ("recall@100", recall_at_k, 100), ("mrr@10", mrr_at_k, 10),
                  ("map@100", average_precision_at_k, 100))


def top_k_ids(sim: np.ndarray, doc_ids: Sequence[str], k: int) -> list[list[str]]:
    """Per row of a (queries x docs) similarity matrix, the ids of its k most similar docs, best first
    (exact search; ties broken by corpus order)."""
    k = min(k, sim.shape[1])
    part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    out = []
    for row, cand in zip(sim, part, strict=True):
        order = cand[np.lexsort((cand, -row[cand]))]
        out.append([doc_ids[j] for j in order])
    return out


def corpus_metrics(q: np.ndarray, d: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str],
                   qrels: dict[str, dict[str, int]], chunk: int = 256) -> dict[str, float]:
    """Mean NDCG@10, Recall@100, MRR@10 and MAP@100 of unit query vectors q ranking every unit doc vector d."""
    sums = dict.fromkeys((name for name, _, _ in CORPUS_METRICS), 0.0)
    depth = max(k for _, _, k in CORPUS_METRICS)
    for start in range(0, len(query_ids), chunk):
        ranked = top_k_ids(q[start: start + chunk] @ d.T, doc_ids, depth)
        for qid, ids in zip(query_ids[start: start + chunk], ranked, strict=True):
            for name, fn, k in CORPUS_METRICS:
                sums[name] += fn(ids, qrels[qid], k)
    n = max(len(query_ids), 1)
    return {name: total / n for name, total in sums.items()}


def evaluate_corpus(encoder, beir, prompts: dict[str, str | None], batch_size: int = 64,
                    dims: Sequence[int] = (), layers: Sequence[int] = ()) -> dict[str, float]:
    """Every query of a BEIR split ranks the whole corpus. The corpus is encoded once (Encoder.encode
    sorts by length), every Matryoshka dim / layer variant read from that one pass."""
    queries = [apply_prompt(t, prompts.get("query")) for t in beir.queries]
    docs = [apply_prompt(t, prompts.get("positive")) for t in beir.docs]
    qv = embedding_variants(encoder, queries, batch_size, dims, layers)
    dv = embedding_variants(encoder, docs, batch_size, dims, layers)
    return {f"{k}{v}": m for v in qv
            for k, m in corpus_metrics(qv[v], dv[v], beir.query_ids, beir.doc_ids, beir.qrels).items()}


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
    """Score an encoder; keys: spearman (A) or mrr@10, ndcg@10, recall@10 (B/C), or for a BEIR split
    (examples.beir) ndcg@10, recall@100, mrr@10, map@100 of every query against the whole corpus.

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
    if getattr(examples, "beir", None) is not None:  # a BEIR split: rank the whole corpus
        return evaluate_corpus(encoder, examples.beir, prompts, batch_size, dims, layers)
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
