"""BiLLM: bidirectional attention for decoder-only backbones (Llama, Qwen2, Mistral).

A decoder attends causally: token i sees tokens <= i, so with last-token
pooling only the last token has read the whole text. BiLLM (Li & Li,
arXiv 2311.05296) lets every token see every other one, padding excepted.

How, without patching library code: transformers >= 5 supports decoders
as encoders through `config.is_causal = False`: `create_causal_mask` then
builds the padding-only mask and the model's forward passes is_causal=False
down to the attention kernels (SDPA/flash would otherwise read each attention
module's own `is_causal` when the mask is skipped for an unpadded batch, so
those flags are cleared too, for versions that read them). A probe then
checks that the first token really sees the last one, with and without
padding, and raises instead of training a silently causal model on a
transformers that ignores the flag (4.x).

`train_config.json` records apply_billm and `plugin.load` re-applies it. A
merged model's config.json keeps `is_causal: false`, which is all
sentence-transformers needs. An adapter-only folder loads its base from the
hub/local base config, which lacks the flag: see llm.export_warnings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# billm_model_class -> the config.model_type of that family.
FAMILIES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "MistralForCausalLM": "mistral"}


def check_family(model_config: Any, model_class: str | None = None) -> str:
    """The backbone's family (model_type); ValueError when BiLLM does not cover it or model_class disagrees."""
    model_type = getattr(model_config, "model_type", None)
    archs = getattr(model_config, "architectures", None) or []
    if model_class is not None:
        if model_class not in FAMILIES:
            raise ValueError(f"billm_model_class must be one of {sorted(FAMILIES)}, got {model_class!r}")
        if model_type != FAMILIES[model_class]:
            raise ValueError(f"billm_model_class {model_class} does not match the backbone "
                             f"(model_type {model_type!r}, architectures {archs})")
        return model_type
    if model_type not in FAMILIES.values():
        raise ValueError(f"apply_billm supports the {sorted(FAMILIES)} families; this backbone is "
                         f"model_type {model_type!r} (architectures {archs})")
    return model_type


def enable_bidirectional(backbone: nn.Module, model_class: str | None = None, verify: bool = True) -> nn.Module:
    """Make every attention layer of a Llama/Qwen2/Mistral base model bidirectional, in place."""
    check_family(backbone.config, model_class)
    backbone.config.is_causal = False  # create_causal_mask -> padding-only mask
    for module in backbone.modules():
        # Attention modules carry a bool is_causal that SDPA/flash read when the mask is None (no padding).
        if isinstance(getattr(module, "is_causal", None), bool):
            module.is_causal = False
    if verify and not is_bidirectional(backbone):
        import transformers

        raise RuntimeError(
            f"apply_billm: transformers {transformers.__version__} still builds a causal mask for "
            f"{type(backbone).__name__} after config.is_causal=False; BiLLM needs transformers >= 5"
        )
    return backbone


@torch.no_grad()
def is_bidirectional(backbone: nn.Module) -> bool:
    """Does the first token's state depend on the last token? Checked with and without padding."""
    device = next(backbone.parameters()).device
    vocab = int(backbone.config.vocab_size)
    a, b, c, d = (t % vocab for t in (5, 6, 7, 8))
    # Rows 0/1 differ only in their last token (no padding: the mask-skipped path);
    # rows 2/3 likewise with one pad position (the materialized-mask path).
    ids = torch.tensor([[a, b, c, a], [a, b, c, d], [a, b, c, a], [a, b, d, a]], device=device)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]], device=device)
    was_training = backbone.training
    backbone.eval()
    try:
        first = [backbone(input_ids=ids[i: i + 1], attention_mask=mask[i: i + 1]).last_hidden_state[0, 0].float()
                 for i in range(4)]
    finally:
        backbone.train(was_training)

    def differs(x: torch.Tensor, y: torch.Tensor) -> bool:
        return bool((x - y).abs().max() > 1e-6 * (1 + x.abs().max()))

    return differs(first[0], first[1]) and differs(first[2], first[3])
