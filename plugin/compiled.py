"""Inference-time torch.compile with inductor freezing, for Encoder.encode (about 2x fp32 on a CPU).

    .venv/bin/python -m pytest -q tests/plugin/test_compiled.py

Freezing turns the weights into constants of the compiled graph, so inductor can pre-pack them for
oneDNN and fold what depends only on them. bench/encode.py on MiniLM, 2 threads
(2026-12-02, AMD EPYC, 10k STS-B sentences): fp32 445 -> 835 sentences/s (1.88x, max abs diff 4e-7); bf16
autocast 1234 -> 1308 (1.06x). Compiling costs ~17 s in the first call (and a few seconds for a new shape
class, e.g. a batch of one), and the frozen constants are a second copy of the weights, so it pays only on
long inputs: "auto" compiles fp32 on a CPU only.

Frozen weights go stale when the model trains on, so each encode call first fingerprints the weights (a
float64 sum and absolute sum per tensor, ~10 ms for MiniLM) and a changed fingerprint compiles afresh.
Not the tensors' in-place version counters: the fused AdamW step (HF's default optimizer) leaves them as they are.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch import nn

log = logging.getLogger("angle_lab")

CompileMode = Literal["auto", "on", "off"]
COMPILE_MODES = ("auto", "on", "off")

# "auto" compiles when the texts hold at least this many tokens: about a minute of eager fp32 encoding
# of MiniLM on 2 CPU threads, three times the compile cost (STS-B test: 3k sentences, ~40k tokens, eager;
# the SciFact corpus: 5,183 abstracts, ~1.2M tokens at max length 256, compiled).
AUTO_MIN_TOKENS = 300_000
# ... and the backbone has at most this many parameters: the frozen constants copy the weights.
AUTO_MAX_PARAMS = 500_000_000


def weights_fingerprint(module: nn.Module) -> torch.Tensor:
    """(n_tensors, 2) float64: each parameter's sum and absolute sum. An optimizer step changes both."""
    with torch.no_grad():
        return torch.stack([torch.stack((p.sum(dtype=torch.float64), p.abs().sum(dtype=torch.float64))).cpu()
                            for p in module.parameters()])


def wants_compile(mode: str, device: torch.device, n_tokens: int, n_params: int, precision: str = "fp32") -> bool:
    """Whether encode should run the compiled module: "on" always, "off" never, "auto" on long fp32 CPU inputs.

    Not bf16 under "auto": bench/encode.py measured 1.06x there (eager bf16 is already 2.8x eager fp32).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return (device.type == "cpu" and precision == "fp32" and n_tokens >= AUTO_MIN_TOKENS
            and n_params <= AUTO_MAX_PARAMS)


class FrozenCompile:
    """A module compiled for inference with frozen weights, recompiled when its weights change.

    get(module) returns the function to run in place of module(...): the compiled one, or module
    itself when compiling failed (a backbone dynamo cannot trace: logged once, then eager for good).
    """

    def __init__(self) -> None:
        self._key: tuple[tuple[int, ...], torch.Tensor] | None = None  # (parameter ids, fingerprint)
        self._fn: Callable[..., Any] | None = None
        self.failed = False
        self.compiles = 0

    def get(self, module: nn.Module) -> Callable[..., Any]:
        if self.failed:
            return module
        key = (tuple(id(p) for p in module.parameters()), weights_fingerprint(module))
        same = self._key is not None and key[0] == self._key[0] and torch.equal(key[1], self._key[1])
        if self._fn is None or not same:
            if self._fn is not None:
                # Same module, new weights: dynamo's guards would still match, so the graphs frozen with the
                # old weights must go. reset() drops every compiled graph (others retrace on their next call).
                torch.compiler.reset()
            self._fn, self._key = torch.compile(module, dynamic=True), key
            self.compiles += 1
        return self._fn

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Where the compiled function is called: freezing on (compilation happens inside calls)."""
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            yield

    def give_up(self, error: Exception) -> None:
        """Compiling failed: warn once and stay eager from now on."""
        log.warning("torch.compile of the encoder failed, encoding eagerly from now on (%s: %s)",
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        self.failed, self._fn, self._key = True, None, None
        torch.compiler.reset()
