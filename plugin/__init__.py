"""angle-lab trainer: fine-tune sentence embeddings with AnglE.

Public surface: TrainConfig, train(config, callbacks) -> TrainResult, load(path) -> Encoder.
Heavy modules (torch, transformers) load lazily, so `from plugin import TrainConfig`
stays cheap for the API server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import TrainConfig

if TYPE_CHECKING:
    from .model import Encoder, load
    from .trainer import TrainResult, train

__all__ = ["TrainConfig", "train", "TrainResult", "load", "Encoder"]

_LAZY = {"train": "trainer", "TrainResult": "trainer", "load": "model", "Encoder": "model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'plugin' has no attribute {name!r}")
