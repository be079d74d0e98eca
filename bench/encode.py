"""Encoding benchmark: our Encoder (plugin.load) vs sentence-transformers `encode`, same model, one run.

    .venv/bin/python bench/encode.py                       # 10k STS-B sentences, batch 64
    .venv/bin/python bench/encode.py --n 10000 --batch-size 64 --precisions fp32,bf16 \
        --out bench/results/encode.md
    .venv/bin/python bench/encode.py --n 1000              # smoke run

Sentences: STS-B train text1, text2 (row by row), then dev, the first --n. Same model
(all-MiniLM-L6-v2, local), 2 threads, one process; each encoder gets a warm-up pass first, then
--repeats interleaved timed rounds (best kept). Ours runs with the ST model's max_seq_length so the two
embed the same tokens. Prints a markdown table (sentences/s, speedup vs ST, max abs diff of the
L2-normalized embeddings against ST's) and writes it to --out. Target: ours >= 1.3x ST.

Ours runs eagerly (compile "off") and through torch.compile with frozen weights ("on", the "compiled"
rows: plugin/compiled.py), checked against the eager rows (target >= 1.3x at a max abs diff < 1e-5 in
fp32). The warm-up pass holds the compilation: its seconds are in the table, not hidden.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH_DIR,
    STSB_DIR,
    THREADS,
    machine_line,
    markdown_table,
    matmul_peak_gflops,
    minilm_path,
    read_jsonl,
    setup_process,
)

TARGET = 1.3


def sentences(n: int) -> list[str]:
    """The first n sentences of STS-B train (text1, text2 per row), then dev."""
    out: list[str] = []
    for split in ("train", "dev"):
        for row in read_jsonl(STSB_DIR / f"{split}.jsonl"):
            out += [row["text1"], row["text2"]]
            if len(out) >= n:
                return out[:n]
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call of fn, and its result."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def best_times(encoders: dict[str, Callable[[list[str]], Any]], texts: list[str],
               repeats: int) -> dict[str, tuple[float, Any]]:
    """Best time per encoder over `repeats` rounds, encoders interleaved within a round (fair under drift)."""
    best: dict[str, tuple[float, Any]] = {}
    for _ in range(repeats):
        for name, encode in encoders.items():
            secs, emb = timed(lambda encode=encode: encode(texts))
            if name not in best or secs < best[name][0]:
                best[name] = (secs, emb)
    return best


def normalized(x: Any) -> Any:
    """Row-L2-normalized float32 numpy array."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def st_encoder(model_path: str, batch_size: int) -> tuple[Callable[[list[str]], Any], int]:
    """sentence-transformers encode on the model; returns (encode fn, max_seq_length)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)

    return encode, int(model.max_seq_length)


def our_encoder(model_path: str, batch_size: int, maxlen: int, precision: str,
                compile: str = "off") -> Callable[[list[str]], Any]:
    """plugin.load(path, compile=...).encode at `precision` (contract: load(path) -> Encoder with .encode, .maxlen)."""
    from plugin import load

    enc = load(model_path, compile=compile)
    if hasattr(enc, "maxlen"):
        enc.maxlen = maxlen

    def encode(texts: list[str]) -> Any:
        kwargs: dict[str, Any] = {"batch_size": batch_size, "show_progress_bar": False}
        if precision != "fp32":
            kwargs["precision"] = precision
        return enc.encode(texts, **kwargs)

    return encode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds, encoders interleaved (best kept)")
    p.add_argument("--precisions", default="fp32,bf16", help="our precisions to run: fp32,bf16")
    p.add_argument("--compile", default="off,on", help="our Encoder's compile modes to run: off (eager), on")
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "encode.md"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Warm up, time ST and ours, print and write the table."""
    args = parse_args(argv)
    setup_process(THREADS)
    peaks = [matmul_peak_gflops("float32")]
    texts = sentences(args.n)
    model = minilm_path()
    st_encode, maxlen = st_encoder(model, args.batch_size)
    encoders: dict[str, Callable[[list[str]], Any]] = {"sentence-transformers encode": st_encode}
    errors: dict[str, str] = {}
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        for mode in [m.strip() for m in args.compile.split(",") if m.strip()]:
            name = f"ours {precision}" + (" compiled" if mode == "on" else "")
            try:
                encoders[name] = our_encoder(model, args.batch_size, maxlen, precision, mode)
            except Exception as e:  # noqa: BLE001 - report a missing/broken plugin.load, keep the ST row
                errors[name] = f"{type(e).__name__}: {e}"
    # The warm-up pass holds the compiled encoders' compilation: its time is reported, not hidden.
    warm = texts[: min(len(texts), 4 * args.batch_size)]
    warm_s = {name: timed(lambda encode=encode: encode(warm))[0] for name, encode in encoders.items()}
    results = best_times(encoders, texts, args.repeats)
    for name, (secs, _emb) in results.items():
        print(f"{name}: {len(texts) / secs:.0f} sentences/s", flush=True)
    peaks.append(matmul_peak_gflops("float32"))
    report = render(texts, results, errors, args, peaks, warm_s)
    print("\n" + report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report, encoding="utf-8")
    print(f"written {args.out}")


def render(texts: list[str], results: dict[str, tuple[float, Any]], errors: dict[str, str],
           args: argparse.Namespace, peaks: list[float], warm_s: dict[str, float]) -> str:
    """Markdown report: sentences/s, speedup vs ST and vs our eager encoder, max abs diffs, warm-up s; targets."""
    import numpy as np

    st_s, st_emb = results["sentence-transformers encode"]
    ref = normalized(st_emb)
    rows, checks = [], []
    for name, (secs, emb) in results.items():
        speed = len(texts) / secs
        x = st_s / secs
        diff = float(np.abs(normalized(emb) - ref).max())
        eager = results.get(name.removesuffix(" compiled")) if name.endswith(" compiled") else None
        vs_eager, eager_diff = "-", "-"
        if eager:
            vs_eager = f"{eager[0] / secs:.2f}x"
            eager_diff = f"{float(np.abs(normalized(emb) - normalized(eager[1])).max()):.2e}"
            y = eager[0] / secs
            # Equal outputs are asked of fp32 only: bf16 rounds differently wherever a kernel is fused.
            tol = 1e-5 if "fp32" in name else float("inf")
            ok = y >= TARGET and float(eager_diff) < tol
            checks.append(f"- {name}: {y:.2f}x {name.removesuffix(' compiled')} at max abs diff {eager_diff} "
                          f"(target >= {TARGET}x" + (" within 1e-5" if tol < 1 else "") + f": {'PASS' if ok else 'FAIL'})")
        rows.append([name, f"{speed:.0f}", f"{secs:.1f}", f"{x:.2f}x", f"{diff:.2e}", vs_eager, eager_diff,
                     f"{warm_s.get(name, 0.0):.1f}"])
        if name.startswith("ours"):
            checks.append(f"- {name}: {x:.2f}x ST (target >= {TARGET}x: {'PASS' if x >= TARGET else 'FAIL'})")
    rows += [[name, "FAILED: " + err, "-", "-", "-", "-", "-", "-"] for name, err in errors.items()]
    head = [
        "# Encoding benchmark (bench/encode.py)",
        "",
        f"- {machine_line()}; model all-MiniLM-L6-v2",
        f"- {len(texts)} STS-B sentences, batch {args.batch_size}, warm-up pass first, best of {args.repeats}; "
        "max abs diff is on L2-normalized embeddings vs ST's",
        f"- fp32 matmul peak (2048x2048) before / after: {peaks[0]:.0f} / {peaks[1]:.0f} GFLOP/s"
        + (" — **CPU was shared (>15% apart): rerun on a quiet machine**" if min(peaks) < 0.85 * max(peaks) else ""),
    ]
    table = markdown_table(["Encoder", "Sentences/s", "Seconds", "vs ST", "Max abs diff vs ST", "vs eager",
                            "Max abs diff vs eager", "Warm-up s (compile)"], rows)
    return "\n".join(head + ["", table, "", *checks, ""])


if __name__ == "__main__":
    main()
