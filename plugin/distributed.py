"""Cross-device in-batch negatives: every process scores against the global batch.

With N processes (accelerate/DDP), each process embeds its local batch of B
examples. `gather_columns` concatenates every process's embeddings in rank
order, column by column, so the result is laid out exactly like the
column-major batch one process would embed for the global batch of N*B
examples. Other processes' rows are constants (no autograd across
processes); the local rows are the local tensor itself, so their gradient
flows. Labels, teacher embeddings and teacher scores are gathered the same way.

Every process then computes the whole objective on the global batch, L_global
(CoSENT, angle and in-batch losses included: they rank pairs across the whole
batch, so they are gathered too and the loss equals the single-process one).
Process r backpropagates only dL_global/de_r, its own rows. DDP averages the
parameter gradients over the N processes, so each process multiplies its loss
by N (`loss_scale`):

    mean_r [N dL/de_r de_r/dtheta] = sum_r dL/de_r de_r/dtheta = dL_global/dtheta

the gradient of one process on the global batch. The loss itself (logged) is
L_global on every process.

    .venv/bin/python -m pytest tests/plugin/test_distributed.py
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the default group; 1 when torch.distributed is not initialized."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(x: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
    """Every process's x in rank order (sizes along `dim` may differ); the local entry is x itself.

    Uneven sizes (a short last batch) are padded to the largest for the
    all_gather, which needs equal shapes, and trimmed after.
    """
    n = world_size()
    if n == 1:
        return [x]
    rank = dist.get_rank()
    size = torch.tensor([x.size(dim)], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    pad = max(counts) - x.size(dim)
    local = x.detach()
    if pad:
        shape = list(x.shape)
        shape[dim] = pad
        local = torch.cat([local, local.new_zeros(shape)], dim=dim)
    bufs = [torch.empty_like(local) for _ in range(n)]
    dist.all_gather(bufs, local.contiguous())
    parts = [b.narrow(dim, 0, c) for b, c in zip(bufs, counts, strict=True)]
    parts[rank] = x  # splice the local tensor back in: gradient flows to this process's rows only
    return parts


def gather_columns(x: torch.Tensor, n_cols: int, dim: int = 0) -> torch.Tensor:
    """Column-major rows of every process -> the global batch's column-major rows.

    x holds n_cols columns of B_r rows each along `dim` (column k is rows
    k*B_r .. (k+1)*B_r - 1). Returns column k of rank 0, of rank 1, ..., then
    column k + 1: what one process stacking the global batch would build.
    """
    parts = gather_rows(x, dim)
    if len(parts) == 1:
        return x
    cols = [p.split(p.size(dim) // n_cols, dim=dim) for p in parts]
    return torch.cat([c[k] for k in range(n_cols) for c in cols], dim=dim)


def gather_batch(
    emb: torch.Tensor,
    n_cols: int,
    labels: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
    teacher_scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The global batch from every process's local one (see the module docstring).

    emb: (..., n_cols * B, H), rows on dim -2 (also (L, N, H) every-layer states);
    labels (B,), teacher (n_cols * B, H_t), teacher_scores (B, G) are gathered alike, without grad.
    """
    out = gather_columns(emb, n_cols, dim=emb.dim() - 2)
    if labels is not None:
        labels = torch.cat(gather_rows(labels))
    if teacher is not None:
        teacher = gather_columns(teacher, n_cols)
    if teacher_scores is not None:
        teacher_scores = torch.cat(gather_rows(teacher_scores))
    return out, labels, teacher, teacher_scores


def loss_scale(gathered: bool) -> float:
    """N when the loss was computed on the gathered global batch (DDP then averages N partial
    gradients into the global one), else 1 (each process's own loss, averaged by DDP)."""
    return float(world_size()) if gathered else 1.0
