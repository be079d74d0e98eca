"""Loss modifiers around the AnglE objective: Matryoshka, AdaptiveLayer (both: Matryoshka2d) and Espresso.

Each modifier is a small pure function that calls a base loss f (the
weighted AnglE objective of plugin.trainer.objective, bound to the batch's
format, labels and config) on other views of the same batch:

  Matryoshka   f at every prefix emb[:, :d] of the embedding          (Kusupati et al., arXiv 2205.13147)
  AdaptiveLayer f at shallower layers' pooled states + a KL term      (2DMSE, Li et al., arXiv 2402.14776;
                                                                       sentence-transformers' AdaptiveLayerLoss)
  Matryoshka2d AdaptiveLayer whose f is the Matryoshka loss
  Espresso     f at the last layer, at its first k dims, and at the first k dims
               of every shallower layer + KL terms (angle-emb's apply_ese, ESE, arXiv 2402.14776)

No renormalization is needed for a prefix: every AnglE loss is scale-free
(CoSENT and the angle difference divide by |u||v|, InfoNCE and in-batch
negatives normalize), so f(emb[:, :d]) == f(normalize(emb[:, :d])).

Checks that need the model's width/depth live here too: `check_model_fit`
(called by train() once the backbone is loaded) and `preflight` (reads only
the model's config.json; the API calls it to answer 422 before queueing).

    .venv/bin/python -m pytest tests/plugin/test_modifiers.py
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .config import TrainConfig, resolve_model_path
from .objective import objective

if TYPE_CHECKING:  # torch loads lazily: the API server imports this module for preflight()
    import torch

LossFn = Callable[["torch.Tensor"], "torch.Tensor"]  # (N, d) embeddings -> scalar loss


# ------------------------------------------------------------------ pure losses
def matryoshka_loss(emb: torch.Tensor, loss_fn: LossFn, dims: Sequence[int],
                    weights: Sequence[float] | None = None) -> torch.Tensor:
    """L = sum_k w_k f(emb[:, :d_k]), w_k = 1 when no weights are given.

    Only the leading dims are sliced (a view: no copy, one backward through
    the shared prefix).
    """
    weights = [1.0] * len(dims) if weights is None else list(weights)
    return sum(w * loss_fn(emb[:, :d]) for d, w in zip(dims, weights, strict=True))  # type: ignore[return-value]


def similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T * KL(p_T(teacher) || p_T(student)), p_T(x)_r = softmax_{j != r}(cos(x_r, x_j) / T).

    Each text's in-batch similarity distribution; the teacher is detached so
    only the student (a shallow layer, a prefix) moves toward it, never the
    reverse. The factor T keeps gradient sizes comparable across temperatures
    (as sentence-transformers' AdaptiveLayerLoss). Widths may differ.
    """
    from .losses import distill_loss

    return temperature * distill_loss(student, teacher.detach(), 1.0 / temperature)


def sample_layers(n_layers: int, k: int, generator: torch.Generator | None = None) -> list[int]:
    """k distinct shallow layers drawn from 1..n_layers-1 (all of them when k >= n_layers - 1), ascending."""
    import torch

    shallow = n_layers - 1
    if k >= shallow:
        return list(range(1, shallow + 1))
    return sorted(int(i) + 1 for i in torch.randperm(shallow, generator=generator)[:k])


def adaptive_layer_loss(layers: torch.Tensor, loss_fn: LossFn, sampled: Sequence[int], last_weight: float = 1.0,
                        prior_weight: float = 1.0, kl_weight: float = 1.0, kl_temperature: float = 0.3) -> torch.Tensor:
    """AdaptiveLayer: every layer becomes a usable exit.

    layers: (L, N, H) pooled states, layers[l - 1] = layer l, layers[-1] the final output h_L.
    L_total = a f(h_L) + sum_{l in S} [ b f(h_l) / (l |S|) + c T KL(p_T(h_L) || p_T(h_l)) ]
    with S the sampled shallow layers, a/b/c the last/prior/KL weights,
    p_T as in similarity_kl. The 1/l factor (sentence-transformers' 1/(1 +
    0-based index)) puts more weight on the shallowest, hardest exits.
    """
    final = layers[-1]
    total = last_weight * loss_fn(final)
    for layer in sampled:
        h = layers[layer - 1]
        total = total + prior_weight * loss_fn(h) / (layer * len(sampled))
        if kl_weight:
            total = total + kl_weight * similarity_kl(h, final, kl_temperature)
    return total


def espresso_loss(layers: torch.Tensor, loss_fn: LossFn, k: int, kl_temperature: float = 1.0) -> torch.Tensor:
    """Espresso (ESE): learn-to-express in shallow layers, learn-to-compress into the first k dims.

    layers: (L, N, H) as in adaptive_layer_loss; h = h_L, x[:k] its first k dims.
    L_total = f(h) + f(h[:k]) + KL_T(h -> h[:k])
              + 1/(L-1) sum_{l=1}^{L-1} [ f(h_l[:k]) + KL_T(h -> h_l[:k]) ] / (1 + ln l)
    with KL_T(t -> s) = similarity_kl(s, t, T): the compressed slices copy the
    full last layer's in-batch similarity structure.

    Where it differs from angle-emb 0.6.1's AngleESETrainer: its KL is a
    softmax over the *feature* axis toward a softmax-attention "PCA"
    projection of the same layer; ours compares in-batch similarity
    distributions (what retrieval and STS use) toward the final full
    embedding. Its layer sum starts at the embedding layer (no context) and
    skips layer L-1; ours covers transformer layers 1..L-1.
    """
    n_layers = layers.size(0)
    final = layers[-1]
    total = loss_fn(final) + loss_fn(final[:, :k]) + similarity_kl(final[:, :k], final, kl_temperature)
    if n_layers > 1:
        shallow = sum(
            (loss_fn(layers[l - 1][:, :k]) + similarity_kl(layers[l - 1][:, :k], final, kl_temperature))
            / (1.0 + math.log(l))
            for l in range(1, n_layers)  # noqa: E741 - l is the layer number in the formula
        )
        total = total + shallow / (n_layers - 1)
    return total


# ------------------------------------------------------------------ the training loss
def needs_all_layers(config: TrainConfig) -> bool:
    """AdaptiveLayer and Espresso read every layer's pooled state (AnglEModel.forward(all_layers=True))."""
    return config.adaptive_layers or config.apply_ese


def total_loss(out: torch.Tensor, fmt: str, config: TrainConfig, labels: torch.Tensor | None = None,
               positive_label: float = 1.0, teacher: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of one batch: objective() with config's modifiers around it.

    out: (N, H) embeddings, or (L, N, H) every layer's when needs_all_layers(config).
    Without modifiers this is exactly objective(out, ...). Returns (loss, parts);
    parts are the last layer's objective parts (for logging).
    """
    final = out[-1] if needs_all_layers(config) else out
    loss, parts = objective(final, fmt, config, labels, positive_label, teacher)
    if not (config.matryoshka_dims or needs_all_layers(config)):
        return loss, parts

    def base(emb: torch.Tensor) -> torch.Tensor:
        return objective(emb, fmt, config, labels, positive_label, teacher)[0]

    f: LossFn = base
    if config.matryoshka_dims:
        def f(emb: torch.Tensor) -> torch.Tensor:
            return matryoshka_loss(emb, base, config.matryoshka_dims, config.matryoshka_weights)  # type: ignore[arg-type]

    if config.apply_ese:
        loss = espresso_loss(out, f, config.ese_compression_size, config.ese_kl_temperature)
    elif config.adaptive_layers:
        sampled = sample_layers(out.size(0), config.adaptive_n_layers_per_step, generator)
        loss = adaptive_layer_loss(out, f, sampled, config.adaptive_last_layer_weight,
                                   config.adaptive_prior_layers_weight, config.adaptive_kl_div_weight,
                                   config.adaptive_kl_temperature)
    else:
        loss = f(out)
    return loss, parts


def describe_modifiers(config: TrainConfig) -> list[str]:
    """One line per active modifier, for the model card."""
    c = config
    lines = []
    if c.matryoshka_dims:
        lines.append(f"Matryoshka: losses at dims {c.matryoshka_dims}, weights {c.matryoshka_weights or 'all 1'}")
    if c.adaptive_layers:
        lines.append(f"AdaptiveLayer{' (Matryoshka2d)' if c.matryoshka_dims else ''}: "
                     f"{c.adaptive_n_layers_per_step} shallow layer(s) per step, last w={c.adaptive_last_layer_weight}, "
                     f"prior w={c.adaptive_prior_layers_weight}, KL w={c.adaptive_kl_div_weight} "
                     f"T={c.adaptive_kl_temperature}")
    if c.apply_ese:
        lines.append(f"Espresso (ESE): compression to the first {c.ese_compression_size} dims and every "
                     f"shallow layer, KL T={c.ese_kl_temperature}")
    return lines


def eval_variants(config: TrainConfig, num_layers: int) -> tuple[list[int], list[int]]:
    """(dims, layers) evaluate() also scores: each matryoshka dim (or the Espresso slice), each shallow layer."""
    dims = list(config.matryoshka_dims or ([config.ese_compression_size] if config.apply_ese else []))
    layers = list(range(1, num_layers)) if needs_all_layers(config) else []
    return dims, layers


# ------------------------------------------------------------------ checks
def config_errors(config: TrainConfig) -> list[tuple[str, str]]:
    """(field, message) for modifier combinations that cannot run, whatever the model."""
    errors = []
    if config.apply_ese and (config.adaptive_layers or config.matryoshka_dims):
        errors.append(("apply_ese", "apply_ese already trains shallow layers and a compressed prefix: "
                                    "do not combine it with adaptive_layers or matryoshka_dims"))
    if config.mini_batch_size is not None and needs_all_layers(config):
        errors.append(("mini_batch_size", "adaptive_layers and apply_ese need every layer of the whole batch: "
                                          "not supported with mini_batch_size (GradCache)"))
    return errors


def fit_errors(config: TrainConfig, hidden_size: int, num_layers: int) -> list[tuple[str, str]]:
    """(field, message) for modifier settings the model cannot take: dims wider than it, too few layers."""
    errors = config_errors(config)
    dims = config.matryoshka_dims or []
    if too_big := [d for d in dims if d > hidden_size]:
        errors.append(("matryoshka_dims", f"matryoshka_dims {dims} has {too_big} above the model's hidden size "
                                          f"{hidden_size}: every dim must be <= {hidden_size}"))
    if config.angle_w and (odd := [d for d in dims if d % 2]):
        errors.append(("matryoshka_dims", f"matryoshka_dims {odd} are odd: the angle loss (angle_w > 0) "
                                          "splits each embedding in halves, so every dim must be even"))
    if config.apply_ese:
        k = config.ese_compression_size
        if k > hidden_size:
            errors.append(("ese_compression_size", f"ese_compression_size ({k}) is above the model's hidden size "
                                                   f"{hidden_size}: it must be <= {hidden_size}"))
        elif config.angle_w and k % 2:
            errors.append(("ese_compression_size", f"ese_compression_size ({k}) is odd: the angle loss "
                                                   "(angle_w > 0) needs an even size"))
    if needs_all_layers(config) and num_layers < 2:
        errors.append(("adaptive_layers" if config.adaptive_layers else "apply_ese",
                       f"the model has {num_layers} layer: adaptive_layers and apply_ese need at least 2"))
    return errors


def check_model_fit(config: TrainConfig, hidden_size: int, num_layers: int) -> None:
    """Raise ValueError naming each field the model cannot take (before any training step)."""
    errors = fit_errors(config, hidden_size, num_layers)
    if errors:
        raise ValueError("; ".join(message for _, message in errors))


def _first_attr(obj: Any, names: Sequence[str]) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int):
            return value
    return None


def model_shape(name_or_path: str) -> tuple[int, int] | None:
    """(hidden_size, num_layers) from the model's config.json alone, or None when it cannot be read offline.

    local_files_only: a hub name not in the cache is skipped rather than
    fetched (the API calls this inside a request).
    """
    from transformers import AutoConfig

    path = resolve_model_path(name_or_path)
    try:
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception:  # noqa: BLE001 - unreadable or uncached: the trainer checks once the model is loaded
        return None
    if hasattr(cfg, "get_text_config"):  # multimodal wrappers keep the text model's sizes there
        cfg = cfg.get_text_config()
    hidden = _first_attr(cfg, ("hidden_size", "d_model", "n_embd", "dim"))
    layers = _first_attr(cfg, ("num_hidden_layers", "n_layer", "num_layers", "n_layers"))
    return (hidden, layers) if hidden and layers else None


def preflight(config: TrainConfig) -> list[tuple[str, str]]:
    """Cheap check before a job is queued: (field, message) for every modifier setting that cannot run.

    Reads only config.json (no weights); when that is unavailable only the
    model-independent checks run and train() checks the rest.
    """
    if not (config.matryoshka_dims or needs_all_layers(config)):
        return []
    shape = model_shape(config.model_name_or_path)
    return fit_errors(config, *shape) if shape else config_errors(config)
