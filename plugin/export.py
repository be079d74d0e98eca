"""Write a trained model as a sentence-transformers folder plus our own files.

save_dir/
  config.json, model.safetensors, tokenizer*   the backbone (AutoModel) and tokenizer
  adapter_config.json, adapter_model.safetensors  instead of the backbone with apply_lora (on the base model)
  merged/                                      merge_lora: a full folder with the adapter merged in
  modules.json, sentence_bert_config.json      sentence-transformers: Transformer ->
  1_Pooling/config.json, 2_Normalize/          Pooling (ours mapped) -> Normalize (if chosen)
  config_sentence_transformers.json            prompts, cosine similarity
  train_config.json                            the resolved TrainConfig, read by plugin.load
  metrics.json, README.md                      metrics before/after and a model card
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .evaluate import split_metric_key
from .llm import MERGED_DIR, export_warnings, load_saved_backbone
from .model import CONFIG_FILE, AnglEModel
from .modifiers import describe_modifiers

# Our pooling -> sentence-transformers Pooling flags. cls_avg has no ST
# equivalent (ST concatenates modes, it does not average them).
ST_POOLING = {"cls": "cls", "mean": "mean", "max": "max", "last": "lasttoken"}


def prompt_prefix(template: str | None) -> str | None:
    """ST prompts are prefixes: a template must end with {text} to map onto one."""
    if not template:
        return None
    if not template.endswith("{text}") or template.count("{text}") != 1:
        return None
    return template[: -len("{text}")]


def st_prompts(config: TrainConfig) -> dict[str, str]:
    named = {"text": config.text_prompt, "query": config.query_prompt, "document": config.doc_prompt}
    return {k: p for k, t in named.items() if (p := prompt_prefix(t)) is not None}


def pooling_config(strategy: str, dim: int) -> dict[str, Any]:
    mode = ST_POOLING[strategy]
    return {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_max_tokens": mode == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": mode == "lasttoken",
        "include_prompt": True,
    }


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_model(model: AnglEModel, tokenizer: Any, config: TrainConfig, save_dir: str | Path) -> list[str]:
    """Save backbone, tokenizer, ST module files and the resolved config. Returns warnings."""
    out = Path(save_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_json(out / CONFIG_FILE, config.model_dump(mode="json"))
    warnings = export_warnings(config)
    if config.apply_lora and config.merge_lora:  # rebuilt from the adapter just saved above
        warnings += save_merged(model, tokenizer, config, out)
    if config.pooling_strategy not in ST_POOLING:
        warnings.append(
            f"pooling_strategy {config.pooling_strategy!r} has no sentence-transformers equivalent: "
            "the folder loads with plugin.load, not SentenceTransformer"
        )
        return warnings
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if config.normalize_embeddings:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    write_json(out / "modules.json", modules)
    write_json(out / "sentence_bert_config.json", {"max_seq_length": config.maxlen, "do_lower_case": False})
    (out / "1_Pooling").mkdir(exist_ok=True)
    write_json(out / "1_Pooling" / "config.json", pooling_config(config.pooling_strategy, model.hidden_size))
    prompts = st_prompts(config)
    for name, template in (("text", config.text_prompt), ("query", config.query_prompt), ("document", config.doc_prompt)):
        if template and name not in prompts:
            warnings.append(f"{name} prompt {template!r} does not end with {{text}}: not saved as a sentence-transformers prompt")
    write_json(out / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer",
        "prompts": prompts,
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        # Full size by default; the trained Matryoshka sizes are listed for users (ST ignores the key).
        **({"truncate_dim": None, "matryoshka_dims": config.matryoshka_dims} if config.matryoshka_dims else {}),
    })
    return warnings


def _fmt(value: float) -> str:
    return f"{100 * value:.2f}"


def _variant_of(key: str) -> str:
    """The dim/layer variant of "test_spearman@256" ("256"), "" for a full-size metric."""
    return split_metric_key(key.split("_", 1)[-1])[1]


def variants_table(config: TrainConfig, metrics: dict[str, float]) -> list[str]:
    """Markdown: each metric (x100) before/after at full size, at each Matryoshka dim and each layer."""
    keys = {k.split("/", 1)[1] for k in metrics if k.startswith(("before/", "after/"))}
    found = {_variant_of(k) for k in keys} - {""}
    variants = (sorted((v for v in found if v[0] != "L"), key=int, reverse=True)  # dims, widest first
                + sorted((v for v in found if v[0] == "L"), key=lambda v: int(v[1:])))  # then layers 1, 2, ...
    if not variants:
        return []
    bases = sorted({k for k in keys if not _variant_of(k)})
    head = ["full", *[f"layer {v[1:]}" if v.startswith("L") else f"{v} dims" for v in variants]]
    rows = []
    for base in bases:
        split, name = base.split("_", 1) if "_" in base else ("", base)
        for stage in ("before", "after"):
            cells = [metrics.get(f"{stage}/{base}"), *[metrics.get(f"{stage}/{split}_{name}@{v}") for v in variants]]
            if any(c is not None for c in cells):
                rows.append(f"| {base} {stage} | " + " | ".join(_fmt(c) if c is not None else "-" for c in cells) + " |")
    dims = config.matryoshka_dims or ([config.ese_compression_size] if config.apply_ese else [])
    use = (f"Use a smaller size with `SentenceTransformer(path, truncate_dim={dims[-1]})` or "
           f"`plugin.load(path, truncate_dim={dims[-1]})` (first dims, renormalized). " if dims else "")
    return [
        "## Metrics by embedding size and layer (x100)",
        f"{use}Trained sizes: {dims or 'full only'}"
        + (f"; shallow layers trained ({'Espresso' if config.apply_ese else 'AdaptiveLayer'})."
           if config.adaptive_layers or config.apply_ese else "."),
        "",
        "| metric | " + " | ".join(head) + " |",
        "| --- | " + " | ".join("---" for _ in head) + " |",
        *rows,
        "",
    ]


def model_card(config: TrainConfig, data_format: str, n_train: int, metrics: dict[str, float],
               global_step: int) -> str:
    """A README.md for the saved model: data, losses, hyperparameters and metrics before/after."""
    losses = [f"{name} (w={w}, tau={tau})" if tau else f"{name} (w={w})" for name, w, tau in (
        ("cosine/CoSENT", config.cosine_w, config.cosine_tau), ("in-batch negatives", config.ibn_w, config.ibn_tau),
        ("contrastive", config.cln_w if data_format == "C" else 0.0, config.ibn_tau),
        ("angle", config.angle_w, config.angle_tau), ("distillation", config.distill_w, config.distill_tau),
    ) if w > 0]
    rows = []
    keys = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(("before/", "after/"))
                   and not _variant_of(k.split("/", 1)[1])})  # per-dim/layer metrics: their own table
    for key in keys:
        before, after = metrics.get(f"before/{key}"), metrics.get(f"after/{key}")
        rows.append(f"| {key} | {_fmt(before) if before is not None else '-'} | {_fmt(after) if after is not None else '-'} |")
    hp = ["model_name_or_path", "pooling_strategy", "maxlen", "epochs", "max_steps", "batch_size",
          "gradient_accumulation_steps", "learning_rate", "warmup_steps", "warmup_ratio", "lr_scheduler_type",
          "weight_decay", "backbone_dropout", "freeze_embeddings", "ema_decay", "wise_alpha", "bf16", "fp16", "seed",
          "normalize_embeddings", "text_prompt", "query_prompt", "doc_prompt"]
    cfg = config.model_dump()
    return "\n".join([
        "---",
        "library_name: sentence-transformers",
        "tags: [sentence-transformers, sentence-similarity, feature-extraction, angle]",
        "---",
        "",
        f"# AnglE fine-tune of {config.model_name_or_path}",
        "",
        "Trained with angle-lab (AnglE, arXiv 2309.12871). Load it with",
        "`SentenceTransformer(path)` or `plugin.load(path)`.",
        "",
        "## Data",
        f"- train: `{config.train_name_or_path}` (format {data_format}, {n_train} examples)",
        *([f"- hard negatives mined by the starting model before training: ranks {config.mine_range_for_sampling}, "
           f"{config.mine_negative_number} per query, train_group_size {config.train_group_size}"]
          if config.mine_hard_negatives else []),
        f"- valid: `{config.valid_name_or_path}`" if config.valid_name_or_path else "- valid: none",
        f"- test: `{config.test_name_or_path}`" if config.test_name_or_path else "- test: none",
        "",
        "## Losses",
        *[f"- {line}" for line in losses],
        *[f"- {line}" for line in describe_modifiers(config)],
        "",
        "## Hyperparameters",
        "| parameter | value |",
        "| --- | --- |",
        *[f"| {k} | {cfg[k]} |" for k in hp],
        f"| global steps | {global_step} |",
        "",
        "## Metrics (x100)",
        "| metric | before | after |",
        "| --- | --- | --- |",
        *rows,
        "",
        *variants_table(config, metrics),
    ])


def save_merged(model: AnglEModel, tokenizer: Any, config: TrainConfig, save_dir: Path) -> list[str]:
    """save_dir/merged: the adapter just saved in save_dir, merged into a fresh copy of the base.

    Rebuilt from the saved adapter (not the live model), so the training
    model is untouched and a k-bit run merges into full-precision weights.
    Returns export warnings.
    """
    cfg = config.model_dump(mode="json")
    merged = load_saved_backbone(Path(save_dir), cfg).merge_and_unload()
    plain = config.model_copy(update={"apply_lora": False, "merge_lora": False, "pretrained_lora_path": None,
                                      "load_kbit": 16})
    return save_model(AnglEModel(merged, model.pooling_strategy), tokenizer, plain, Path(save_dir) / MERGED_DIR)
