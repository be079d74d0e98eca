"""The pooled embedding module, the tokenizer, and `encode` / `load` (backbones come from llm.py).

    .venv/bin/python -c "from plugin import load; print(load('runs/angle-model').encode(['hi']).shape)"
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .compiled import FrozenCompile, wants_compile
from .config import resolve_model_path
from .data import apply_prompt, pad_sequences
from .gradcache import split_rows
from .llm import ensure_eos, load_saved_backbone, resolve_backbone_path
from .pooling import pool

CONFIG_FILE = "train_config.json"


class AnglEModel(nn.Module):
    """backbone + pooling: (input_ids, attention_mask) -> (N, H) embeddings, not normalized.

    Trainer.compute_loss calls this module (the DDP-wrapped one under
    accelerate) so gradients sync across processes.
    """

    def __init__(self, backbone: nn.Module, pooling_strategy: str):
        super().__init__()
        self.backbone = backbone
        self.pooling_strategy = pooling_strategy

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, all_layers: bool = False,
                row_groups: int = 1, multiple_of: int | None = None, **_: Any) -> torch.Tensor:
        """(N, H); with all_layers, (L, N, H): layers 1..L pooled, [-1] the usual output (AdaptiveLayer, Espresso).

        row_groups > 1: the rows are that many equal groups (a batch's columns: queries, then documents...),
        each run through the backbone cut to its own longest text (plugin/gradcache.split_rows). Short queries
        then cost their own length, not the documents': on SciFact (22-token queries, 246-token documents) a
        (query, document) batch costs ~45% less, with the same embeddings (only trailing padding is dropped).
        The split happens inside forward, so DDP sees one forward per backward.
        """
        n = input_ids.size(0)
        if row_groups > 1 and n % row_groups == 0:
            chunks = split_rows(input_ids, attention_mask, n // row_groups, multiple_of)
            # Worth a second backbone call only when it drops a real share of the padded tokens.
            if sum(ids.numel() for ids, _ in chunks) < 0.85 * input_ids.numel():
                return torch.cat([self._pooled(ids, mask, all_layers) for ids, mask in chunks], dim=-2)
        return self._pooled(input_ids, attention_mask, all_layers)

    def _pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, all_layers: bool) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            **({"output_hidden_states": True} if all_layers else {}))
        if all_layers:  # hidden_states[0] is the embedding layer; the last is taken as last_hidden_state
            states = [*out.hidden_states[1:-1], out.last_hidden_state]
            return torch.stack([pool(h, attention_mask, self.pooling_strategy) for h in states])
        return pool(out.last_hidden_state, attention_mask, self.pooling_strategy)

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)


def load_tokenizer(name_or_path: str, padding_side: str | None = None, append_eos: bool = False) -> Any:
    """append_eos (is_llm): the tokenizer itself appends EOS to every text (see llm.ensure_eos)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_backbone_path(name_or_path))
    if padding_side:
        tok.padding_side = padding_side
    if tok.pad_token_id is None:  # decoders ship without a pad token
        tok.pad_token = tok.eos_token or tok.unk_token
    if append_eos:
        ensure_eos(tok)
    return tok


@torch.no_grad()
def interpolate_weights(module: nn.Module, start: dict[str, torch.Tensor], alpha: float) -> int:
    """WiSE-FT in place: w <- alpha * w + (1 - alpha) * start[name] for every floating-point weight and buffer.

    Returns how many tensors were averaged; integer buffers (position ids) are left alone.
    """
    count, seen = 0, set()
    for name, tensor in module.state_dict().items():
        # Tied weights appear under two names with one storage: average them once.
        if tensor.is_floating_point() and name in start and tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensor.lerp_(start[name].to(tensor.device, tensor.dtype), 1.0 - alpha)
            count += 1
    return count


def set_dropout(module: nn.Module, p: float) -> int:
    """Set every dropout probability inside `module` to p; returns how many were set.

    Covers nn.Dropout layers (BERT-style attention reads its dropout's p too),
    float `attention_dropout` attributes (Llama/Qwen2-style attention), and the
    *dropout* floats of each config so the saved config.json says what was trained.
    """
    count = 0
    for sub in module.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = p
            count += 1
        elif isinstance(getattr(sub, "attention_dropout", None), float):
            sub.attention_dropout = p
            count += 1
        config = getattr(sub, "config", None)
        for key, value in (vars(config).items() if config is not None and hasattr(config, "__dict__") else ()):
            if "dropout" in key and isinstance(value, float):
                setattr(config, key, p)
    return count


class Encoder:
    """Embeds texts with an AnglEModel: length-sorted batches, results in input order.

    compile: "auto" runs long fp32 inputs on a CPU through torch.compile with frozen weights (plugin/compiled.py:
    1.9x on MiniLM), "on" always, "off" never. Same embeddings (max abs diff ~4e-7 normalized).
    """

    def __init__(self, model: AnglEModel, tokenizer: Any, maxlen: int = 512, normalize: bool = True,
                 prompts: dict[str, str | None] | None = None, truncate_dim: int | None = None,
                 compile: str = "auto"):
        wants_compile(compile, torch.device("cpu"), 0, 0)  # validates the mode
        self.compile = compile
        self._compiled = FrozenCompile()
        self.model = model
        self.truncate_dim = truncate_dim  # default `dim` of encode (Matryoshka models)
        self.tokenizer = tokenizer
        self.maxlen = maxlen
        self.normalize = normalize
        self.prompts = {k: v for k, v in (prompts or {}).items() if v}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _resolve_prompt(self, prompt: str | None) -> str | None:
        if prompt is None or "{text}" in prompt:
            return prompt
        if prompt in self.prompts:
            return self.prompts[prompt]
        raise ValueError(f"prompt must be a template with {{text}} or one of {sorted(self.prompts)}, got {prompt!r}")

    @torch.inference_mode()
    def encode(
        self,
        texts: str | list[str],
        batch_size: int = 64,
        prompt: str | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
        precision: str = "fp32",
        convert_to_numpy: bool = True,
        dim: int | None = None,
        all_layers: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts; returns (N, H) in input order.

        prompt: a template with {text} or the name of a saved prompt ("text",
        "query", "document"). precision "bf16" runs the backbone under bf16
        autocast (fast on CPUs with AVX512-BF16/AMX and on GPUs). dim: keep the
        first dim values (Matryoshka), normalized after truncating; default
        truncate_dim. all_layers: (L, N, dim), every layer's pooled state.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        template = self._resolve_prompt(prompt)
        if template:
            texts = [apply_prompt(t, template) for t in texts]
        normalize = self.normalize if normalize is None else normalize
        dim = self.truncate_dim if dim is None else dim
        if dim is not None and not 1 <= dim <= self.model.hidden_size:
            raise ValueError(f"dim must be between 1 and the hidden size {self.model.hidden_size}, got {dim}")
        width = dim or self.model.hidden_size
        was_training = self.model.training
        self.model.eval()
        ids = self.tokenizer(texts, truncation=True, max_length=self.maxlen)["input_ids"] if texts else []
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = torch.empty((*([self.model.num_layers] if all_layers else []), len(texts), width), dtype=torch.float32)
        side = getattr(self.tokenizer, "padding_side", "right")
        dev = self.device
        autocast = (
            torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
            if precision != "fp32" else contextlib.nullcontext()
        )
        show = len(texts) >= 2000 if show_progress_bar is None else show_progress_bar
        n_params = sum(p.numel() for p in self.model.parameters())
        compiled = (wants_compile(self.compile, dev, sum(map(len, ids)), n_params, precision)
                    and not self._compiled.failed)
        forward = self._compiled.get(self.model) if compiled else self.model
        with autocast, self._compiled.context() if compiled else contextlib.nullcontext():
            for start in tqdm(range(0, len(order), batch_size), disable=not show, desc="encode", unit="batch"):
                chunk = order[start: start + batch_size]
                batch = pad_sequences([ids[i] for i in chunk], self.tokenizer.pad_token_id, side)
                args = (batch["input_ids"].to(dev), batch["attention_mask"].to(dev))
                try:
                    emb = forward(*args, all_layers=all_layers)
                except Exception as e:  # noqa: BLE001 - a backbone dynamo cannot compile runs eagerly
                    if forward is self.model:
                        raise
                    self._compiled.give_up(e)
                    forward = self.model
                    emb = forward(*args, all_layers=all_layers)
                emb = emb.float()[..., :width]
                if normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                out[..., chunk, :] = emb.cpu()
        self.model.train(was_training)
        if single:
            out = out[..., 0, :]
        return out.numpy() if convert_to_numpy else out


def load(path: str, device: str | None = None, truncate_dim: int | None = None, compile: str = "auto") -> Encoder:
    """Load a model saved by `train` (or any AutoModel folder/hub name, mean-pooled).

    truncate_dim: encode() keeps the first truncate_dim values (a Matryoshka model's smaller size).
    compile: "auto", "on" or "off", see Encoder.
    """
    folder = Path(resolve_model_path(path))
    cfg: dict[str, Any] = {}
    if (folder / CONFIG_FILE).is_file():
        cfg = json.loads((folder / CONFIG_FILE).read_text())
    tokenizer = load_tokenizer(str(folder), cfg.get("tokenizer_padding_side"), append_eos=cfg.get("is_llm", False))
    # A LoRA adapter goes back on its base; BiLLM is re-applied.
    model = AnglEModel(load_saved_backbone(folder, cfg), cfg.get("pooling_strategy", "mean"))
    if device:
        model.to(device)
    prompts = {"text": cfg.get("text_prompt"), "query": cfg.get("query_prompt"), "document": cfg.get("doc_prompt")}
    return Encoder(model, tokenizer, maxlen=cfg.get("maxlen", 512),
                   normalize=cfg.get("normalize_embeddings", True), prompts=prompts, truncate_dim=truncate_dim,
                   compile=compile)
