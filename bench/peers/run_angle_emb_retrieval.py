"""Peer runner: angle-emb 0.6.1 on BEIR (query, positive) pairs as its format B, with its README's format B
advice ("only tune ibn_w and ibn_tau": ibn_w 1, ibn_tau 20, its defaults; cosine/angle terms do not apply to B).
MiniLM's own mean pooling, lr 2e-5 (its README examples), warmup 10% of the steps. Runs in the peer venv:

    HF_HUB_OFFLINE=1 bench/.venv-peers/bin/python bench/peers/run_angle_emb_retrieval.py --model <minilm path> \
        --beir /work/shared/data/scifact --split train --epochs 3 --batch-size 32 --maxlen 256 \
        --out bench/results/retrieval/runs/angle_emb

Writes <out>/angle (angle-emb's output), <out>/model (a sentence-transformers wrapper) and <out>/result.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import peak_rss_self_bytes, read_beir_split, setup_process, write_json  # noqa: E402
from run_angle_emb import save_st_folder, time_trainer_train  # noqa: E402

LOSS_KWARGS = {"cosine_w": 0.0, "ibn_w": 1.0, "angle_w": 0.02, "ibn_tau": 20}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, kw in (("--model", {"required": True}), ("--beir", {"required": True}), ("--split", {"default": "train"}),
                     ("--out", {"required": True}), ("--epochs", {"type": int, "default": 3}),
                     ("--batch-size", {"type": int, "default": 32}), ("--lr", {"type": float, "default": 2e-5}),
                     ("--maxlen", {"type": int, "default": 256}), ("--max-pairs", {"type": int, "default": None}),
                     ("--threads", {"type": int, "default": 2}), ("--seed", {"type": int, "default": 42})):
        p.add_argument(name, **kw)
    args = p.parse_args(argv)
    setup_process(args.threads)
    import angle_emb
    import torch
    import transformers
    from angle_emb import AnglE
    from datasets import Dataset

    out = Path(args.out)
    timing: dict = {}
    time_trainer_train(timing)
    pairs = read_beir_split(args.beir, args.split)["pairs"][: args.max_pairs]
    ds = Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [d for _, d in pairs]}).shuffle(seed=args.seed)
    angle = AnglE.from_pretrained(args.model, max_length=args.maxlen, pooling_strategy="avg")
    steps = math.ceil(len(ds) / args.batch_size) * args.epochs
    t0 = time.perf_counter()
    angle.fit(train_ds=ds, output_dir=str(out / "angle"), batch_size=args.batch_size, epochs=args.epochs,
              learning_rate=args.lr, warmup_steps=max(1, steps // 10), save_strategy="no", logging_steps=10,
              loss_kwargs=LOSS_KWARGS, argument_kwargs={"report_to": "none", "seed": args.seed, "disable_tqdm": True,
                                                        "use_cpu": True})
    fit_s = time.perf_counter() - t0
    save_st_folder(out / "angle", out / "model", "mean", args.maxlen)
    write_json(out / "result.json", {
        "system": "angle-emb format B", "train_s": timing.get("train_s", fit_s), "fit_s": fit_s,
        "pairs": len(ds) * args.epochs, "rows": len(ds), "epochs": args.epochs, "pooling": "mean",
        "model_dir": str(out / "model"), "peak_rss_self": peak_rss_self_bytes(), "loss_kwargs": LOSS_KWARGS,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "angle-emb": getattr(angle_emb, "__version__", "0.6.1")},
    })


if __name__ == "__main__":
    main()
