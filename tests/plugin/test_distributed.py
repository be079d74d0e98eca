"""Cross-device negatives: 2 CPU processes (a real `accelerate launch`, gloo) give the loss and the
parameter gradients of one process on the same global batch, for every loss (CoSENT and angle too),
with train_group_size negatives + KD, and with GradCache under DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from plugin.distributed import gather_batch, gather_columns, loss_scale, world_size
from tests.conftest import REPO, _sentence, write_jsonl
from tests.plugin import dist_worker

pytestmark = pytest.mark.timeout(400)


def test_single_process_is_a_no_op():
    x = torch.randn(6, 4, requires_grad=True)
    assert world_size() == 1 and loss_scale(True) == 1.0
    assert gather_columns(x, 3) is x
    out, labels, teacher, scores = gather_batch(x, 3, torch.ones(2), None, torch.zeros(2, 3))
    assert out is x and labels.tolist() == [1.0, 1.0] and teacher is None and scores.shape == (2, 3)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_on_the_global_batch(tiny_bert, data_a, data_b, tmp_path):
    rows = [{"query": _sentence(i, 1), "pos": [_sentence(i, 2), _sentence(i, 4)],
             "neg": [_sentence(i + k, 5) for k in (3, 4, 6)], "pos_scores": [0.9, 0.8],
             "neg_scores": [0.1 * (i % 4), 0.3, -0.2]} for i in range(dist_worker.GLOBAL_BATCH)]
    data = {"a": str(data_a), "b": str(data_b), "c": str(write_jsonl(tmp_path / "c.jsonl", rows))}
    out = tmp_path / "dist"
    out.mkdir()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", "1", "--main_process_port", str(_free_port()),
           str(REPO / "tests" / "plugin" / "dist_worker.py"),
           json.dumps({"model": tiny_bert, "data": data, "out": str(out)})]
    # accelerate 1.x's --cpu starts one process; torchrun (--multi_gpu) with ACCELERATE_USE_CPU starts 2 on gloo.
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stderr[-3000:]

    for name, (key, overrides) in dist_worker.CASES.items():
        plain = {k: v for k, v in overrides.items() if k not in ("mini_batch_size", "negatives_cross_device")}
        ref_loss, ref = dist_worker.run_case(tiny_bert, data[key], plain, str(tmp_path / "ref"), 0, 1)
        ranks = [torch.load(out / f"{name}.rank{r}.pt") for r in (0, 1)]
        if name == "B_local":  # without the gather each process has half the negatives: another loss
            assert all(abs(got["loss"] - ref_loss) > 1e-3 for got in ranks)
            continue
        for got in ranks:
            assert got["world"] == 2
            assert abs(got["loss"] - ref_loss) < 1e-5, (name, got["loss"], ref_loss)
            assert got["grads"].keys() == ref.keys() and len(ref) > 10
            worst = max((got["grads"][k] - ref[k]).abs().max().item() for k in ref)
            print(name, "loss", got["loss"], ref_loss, "worst grad diff", worst)
            assert worst < 1e-5, (name, worst)
