"""How the training process's heap treats freed tensors: flat resident memory, or reuse for speed.

Dynamic padding gives every batch a different tensor shape. Left to itself, glibc's malloc
raises its mmap threshold as big blocks are freed and keeps the freed memory in the heap,
where later, differently shaped tensors fragment it: RSS creeps up over an epoch (2.3 GB
after one STS-B epoch of MiniLM once, 1.3 GB of it reclaimable).

- "flat" fixes the mmap and trim thresholds at 1 MB: large tensors go straight back to the
  OS when freed, so RSS stays near the live peak. The price: every step's activations and
  gradients land on fresh pages the kernel must fault in and zero, ~70k page faults a step
  for MiniLM at batch 32 (sys time ~15% of the step on a VM, where faults are dear).
- "reuse" fixes both at 16 MB: almost every tensor is carved from memory the heap already
  holds, so steps stop faulting. On STS-B SHORT that trained 1.39x (fp32) / 1.44x (bf16)
  faster and peaked ~0.22-0.27 GB higher (docs/benchmarks.md, "Page faults: `host_memory`").

Thresholds are fixed rather than glibc's dynamic ones so that a second train() in the same
process gets the mode it asks for (mallopt cannot turn the dynamic threshold back on).

    .venv/bin/python -m pytest tests/plugin/test_memory.py -q
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Literal

HostMemory = Literal["flat", "reuse"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MB = 1 << 20


def heap_thresholds(mode: HostMemory) -> tuple[int, int]:
    """(mmap threshold, trim threshold) in bytes for a host_memory mode."""
    if mode == "flat":
        return _MB, _MB
    if mode == "reuse":
        return 16 * _MB, 16 * _MB
    raise ValueError(f"host_memory must be 'flat' or 'reuse', got {mode!r}")


def set_host_memory(mode: HostMemory) -> bool:
    """Apply heap_thresholds(mode) through glibc's mallopt. Returns whether it applied (False off glibc)."""
    mmap_bytes, trim_bytes = heap_thresholds(mode)
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
