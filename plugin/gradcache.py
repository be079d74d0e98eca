"""GradCache: the gradients of a big in-batch-negatives batch in the memory of a small one.

Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup" (arXiv 2101.06983); sentence-transformers' CachedMultipleNegativesRankingLoss.
The loss L(e) of a batch depends on the parameters theta only through its
embeddings e = f_theta(x), so

    dL/dtheta = sum_c (dL/de_c) . (de_c/dtheta)        over chunks c of the rows

1. embed every chunk without autograd (no activations kept) -> e, saving the RNG
   state before each chunk;
2. compute L(e) on the full batch and g = dL/de (cheap: only the loss head);
3. per chunk: restore its RNG state (so dropout draws the same masks), embed it
   again with autograd and backpropagate the surrogate sum(e_c * g_c), whose
   gradient is exactly g_c . de_c/dtheta. Only one chunk's activations live at a time.

Peak activation memory is that of one chunk; the cost is one extra forward pass.

    .venv/bin/python -m pytest tests/plugin/test_gradcache.py
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

Chunk = tuple[torch.Tensor, torch.Tensor]  # (input_ids, attention_mask)


class RandState:
    """The CPU (and current CUDA device's) RNG state at construction, replayable later."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block with the saved state; the outer RNG state is restored after it."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def split_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk_rows: int,
               multiple_of: int | None = None) -> list[Chunk]:
    """Consecutive chunks of chunk_rows rows, each cut to its own longest text.

    Only trailing all-padding columns are dropped (right padding), so no real
    token changes position and the embeddings equal the full batch's. With
    multiple_of, a chunk keeps its width rounded up to that multiple (fewer
    distinct shapes for compiled kernels), never wider than the batch.
    """
    chunks = []
    for start in range(0, input_ids.size(0), chunk_rows):
        ids, mask = input_ids[start: start + chunk_rows], attention_mask[start: start + chunk_rows]
        used = torch.nonzero(mask.any(0)).max().item() + 1 if mask.any() else mask.size(1)
        if multiple_of:
            used = min(mask.size(1), -(-used // multiple_of) * multiple_of)
        chunks.append((ids[:, :used], mask[:, :used]))
    return chunks


def gradcache_step(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    chunks: list[Chunk],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    backward: Callable[[torch.Tensor], Any],
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One GradCache forward/backward; returns the detached loss.

    forward(ids, mask) -> embeddings with the rows on dim -2 ((n, H) or (L, n, H));
    loss_fn(all rows) -> scalar; backward(surrogate) runs the backward pass
    (accelerate's, for loss scaling and DDP); no_sync() skips DDP's gradient
    all-reduce for all but the last chunk (the last one syncs the sum).
    """
    # 1. Embeddings without autograd, and the RNG state each chunk started from.
    states, reps = [], []
    with torch.no_grad():
        for ids, mask in chunks:
            states.append(RandState(ids.device))
            reps.append(forward(ids, mask))
    # 2. Loss and its gradient w.r.t. the embeddings; float32 so small gradients survive fp16/bf16.
    full = torch.cat(reps, dim=-2).float().requires_grad_()
    loss = loss_fn(full)
    (grad,) = torch.autograd.grad(loss, full)
    grads = grad.split([r.size(-2) for r in reps], dim=-2)
    del reps, full
    # 3. Re-embed each chunk with autograd under its saved RNG state; push g_c through it.
    for i, ((ids, mask), state, g) in enumerate(zip(chunks, states, grads, strict=True)):
        sync = contextlib.nullcontext() if i == len(chunks) - 1 else no_sync()
        with sync:
            with state.replay():
                emb = forward(ids, mask)
            backward((emb.float() * g).sum())
    return loss.detach()
