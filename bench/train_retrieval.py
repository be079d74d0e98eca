"""Retrieval fine-tuning benchmark: ours vs sentence-transformers MNRL / CachedMNRL vs angle-emb 0.6.1 vs FlagEmbedding
1.4.2, in one run.

    .venv/bin/python bench/train_retrieval.py                          # full run: SciFact train -> dev (hours on 2 CPUs)
    .venv/bin/python bench/train_retrieval.py --eval ../shared/data/scifact --split dev \
        --systems zero_shot,ours,st_mnrl --out bench/results/train_retrieval.md
    .venv/bin/python bench/train_retrieval.py --max-pairs 32 --max-docs 300 --maxlen 64 --epochs 1   # smoke run

Same model (all-MiniLM-L6-v2, local), same training pairs (--train DIR, qrels/--train-split: one (query,
"title text") pair per relevant judgement), max length 256, 2 threads. Each system trains in its own child
process (ours: `python -m plugin.train --config` in the main venv with plugin/quickstart.py's RECOMMENDED_B, or
RECOMMENDED_MINED with ours_hn; the peers: bench/peers/*_retrieval.py in the peer venv bench/.venv-peers, made by
bench/train_stsb.py's ensure_peer_venv, plus FlagEmbedding and faiss-cpu for flag_embedding, installed here when
missing). Each child reports its own training wall time (model load, mining, save and
evaluation excluded); this process polls the peak RSS of the child's process tree. Every saved model is then scored
by ONE shared scorer (bench/common.py score_beir: every query of --eval/qrels/--split ranks the whole corpus, exact
cosine search, fp32, each system's pooling and prompts, max length 256). Prints one markdown table, writes it to --out.

flag_embedding: FlagEmbedding's own encoder-only fine-tuning (FlagEmbedding.finetune.embedder.encoder_only.base, its
runner and trainer, one CPU process, fp32) on one {"query", "pos", "neg"} line per training query, the negatives
mined first with the starting model the way its scripts/hn_mine.py does (faiss IndexFlatIP, ranks 10-100, 15 per
query); temperature 0.02, train_group_size 8, mean pooling, and the epochs, batch size, learning rate and warmup of
its README example (bench/peers/run_flag_retrieval.py says what is kept and left out). Its pairs/s counts one
(query, positive) example per query per epoch, each also carrying 7 negatives.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from common import (  # noqa: E402
    BENCH_DIR,
    REPO_DIR,
    SCIFACT_DIR,
    THREADS,
    child_env,
    fmt,
    machine_line,
    markdown_table,
    minilm_path,
    read_beir_split,
    run_child,
    score_beir,
    setup_process,
    tail,
    write_json,
)

from plugin.quickstart import RECOMMENDED_B, RECOMMENDED_MINED  # noqa: E402

MODEL = minilm_path()
SYSTEMS = ["zero_shot", "ours", "ours_hn", "st_mnrl", "st_cmnrl", "angle_emb", "flag_embedding"]
LABELS = {
    "zero_shot": "zero-shot MiniLM (no training)",
    "ours": "ours (RECOMMENDED_B)",
    "ours_hn": "ours + mined hard negatives (RECOMMENDED_MINED)",
    "st_mnrl": "ST MNRL (Transformer Lab plugin defaults)",
    "st_cmnrl": "ST CachedMNRL (our batch size)",
    "angle_emb": "angle-emb 0.6.1 format B (README advice)",
    "flag_embedding": "FlagEmbedding 1.4.2 encoder fine-tuning + its mined negatives (README example)",
}
PEERS = ["st_mnrl", "st_cmnrl", "angle_emb", "flag_embedding"]
FLAG_PACKAGES = ["FlagEmbedding==1.4.2", "faiss-cpu==1.15.1"]  # in the peer venv, for flag_embedding only


@dataclass
class Run:
    system: str
    recipe: str = "-"
    model_dir: str | None = None
    pooling: str = "mean"
    query_prompt: str | None = None
    doc_prompt: str | None = None
    pairs: int = 0
    epochs: int = 0
    train_s: float | None = None
    wall_s: float | None = None
    peak_rss: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs_per_s(self) -> float | None:
        return self.pairs / self.train_s if self.train_s else None


def our_recipe(system: str, args: argparse.Namespace) -> dict[str, Any]:
    base = RECOMMENDED_MINED if system == "ours_hn" else RECOMMENDED_B
    cfg = {**base, **json.loads(args.ours_override or "{}")}
    if args.epochs:
        cfg["epochs"] = args.epochs
    return {**cfg, "model_name_or_path": MODEL, "train_name_or_path": str(args.train), "train_split_name": args.train_split,
            "maxlen": args.maxlen, "pooling_strategy": "mean", "eval_strategy": "no", "save_strategy": "no",
            "evaluate_before_training": False, "report_to": ["none"], "seed": args.seed,
            **({"max_train_samples": args.max_pairs} if args.max_pairs else {})}


def command(system: str, run_dir: Path, args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """The child's command line and the recipe it runs."""
    from train_stsb import peer_python

    peers = BENCH_DIR / "peers"
    common = ["--model", MODEL, "--beir", str(args.train), "--split", args.train_split, "--out", str(run_dir),
              "--maxlen", str(args.maxlen), "--threads", str(args.threads), "--seed", str(args.seed),
              *(["--max-pairs", str(args.max_pairs)] if args.max_pairs else [])]
    if system.startswith("ours"):
        cfg = {**our_recipe(system, args), "save_dir": str(run_dir / "model")}
        write_json(run_dir / "config.json", cfg)
        return [sys.executable, "-m", "plugin.train", "--config", str(run_dir / "config.json")], cfg
    if system == "st_mnrl":  # Transformer Lab's embedding plugin defaults
        cfg = {"loss": "mnrl", "epochs": args.epochs or 3, "batch_size": 16, "lr": 2e-5, "warmup_ratio": 0.1}
    elif system == "st_cmnrl":  # our batch size and GradCache chunk
        cfg = {"loss": "cmnrl", "epochs": args.epochs or RECOMMENDED_B["epochs"],
               "batch_size": RECOMMENDED_B["batch_size"], "mini_batch_size": RECOMMENDED_B.get("mini_batch_size") or 16,
               "lr": 2e-5, "warmup_ratio": 0.1}
    elif system == "flag_embedding":
        # FlagEmbedding's examples/finetune/embedder/README.md, "3. Train / (1) standard model": num_train_epochs 2,
        # per_device_train_batch_size 2, learning_rate 1e-5, warmup_ratio 0.1, train_group_size 8, temperature 0.02;
        # scripts/hn_mine.py with range_for_sampling 10-100 (the README shows 2-200; 10-100 as ours_hn) x 15.
        cfg = {"epochs": args.epochs or 2, "batch_size": 2, "lr": 1e-5, "warmup_ratio": 0.1, "group_size": 8,
               "temperature": 0.02, "mine_range": "10-100", "mine_number": 15}
        return [str(peer_python()), str(peers / "run_flag_retrieval.py"), *common,
                "--epochs", str(cfg["epochs"]), "--batch-size", str(cfg["batch_size"]), "--lr", str(cfg["lr"]),
                "--warmup-ratio", str(cfg["warmup_ratio"]), "--group-size", str(cfg["group_size"]),
                "--temperature", str(cfg["temperature"]), "--mine-range", cfg["mine_range"],
                "--mine-number", str(cfg["mine_number"]),
                *(["--max-docs", str(args.max_docs)] if args.max_docs else [])], cfg
    else:
        cfg = {"epochs": args.epochs or 3, "batch_size": 32, "lr": 2e-5}
        return [str(peer_python()), str(peers / "run_angle_emb_retrieval.py"), *common,
                "--epochs", str(cfg["epochs"]), "--batch-size", str(cfg["batch_size"]), "--lr", str(cfg["lr"])], cfg
    return [str(peer_python()), str(peers / "run_st_retrieval.py"), *common, "--loss", cfg["loss"],
            "--epochs", str(cfg["epochs"]), "--batch-size", str(cfg["batch_size"]), "--lr", str(cfg["lr"]),
            "--warmup-ratio", str(cfg["warmup_ratio"]),
            *(["--mini-batch-size", str(cfg["mini_batch_size"])] if "mini_batch_size" in cfg else [])], cfg


def recipe_text(system: str, cfg: dict[str, Any]) -> str:
    if system.startswith("ours"):
        cache = f"GradCache {cfg['mini_batch_size']}" if cfg.get("mini_batch_size") else "no GradCache"
        text = (f"{cfg['epochs']} ep, bs {cfg['batch_size']} ({cache}), "
                f"lr {cfg['learning_rate']:g}, warmup {cfg['warmup_ratio']:.0%}, ibn_tau {cfg['ibn_tau']:g}")
        if cfg.get("mine_hard_negatives"):
            text += (f", mined ranks {cfg['mine_range_for_sampling']} x{cfg['mine_negative_number']}, "
                     f"group {cfg['train_group_size']}")
        return text
    if system == "flag_embedding":
        return (f"{cfg['epochs']} ep, bs {cfg['batch_size']} x group {cfg['group_size']}, lr {cfg['lr']:g}, "
                f"warmup {cfg['warmup_ratio']:.0%}, temp {cfg['temperature']:g}, "
                f"mined ranks {cfg['mine_range']} x{cfg['mine_number']}")
    extra = f" (mini {cfg['mini_batch_size']})" if "mini_batch_size" in cfg else ""
    return f"{cfg['epochs']} ep, bs {cfg['batch_size']}{extra}, lr {cfg['lr']:g}" + (
        f", warmup {cfg['warmup_ratio']:.0%}, NO_DUPLICATES" if "warmup_ratio" in cfg else ", warmup 10%, ibn_tau 20")


def train_system(system: str, args: argparse.Namespace, out_root: Path) -> Run:
    run = Run(system=system)
    if system == "zero_shot":
        run.model_dir = MODEL
        return run
    run_dir = out_root / "runs" / system
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").unlink(missing_ok=True)
    cmd, cfg = command(system, run_dir, args)
    run.recipe, run.epochs = recipe_text(system, cfg), int(cfg["epochs"])
    print(f"{system}: {' '.join(cmd)}", flush=True)
    child = run_child(cmd, child_env(args.threads), run_dir / "log.txt")
    run.wall_s, run.peak_rss = child.wall_s, child.peak_tree_rss
    if child.returncode != 0:
        run.error = f"exit {child.returncode}; see {run_dir / 'log.txt'}"
        print(f"{system} FAILED\n{tail(run_dir / 'log.txt')}", flush=True)
        return run
    try:
        if system.startswith("ours"):
            metrics = json.loads((run_dir / "model" / "metrics.json").read_text())
            run.model_dir, run.train_s = str(run_dir / "model"), float(metrics["train_runtime"])
            run.pairs = args.n_pairs * run.epochs
            run.query_prompt, run.doc_prompt = cfg.get("query_prompt"), cfg.get("doc_prompt")
            run.extra["metrics"] = metrics
        else:
            result = json.loads((run_dir / "result.json").read_text())
            run.model_dir, run.pooling = result["model_dir"], result["pooling"]
            run.pairs, run.train_s = int(result["pairs"]), float(result["train_s"])
            run.peak_rss = max(run.peak_rss or 0, int(result.get("peak_rss_self") or 0))
            run.extra["result"] = result
    except (OSError, KeyError, ValueError) as e:
        run.error = f"no result: {e}"
    print(f"{system}: {fmt(run.pairs_per_s, '.2f')} pairs/s, train {fmt(run.train_s, '.0f')} s, "
          f"peak {(run.peak_rss or 0) / 1e9:.2f} GB", flush=True)
    return run


def target_lines(runs: list[Run]) -> list[str]:
    """The issue's targets, checked on this run."""
    by = {r.system: r for r in runs if not r.error and r.scores}
    ours = [by[s] for s in ("ours", "ours_hn") if s in by]
    peers = [by[s] for s in PEERS if s in by]
    lines = []
    if not ours:
        return ["- ours did not run: no target checked"]
    best_ours = max(ours, key=lambda r: r.scores["ndcg@10"])
    n = best_ours.scores["ndcg@10"]
    if peers:
        best = max(peers, key=lambda r: r.scores["ndcg@10"])
        ok = n >= best.scores["ndcg@10"] + 2.0 and best_ours.epochs <= best.epochs
        lines.append(f"- NDCG@10 {n:.2f} ({best_ours.system}, {best_ours.epochs} ep) vs best peer {best.system} "
                     f"{best.scores['ndcg@10']:.2f} ({best.epochs} ep): {n - best.scores['ndcg@10']:+.2f} "
                     f"(target >= +2.0 at no more epochs: {'PASS' if ok else 'FAIL'})")
    if "zero_shot" in by:
        z = by["zero_shot"].scores["ndcg@10"]
        lines.append(f"- vs zero-shot {z:.2f}: {n - z:+.2f} (target >= +5.0: {'PASS' if n - z >= 5.0 else 'FAIL'})")
    mnrl = by.get("st_mnrl")
    for r in ours:
        if mnrl and mnrl.pairs_per_s and r.pairs_per_s:
            x = r.pairs_per_s / mnrl.pairs_per_s
            lines.append(f"- {r.system} speed {x:.2f}x ST MNRL, fp32 both (target >= 1.5x: {'PASS' if x >= 1.5 else 'FAIL'})")
    return lines


def render(runs: list[Run], args: argparse.Namespace) -> str:
    headers = ["System", "Recipe", f"NDCG@10 ({args.split})", "Recall@100", "MRR@10", "MAP@100", "Train pairs/s",
               "Train s", "Peak RSS GB"]
    rows = []
    for r in runs:
        name = LABELS[r.system] + (f" — FAILED: {r.error}" if r.error else "")
        s = r.scores
        rows.append([name, r.recipe, fmt(s.get("ndcg@10"), ".2f"), fmt(s.get("recall@100"), ".2f"),
                     fmt(s.get("mrr@10"), ".2f"), fmt(s.get("map@100"), ".2f"), fmt(r.pairs_per_s, ".2f"),
                     fmt(r.train_s, ".0f"), fmt(r.peak_rss / 1e9 if r.peak_rss else None, ".2f")])
    head = [
        "# Retrieval training benchmark (bench/train_retrieval.py)",
        "",
        f"- {machine_line().replace(f'{THREADS} threads', f'{args.threads} threads')}; model all-MiniLM-L6-v2, "
        f"max length {args.maxlen}, fp32 everywhere",
        f"- train: {args.train} qrels/{args.train_split}.tsv, {args.n_pairs} (query, document) pairs; "
        f"scored: {args.eval} qrels/{args.split}.tsv against the whole corpus"
        + (f" (**SMOKE: corpus cut to {args.max_docs} docs**)" if args.max_docs else ""),
        "- one shared scorer (bench/common.py score_beir: exact cosine search, each system's pooling); pairs/s: "
        "training pairs / trainer wall time (model load, mining, save, scoring excluded); peak RSS: the child's tree",
    ]
    if args.max_pairs:
        head.append(f"- **SMOKE RUN: first {args.max_pairs} training pairs only; numbers are not the benchmark**")
    return "\n".join([*head, "", markdown_table(headers, rows), "", "Targets:", *target_lines(runs), ""])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default=str(SCIFACT_DIR), help="BEIR folder to train on")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval", default=None, help="BEIR folder to score on (default: --train)")
    p.add_argument("--split", default="dev", help="qrels split to score")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of: " + ",".join(SYSTEMS))
    p.add_argument("--maxlen", type=int, default=256)
    p.add_argument("--epochs", type=int, default=None, help="override every system's epochs (smoke runs)")
    p.add_argument("--max-pairs", type=int, default=None, help="train on the first N pairs only (smoke runs)")
    p.add_argument("--max-docs", type=int, default=None, help="score against a cut corpus (smoke runs only)")
    p.add_argument("--ours-override", default=None, help='JSON merged into our recipe, e.g. \'{"ibn_tau": 50}\'')
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=THREADS, help="torch/OpenMP threads of every child and the scorer")
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "train_retrieval.md"))
    args = p.parse_args(argv)
    args.eval = args.eval or args.train
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in args.systems if s not in SYSTEMS]
    if bad:
        p.error(f"unknown system: {', '.join(bad)}")
    return args


def ensure_flag_packages() -> None:
    """FLAG_PACKAGES in the peer venv (train_stsb's ensure_peer_venv does not install them), unless present."""
    import subprocess

    from train_stsb import peer_python

    wanted = dict(spec.split("==") for spec in FLAG_PACKAGES)
    check = f"from importlib.metadata import version; assert {{n: version(n) for n in {list(wanted)!r}}} == {wanted!r}"
    if subprocess.run([str(peer_python()), "-c", check], capture_output=True).returncode == 0:
        return
    print(f"installing {', '.join(FLAG_PACKAGES)} into the peer venv", flush=True)
    cmd = [str(peer_python()), "-m", "pip", "install", "-q", *FLAG_PACKAGES]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"peer venv install failed: {' '.join(cmd)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> None:
    import os

    args = parse_args(argv)
    setup_process(args.threads)
    os.chdir(REPO_DIR)
    pairs = read_beir_split(args.train, args.train_split)["pairs"]
    args.n_pairs = min(len(pairs), args.max_pairs or len(pairs))
    if any(s not in ("zero_shot", "ours", "ours_hn") for s in args.systems):
        from train_stsb import ensure_peer_venv

        ensure_peer_venv()
    if "flag_embedding" in args.systems:
        ensure_flag_packages()
    out = Path(args.out)
    t0 = time.perf_counter()
    runs = [train_system(s, args, out.parent / "retrieval") for s in args.systems]
    for r in runs:
        if r.error or not r.model_dir:
            continue
        try:
            r.scores = score_beir(r.model_dir, r.pooling, args.eval, args.split, args.maxlen, r.query_prompt,
                                  r.doc_prompt, args.max_docs)
        except Exception as e:  # noqa: BLE001 - one broken folder must not lose the table
            r.error = f"scoring failed: {e}"
        print(f"scored {r.system}: {r.scores}", flush=True)
    report = render(runs, args) + f"\nTotal wall time: {time.perf_counter() - t0:.0f} s\n"
    print("\n" + report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    write_json(out.with_suffix(".json"), {"args": vars(args), "runs": [r.__dict__ | {"pairs_per_s": r.pairs_per_s}
                                                                         for r in runs]})
    print(f"written {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
