"""Peer runner: angle-emb 0.6.1, its README "Custom Training / Option B: Python API" Format A
recipe (STS-B): AnglE.from_pretrained(model, max_length, pooling_strategy='cls') then
angle.fit(batch_size, epochs, learning_rate=2e-5, warmup_steps=0, loss_kwargs={cosine_w 1.0,
ibn_w 1.0, angle_w 0.02, cosine_tau/ibn_tau/angle_tau 20}), raw 0-5 STS-B labels as in the
README (mteb/stsbenchmark-sts `score`). Changes from the README: max_length 64 (budget), no
valid_ds / checkpoints (save_strategy 'no'; timing only), no fp16 (the README's fp16=True is a
GPU setting; ANCHORS.md: never pass fp16 flags to angle-emb), seeded shuffle. Runs in the peer
venv; started by bench/train_stsb.py, or by hand:

    HF_HUB_OFFLINE=1 bench/.venv-peers/bin/python bench/peers/run_angle_emb.py \
        --model <minilm path> --train /work/shared/data/stsb/train.jsonl \
        --epochs 1 --batch-size 32 --lr 2e-5 --maxlen 64 --pooling cls \
        --out bench/results/runs/short/angle_emb --max-pairs 256

Writes <out>/angle (angle-emb's own output: backbone + tokenizer + angle_config.json),
<out>/model (a sentence-transformers folder wrapping it with the recipe's pooling) and
<out>/result.json: train_s (wall time of the HF trainer.train() call inside fit(): no model
load, no save), pairs, pooling, peak RSS of this process, versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import peak_rss_self_bytes, read_jsonl, setup_process, write_json  # noqa: E402

README_LOSS_KWARGS = {"cosine_w": 1.0, "ibn_w": 1.0, "angle_w": 0.02,
                      "cosine_tau": 20, "ibn_tau": 20, "angle_tau": 20}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of one angle-emb training run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--pooling", default="cls", help="README recipe: cls")
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def load_train(path: str, limit: int | None, seed: int) -> Any:
    """STS-B rows as a shuffled datasets.Dataset(text1, text2, label 0-5), as in the README."""
    from datasets import Dataset

    rows = read_jsonl(path, limit)
    ds = Dataset.from_dict({
        "text1": [str(r["text1"]) for r in rows],
        "text2": [str(r["text2"]) for r in rows],
        "label": [float(r["label"]) for r in rows],
    })
    return ds.shuffle(seed=seed)


def time_trainer_train(timing: dict[str, Any]) -> None:
    """Wrap angle_emb's AngleTrainer.train so its wall time (and HF metrics) land in `timing`."""
    from angle_emb import angle as angle_mod

    original = angle_mod.AngleTrainer.train

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = original(self, *args, **kwargs)
        timing["train_s"] = time.perf_counter() - t0
        timing["hf_metrics"] = getattr(out, "metrics", None)
        return out

    angle_mod.AngleTrainer.train = timed


def save_st_folder(angle_dir: Path, st_dir: Path, pooling: str, maxlen: int) -> None:
    """Wrap angle-emb's saved backbone as a sentence-transformers folder with the recipe's pooling."""
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(angle_dir), max_seq_length=maxlen)
    mode = {"avg": "mean"}.get(pooling, pooling)
    hidden = json.loads((angle_dir / "config.json").read_text(encoding="utf-8"))["hidden_size"]
    pool = models.Pooling(hidden, pooling_mode=mode)
    SentenceTransformer(modules=[transformer, pool], device="cpu").save(str(st_dir))


def main(argv: list[str] | None = None) -> None:
    """Load, fit (timed), save angle-emb's output and an ST wrapper, write result.json."""
    args = parse_args(argv)
    setup_process(args.threads)
    import angle_emb
    import sentence_transformers
    import torch
    import transformers
    from angle_emb import AnglE

    out = Path(args.out)
    angle_dir, st_dir = out / "angle", out / "model"
    timing: dict[str, Any] = {}
    time_trainer_train(timing)

    t_load = time.perf_counter()
    angle = AnglE.from_pretrained(args.model, max_length=args.maxlen, pooling_strategy=args.pooling)
    train_ds = load_train(args.train, args.max_pairs, args.seed)
    load_s = time.perf_counter() - t_load
    param_dtype = str(next(angle.backbone.parameters()).dtype)

    t_fit = time.perf_counter()
    angle.fit(
        train_ds=train_ds,
        output_dir=str(angle_dir),
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=args.lr,
        warmup_steps=args.warmup_steps,
        save_strategy="no",
        gradient_accumulation_steps=1,
        loss_kwargs=README_LOSS_KWARGS,
        logging_steps=100,
        argument_kwargs={"report_to": "none", "seed": args.seed, "disable_tqdm": True, "use_cpu": True},
    )
    fit_s = time.perf_counter() - t_fit
    save_st_folder(angle_dir, st_dir, args.pooling, args.maxlen)

    write_json(out / "result.json", {
        "system": "angle-emb",
        "train_s": timing.get("train_s", fit_s),
        "train_s_source": "AngleTrainer.train" if "train_s" in timing else "fit() (train timer missing)",
        "fit_s": fit_s,
        "load_s": load_s,
        "pairs": len(train_ds) * args.epochs,
        "rows": len(train_ds),
        "epochs": args.epochs,
        "pooling": args.pooling,
        "model_dir": str(st_dir),
        "peak_rss_self": peak_rss_self_bytes(),
        "hf_metrics": timing.get("hf_metrics"),
        "threads": torch.get_num_threads(),
        "param_dtype": param_dtype,
        "loss_kwargs": README_LOSS_KWARGS,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "angle-emb": getattr(angle_emb, "__version__", "0.6.1"),
                     "sentence-transformers": sentence_transformers.__version__},
    })


if __name__ == "__main__":
    main()
