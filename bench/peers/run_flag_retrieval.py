"""Peer runner: FlagEmbedding 1.4.2 encoder-only embedder fine-tuning on a BEIR training split, with its own
hard-negative mining, in the peer venv (bench/.venv-peers: FlagEmbedding==1.4.2 and faiss-cpu, which
bench/train_retrieval.py installs there when missing). Started by bench/train_retrieval.py, or by hand:

    HF_HUB_OFFLINE=1 bench/.venv-peers/bin/python bench/peers/run_flag_retrieval.py --model <minilm path> \
        --beir /work/shared/data/scifact --split train --epochs 2 --batch-size 2 --lr 1e-5 --warmup-ratio 0.1 \
        --maxlen 256 --out bench/results/retrieval/runs/flag_embedding

What runs, in one process (no torch.distributed, no torchrun, no deepspeed; CPU, fp32):

1. Training data: one line per query of qrels/--split, {"query", "pos": [every relevant "title text"], "neg"},
   FlagEmbedding's documented format. --max-pairs N keeps the same first N (query, document) pairs the other
   systems train on (qrels order), so the last query may keep only some of its positives.
2. Hard negatives: FlagEmbedding's scripts/hn_mine.py (find_knn_neg), which the pip package does not ship, so
   its steps are done here with the package's own pieces: the STARTING model loaded by FlagAutoModel
   (encoder-only-base, mean pooling, normalized, fp32 instead of hn_mine's fp16 default since this is a CPU,
   batch 64 instead of 3000, max length --maxlen for queries and passages instead of 512), the corpus encoded
   with encode() and the queries with encode_queries() (no instruction), an exact inner-product search with
   faiss.IndexFlatIP (faiss-cpu from PyPI, as hn_mine does) for the top `hi` of --mine-range lo-hi (10-100),
   ranks lo..hi-1 minus the query's positives and the query text itself, --mine-number (15) of them drawn at
   random, and random corpus documents filling any shortfall. Candidate pool: the BEIR corpus (hn_mine's
   --candidate_pool), de-duplicated in corpus order rather than hn_mine's list(set(...)), so that --seed
   reproduces the draw. --max-docs N (smoke runs only) cuts the pool to the training positives plus the first
   other documents up to N.
3. Training: FlagEmbedding.finetune.embedder.encoder_only.base (its ModelArguments / DataArguments /
   TrainingArguments dataclasses and EncoderOnlyEmbedderRunner, i.e. its BiEncoderOnlyEmbedderModel, dataset,
   collator and Trainer subclass): temperature --temperature (0.02), train_group_size --group-size (8: each
   query is trained against one sampled positive plus group_size-1 sampled mined negatives, and every other
   passage of the batch as in-batch negatives), query/passage max length --maxlen, no instruction,
   sentence_pooling_method "mean" (MiniLM's own pooling; FlagEmbedding offers cls, mean, last_token),
   normalize_embeddings True, pad_to_multiple_of 8, dataloader_drop_last True, no knowledge distillation.
   Left out from its README example: --fp16, --deepspeed, --gradient_checkpointing (memory savers for GPUs; we
   train fp32 on a CPU like every other system) and --negatives_cross_device (an all-gather across processes:
   with one process it is the same loss as the plain in-batch negatives used here).

train_s is runner.trainer.train() only (model load, mining, data loading and saving excluded). pairs is the number
of training examples processed, global_step x batch size: one example = one query and one positive (drop_last
drops a final partial batch), the unit the other systems' pairs/s counts; each example also carries group_size-1
hard negatives, so one FlagEmbedding pair costs group_size + 1 encoder passes instead of 2. Writes
<out>/flag_output (FlagEmbedding's own save: the HF backbone and tokenizer), <out>/model (a sentence-transformers
folder around it: Transformer, mean Pooling, Normalize), <out>/train_data.jsonl (the mined training file) and
<out>/result.json (train_s, pairs, pooling, model_dir, peak RSS of this process, which includes mining, versions).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import peak_rss_self_bytes, read_beir_split, setup_process, write_json  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--beir", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2, help="queries per step (per_device_train_batch_size)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--group-size", type=int, default=8, help="train_group_size: 1 positive + group-1 negatives")
    p.add_argument("--temperature", type=float, default=0.02)
    p.add_argument("--mine-range", default="10-100", help="hn_mine range_for_sampling: ranks lo..hi-1")
    p.add_argument("--mine-number", type=int, default=15, help="hn_mine negative_number")
    p.add_argument("--maxlen", type=int, default=256)
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--max-docs", type=int, default=None, help="cut the mining pool (smoke runs only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    lo, _, hi = args.mine_range.partition("-")
    if not (lo.isdigit() and hi.isdigit() and int(lo) < int(hi)):
        p.error(f"--mine-range must look like 10-100, got {args.mine_range!r}")
    args.mine_lo, args.mine_hi = int(lo), int(hi)
    return args


def training_rows(data: dict[str, Any], max_pairs: int | None) -> tuple[list[dict[str, Any]], int]:
    """One {"query", "pos"} row per query, positives in qrels order; the first `max_pairs` pairs only when set."""
    index = {d: j for j, d in enumerate(data["doc_ids"])}
    rows, n = [], 0
    for qid, query in zip(data["query_ids"], data["queries"], strict=True):
        pos = []
        for did in data["qrels"][qid]:
            if max_pairs is not None and n >= max_pairs:
                break
            pos.append(data["docs"][index[did]])
            n += 1
        if pos:
            rows.append({"query": query, "pos": pos})
    return rows, n


def mining_pool(data: dict[str, Any], rows: list[dict[str, Any]], max_docs: int | None) -> list[str]:
    """The corpus, de-duplicated in order; with max_docs: the training positives plus the first others up to it."""
    docs = list(dict.fromkeys(data["docs"]))
    if max_docs is None or max_docs >= len(docs):
        return docs
    positives = list(dict.fromkeys(p for r in rows for p in r["pos"]))
    seen = set(positives)
    others = [d for d in docs if d not in seen][: max(0, max_docs - len(positives))]
    return positives + others


def mine_hard_negatives(embedder: Any, rows: list[dict[str, Any]], corpus: list[str], lo: int, hi: int, k: int,
                        search_batch_size: int = 64) -> dict[str, Any]:
    """FlagEmbedding scripts/hn_mine.py find_knn_neg, step for step: encode, IndexFlatIP top-hi, ranks lo..hi-1
    minus positives and the query, k drawn at random (module `random`, seeded by the caller), random fill."""
    import faiss
    import numpy as np

    p_vecs = embedder.encode(corpus)
    q_vecs = embedder.encode_queries([r["query"] for r in rows])
    if isinstance(p_vecs, dict):  # M3-style output (hn_mine handles it too)
        p_vecs, q_vecs = p_vecs["dense_vecs"], q_vecs["dense_vecs"]
    index = faiss.IndexFlatIP(len(p_vecs[0]))
    index.add(np.asarray(p_vecs, dtype=np.float32))
    all_inxs: list[list[int]] = []
    for start in range(0, len(q_vecs), search_batch_size):
        _, inxs = index.search(np.asarray(q_vecs[start:start + search_batch_size], dtype=np.float32), k=hi)
        all_inxs.extend(inxs.tolist())
    mined = 0
    for row, inxs in zip(rows, all_inxs, strict=True):
        filtered = []
        for inx in inxs[lo:hi]:
            if inx == -1:
                break
            if corpus[inx] not in row["pos"] and corpus[inx] != row["query"]:
                filtered.append(inx)
        if len(filtered) > k:
            filtered = random.sample(filtered, k)
        row["neg"] = [corpus[inx] for inx in filtered]
        mined += len(row["neg"])
        if len(row["neg"]) < k:
            want = min(len(corpus), k - len(row["neg"]) + len(row["pos"]))
            samples = [s for s in random.sample(corpus, want) if s not in row["pos"]]
            row["neg"].extend(samples[: k - len(row["neg"])])
    return {"pool": len(corpus), "queries": len(rows), "mined_negatives": mined,
            "random_fill_negatives": sum(len(r["neg"]) for r in rows) - mined, "faiss": faiss.__version__}


def save_st_folder(flag_dir: Path, st_dir: Path, maxlen: int) -> None:
    """Wrap FlagEmbedding's saved backbone as a sentence-transformers folder: mean pooling, normalized."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(str(flag_dir), max_seq_length=maxlen)
    hidden = json.loads((flag_dir / "config.json").read_text(encoding="utf-8"))["hidden_size"]
    SentenceTransformer(modules=[transformer, Pooling(hidden, pooling_mode="mean"), Normalize()],
                        device="cpu").save(str(st_dir))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_process(args.threads)
    import faiss
    import sentence_transformers
    import torch
    import transformers
    from FlagEmbedding import FlagAutoModel
    from FlagEmbedding.finetune.embedder.encoder_only.base import (
        EncoderOnlyEmbedderDataArguments,
        EncoderOnlyEmbedderModelArguments,
        EncoderOnlyEmbedderRunner,
        EncoderOnlyEmbedderTrainingArguments,
    )

    faiss.omp_set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    flag_dir, st_dir, train_file = out / "flag_output", out / "model", out / "train_data.jsonl"
    for stale in (flag_dir, st_dir, out / "hf-cache"):
        shutil.rmtree(stale, ignore_errors=True)  # its runner refuses a non-empty output_dir

    # 1-2. training rows, mined with the starting model
    data = read_beir_split(args.beir, args.split)
    rows, n_pairs = training_rows(data, args.max_pairs)
    pool = mining_pool(data, rows, args.max_docs)
    random.seed(args.seed)
    t0 = time.perf_counter()
    embedder = FlagAutoModel.from_finetuned(
        args.model, model_class="encoder-only-base", pooling_method="mean", normalize_embeddings=True,
        use_fp16=False, devices="cpu", trust_remote_code=False, query_instruction_for_retrieval=None,
        query_instruction_format="{}{}", batch_size=64, query_max_length=args.maxlen,
        passage_max_length=args.maxlen)
    mining = mine_hard_negatives(embedder, rows, pool, args.mine_lo, args.mine_hi, args.mine_number)
    mining["mine_s"] = time.perf_counter() - t0
    del embedder
    with open(train_file, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"mined: {mining}", flush=True)

    # 3. FlagEmbedding's encoder-only fine-tuning, its runner and trainer, one CPU process
    model_args = EncoderOnlyEmbedderModelArguments(model_name_or_path=args.model, trust_remote_code=False)
    data_args = EncoderOnlyEmbedderDataArguments(
        train_data=[str(train_file)], cache_path=str(out / "hf-cache"), train_group_size=args.group_size,
        query_max_len=args.maxlen, passage_max_len=args.maxlen, pad_to_multiple_of=8, knowledge_distillation=False,
        query_instruction_for_retrieval=None, passage_instruction_for_retrieval=None)
    training_args = EncoderOnlyEmbedderTrainingArguments(
        output_dir=str(flag_dir), learning_rate=args.lr, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, dataloader_drop_last=True, warmup_ratio=args.warmup_ratio,
        temperature=args.temperature, sentence_pooling_method="mean", normalize_embeddings=True,
        negatives_cross_device=False, kd_loss_type="kl_div", logging_steps=10, save_strategy="no",
        report_to="none", seed=args.seed, use_cpu=True, disable_tqdm=True)
    try:
        runner = EncoderOnlyEmbedderRunner(model_args=model_args, data_args=data_args, training_args=training_args)
        flag_dir.mkdir(parents=True, exist_ok=True)  # what runner.run() does before train + save_model
        t0 = time.perf_counter()
        train_out = runner.trainer.train()
        train_s = time.perf_counter() - t0
    except Exception as e:
        raise SystemExit(f"FlagEmbedding could not train on this CPU: {type(e).__name__}: {e} "
                         f"(in EncoderOnlyEmbedderRunner setup or trainer.train(); traceback above)") from e
    runner.trainer.save_model()
    save_st_folder(flag_dir, st_dir, args.maxlen)

    state = runner.trainer.state
    examples = state.global_step * args.batch_size * training_args.gradient_accumulation_steps
    write_json(out / "result.json", {
        "system": f"FlagEmbedding {_dist_version('FlagEmbedding')} encoder_only.base",
        "train_s": train_s, "pairs": examples, "qrels_pairs": n_pairs, "rows": len(rows),
        "epochs": args.epochs, "epochs_trained": state.epoch, "global_step": state.global_step,
        "group_size": args.group_size, "temperature": args.temperature, "mining": mining,
        "pooling": "mean", "model_dir": str(st_dir), "flag_output": str(flag_dir),
        "peak_rss_self": peak_rss_self_bytes(), "hf_metrics": train_out.metrics,
        "threads": torch.get_num_threads(), "param_dtype": str(next(runner.model.parameters()).dtype),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence-transformers": sentence_transformers.__version__,
                     "FlagEmbedding": _dist_version("FlagEmbedding"), "faiss-cpu": faiss.__version__},
    })


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
