"""Hard-negative mining: for each query, negatives drawn from the ranks a model gives a candidate pool.

FlagEmbedding's hn_mine semantics: the candidate pool is every pos (and neg)
text of the input file, de-duplicated, or the {text} rows of --candidate_pool;
each query retrieves the top `hi` candidates by cosine similarity; ranks lo..hi-1
(0-based, from --range_for_sampling lo-hi) minus the query's positives and the
query itself are the candidates, of which --negative_number are sampled (all of
them when fewer). Skipping the top `lo` ranks avoids unlabelled positives (false
negatives). Existing neg lists are replaced, and neg_scores dropped (they scored
the old negatives); a query with no candidate in the range (a pool smaller than
lo) gets random non-positive negatives instead, so every row trains as format C.
Output: FlagEmbedding jsonl {query, pos: [...], neg: [...]}, which the trainer
reads as format C (train_group_size picks 1 pos + G-1 negs per epoch).

    HF_HUB_OFFLINE=1 .venv/bin/python -m plugin.mine --input_file train.jsonl --output_file train_minedHN.jsonl \\
        --range_for_sampling 10-210 --negative_number 15 [--candidate_pool pool.jsonl] \\
        [--model_name_or_path sentence-transformers/all-MiniLM-L6-v2] [--query_prompt "query: {text}"]

Input rows: FlagEmbedding's {query, pos, neg?} or ours {query, positive, negative?}, str or list fields,
or a BEIR folder (--split train): one row per judged query, its relevant documents as pos, the corpus as pool.
A training run mines the same way with its starting model (TrainConfig.mine_hard_negatives, mine_examples).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import torch
from tqdm.auto import tqdm

from .config import DEFAULT_MODEL, PoolingStrategy
from .data import FLAG_COLUMNS, DataError, Examples, read_file
from .helpformat import FlagHelpFormatter  # each flag's type and default, a `%` literal


def parse_range(text: str) -> tuple[int, int]:
    """"10-210" -> (10, 210): ranks 10..209, 0-based (FlagEmbedding's --range_for_sampling)."""
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"range must look like 10-210, got {text!r}") from None
    if not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(f"range must satisfy 0 <= start < end, got {text!r}")
    return lo, hi


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def read_beir_rows(path: str, split: str = "train") -> tuple[list[dict[str, Any]], list[str]]:
    """A BEIR folder's split as rows {query, pos: [its relevant docs], neg: []}, and its corpus (the default pool)."""
    from .beir import read_beir

    data = read_beir(path, split)
    docs = dict(zip(data.doc_ids, data.docs, strict=True))
    rows = [{"query": text, "pos": [docs[d] for d in data.qrels[qid]], "neg": []}
            for qid, text in zip(data.query_ids, data.queries, strict=True)]
    return rows, data.docs


def read_rows(path: str) -> list[dict[str, Any]]:
    """Input rows under FlagEmbedding's names, pos and neg always lists."""
    rows = []
    for i, raw in enumerate(read_file(Path(path)), 1):
        row = {({v: k for k, v in FLAG_COLUMNS.items()}).get(k, k): v for k, v in raw.items()}
        if not isinstance(row.get("query"), str) or not _as_list(row.get("pos")):
            raise DataError(f"{path}: row {i}: needs a query string and pos (or positive) texts")
        row["pos"], row["neg"] = _as_list(row["pos"]), _as_list(row.get("neg"))
        rows.append(row)
    return rows


def read_pool(path: str) -> list[str]:
    """--candidate_pool: jsonl (or any readable file) of {text} rows."""
    texts = []
    for i, row in enumerate(read_file(Path(path)), 1):
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise DataError(f"{path}: row {i}: expected a non-empty 'text' string")
        texts.append(row["text"])
    return texts


def sample_negatives(ranked: Sequence[int], corpus: Sequence[str], query: str, positives: Sequence[str],
                     lo: int, hi: int, k: int, rng: random.Random) -> list[str]:
    """Up to k texts sampled from ranks lo..hi-1 of `ranked` (corpus indices, best first),
    never a positive nor the query itself."""
    exclude = set(positives) | {query}
    candidates = [corpus[j] for j in ranked[lo:hi] if corpus[j] not in exclude]
    return rng.sample(candidates, k) if len(candidates) > k else candidates


def top_ranks(q: torch.Tensor, docs: torch.Tensor, k: int, chunk: int = 1024) -> list[list[int]]:
    """For each query row, the indices of its k most similar docs (dot product of unit vectors), best first."""
    k = min(k, docs.size(0))
    out: list[list[int]] = []
    for start in tqdm(range(0, q.size(0), chunk), desc="search", unit="chunk", disable=q.size(0) <= chunk):
        out.extend((q[start: start + chunk] @ docs.T).topk(k, dim=1).indices.tolist())
    return out


def mine(rows: list[dict[str, Any]], encoder: Any, lo: int, hi: int, k: int, pool: list[str] | None = None,
         query_prompt: str | None = None, doc_prompt: str | None = None, batch_size: int = 256,
         seed: int = 42) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows with mined `neg` lists, and the corpus they were drawn from."""
    if pool is None:
        pool = [t for r in rows for t in (*r["pos"], *r["neg"])]
    corpus = list(dict.fromkeys(pool))  # de-duplicated, first-seen order (reproducible, unlike a set)
    docs = encoder.encode(corpus, batch_size=batch_size, prompt=doc_prompt, normalize=True,
                          convert_to_numpy=False, show_progress_bar=True)
    queries = encoder.encode([r["query"] for r in rows], batch_size=batch_size, prompt=query_prompt,
                             normalize=True, convert_to_numpy=False, show_progress_bar=True)
    ranks = top_ranks(queries, docs, hi)
    rng = random.Random(seed)
    out = []
    for row, ranked in zip(rows, ranks, strict=True):
        new = {key: v for key, v in row.items() if key != "neg_scores"}
        new["neg"] = sample_negatives(ranked, corpus, row["query"], row["pos"], lo, hi, k, rng)
        if not new["neg"]:  # pool smaller than lo: random negatives, so the row still trains as format C
            new["neg"] = sample_negatives(rng.sample(range(len(corpus)), len(corpus)), corpus, row["query"],
                                          row["pos"], 0, len(corpus), k, rng)
        out.append(new)
    return out, corpus


def mine_examples(examples: Examples, encoder: Any, lo: int, hi: int, k: int, query_prompt: str | None = None,
                  doc_prompt: str | None = None, batch_size: int = 256, seed: int = 42) -> Examples:
    """Format B/C examples -> format C, each row's negative a list of up to k mined texts.

    The pool is the BEIR corpus when the examples came from a BEIR folder, else every positive
    (and negative) of the examples. A query's positives over all its rows are excluded from its negatives.
    """
    as_list = _as_list
    positives: dict[str, list[str]] = {}
    old_negs: dict[str, list[str]] = {}
    for i, q in enumerate(examples.texts["query"]):
        q = q if isinstance(q, str) else q[0]
        positives.setdefault(q, []).extend(as_list(examples.texts["positive"][i]))
        if "negative" in examples.texts:
            old_negs.setdefault(q, []).extend(as_list(examples.texts["negative"][i]))
    rows = [{"query": q, "pos": list(dict.fromkeys(p)), "neg": old_negs.get(q, [])} for q, p in positives.items()]
    pool = list(examples.beir.docs) if getattr(examples, "beir", None) is not None else None
    mined, corpus = mine(rows, encoder, lo, hi, k, pool, query_prompt, doc_prompt, batch_size, seed)
    negs = {r["query"]: r["neg"] for r in mined}
    empty = [q for q, n in negs.items() if not n]
    if empty:
        raise DataError(f"{examples.sources[0] if examples.sources else 'training data'}: no negative could be mined "
                        f"for {len(empty)} queries (e.g. {empty[0]!r:.60}): the pool of {len(corpus)} texts holds "
                        "only their positives")
    queries = [q if isinstance(q, str) else q[0] for q in examples.texts["query"]]
    texts = {"query": list(examples.texts["query"]), "positive": list(examples.texts["positive"]),
             "negative": [list(negs[q]) for q in queries]}
    return Examples(format="C", texts=texts, sources=list(examples.sources), beir=getattr(examples, "beir", None))


def build_parser() -> argparse.ArgumentParser:

    p = argparse.ArgumentParser(prog="python -m plugin.mine", description=__doc__.split("\n\n")[0],
                                formatter_class=FlagHelpFormatter)
    p.add_argument("--input_file", required=True,
                   help="jsonl of {query, pos[], neg[]} or {query, positive}, or a BEIR folder (corpus.jsonl, "
                        "queries.jsonl, qrels/<split>.tsv: its corpus is then the default pool)")
    p.add_argument("--split", default="train", help="BEIR input: the qrels split to mine for")
    p.add_argument("--output_file", required=True, help="where the FlagEmbedding jsonl goes")
    p.add_argument("--model_name_or_path", default=DEFAULT_MODEL,
                   help="the retriever (a folder saved by train, or any AutoModel; the default resolves to the "
                        "offline MiniLM when installed)")
    p.add_argument("--candidate_pool", help="jsonl of {text} (default: a BEIR folder's corpus, else every pos/neg "
                                            "text of the input)")
    p.add_argument("--range_for_sampling", type=parse_range, default=(10, 210), metavar="START-END",
                   help="sample negatives from these ranks, 0-based, end excluded (default: 10-210)")
    p.add_argument("--negative_number", type=int, default=15, help="negatives per query, >= 1")
    p.add_argument("--query_prompt", help='template for queries, e.g. "query: {text}" (default: none)')
    p.add_argument("--doc_prompt", help='template for candidates, e.g. "passage: {text}" (default: none)')
    p.add_argument("--pooling_strategy", metavar="CHOICE",
                   help=f"override the pooling the model was saved with: {', '.join(get_args(PoolingStrategy))} "
                        "(default: the saved one)")
    p.add_argument("--maxlen", type=int, help="max tokens per text (default: the model's saved maxlen)")
    p.add_argument("--batch_size", type=int, default=256, help="texts per encoding batch")
    p.add_argument("--seed", type=int, default=42, help="seed for sampling the negatives")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.negative_number < 1:
        print("error: --negative_number must be >= 1", file=sys.stderr)
        return 2
    from .model import load

    try:
        from .beir import is_beir_dir

        rows, pool = read_beir_rows(args.input_file, args.split) if is_beir_dir(args.input_file) else (
            read_rows(args.input_file), None)
        pool = read_pool(args.candidate_pool) if args.candidate_pool else pool
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    encoder = load(args.model_name_or_path, device="cuda" if torch.cuda.is_available() else None)
    if args.pooling_strategy:
        encoder.model.pooling_strategy = args.pooling_strategy
    if args.maxlen:
        encoder.maxlen = args.maxlen
    lo, hi = args.range_for_sampling
    out, corpus = mine(rows, encoder, lo, hi, args.negative_number, pool, args.query_prompt, args.doc_prompt,
                       args.batch_size, args.seed)
    Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output_file, "w", encoding="utf-8") as f:
        for row in out:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    short = sum(len(r["neg"]) < args.negative_number for r in out)
    print(f"mined {len(out)} queries against {len(corpus)} candidates (ranks {lo}-{hi}) -> {args.output_file}"
          + (f"; {short} got fewer than {args.negative_number} negatives" if short else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
