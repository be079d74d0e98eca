"""Training throughput of our trainer on BERT-base and BERT-large sized models, against a timed bf16 matmul.

    python bench/gpu_throughput.py --sizes base,large --batch 128 --maxlen 128 --steps 40   # a CUDA machine
    .venv/bin/python bench/gpu_throughput.py --sizes tiny --batch 8 --maxlen 32 --steps 6 --cpu   # smoke test

Each model is built from a config with random weights (speed does not depend on the weights) and a
generated WordPiece vocabulary, so nothing is downloaded. The data are format B pairs whose texts are
exactly `maxlen` tokens long, so every token is real: model FLOP/s = 6 x non-embedding params x tokens/s.
Training runs through plugin.train (in-batch negatives, bf16 on a GPU), evaluation and saving off; the
first steps are warmup and excluded (a callback times the steps after --warmup). The peak is the best
of 10 timed n x n bf16 matmuls in the same process. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {  # hidden, layers, heads, intermediate
    "tiny": (64, 2, 2, 128),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
}
WORDS = 2000


def build_model(folder: Path, size: str, maxlen: int) -> int:
    """A random BERT of `size` with a generated vocabulary; returns its non-embedding parameter count."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    hidden, layers, heads, inter = SIZES[size]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(WORDS))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inter, max_position_embeddings=max(512, maxlen))
    model = BertModel(config, add_pooling_layer=False)
    model.save_pretrained(folder)
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embeddings."))


def write_pairs(path: Path, n: int, maxlen: int, seed: int = 0) -> None:
    """n (query, positive) rows of exactly maxlen - 2 words each: with [CLS] and [SEP], maxlen tokens."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            row = {k: " ".join(f"w{rng.randrange(WORDS)}" for _ in range(maxlen - 2)) for k in ("query", "positive")}
            f.write(json.dumps(row) + "\n")


def matmul_peak_tflops(device: str, dtype_name: str, n: int) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def run(size: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch
    from transformers import TrainerCallback

    from plugin import TrainConfig, train

    on_gpu = torch.cuda.is_available() and not args.cpu
    model_dir = work / f"bert-{size}"
    params = build_model(model_dir, size, args.maxlen)
    data = work / f"pairs-{size}.jsonl"
    write_pairs(data, args.batch * (args.steps + 1), args.maxlen)

    class StepTimer(TrainerCallback):
        """Wall time of the steps after the warmup (the GPU synchronized at both ends)."""

        def __init__(self) -> None:
            self.t0: float | None = None
            self.t1 = 0.0
            self.timed = 0

        def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            if state.global_step == args.warmup:
                self.t0 = time.perf_counter()
            elif self.t0 is not None:
                self.t1, self.timed = time.perf_counter(), state.global_step - args.warmup

    timer = StepTimer()
    config = TrainConfig(
        model_name_or_path=str(model_dir), train_name_or_path=str(data), data_format="B", maxlen=args.maxlen,
        batch_size=args.batch, max_steps=args.steps, epochs=1, ibn_w=1.0, cosine_w=0.0, angle_w=0.0,
        bf16=on_gpu and not args.fp32, learning_rate=1e-5, warmup_steps=0, evaluate_before_training=False,
        eval_strategy="no", save_strategy="no", group_by_length=False, save_dir=str(work / f"out-{size}"),
        logging_steps=10, backbone_dropout=0.0,
    )
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    train(config, callbacks=[timer])
    seconds = max(timer.t1 - (timer.t0 or timer.t1), 1e-9)
    pairs_s = timer.timed * args.batch / seconds
    tokens_s = pairs_s * 2 * args.maxlen
    return {"size": size, "params": params, "pairs_s": pairs_s, "model_tflops": 6 * params * tokens_s / 1e12,
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if on_gpu else None,
            "precision": "bf16" if config.bf16 else "fp32", "steps_timed": timer.timed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="base,large", help="comma list of tiny, base, large")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--maxlen", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    parser.add_argument("--matmul-n", type=int, default=8192)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is visible")
    parser.add_argument("--fp32", action="store_true")
    args = parser.parse_args(argv)
    args.warmup = min(args.warmup, args.steps - 1)
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    dtype = "float32" if device == "cpu" or args.fp32 else "bfloat16"
    peak = matmul_peak_tflops(device, dtype, args.matmul_n if device == "cuda" else min(args.matmul_n, 1024))
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            r = run(size.strip(), args, Path(tmp))
            rows.append(r)
    print(f"\n{name}, torch {torch.__version__}; batch {args.batch}, max length {args.maxlen}; "
          f"{dtype} matmul peak {peak:.1f} TFLOP/s ({args.matmul_n if device == 'cuda' else 1024}^3)\n")
    print("| model | non-emb params | precision | pairs/s | model TFLOP/s | % of matmul peak | peak GPU GB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        peak_gb = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        print(f"| bert-{r['size']} | {r['params'] / 1e6:.0f}M | {r['precision']} | {r['pairs_s']:.1f} | "
              f"{r['model_tflops']:.2f} | {100 * r['model_tflops'] / peak:.0f}% | {peak_gb} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
