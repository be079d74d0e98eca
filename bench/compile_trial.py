"""torch.compile on this CPU: training steps and inference of MiniLM, eager vs compiled, one table.

    .venv/bin/python bench/compile_trial.py                 # ~5 minutes on 2 threads
    .venv/bin/python bench/compile_trial.py --rounds 1      # quicker, noisier

Why it exists: issue 24 asked whether torch.compile removes the per-op overhead of a training step. It
times, in one process and on the same batches (batch 64, lengths 12-40 as length-grouped STS-B batches
have), a forward+backward of the mean-pooled MiniLM (dropout off, embeddings frozen, as RECOMMENDED_A
trains) eagerly, compiled with dynamic shapes, and compiled per shape (static); then inference
(torch.inference_mode) eagerly and compiled with inductor freezing, as plugin/compiled.py does. The first
pass over the shapes holds the compilation and is reported apart; steady ms are the best of --rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from common import machine_line, markdown_table, minilm_path, setup_process  # noqa: E402

LENGTHS = [40, 33, 28, 24, 20, 17, 14, 12]
BATCH = 64


def time_pass(fn: Callable[[int], None]) -> float:
    """Seconds for one pass over LENGTHS."""
    t0 = time.perf_counter()
    for length in LENGTHS:
        fn(length)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    setup_process()
    import torch
    import torch._inductor.config as inductor_config
    from transformers import AutoModel

    from plugin.model import AnglEModel, set_dropout

    gen = torch.Generator().manual_seed(0)
    batches = {n: (torch.randint(1000, 20000, (BATCH, n), generator=gen), torch.ones(BATCH, n, dtype=torch.long))
               for n in LENGTHS}

    def model() -> AnglEModel:
        m = AnglEModel(AutoModel.from_pretrained(minilm_path()), "mean")
        set_dropout(m, 0.0)
        m.backbone.get_input_embeddings().requires_grad_(False)
        return m

    def train_step(m: Callable) -> Callable[[int], None]:
        def step(n: int) -> None:
            m(*batches[n]).square().sum().backward()
        return step

    def infer(m: Callable) -> Callable[[int], None]:
        def run(n: int) -> None:
            with torch.inference_mode():
                m(*batches[n])
        return run

    rows = []

    def measure(label: str, fn: Callable[[int], None], ref_ms: float | None) -> float:
        first = time_pass(fn)
        steady = min(time_pass(fn) for _ in range(args.rounds)) / len(LENGTHS) * 1000
        vs = f"{ref_ms / steady:.2f}x" if ref_ms else "1.00x"
        rows.append([label, f"{first:.1f}", f"{steady:.0f}", vs])
        print(f"{label}: first pass {first:.1f} s, steady {steady:.0f} ms/batch", flush=True)
        return steady

    eager = measure("training step, eager", train_step(model().train()), None)
    measure("training step, torch.compile(dynamic=True)", train_step(torch.compile(model().train(), dynamic=True)), eager)
    torch.compiler.reset()
    measure("training step, torch.compile(dynamic=False)", train_step(torch.compile(model().train(), dynamic=False)),
            eager)
    torch.compiler.reset()
    eager_inf = measure("inference, eager", infer(model().eval()), None)
    with inductor_config.patch(freezing=True):
        measure("inference, torch.compile(dynamic=True) + freezing", infer(torch.compile(model().eval(), dynamic=True)),
                eager_inf)
    print(f"\n- {machine_line()}; MiniLM, batch {BATCH}, lengths {LENGTHS}, best of {args.rounds} steady passes\n")
    print(markdown_table(["Run", "First pass s (compiles)", "Steady ms/batch", "vs eager"], rows))


if __name__ == "__main__":
    main()
