"""One training step per case on this process's shard of a fixed global batch; saves the loss and gradients.

Run by tests/plugin/test_distributed.py under a real `accelerate launch` (2 CPU processes, gloo):

    ACCELERATE_USE_CPU=true .venv/bin/python -m accelerate.commands.launch --multi_gpu --num_processes 2 \\
        tests/plugin/dist_worker.py '{"model": "...", "data": {"a": "...", ...}, "out": "..."}'

and imported by the test for the single-process reference (the whole global batch, no process group).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

GLOBAL_BATCH = 16
# name -> (data key, TrainConfig overrides). Per process: batch GLOBAL_BATCH / world size.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "A": ("a", {"cosine_w": 1.0, "ibn_w": 1.0, "angle_w": 0.02}),
    "B": ("b", {}),
    "C_group_kd": ("c", {"train_group_size": 3, "cosine_w": 0.5, "kd_w": 1.0}),
    "B_gradcache": ("b", {"mini_batch_size": 2}),
    "B_local": ("b", {"negatives_cross_device": False}),  # control: each process's own negatives only
}


def run_case(model_path: str, data: str, overrides: dict[str, Any], out_dir: str, rank: int,
             world: int) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of one training_step on this rank's shard of the first GLOBAL_BATCH rows."""
    from transformers import TrainingArguments

    from plugin import TrainConfig
    from plugin.data import Collator, PairDataset, column_prompts, load_examples, positive_threshold
    from plugin.llm import load_backbone
    from plugin.model import AnglEModel, load_tokenizer
    from plugin.trainer import AnglETrainer

    local = GLOBAL_BATCH // world
    cfg = TrainConfig(model_name_or_path=model_path, train_name_or_path=data, save_dir=out_dir,
                      batch_size=local, **overrides)
    ex = load_examples(data)
    tok = load_tokenizer(model_path)
    backbone = load_backbone(model_path)
    for m in backbone.modules():  # dropout off: both runs must see the same embeddings
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ds = PairDataset(ex, tok, 64, column_prompts(ex.format, None, None, None), 42,
                     n_negatives=cfg.train_group_size - 1 if ex.format == "C" else 1)
    args = TrainingArguments(output_dir=out_dir, use_cpu=True, report_to="none", per_device_train_batch_size=local)
    trainer = AnglETrainer(model=AnglEModel(backbone, cfg.pooling_strategy), args=args, angle_config=cfg,
                           data_format=ex.format, positive_label=positive_threshold(ex.labels or [], None),
                           lengths=ds.lengths())
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.accelerator.prepare(trainer.model) if world > 1 else trainer.model  # DDP, as in training
    items = [ds[i] for i in range(GLOBAL_BATCH)][rank * local: (rank + 1) * local]
    loss = trainer.training_step(model, Collator(ds, tok.pad_token_id)(items))
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return float(loss), grads


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    import torch.distributed as dist

    for name, (key, overrides) in CASES.items():
        loss, grads = run_case(spec["model"], spec["data"][key], overrides, spec["out"], *_rank_world())
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.save({"loss": loss, "grads": grads, "world": world}, Path(spec["out"]) / f"{name}.rank{rank}.pt")


def _rank_world() -> tuple[int, int]:
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


if __name__ == "__main__":
    main()
