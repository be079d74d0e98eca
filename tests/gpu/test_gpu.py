"""Checks that need a CUDA GPU; every one skips without it (CI has none). Run by bench/gpu_check.sh.

    python3 -m pytest -q tests/gpu          # on a CUDA machine

Tiny random models built from a config (bench/gpu_throughput.py's generated vocabulary), so nothing
is downloaded: mixed precision training, SDPA / flash attention against eager, LoRA on a 4-bit base,
and in-batch negatives across two GPUs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu_throughput import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bert")
    build_model(folder, "tiny", 64)
    return folder


def pairs_a(path: Path, n: int = 64) -> Path:
    rows = [{"text1": f"w{i} w{i + 1} w{i + 2}", "text2": f"w{i + 1} w{i + 3}", "label": float(i % 6)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_train(tmp_path: Path, model: Path, **overrides):
    from plugin import TrainConfig, train

    config = TrainConfig(model_name_or_path=str(model), train_name_or_path=str(pairs_a(tmp_path / "a.jsonl")),
                         max_steps=4, batch_size=16, maxlen=32, evaluate_before_training=False, eval_strategy="no",
                         save_strategy="no", save_dir=str(tmp_path / "out"), cosine_w=1.0, ibn_w=0.0, **overrides)
    return train(config)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training(tmp_path: Path, bert: Path, precision: str) -> None:
    result = run_train(tmp_path, bert, **{precision: True})
    assert result.global_step == 4 and math.isfinite(result.metrics["train_loss"])
    from plugin import load

    vectors = load(result.save_dir, device="cuda").encode(["w1 w2", "w3"], convert_to_numpy=False)
    assert vectors.shape == (2, 64) and torch.isfinite(vectors).all()


@pytest.mark.parametrize("kernel", ["sdpa", "flash_attention_2"])
def test_attention_kernels_match_eager(bert: Path, kernel: str) -> None:
    if kernel == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert)
    batch = tok(["w1 w2 w3", "w4"], padding=True, return_tensors="pt").to("cuda")
    outs = []
    for impl in ("eager", kernel):
        model = AutoModel.from_pretrained(bert, attn_implementation=impl, dtype=torch.bfloat16).cuda().eval()
        with torch.no_grad():
            outs.append(model(**batch).last_hidden_state.float())
    mask = batch["attention_mask"].bool()
    assert torch.allclose(outs[0][mask], outs[1][mask], atol=3e-2)


def test_lora_on_a_4bit_base(tmp_path: Path) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    from transformers import BertTokenizerFast, LlamaConfig, LlamaModel

    folder = tmp_path / "llama"
    build_model(tmp_path / "vocab", "tiny", 64)
    tok = BertTokenizerFast.from_pretrained(tmp_path / "vocab")
    tok.eos_token = "[SEP]"
    tok.save_pretrained(folder)
    LlamaModel(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2)).save_pretrained(folder)
    result = run_train(tmp_path, folder, is_llm=True, apply_lora=True, load_kbit=4, lora_r=4, bf16=True)
    assert result.global_step == 4 and (Path(result.save_dir) / "adapter_model.safetensors").is_file()


def test_negatives_cross_device_on_two_gpus(tmp_path: Path) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs (the CPU suite checks the same gradients with two gloo processes)")
    worker = REPO / "tests" / "plugin" / "dist_worker.py"
    out = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          str(worker), str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
