"""Pooling strategies: token states (B, T, H) + attention mask (B, T) -> (B, H).

Pure functions, no state. `last` finds each row's last real token from the
mask, so it is correct for left and right padding alike; `max` fills padding
with the dtype's minimum so a padded position can never win.

    .venv/bin/python -m pytest tests/plugin/test_pooling.py
"""

from __future__ import annotations

import torch

POOLINGS = ("cls", "cls_avg", "mean", "max", "last")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    padded = hidden.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min)
    return padded.max(1).values


def first_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The first real token (the CLS position under right padding, and under left padding too)."""
    idx = mask.int().argmax(1)  # first position where mask == 1
    return hidden[torch.arange(hidden.size(0), device=hidden.device), idx]


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token, whichever side the padding is on."""
    t = mask.size(1)
    positions = torch.arange(t, device=mask.device).expand_as(mask)
    idx = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(1).values
    return hidden[torch.arange(hidden.size(0), device=hidden.device), idx]


def pool(hidden: torch.Tensor, mask: torch.Tensor, strategy: str) -> torch.Tensor:
    if strategy == "cls":
        return first_token_pool(hidden, mask)
    if strategy == "cls_avg":
        return (first_token_pool(hidden, mask) + mean_pool(hidden, mask)) / 2
    if strategy in ("mean", "avg"):
        return mean_pool(hidden, mask)
    if strategy == "max":
        return max_pool(hidden, mask)
    if strategy == "last":
        return last_token_pool(hidden, mask)
    raise ValueError(f"pooling_strategy must be one of {POOLINGS}, got {strategy!r}")
