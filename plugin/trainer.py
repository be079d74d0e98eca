"""train(config, callbacks) -> TrainResult: AnglE on the Hugging Face Trainer.

Data is read and validated first (bad data fails before a model loads), the
starting model is scored on valid/test, training runs on an HF Trainer
subclass (so accelerate, checkpoints, resume, mixed precision, gradient
accumulation and W&B/TensorBoard reporting are the library's), and the
result is written as a sentence-transformers folder with metrics and a card.

    .venv/bin/python -m plugin.train --config examples/stsb.json
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from .config import TrainConfig, resolve_model_path
from .data import (
    Collator,
    DataError,
    Examples,
    PairDataset,
    column_prompts,
    load_examples,
    positive_threshold,
)
from .distributed import gather_batch, loss_scale, world_size
from .ema import WeightEMA
from .evaluate import PRIMARY_METRIC, evaluate
from .export import model_card, save_model, write_json
from .gradcache import gradcache_step, split_rows
from .llm import build_backbone, load_backbone
from .memory import set_host_memory
from .model import AnglEModel, Encoder, interpolate_weights, load_tokenizer, set_dropout
from .modifiers import check_model_fit, eval_variants, needs_all_layers, total_loss
from .objective import kd_term, n_columns
from .sampler import ShuffledLengthGroupedSampler

log = logging.getLogger("angle_lab")
BEFORE_FILE = "before_metrics.json"


@dataclass
class TrainResult:
    save_dir: str
    global_step: int
    max_steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    stopped: bool = False


class _EpochSetter(TrainerCallback):
    """Re-sample list-valued fields each epoch (deterministic per seed and epoch)."""

    def __init__(self, dataset: PairDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class AnglETrainer(Trainer):
    """HF Trainer with the AnglE objective, length-grouped batches and embedding evaluation."""

    def __init__(self, *args: Any, angle_config: TrainConfig, data_format: str, positive_label: float,
                 lengths: list[int], teacher_embeddings: torch.Tensor | None = None,
                 evaluator: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.angle_config = angle_config
        self.data_format = data_format
        self.positive_label = positive_label
        self.lengths = lengths
        self.teacher_embeddings = teacher_embeddings
        self.evaluator = evaluator

    # compute_loss never normalizes by num_items_in_batch, so training_step must divide by the
    # accumulation steps (HF would skip that for format A: AnglEModel.forward takes **kwargs).
    loss_is_scaled_for_ga = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # `model` is the accelerate/DDP-wrapped module: calling it is what syncs gradients.
        # Each column (text1/text2, query/positive/negatives) cut to its own longest text.
        out = self._embed(model, inputs["input_ids"], inputs["attention_mask"],
                          row_groups=n_columns(self.data_format, self.angle_config))
        loss = self._embeddings_loss(out, inputs)
        emb = out[-1] if needs_all_layers(self.angle_config) else out
        return (loss, {"embeddings": emb}) if return_outputs else loss

    def _embed(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               row_groups: int = 1) -> torch.Tensor:
        # AdaptiveLayer/Espresso read every layer: out is (L, N, H) then, its last row the usual output.
        all_layers = needs_all_layers(self.angle_config)
        return model(input_ids=input_ids, attention_mask=attention_mask, all_layers=all_layers,
                     row_groups=row_groups, multiple_of=self.angle_config.effective_pad_multiple)

    def _cross_device(self) -> bool:
        return self.angle_config.negatives_cross_device and world_size() > 1

    def _embeddings_loss(self, out: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """The loss to backpropagate for a batch's embeddings (rows on dim -2).

        With negatives_cross_device and several processes, on the global batch
        gathered from every process and multiplied by the world size (plugin/distributed.py).
        """
        teacher = None
        if self.teacher_embeddings is not None:
            teacher = self.teacher_embeddings[inputs["text_idx"].cpu()].to(out.device)
        labels, scores = inputs.get("labels"), inputs.get("teacher_scores")
        if self._cross_device():
            out, labels, teacher, scores = gather_batch(out, n_columns(self.data_format, self.angle_config),
                                                        labels, teacher, scores)
        loss, _ = total_loss(out, self.data_format, self.angle_config, labels, self.positive_label, teacher)
        # The modifiers (Matryoshka...) take no teacher scores: KD applies once, to the final full embedding.
        kd = kd_term(out[-1] if needs_all_layers(self.angle_config) else out, self.data_format,
                     self.angle_config, scores)
        if kd is not None:
            loss = loss + kd
        return loss * loss_scale(self._cross_device())

    def training_step(self, model, inputs, num_items_in_batch=None):
        """HF's step, or GradCache (plugin/gradcache.py) when mini_batch_size splits the batch.

        Returns the batch's loss for logging: not multiplied by the world size
        as the backpropagated one is under cross-device negatives.
        """
        scale = loss_scale(self._cross_device())
        mini = self.angle_config.mini_batch_size
        n_cols = n_columns(self.data_format, self.angle_config)
        if not mini or mini * n_cols >= inputs["input_ids"].size(0):
            return super().training_step(model, inputs, num_items_in_batch) / scale
        model.train()
        inputs = self._prepare_inputs(inputs)
        steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)

        def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            with self.compute_loss_context_manager():
                return self._embed(model, ids, mask)

        def loss_fn(out: torch.Tensor) -> torch.Tensor:
            with self.compute_loss_context_manager():
                return self._embeddings_loss(out, inputs) / steps

        chunks = split_rows(inputs["input_ids"], inputs["attention_mask"], mini * n_cols)
        loss = gradcache_step(forward, chunks, loss_fn, self.accelerator.backward,
                              functools.partial(self.accelerator.no_sync, model=model))
        return loss / scale

    def _get_train_sampler(self, train_dataset=None):
        if not self.angle_config.group_by_length:
            return super()._get_train_sampler(train_dataset)
        # Batches of similar length (padding drops ~2.5x on STS-B) in a random order; each epoch
        # still sees every example once, seeded. Why not HF's LengthGroupedSampler: plugin/sampler.py.
        return ShuffledLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                            lengths=self.lengths)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.evaluator is not None:
            payload = [None]
            if self.is_world_process_zero():
                payload = [{f"{metric_key_prefix}_{k}": v for k, v in self.evaluator(self.model).items()}]
            if self.args.world_size > 1:  # every rank must agree on the best checkpoint
                from accelerate.utils import broadcast_object_list

                broadcast_object_list(payload, from_process=0)
            metrics = payload[0] or {}
        metrics["epoch"] = self.state.epoch or 0.0
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def _load_split(config: TrainConfig, which: str) -> Examples | None:
    name = getattr(config, f"{which}_name_or_path")
    if not name:
        return None
    return load_examples(
        name, getattr(config, f"{which}_subset_name"), getattr(config, f"{which}_split_name"),
        config.data_format, config.column_rename_mapping,
        limit=config.max_train_samples if which == "train" else None,
    )


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# A run logs its loss at least this many times (every step when it is shorter), so the job page draws a
# curve: the default job (STS-B, 1 epoch at batch 32) has 180 steps and logged once at logging_steps=100.
CURVE_POINTS = 200


def log_interval(config: TrainConfig, n_examples: int) -> int:
    """Steps between logged losses: logging_steps at most, fewer where that would give under CURVE_POINTS points.

    Estimated from the data size, before the Trainer counts its steps, so a resumed run gets
    the same interval (HF warns when it differs from the checkpoint's); rounding is harmless here.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = max(1, math.ceil(n_examples / (config.batch_size * world)) // config.gradient_accumulation_steps)
    steps = config.max_steps if config.max_steps > 0 else per_epoch * config.epochs
    return max(1, min(config.logging_steps, steps // CURVE_POINTS))


def _training_args(config: TrainConfig, has_valid: bool, primary: str, n_examples: int) -> TrainingArguments:
    evaluating = has_valid and config.eval_strategy != "no"
    # The weight average (ema_decay) is what gets saved: no best checkpoint to reload.
    keep_best = evaluating and not config.ema_decay and config.save_strategy == config.eval_strategy and (
        config.save_strategy == "epoch" or config.save_steps % config.eval_steps == 0)
    if config.wandb_project:
        os.environ.setdefault("WANDB_PROJECT", config.wandb_project)
    return TrainingArguments(
        output_dir=str(Path(config.save_dir) / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio if config.warmup_ratio > 0 else config.warmup_steps,
        logging_steps=log_interval(config, n_examples),
        save_strategy=config.save_strategy,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy=config.eval_strategy if evaluating else "no",
        eval_steps=config.eval_steps,
        load_best_model_at_end=keep_best,
        metric_for_best_model=f"eval_{primary}" if keep_best else None,
        greater_is_better=True,
        fp16=config.fp16,
        bf16=config.bf16,
        use_cpu=not torch.cuda.is_available(),
        report_to=config.reporters or "none",
        seed=config.seed,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        disable_tqdm=not _is_main_process(),
    )


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint-N under folder that finished writing, or None.

    A process killed while saving leaves a checkpoint folder without
    trainer_state.json (HF writes it last); resuming from it would crash, so skip it.
    """
    done = [p for p in folder.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _same_model(a: str, b: str) -> bool:
    a, b = resolve_model_path(a), resolve_model_path(b)
    return a == b or (os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


def _teacher_encoder(config: TrainConfig, model: AnglEModel, tokenizer: Any) -> Encoder:
    """The distillation teacher: teacher_name_or_path, or the starting model itself.

    No teacher, or the student's own model: self-distillation from the
    starting weights, sharing them (the teacher embeddings are computed before
    any update, so no second copy is loaded). Another model embeds the texts
    with its own tokenizer: the student's input_ids are never reused, so a
    teacher with a different vocabulary works as well as one with the same.
    """
    pooling = config.teacher_pooling_strategy or config.pooling_strategy
    name = config.teacher_name_or_path
    if not name or (_same_model(name, config.model_name_or_path) and not config.tokenizer_name_or_path):
        teacher = AnglEModel(model.backbone, pooling).train(model.training)
        return Encoder(teacher, tokenizer, config.maxlen, normalize=True, compile=config.encode_compile)
    from .model import load

    t_enc = load(name, compile=config.encode_compile)
    t_enc.model.pooling_strategy = pooling
    t_enc.maxlen = config.maxlen
    return t_enc


MINED_FILE = "mined_negatives.json"


def _mined_examples(config: TrainConfig, train_ex: Examples, encoder: Encoder, save_dir: Path) -> Examples:
    """train_ex with negatives mined by the starting model (plugin.mine.mine_examples), format C.

    Written to save_dir/checkpoints/mined_negatives.json and read back from there on a resume,
    so a resumed run trains on the same negatives without encoding the pool again.
    """
    from .mine import mine_examples

    if train_ex.format not in ("B", "C"):
        raise DataError(f"{config.train_name_or_path}: mine_hard_negatives needs query/positive data "
                        f"(format B, C or a BEIR folder), got format {train_ex.format}")
    cache = save_dir / "checkpoints" / MINED_FILE
    if config.resume_from_checkpoint and cache.is_file():
        saved = json.loads(cache.read_text())
        if len(saved["query"]) == len(train_ex):
            return Examples(format="C", texts=saved, sources=train_ex.sources, beir=train_ex.beir)
    lo, hi = config.mine_range
    mined = mine_examples(train_ex, encoder, lo, hi, config.mine_negative_number, config.query_prompt,
                          config.doc_prompt, config.eval_batch_size, config.seed)
    if _is_main_process():
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(mined.texts, ensure_ascii=False))
    n = sum(len(v) for v in mined.texts["negative"]) / max(len(mined), 1)
    log.info("mined %.1f negatives per query (ranks %d-%d) for %d training rows", n, lo, hi, len(mined))
    return mined


def train(config: TrainConfig, callbacks: list[TrainerCallback] | None = None) -> TrainResult:
    """Train, evaluate before/after, and save a sentence-transformers model to config.save_dir."""
    from transformers import set_seed

    set_host_memory(config.host_memory)
    save_dir = Path(config.save_dir)
    # 1. Data first: every data error surfaces before a model is loaded.
    train_ex = _load_split(config, "train")
    assert train_ex is not None
    valid_ex, test_ex = _load_split(config, "valid"), _load_split(config, "test")
    fmt = train_ex.format
    primary = PRIMARY_METRIC[fmt]
    thr = positive_threshold(train_ex.labels or [], config.ibn_label_threshold)
    if config.kd_w > 0 and train_ex.scores is None:
        raise DataError(f"{config.train_name_or_path}: kd_w > 0 needs teacher scores: format C rows with "
                        "pos_scores and neg_scores, one per pos and neg text (FlagEmbedding's jsonl)")
    prompts = column_prompts(fmt, config.text_prompt, config.query_prompt, config.doc_prompt)

    # 2. Model.
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.tokenizer_name_or_path or config.model_name_or_path,
                               config.tokenizer_padding_side, append_eos=config.is_llm)
    # LoRA, BiLLM, k-bit and gradient checkpointing are set up on the backbone (plugin/llm.py): the HF
    # Trainer would call gradient_checkpointing_enable on our wrapper, which is not a PreTrainedModel.
    model = AnglEModel(build_backbone(config), config.pooling_strategy)
    if config.backbone_dropout is not None:
        set_dropout(model.backbone, config.backbone_dropout)
    check_model_fit(config, model.hidden_size, model.num_layers)  # e.g. matryoshka_dims above the hidden size
    if config.angle_w and model.hidden_size % 2:
        raise ValueError(f"angle_w > 0 needs an even hidden size; the model has {model.hidden_size}")
    if torch.cuda.is_available() and config.load_kbit == 16:  # k-bit weights were placed on the GPU at load
        model.cuda()
    encoder = Encoder(model, tokenizer, config.maxlen, normalize=True, compile=config.encode_compile)
    precision = "bf16" if config.bf16 else ("fp16" if config.fp16 else "fp32")
    mine_seconds = None
    if config.mine_hard_negatives:  # format B/BEIR -> C with the starting model, before any update
        t0 = time.perf_counter()
        train_ex = _mined_examples(config, train_ex, encoder, save_dir)
        mine_seconds = time.perf_counter() - t0
        fmt = train_ex.format
    dataset = PairDataset(train_ex, tokenizer, config.maxlen, prompts, config.effective_dataset_seed,
                          n_negatives=config.train_group_size - 1 if fmt == "C" else 1)

    dims, layers = eval_variants(config, model.num_layers)  # per-dim / per-layer metrics for the modifiers

    def score(ex: Examples | None) -> dict[str, float]:
        return evaluate(encoder, ex, prompts, config.eval_batch_size, dims, layers) if ex is not None else {}

    # 3. Before: score the starting model once (kept across resumes).
    resume = config.resume_from_checkpoint
    if resume == "last":
        resume = last_complete_checkpoint(save_dir / "checkpoints")
    metrics: dict[str, float] = {}
    before_file = save_dir / "checkpoints" / BEFORE_FILE
    if _is_main_process():
        if before_file.is_file():
            metrics.update(json.loads(before_file.read_text()))
        elif config.evaluate_before_training:
            for split, ex in (("valid", valid_ex), ("test", test_ex)):
                metrics.update({f"before/{split}_{k}": v for k, v in score(ex).items()})
            before_file.parent.mkdir(parents=True, exist_ok=True)
            write_json(before_file, metrics)

    # 4. Teacher embeddings, computed once: the teacher is frozen and the texts fixed.
    teacher_emb = None
    if config.distill_w > 0:
        t0 = time.perf_counter()
        t_enc = _teacher_encoder(config, model, tokenizer)
        teacher_emb = t_enc.encode(dataset.texts, batch_size=config.eval_batch_size, normalize=True,
                                   precision=precision, convert_to_numpy=False, show_progress_bar=False)
        metrics["teacher_encode_seconds"] = time.perf_counter() - t0

    if mine_seconds is not None:
        metrics["mine_seconds"] = mine_seconds
    ema = WeightEMA(model, config.ema_decay, resume) if config.ema_decay else None
    trainer = AnglETrainer(
        model=model,
        args=_training_args(config, valid_ex is not None, primary, len(dataset)),
        train_dataset=dataset,
        eval_dataset=valid_ex,  # only checked for presence: evaluate() scores it with the encoder
        data_collator=Collator(dataset, tokenizer.pad_token_id, tokenizer.padding_side,
                               config.maxlen if config.tokenizer_padding == "max_length" else None,
                               multiple_of=config.effective_pad_multiple, maxlen=config.maxlen),
        callbacks=[_EpochSetter(dataset), *([ema] if ema else []), *(callbacks or [])],
        angle_config=config,
        data_format=fmt,
        positive_label=thr,
        lengths=dataset.lengths(),
        teacher_embeddings=teacher_emb,
        evaluator=(lambda _m: score(valid_ex)) if valid_ex is not None else None,
    )
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - t0
    state = trainer.state
    stopped = state.global_step < state.max_steps
    metrics.update({
        "train_loss": float(out.training_loss),
        "train_runtime": train_seconds,
        "train_steps_per_second": float(out.metrics.get("train_steps_per_second", 0.0)),
        "train_pairs_per_second": float(out.metrics.get("train_samples_per_second", 0.0)),
        "global_step": state.global_step,
    })
    # Training is over (checkpoints hold what a resume needs): free the gradients and the optimizer
    # state, twice the trainable weights, before the starting weights, scoring and export take memory.
    model.zero_grad(set_to_none=True)
    if trainer.optimizer is not None:
        trainer.optimizer.state.clear()
    if ema is not None:
        log.info("EMA: %d weight tensors set to their moving average (decay %g)", ema.apply(), config.ema_decay)
        ema.shadow.clear()
    if config.wise_alpha < 1.0:
        # WiSE-FT: the starting weights are read again from disk (not kept in memory during training).
        start = load_backbone(config.model_name_or_path, config.torch_dtype).state_dict()
        n = interpolate_weights(model.backbone, start, config.wise_alpha)
        log.info("WiSE-FT: %d tensors set to %.2f * tuned + %.2f * starting", n, config.wise_alpha, 1 - config.wise_alpha)
        del start
    evals = [h for h in state.log_history if f"eval_{primary}" in h]
    if evals:
        metrics["best/valid_" + primary] = max(h[f"eval_{primary}"] for h in evals)

    # 5. After: score the final (or best) model, then export on the main process.
    if trainer.is_world_process_zero():
        if not stopped:
            for split, ex in (("valid", valid_ex), ("test", test_ex)):
                metrics.update({f"after/{split}_{k}": v for k, v in score(ex).items()})
        warnings = save_model(model, tokenizer, config, save_dir)
        for w in warnings:
            log.warning(w)
        write_json(save_dir / "metrics.json", metrics)
        (save_dir / "README.md").write_text(model_card(config, fmt, len(train_ex), metrics, state.global_step))
    if trainer.args.world_size > 1:
        trainer.accelerator.wait_for_everyone()
    return TrainResult(str(save_dir), state.global_step, state.max_steps, metrics, stopped)
