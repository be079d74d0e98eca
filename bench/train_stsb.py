"""STS-B training benchmark: this trainer vs angle-emb 0.6.1 vs sentence-transformers, in one run.

    .venv/bin/python bench/train_stsb.py                                  # full run (> 1 hour)
    .venv/bin/python bench/train_stsb.py --budgets short --max-pairs 256  # smoke run
    .venv/bin/python bench/train_stsb.py --budgets short,classic \
        --systems ours,ours_bf16,angle_emb,st_angle,st_cosent,st_cosent_tuned \
        --out bench/results/train_stsb.md

Same model (all-MiniLM-L6-v2, local), same data (STS-B train), max length 64, 2 threads, at two
budgets: SHORT (1 epoch, batch 32) and CLASSIC (4 epochs, batch 16). Every system trains in its
own child process (ours: `python -m plugin.train --config <json>` in the main venv; the peers:
bench/peers/*.py in the peer venv bench/.venv-peers, created here when missing because
angle-emb pins transformers==5.3.0). Each child saves a model folder and reports its own
training wall time (model load, save and eval excluded); this process polls the peak RSS of
the child's process tree. Every saved model is then scored by ONE shared scorer
(bench/common.py: score_stsb; pooling as the recipe trained it, cosine, Spearman x100 on
STS-B test, max length 64). A 2048x2048 fp32/bf16 matmul is timed in the same run, so the
achieved model FLOP/s (6 x non-embedding params x real unpadded tokens/s) reads against it.
Prints one markdown table and writes it to --out (raw numbers next to it as .json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# bench/ for common.py, the repository root for plugin/.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from common import (  # noqa: E402
    BENCH_DIR,
    MAXLEN,
    REPO_DIR,
    STSB_DIR,
    THREADS,
    child_env,
    fmt,
    machine_line,
    markdown_table,
    matmul_peak_gflops,
    minilm_path,
    non_embedding_params,
    read_jsonl,
    real_tokens,
    run_child,
    score_stsb,
    setup_process,
    st_pooling,
    tail,
    write_json,
)

from plugin.config import TrainConfig  # noqa: E402
from plugin.quickstart import MULTI_EPOCH_A, RECOMMENDED_A  # noqa: E402

MODEL = minilm_path()
TRAIN = str(STSB_DIR / "train.jsonl")
BUDGETS: dict[str, dict[str, int]] = {
    "short": {"epochs": 1, "batch_size": 32},
    "classic": {"epochs": 4, "batch_size": 16},
}

# The STS-B test Spearman x100 targets for our recommended recipe.
QUALITY_TARGETS = {"short": 86.5, "classic": 87.5}

# Our recipe per budget: the recommended graded-pairs recipe of plugin/quickstart.py (what
# `main.py quickstart` trains), at each budget's epochs and batch size; save_dir and
# max_train_samples are filled per run. "ours_bf16" is the same plus "bf16": true.
_OUR_COMMON: dict[str, Any] = {
    **RECOMMENDED_A,
    "model_name_or_path": MODEL,
    "train_name_or_path": TRAIN,
    "maxlen": MAXLEN,
    "pooling_strategy": "mean",
    "eval_strategy": "no",
    "save_strategy": "no",
    "evaluate_before_training": False,
    "report_to": ["none"],
    "seed": 42,
}
OUR_RECIPES: dict[str, dict[str, Any]] = {
    "short": {**_OUR_COMMON, "epochs": 1, "batch_size": 32},
    "classic": {**_OUR_COMMON, **MULTI_EPOCH_A, "epochs": 4, "batch_size": 16},
}

# Peers' documented recipes (lr 2e-5, warmup 0) and the ST CoSENT recipe tuned by us.
# angle-emb: README "Option B: Python API" Format A example (see bench/peers/run_angle_emb.py).
ANGLE_EMB_POOLING = "cls"  # what the README recipe passes; MiniLM itself was trained mean-pooled
PEER_RECIPES: dict[str, dict[str, Any]] = {
    "angle_emb": {"lr": 2e-5, "warmup_steps": 0, "pooling": ANGLE_EMB_POOLING},
    # Optional (not in the default run): the same recipe with MiniLM's own mean pooling.
    "angle_emb_mean": {"lr": 2e-5, "warmup_steps": 0, "pooling": "mean"},
    "st_angle": {"loss": "angle", "lr": 2e-5, "warmup_ratio": 0.0},
    "st_cosent": {"loss": "cosent", "lr": 2e-5, "warmup_ratio": 0.0},
    "st_cosent_tuned": {"loss": "cosent", "lr": 8e-5, "warmup_ratio": 0.1},
}
# angle-emb runs with MiniLM's own mean pooling by default: its README recipe's cls pooling drops the
# zero-shot score from 82.03 to 73.50 on this model, which would make the peer look worse than it is.
SYSTEMS = ["ours", "ours_bf16", "angle_emb_mean", "st_angle", "st_cosent", "st_cosent_tuned"]
OPTIONAL_SYSTEMS = ["angle_emb"]
LABELS = {
    "zero_shot": "zero-shot MiniLM (no training)",
    "ours": "ours fp32",
    "ours_bf16": "ours bf16 autocast",
    "angle_emb": "angle-emb 0.6.1 (README Format A)",
    "angle_emb_mean": "angle-emb 0.6.1 (README Format A, mean pooling)",
    "st_angle": "ST AnglELoss (documented)",
    "st_cosent": "ST CoSENTLoss (documented)",
    "st_cosent_tuned": "ST CoSENTLoss (tuned by us)",
}

PEER_VENV = BENCH_DIR / ".venv-peers"
PEER_TORCH = "torch==2.13.0"  # pinned: an unpinned torch pulls a multi-GB CUDA build
# sentence-transformers 6.2.0 needs transformers>=5,<6: compatible with angle-emb's transformers==5.3.0.
PEER_PACKAGES = [PEER_TORCH, "angle-emb==0.6.1", "sentence-transformers==6.2.0"]
PEER_MARKER = PEER_VENV / ".bench-packages"


@dataclass
class Run:
    """One system at one budget: what it reported, what we measured, its score."""

    budget: str
    system: str
    recipe: str
    pooling: str = "mean"
    model_dir: str | None = None
    pairs: int = 0
    train_s: float | None = None
    train_s_note: str = ""
    wall_s: float | None = None
    peak_rss: int | None = None
    test: float | None = None
    dev: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs_per_s(self) -> float | None:
        return self.pairs / self.train_s if self.train_s else None


# --------------------------------------------------------------------- peer venv
def peer_python() -> Path:
    """Interpreter of the peer venv."""
    return PEER_VENV / "bin" / "python"


def ensure_peer_venv() -> None:
    """Create bench/.venv-peers with angle-emb + sentence-transformers (CPU torch) unless present."""
    wanted = "\n".join(PEER_PACKAGES)
    if peer_python().exists() and PEER_MARKER.exists() and PEER_MARKER.read_text() == wanted:
        return
    log = BENCH_DIR / "results" / "peer-venv-install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"creating peer venv {PEER_VENV} ({', '.join(PEER_PACKAGES)}); log: {log}", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(PEER_VENV)],
        [str(peer_python()), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(peer_python()), "-m", "pip", "install", "-q", PEER_TORCH],
        [str(peer_python()), "-m", "pip", "install", "-q", *PEER_PACKAGES],
    ]
    if peer_python().exists():
        steps = steps[1:]
    with open(log, "a", encoding="utf-8") as fh:
        for cmd in steps:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                raise SystemExit(f"peer venv install failed: {' '.join(cmd)}\n{tail(log)}")
    PEER_MARKER.write_text(wanted)


# ------------------------------------------------------------------- commands
def our_command(run_dir: Path, budget: str, bf16: bool, max_pairs: int | None,
                override: dict[str, Any] | None = None) -> tuple[list[str], dict[str, Any]]:
    """`python -m plugin.train --config <run_dir>/config.json` for our recipe at `budget`, plus `override`."""
    cfg = {**OUR_RECIPES[budget], **(override or {}), "save_dir": str(run_dir / "model")}
    if bf16:
        cfg["bf16"] = True
    if max_pairs:
        cfg["max_train_samples"] = max_pairs
    write_json(run_dir / "config.json", cfg)
    return [sys.executable, "-m", "plugin.train", "--config", str(run_dir / "config.json")], cfg


def angle_emb_command(run_dir: Path, system: str, budget: str, max_pairs: int | None) -> list[str]:
    """bench/peers/run_angle_emb.py in the peer venv."""
    r, b = PEER_RECIPES[system], BUDGETS[budget]
    cmd = [str(peer_python()), str(BENCH_DIR / "peers" / "run_angle_emb.py"), "--model", MODEL,
           "--train", TRAIN, "--out", str(run_dir), "--epochs", str(b["epochs"]),
           "--batch-size", str(b["batch_size"]), "--lr", str(r["lr"]), "--warmup-steps", str(r["warmup_steps"]),
           "--maxlen", str(MAXLEN), "--pooling", r["pooling"], "--threads", str(THREADS)]
    return cmd + (["--max-pairs", str(max_pairs)] if max_pairs else [])


def st_command(run_dir: Path, system: str, budget: str, max_pairs: int | None) -> list[str]:
    """bench/peers/run_st.py in the peer venv."""
    r, b = PEER_RECIPES[system], BUDGETS[budget]
    cmd = [str(peer_python()), str(BENCH_DIR / "peers" / "run_st.py"), "--model", MODEL, "--train", TRAIN,
           "--out", str(run_dir), "--loss", r["loss"], "--epochs", str(b["epochs"]),
           "--batch-size", str(b["batch_size"]), "--lr", str(r["lr"]), "--warmup-ratio", str(r["warmup_ratio"]),
           "--maxlen", str(MAXLEN), "--threads", str(THREADS)]
    return cmd + (["--max-pairs", str(max_pairs)] if max_pairs else [])


def recipe_text(system: str, budget: str) -> str:
    """Short human description of a system's recipe at `budget`."""
    b = BUDGETS[budget]
    head = f"{b['epochs']} ep, bs {b['batch_size']}"
    if system.startswith("ours"):
        r = OUR_RECIPES[budget]
        warm = f"warmup {r.get('warmup_ratio', 0):.0%}" if r.get("warmup_ratio") else f"warmup {r.get('warmup_steps', 0)} st"
        losses = ", ".join(f"{k[:-2]} {r[k]:g}" for k in ("cosine_w", "ibn_w", "angle_w") if r.get(k))
        dropout = f", dropout {r['backbone_dropout']:g}" if r.get("backbone_dropout") is not None else ""
        extras = ", embeddings frozen" if r.get("freeze_embeddings") else ""
        extras += f", EMA {r['ema_decay']:g}" if r.get("ema_decay") else ""
        extras += f", WiSE-FT {r['wise_alpha']:g}" if r.get("wise_alpha", 1.0) < 1.0 else ""
        bf16 = system == "ours_bf16"
        # The padding multiple is TrainConfig's own default for this precision (8 under bf16, 1 in fp32).
        pad = TrainConfig(**r, bf16=bf16).effective_pad_multiple
        extras += ", bf16" if bf16 else ""
        extras += f" (pad to x{pad})" if pad > 1 else ""
        return f"{head}, lr {r['learning_rate']:g}, {warm}, {losses}{dropout}{extras}"
    r = PEER_RECIPES[system]
    if system.startswith("angle_emb"):
        return f"{head}, lr {r['lr']:g}, warmup {r['warmup_steps']}, cosine 1, ibn 1, angle 0.02"
    return f"{head}, lr {r['lr']:g}, warmup {r['warmup_ratio']:.0%}, {r['loss']}"


# ------------------------------------------------------------------- one run
def load_estimate_s() -> float:
    """Seconds a main-venv child needs to import torch/transformers and load MiniLM (fallback timing)."""
    code = ("import time; t=time.perf_counter(); import torch, transformers; "
            "from transformers import AutoModel, AutoTokenizer; "
            f"AutoModel.from_pretrained({MODEL!r}); AutoTokenizer.from_pretrained({MODEL!r}); "
            "print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0.0


def collect_ours(run: Run, run_dir: Path, cfg: dict[str, Any], n_rows: int, load_s: Callable[[], float]) -> None:
    """Fill `run` from our trainer's <save_dir>/metrics.json (train_runtime), or a marked estimate."""
    save_dir = Path(cfg["save_dir"])
    metrics = json.loads((save_dir / "metrics.json").read_text()) if (save_dir / "metrics.json").exists() else {}
    run.model_dir = str(save_dir)
    run.pooling = st_pooling(save_dir) or cfg.get("pooling_strategy", "mean")
    run.pairs = n_rows * cfg["epochs"]
    run.extra["metrics"] = metrics
    if "train_runtime" in metrics:
        run.train_s = float(metrics["train_runtime"])
    elif metrics.get("train_pairs_per_second") or metrics.get("train_samples_per_second"):
        run.train_s = run.pairs / float(metrics.get("train_pairs_per_second") or metrics["train_samples_per_second"])
    else:
        run.train_s = max(1e-9, (run.wall_s or 0.0) - load_s())
        run.train_s_note = "~ (child wall minus load estimate)"


def collect_peer(run: Run, run_dir: Path) -> None:
    """Fill `run` from a peer runner's result.json."""
    result = json.loads((run_dir / "result.json").read_text())
    run.model_dir = result["model_dir"]
    run.pooling = result["pooling"]
    run.pairs = int(result["pairs"])
    run.train_s = float(result["train_s"])
    run.peak_rss = max(run.peak_rss or 0, int(result.get("peak_rss_self") or 0))
    run.extra["result"] = result


def run_system(system: str, budget: str, out_root: Path, n_rows: int, max_pairs: int | None,
               load_s: Callable[[], float], ours_override: dict[str, Any] | None = None) -> Run:
    """Train `system` at `budget` in a child process (ours with `ours_override` merged in).

    Time, peak RSS and model folder go into a Run.
    """
    run_dir = out_root / "runs" / budget / system
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").unlink(missing_ok=True)
    run = Run(budget=budget, system=system, recipe=recipe_text(system, budget))
    cfg: dict[str, Any] = {}
    if system.startswith("ours"):
        cmd, cfg = our_command(run_dir, budget, system == "ours_bf16", max_pairs, ours_override)
        (Path(cfg["save_dir"]) / "metrics.json").unlink(missing_ok=True)
    elif system.startswith("angle_emb"):
        cmd = angle_emb_command(run_dir, system, budget, max_pairs)
    else:
        cmd = st_command(run_dir, system, budget, max_pairs)
    print(f"[{budget}] {system}: {' '.join(cmd)}", flush=True)
    child = run_child(cmd, child_env(), run_dir / "log.txt")
    run.wall_s, run.peak_rss = child.wall_s, child.peak_tree_rss
    if child.returncode != 0:
        run.error = f"exit {child.returncode}; see {run_dir / 'log.txt'}"
        print(f"[{budget}] {system} FAILED ({run.error})\n{tail(run_dir / 'log.txt')}", flush=True)
        return run
    try:
        if system.startswith("ours"):
            collect_ours(run, run_dir, cfg, n_rows, load_s)
        else:
            collect_peer(run, run_dir)
    except (OSError, KeyError, ValueError) as e:
        run.error = f"no result: {e}"
    print(f"[{budget}] {system}: {fmt(run.pairs_per_s)} pairs/s, train {fmt(run.train_s)} s, "
          f"wall {run.wall_s:.0f} s, peak {run.peak_rss / 1e9:.2f} GB", flush=True)
    return run


# ----------------------------------------------------------------- scoring
def score_runs(runs: list[Run], with_dev: bool) -> None:
    """Score every trained model with the shared scorer (same process, one after another)."""
    for run in runs:
        if run.error or not run.model_dir:
            continue
        try:
            run.test = score_stsb(run.model_dir, run.pooling, "test")
            if with_dev:
                run.dev = score_stsb(run.model_dir, run.pooling, "dev")
        except Exception as e:  # noqa: BLE001 - one broken folder must not lose the table
            run.error = f"scoring failed: {e}"
        print(f"scored {run.budget}/{run.system} ({run.pooling}): test {fmt(run.test, '.2f')}", flush=True)


# ------------------------------------------------------------------- table
@dataclass
class Context:
    """Run-wide measurements the table reads against."""

    peak_fp32: float
    peak_bf16: float
    n_rows: int
    tokens_per_epoch: int
    ne_params: int
    max_pairs: int | None
    start_peaks: tuple[float, float] = (0.0, 0.0)
    end_peaks: tuple[float, float] = (0.0, 0.0)


def model_gflops(run: Run, ctx: Context) -> float | None:
    """Achieved model GFLOP/s: 6 x non-embedding params x real tokens processed / train seconds."""
    if not run.train_s or run.budget == "-":
        return None
    epochs = BUDGETS[run.budget]["epochs"]
    return 6.0 * ctx.ne_params * ctx.tokens_per_epoch * epochs / run.train_s / 1e9


def ratio(a: float | None, b: float | None) -> str:
    """a / b formatted as '1.23x', or '-'."""
    return f"{a / b:.2f}x" if a and b else "-"


def table_rows(runs: list[Run], zero_shots: list[Run], ctx: Context) -> list[list[str]]:
    """Markdown rows: zero-shot (one per pooling in use) first, then each budget's systems."""
    rows = [["-", LABELS["zero_shot"], "-", z.pooling, "-", "-", "-", "-", "-",
             fmt(z.test, ".2f"), fmt(z.dev, ".2f"), "-", "-"] for z in zero_shots]
    for run in runs:
        same = {r.system: r for r in runs if r.budget == run.budget and not r.error}
        ref = same.get("angle_emb_mean") or same.get("angle_emb")  # as in target_lines
        gf = model_gflops(run, ctx)
        peak = ctx.peak_bf16 if run.system == "ours_bf16" else ctx.peak_fp32
        name = LABELS[run.system] + (f" — FAILED: {run.error}" if run.error else "")
        pps = fmt(run.pairs_per_s) + ("~" if run.train_s_note else "")
        rows.append([
            run.budget, name, run.recipe, run.pooling, pps,
            ratio(run.pairs_per_s, ref.pairs_per_s if ref else None), fmt(run.train_s, ".0f"),
            fmt(run.peak_rss / 1e9 if run.peak_rss else None, ".2f"),
            ratio(run.peak_rss, ref.peak_rss if ref else None),
            fmt(run.test, ".2f"), fmt(run.dev, ".2f"),
            fmt(gf), f"{100 * gf / peak:.0f}% of {'bf16' if run.system == 'ours_bf16' else 'fp32'}" if gf else "-",
        ])
    return rows


def target_lines(runs: list[Run]) -> list[str]:
    """The issue's targets per budget, checked: ours vs angle-emb speed/memory, bf16 quality, the bar."""
    lines = []
    for budget in dict.fromkeys(r.budget for r in runs):
        by = {r.system: r for r in runs if r.budget == budget and not r.error}
        # Speed and memory compare against angle-emb with MiniLM's own (mean) pooling when it ran:
        # pooling does not change its cost, and it is the row whose quality is comparable.
        ae = by.get("angle_emb_mean") or by.get("angle_emb")
        ours, bf, bar = (by.get(k) for k in ("ours", "ours_bf16", "st_cosent_tuned"))
        checks = []
        if ae and ours and ae.pairs_per_s and ours.pairs_per_s:
            x = ours.pairs_per_s / ae.pairs_per_s
            checks.append(f"fp32 speed {x:.2f}x angle-emb (target >= 1.6x: {'PASS' if x >= 1.6 else 'FAIL'})")
        if ae and bf and ae.pairs_per_s and bf.pairs_per_s:
            x = bf.pairs_per_s / ae.pairs_per_s
            ok = x >= 2.5
            if ours and ours.test is not None and bf.test is not None:
                d = bf.test - ours.test
                ok = ok and abs(d) <= 0.3
                checks.append(f"bf16 speed {x:.2f}x angle-emb, Spearman {d:+.2f} vs fp32 "
                              f"(target >= 2.5x within 0.3: {'PASS' if ok else 'FAIL'})")
            else:
                checks.append(f"bf16 speed {x:.2f}x angle-emb (quality not scored)")
        for r in (ours, bf):
            if ae and r and ae.peak_rss and r.peak_rss:
                x = r.peak_rss / ae.peak_rss
                checks.append(f"{r.system} peak RSS {x:.2f}x angle-emb (target <= 0.7x: {'PASS' if x <= 0.7 else 'FAIL'})")
        goal = QUALITY_TARGETS[budget]
        for r in (ours, bf):
            if r and r.test is not None:
                checks.append(f"{r.system} test {r.test:.2f} (target >= {goal}: {'PASS' if r.test >= goal else 'FAIL'})")
                if bar and bar.test is not None:
                    checks.append(f"{r.system} test {r.test - bar.test:+.2f} vs tuned ST CoSENT (the bar)")
        if checks:
            lines.append(f"- {budget}: " + "; ".join(checks))
    return lines


def peak_lines(ctx: Context) -> list[str]:
    """The matmul peaks measured before and after the runs (a large gap means a noisy CPU)."""
    (f0, b0), (f1, b1) = ctx.start_peaks, ctx.end_peaks
    lines = [f"- matmul peak (2048x2048, best of 10, this run; before / after the runs): fp32 {f0:.0f} / {f1:.0f}, "
             f"bf16 {b0:.0f} / {b1:.0f} GFLOP/s; % of peak below uses the higher one"]
    if min(f0, f1) < 0.85 * max(f0, f1) or min(b0, b1) < 0.85 * max(b0, b1):
        lines.append("- **WARNING: the matmul peak moved by more than 15% during the run: the CPU was shared; "
                     "rerun on a quiet machine before trusting speed ratios**")
    return lines


def render(runs: list[Run], zero_shots: list[Run], ctx: Context) -> str:
    """The whole markdown report."""
    headers = ["Budget", "System", "Recipe", "Pooling", "Pairs/s", "vs angle-emb", "Train s", "Peak RSS GB",
               "RSS vs angle-emb", "Test Spearman x100", "Dev", "Model GFLOP/s", "of matmul peak"]
    gflop_pair = 6.0 * ctx.ne_params * ctx.tokens_per_epoch / ctx.n_rows / 1e9
    head = [
        "# STS-B training benchmark (bench/train_stsb.py)",
        "",
        f"- {machine_line()}; model all-MiniLM-L6-v2, max length {MAXLEN}",
        *peak_lines(ctx),
        f"- STS-B train: {ctx.n_rows} pairs, {ctx.tokens_per_epoch / ctx.n_rows:.1f} real tokens per pair; "
        f"{ctx.ne_params / 1e6:.2f}M non-embedding params -> {gflop_pair:.2f} GFLOP per pair (6 N T)",
        "- Pairs/s: training pairs / training wall time (model load, save, eval excluded); "
        "peak RSS: the child's whole process tree; Spearman: one shared scorer (cosine, pooling as trained)",
    ]
    if ctx.max_pairs:
        head.append(f"- **SMOKE RUN: first {ctx.max_pairs} training pairs only; numbers are not the benchmark**")
    if any(r.train_s_note for r in runs):
        head.append("- `~`: our trainer wrote no train_runtime; time = child wall minus a model-load estimate")
    targets = target_lines(runs)
    body = markdown_table(headers, table_rows(runs, zero_shots, ctx))
    return "\n".join(head + ["", body, ""] + (["Targets:", *targets, ""] if targets else []))


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="short,classic", help="comma list of: " + ",".join(BUDGETS))
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma list of: " + ",".join(SYSTEMS + OPTIONAL_SYSTEMS) + " (default: all but the last)")
    p.add_argument("--skip", default="", help="comma list of budget:system runs to leave out, e.g. classic:st_angle")
    p.add_argument("--max-pairs", type=int, default=None, help="train on the first N pairs only (smoke runs)")
    p.add_argument("--dev", action="store_true", help="also score STS-B dev")
    p.add_argument("--ours-override", default=None, help='JSON merged into our recipes, e.g. \'{"host_memory": "reuse"}\'')
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "train_stsb.md"))
    args = p.parse_args(argv)
    args.budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [b for b in args.budgets if b not in BUDGETS] + [s for s in args.systems if s not in SYSTEMS + OPTIONAL_SYSTEMS]
    args.skip = {tuple(x.strip().split(":", 1)) for x in args.skip.split(",") if x.strip()}
    bad += [":".join(x) for x in args.skip if len(x) != 2 or x[0] not in args.budgets or x[1] not in args.systems]
    if bad:
        p.error(f"unknown budget/system: {', '.join(bad)}")
    try:
        args.ours_override = json.loads(args.ours_override) if args.ours_override else None
    except json.JSONDecodeError as e:
        p.error(f"--ours-override is not JSON: {e}")
    if args.ours_override is not None and not isinstance(args.ours_override, dict):
        p.error("--ours-override must be a JSON object")
    return args


def matmul_peaks(with_bf16: bool) -> tuple[float, float]:
    """fp32 and bf16 matmul peaks; bf16 only when a bf16 run needs it (0.0 otherwise: on a CPU
    without AVX512-BF16/AMX, bf16 matmuls are emulated and take minutes at this size)."""
    return matmul_peak_gflops("float32"), matmul_peak_gflops("bfloat16") if with_bf16 else 0.0


def measure_context(max_pairs: int | None, with_bf16: bool = True) -> Context:
    """Matmul peaks and the FLOP model's inputs (rows, real tokens, non-embedding params)."""
    rows = read_jsonl(TRAIN, max_pairs)
    f32, b16 = matmul_peaks(with_bf16)
    return Context(
        peak_fp32=f32, peak_bf16=b16, start_peaks=(f32, b16),
        n_rows=len(rows), tokens_per_epoch=real_tokens(MODEL, rows, MAXLEN),
        ne_params=non_embedding_params(MODEL), max_pairs=max_pairs,
    )


def main(argv: list[str] | None = None) -> None:
    """Train every (budget, system), score, print and write the table."""
    args = parse_args(argv)
    setup_process(THREADS)
    os.chdir(REPO_DIR)
    out = Path(args.out)
    out_root = out.parent
    if any(not s.startswith("ours") for s in args.systems):
        ensure_peer_venv()
    ctx = measure_context(args.max_pairs, "ours_bf16" in args.systems)
    print(f"matmul peak fp32 {ctx.peak_fp32:.0f} / bf16 {ctx.peak_bf16:.0f} GFLOP/s; "
          f"{ctx.n_rows} pairs, {ctx.tokens_per_epoch} real tokens/epoch", flush=True)
    cache: dict[str, float] = {}

    def load_s() -> float:
        if "v" not in cache:
            cache["v"] = load_estimate_s()
        return cache["v"]

    t0 = time.perf_counter()
    runs = [run_system(s, b, out_root, ctx.n_rows, args.max_pairs, load_s, args.ours_override)
            for b in args.budgets for s in args.systems if (b, s) not in args.skip]
    # Re-measure the peak after the runs; keep the higher one (the less disturbed).
    ctx.end_peaks = matmul_peaks("ours_bf16" in args.systems)
    ctx.peak_fp32, ctx.peak_bf16 = max(ctx.peak_fp32, ctx.end_peaks[0]), max(ctx.peak_bf16, ctx.end_peaks[1])
    poolings = dict.fromkeys(["mean", *(r.pooling for r in runs if not r.error)])
    zero_shots = [Run(budget="-", system="zero_shot", recipe="-", pooling=p, model_dir=MODEL) for p in poolings]
    score_runs([*zero_shots, *runs], args.dev)
    report = render(runs, zero_shots, ctx) + f"\nTotal wall time: {time.perf_counter() - t0:.0f} s\n"
    print("\n" + report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    write_json(out.with_suffix(".json"), {"context": ctx.__dict__, "zero_shot": [z.__dict__ for z in zero_shots],
                                          "runs": [r.__dict__ | {"pairs_per_s": r.pairs_per_s} for r in runs]})
    print(f"written {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
