"""Peer runner: sentence-transformers on BEIR (query, positive) pairs, one per relevant pair, with
MultipleNegativesRankingLoss (Transformer Lab embedding-plugin defaults: 3 epochs, batch 16, lr 2e-5,
warmup 10%, NO_DUPLICATES batches) or CachedMultipleNegativesRankingLoss (GradCache, --mini-batch-size).
Runs in the peer venv; started by bench/train_retrieval.py, or by hand:

    HF_HUB_OFFLINE=1 bench/.venv-peers/bin/python bench/peers/run_st_retrieval.py --model <minilm path> \
        --beir /work/shared/data/scifact --split train --loss mnrl --epochs 3 --batch-size 16 --lr 2e-5 \
        --warmup-ratio 0.1 --maxlen 256 --out bench/results/retrieval/runs/st_mnrl

Writes <out>/model (a sentence-transformers folder) and <out>/result.json: train_s (trainer.train() only),
pairs, pooling, peak RSS of this process, versions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import peak_rss_self_bytes, read_beir_split, setup_process, st_pooling, write_json  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--beir", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True)
    p.add_argument("--loss", choices=["mnrl", "cmnrl"], required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--mini-batch-size", type=int, default=32, help="cmnrl: GradCache chunk")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--maxlen", type=int, default=256)
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_process(args.threads)
    import sentence_transformers
    import torch
    import transformers
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = read_beir_split(args.beir, args.split)["pairs"][: args.max_pairs]
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.maxlen
    train_ds = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    loss = (MultipleNegativesRankingLoss(model) if args.loss == "mnrl"
            else CachedMultipleNegativesRankingLoss(model, mini_batch_size=args.mini_batch_size))
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out / "tmp-trainer"), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, warmup_ratio=args.warmup_ratio, batch_sampler=BatchSamplers.NO_DUPLICATES,
        eval_strategy="no", save_strategy="no", logging_steps=10, report_to="none", seed=args.seed, use_cpu=True,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train_ds, loss=loss)
    t0 = time.perf_counter()
    train_out = trainer.train()
    train_s = time.perf_counter() - t0
    model.save(str(out / "model"))
    write_json(out / "result.json", {
        "system": f"sentence-transformers {args.loss}", "train_s": train_s, "pairs": len(train_ds) * args.epochs,
        "rows": len(train_ds), "epochs": args.epochs, "pooling": st_pooling(out / "model") or "mean",
        "model_dir": str(out / "model"), "peak_rss_self": peak_rss_self_bytes(), "hf_metrics": train_out.metrics,
        "threads": torch.get_num_threads(), "param_dtype": str(next(model.parameters()).dtype),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence-transformers": sentence_transformers.__version__},
    })


if __name__ == "__main__":
    main()
