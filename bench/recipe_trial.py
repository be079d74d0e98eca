"""One variant of our STS-B recipe at a bench budget: train, then score test and dev with the shared scorer.

    .venv/bin/python bench/recipe_trial.py --budget classic --set distill_w=1.0
    .venv/bin/python bench/recipe_trial.py --budget classic --set valid_name_or_path=../shared/data/stsb/dev.jsonl \\
        --set eval_strategy=steps --set eval_steps=180 --set save_strategy=steps --set save_steps=180 --wise 0.85,0.7
    .venv/bin/python bench/recipe_trial.py --budget short --max-pairs 256      # smoke run

Starts from bench/train_stsb.py's OUR_RECIPES[budget] (the recommended graded-pairs recipe at that
budget's epochs and batch size) and applies each `--set key=value` (parsed as JSON when it parses,
TrainConfig validates it). `--wise a,b,...` also scores weight averages a * tuned + (1 - a) * start
(WiSE-FT). Appends one line per score to bench/results/recipe_trials.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_DIR, peak_rss_self_bytes, score_stsb, setup_process, transformer_dir  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def averaged(start_dir: str, tuned_dir: str, alpha: float, out: Path) -> Path:
    """A plain transformers folder with alpha * tuned + (1 - alpha) * start weights (WiSE-FT)."""
    from transformers import AutoModel

    start, tuned = AutoModel.from_pretrained(start_dir), AutoModel.from_pretrained(tuned_dir)
    a, b = start.state_dict(), tuned.state_dict()
    tuned.load_state_dict({k: alpha * b[k] + (1 - alpha) * a[k] if b[k].is_floating_point() else b[k] for k in b})
    tuned.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (Path(tuned_dir) / name).exists():
            shutil.copy(Path(tuned_dir) / name, out)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="classic", choices=["short", "classic"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one recipe key")
    p.add_argument("--wise", default="", help="comma list of weight-average factors to score too")
    p.add_argument("--max-pairs", type=int, default=None, help="train on the first N pairs only (smoke runs)")
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "recipe_trials.jsonl"))
    args = p.parse_args()
    setup_process()
    from train_stsb import MODEL, OUR_RECIPES

    from plugin.config import TrainConfig
    from plugin.trainer import train

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = _value(value)
    if args.wise and overrides.get("apply_lora"):
        p.error("--wise averages full weights, but apply_lora saves an adapter folder: pass --wise ''")
    save_dir = Path(tempfile.mkdtemp(prefix="recipe-trial-"))
    config = {**OUR_RECIPES[args.budget], "save_dir": str(save_dir), **overrides}
    if args.max_pairs:
        config["max_train_samples"] = args.max_pairs
    t0 = time.perf_counter()
    result = train(TrainConfig(**config))
    wall = time.perf_counter() - t0
    # Peak RSS of this process up to the end of training (scoring below adds little).
    peak_gb = round(peak_rss_self_bytes() / 1e9, 2)
    pairs_s = round(result.metrics.get("train_pairs_per_second", 0.0), 1)
    candidates = [(1.0, str(save_dir))] + [
        (a, str(averaged(MODEL, str(transformer_dir(save_dir)), a, save_dir / f"wise-{a}")))
        for a in (float(x) for x in args.wise.split(",") if x.strip())]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for alpha, model_dir in candidates:
        row = {"budget": args.budget, "overrides": overrides, "wise_alpha": alpha, "max_pairs": args.max_pairs,
               "test": round(score_stsb(model_dir, "mean", "test"), 2),
               "dev": round(score_stsb(model_dir, "mean", "dev"), 2), "train_wall_s": round(wall), "peak_rss_gb": peak_gb,
               "train_pairs_s": pairs_s,
               "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(json.dumps(row), flush=True)
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    print(f"model: {save_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
