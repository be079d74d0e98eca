"""Peer runner: sentence-transformers SentenceTransformerTrainer with AnglELoss or CoSENTLoss
on STS-B (Format A, labels scaled 0-5 -> 0-1). Runs in the peer venv; started by
bench/train_stsb.py, or by hand:

    HF_HUB_OFFLINE=1 bench/.venv-peers/bin/python bench/peers/run_st.py \
        --model <minilm path> --train /work/shared/data/stsb/train.jsonl --loss cosent \
        --epochs 1 --batch-size 32 --lr 2e-5 --warmup-ratio 0 --maxlen 64 \
        --out bench/results/runs/short/st_cosent --max-pairs 256

Writes <out>/model (a sentence-transformers folder; its own mean pooling) and
<out>/result.json: train_s (wall time of trainer.train() only: no model load, no save,
no eval), pairs, pooling, peak RSS of this process, versions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import peak_rss_self_bytes, read_jsonl, setup_process, st_pooling, write_json  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of one sentence-transformers training run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--loss", choices=["angle", "cosent"], required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def load_train(path: str, limit: int | None) -> Any:
    """STS-B rows as a datasets.Dataset(sentence1, sentence2, score in 0-1)."""
    from datasets import Dataset

    rows = read_jsonl(path, limit)
    return Dataset.from_dict({
        "sentence1": [r["text1"] for r in rows],
        "sentence2": [r["text2"] for r in rows],
        "score": [float(r["label"]) / 5.0 for r in rows],
    })


def build_trainer(args: argparse.Namespace, model: Any, train_ds: Any, tmp_dir: Path) -> Any:
    """SentenceTransformerTrainer: no eval, no checkpoints, no reporting."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import AnglELoss, CoSENTLoss

    loss = AnglELoss(model) if args.loss == "angle" else CoSENTLoss(model)
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=args.warmup_ratio,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=100,
        report_to="none",
        seed=args.seed,
        use_cpu=True,
        disable_tqdm=True,
    )
    return SentenceTransformerTrainer(model=model, args=targs, train_dataset=train_ds, loss=loss)


def main(argv: list[str] | None = None) -> None:
    """Train, time trainer.train(), save the model and result.json."""
    args = parse_args(argv)
    setup_process(args.threads)
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_load = time.perf_counter()
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.maxlen
    train_ds = load_train(args.train, args.max_pairs)
    trainer = build_trainer(args, model, train_ds, out / "tmp-trainer")
    load_s = time.perf_counter() - t_load

    t0 = time.perf_counter()
    train_out = trainer.train()
    train_s = time.perf_counter() - t0

    model.save(str(out / "model"))
    write_json(out / "result.json", {
        "system": f"sentence-transformers {args.loss}",
        "train_s": train_s,
        "load_s": load_s,
        "pairs": len(train_ds) * args.epochs,
        "rows": len(train_ds),
        "epochs": args.epochs,
        "pooling": st_pooling(out / "model") or "mean",
        "model_dir": str(out / "model"),
        "peak_rss_self": peak_rss_self_bytes(),
        "hf_metrics": train_out.metrics,
        "threads": torch.get_num_threads(),
        "param_dtype": str(next(model.parameters()).dtype),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence-transformers": sentence_transformers.__version__},
    })


if __name__ == "__main__":
    main()
