"""Profile training steps of our STS-B recipe with torch.profiler: where a step's time goes.

    .venv/bin/python bench/profile_step.py                       # fp32, the library's attention
    .venv/bin/python bench/profile_step.py --bf16 --attn sdpa    # what bf16 on a CPU did before eager
    .venv/bin/python bench/profile_step.py --bf16                # bf16 as trained now (eager on a CPU)

Trains bench/train_stsb.py's SHORT recipe (MiniLM, STS-B, batch 32, max length 64, 2 threads) for
--skip + --steps steps, profiles the last --steps, and prints their wall time and the top ops by
self CPU time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from common import setup_process  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--attn", default=None, choices=["eager", "sdpa"], help="attn_implementation (default: ours)")
    p.add_argument("--skip", type=int, default=20, help="warm-up steps before profiling")
    p.add_argument("--steps", type=int, default=30, help="profiled steps")
    p.add_argument("--rows", type=int, default=15, help="ops to list")
    args = p.parse_args()
    setup_process()
    import torch
    from train_stsb import OUR_RECIPES
    from transformers import TrainerCallback

    from plugin.config import TrainConfig
    from plugin.trainer import train

    class Profile(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.skip:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.prof.__enter__()
                self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == args.skip + args.steps:
                wall = time.perf_counter() - self.t0
                self.prof.__exit__(None, None, None)
                print(f"\n{args.steps} steps in {wall:.2f} s ({wall / args.steps * 1000:.0f} ms/step), "
                      f"bf16={args.bf16}, attn={args.attn or 'default'}")
                print(self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

    with tempfile.TemporaryDirectory() as tmp:
        cfg = {**OUR_RECIPES["short"], "save_dir": tmp, "bf16": args.bf16, "attn_implementation": args.attn,
               "max_steps": args.skip + args.steps, "logging_steps": 10_000}
        train(TrainConfig(**cfg), callbacks=[Profile()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
