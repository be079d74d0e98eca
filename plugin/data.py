"""Training data: files or dataset names -> validated examples of format A, B or C.

Formats (angle-emb's):
  A  text1, text2, label   graded or binary pairs (STS, paraphrase)
  B  query, positive       positive pairs, in-batch negatives
  C  query, positive, negative   with a hard negative per query
FlagEmbedding's jsonl (query, pos[], neg[], optional pos_scores[], neg_scores[])
reads as B or C: pos -> positive, neg -> negative, and the scores are kept for
KD. Text fields hold a string or a list of strings; a list is sampled once per
epoch with the dataset seed (format C: train_group_size - 1 negatives).
Everything here is checked before any model loads, and each error names the
file, the 1-based row and the column.

    .venv/bin/python -m pytest tests/plugin/test_data.py
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import DataError  # noqa: F401 - re-exported: plugin.data.DataError is where callers import it
from .jsonl import json_objects

FORMAT_COLUMNS = {"A": ("text1", "text2", "label"), "B": ("query", "positive"), "C": ("query", "positive", "negative")}
TEXT_COLUMNS = {"A": ("text1", "text2"), "B": ("query", "positive"), "C": ("query", "positive", "negative")}
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
FLAG_COLUMNS = {"pos": "positive", "neg": "negative"}  # FlagEmbedding's names for format B/C columns
SCORE_COLUMNS = {"positive": "pos_scores", "negative": "neg_scores"}  # teacher scores, one per text




@dataclass
class Examples:
    """Validated examples of one format. texts[col][i] is a str or a non-empty list of str."""

    format: str
    texts: dict[str, list[str | list[str]]]
    labels: list[float] | None = None
    sources: list[str] = field(default_factory=list)
    # Format C with FlagEmbedding's pos_scores/neg_scores: scores[col][i][j] is the teacher's score of texts[col][i][j].
    scores: dict[str, list[list[float]]] | None = None
    # Read from a BEIR folder (plugin/beir.py): the split's corpus, queries and qrels, so evaluation ranks the
    # whole corpus and mining draws from it. texts then hold one format B row per relevant pair.
    beir: Any = None

    def __len__(self) -> int:
        return len(next(iter(self.texts.values())))


# ------------------------------------------------------------------ reading
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in json_objects(path)]


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects (or {{'data': [...]}})")
    for i, row in enumerate(data, 1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i} must be a JSON object, got {type(row).__name__}")
    return data


def _read_delimited(path: Path, delimiter: str) -> list[dict[str, Any]]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8", newline="") as f:
        return [dict(r) for r in csv.DictReader(f, delimiter=delimiter, quoting=quoting)]


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def read_file(path: Path) -> list[dict[str, Any]]:
    readers = {
        ".jsonl": _read_jsonl,
        ".json": _read_json,
        ".csv": lambda p: _read_delimited(p, ","),
        ".tsv": lambda p: _read_delimited(p, "\t"),
        ".parquet": _read_parquet,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")
    try:
        return reader(path)
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
        raise DataError(f"{path}: cannot read file ({e})") from e
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own types; surface them with the file name
        raise DataError(f"{path}: cannot read file ({type(e).__name__}: {e})") from e


def _load_hub(name: str, subset: str | None, split: str) -> list[dict[str, Any]]:
    """A `datasets` name (hub or a local dataset script/folder); kept for online users."""
    import datasets

    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; name the source
        raise DataError(f"{name}: cannot load dataset (split {split!r}): {type(e).__name__}: {e}") from e
    return ds.to_list()


def read_source(name_or_path: str, subset: str | None = None, split: str = "train") -> list[tuple[str, list[dict]]]:
    """Rows grouped by file: [(label for messages, rows)]. Folders give one entry per data file."""
    path = Path(name_or_path).expanduser()
    from .beir import is_beir_dir

    if is_beir_dir(path):  # corpus.jsonl + queries.jsonl + qrels/<split>.tsv: one format B row per relevant pair
        return [_beir_rows(path, split)]
    if path.is_dir():
        # index.json is a dataset folder's metadata in Transformer Lab (workspace/datasets/<id>), not rows.
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES
                       and p.name != "index.json" and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: folder holds no {'/'.join(FILE_SUFFIXES)} files")
        if any(p.stem == split for p in files):  # a folder of splits (train.jsonl, dev.jsonl ...)
            files = [p for p in files if p.stem == split]
        return [(str(p), read_file(p)) for p in files]
    if path.is_file():
        return [(str(path), read_file(path))]
    if path.suffix.lower() in FILE_SUFFIXES or name_or_path.startswith((".", "/", "~")):
        raise DataError(f"{name_or_path}: file not found")
    return [(name_or_path, _load_hub(name_or_path, subset, split))]


def _beir_rows(path: Path, split: str) -> tuple[str, list[dict]]:
    from .beir import read_beir

    return (f"{path}/qrels/{split}.tsv", read_beir(path, split).pair_rows())


# --------------------------------------------------------------- validation
def detect_format(columns: Sequence[str]) -> str | None:
    cols = set(columns)
    for fmt in ("C", "A", "B"):
        if set(FORMAT_COLUMNS[fmt]) <= cols:
            return fmt
    return None


def _check_text(value: Any, where: str) -> str | list[str]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: empty text")
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return value
    raise DataError(f"{where}: expected a non-empty string or list of strings, got {value!r:.80}")


def _check_label(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        label = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: label must be a number, got {value!r:.80}") from None
    if not math.isfinite(label):
        raise DataError(f"{where}: label must be finite, got {value!r}")
    return label


def _flag_names(row: dict[str, Any]) -> dict[str, Any]:
    """FlagEmbedding's row {query, pos, neg, ...} under our column names (positive, negative)."""
    if "query" in row and "pos" in row and "positive" not in row:
        return {FLAG_COLUMNS.get(k, k): v for k, v in row.items()}
    return row


def _check_scores(value: Any, texts: str | list[str], where: str) -> list[float]:
    n = 1 if isinstance(texts, str) else len(texts)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and n == 1:
        value = [value]
    if not isinstance(value, list) or len(value) != n:
        raise DataError(f"{where}: expected a list of {n} numbers, one per text, got {value!r:.80}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise DataError(f"{where}: teacher scores must be finite numbers, got {value!r:.80}")
    return [float(v) for v in value]


def to_examples(
    sources: list[tuple[str, list[dict]]], data_format: str = "auto", rename: dict[str, str] | None = None
) -> Examples:
    """Validate rows of every source into one Examples of a single format."""
    rename = rename or {}
    fmt = None if data_format == "auto" else data_format
    texts: dict[str, list] = {}
    labels: list[float] = []
    scores: dict[str, list[list[float]]] | None = None
    for source, rows in sources:
        if not rows:
            raise DataError(f"{source}: no rows (empty file)")
        first = set(_flag_names({rename.get(k, k): v for k, v in rows[0].items()}))
        this_fmt = fmt or detect_format(sorted(first))
        if this_fmt is None:
            raise DataError(
                f"{source}: cannot detect the data format from columns {sorted(first)}; expected "
                "A (text1, text2, label), B (query, positive) or C (query, positive, negative); "
                "rename columns with column_rename_mapping"
            )
        fmt = this_fmt
        needed = FORMAT_COLUMNS[fmt]
        if not texts:
            texts = {c: [] for c in TEXT_COLUMNS[fmt]}
            if fmt == "C" and set(SCORE_COLUMNS.values()) & first:  # KD scores: then every row needs both
                scores = {c: [] for c in SCORE_COLUMNS}
        for i, raw in enumerate(rows, 1):
            row = _flag_names({rename.get(k, k): v for k, v in raw.items()})
            for col in needed:
                if col not in row or row[col] is None:
                    raise DataError(
                        f"{source}: row {i}: column {col!r} is missing (format {fmt} needs {', '.join(needed)})"
                    )
            for col in TEXT_COLUMNS[fmt]:
                texts[col].append(_check_text(row[col], f"{source}: row {i}, column {col!r}"))
            if fmt == "A":
                labels.append(_check_label(row["label"], f"{source}: row {i}, column 'label'"))
            for col, score_col in SCORE_COLUMNS.items() if scores is not None else ():
                if row.get(score_col) is None:
                    raise DataError(f"{source}: row {i}: column {score_col!r} is missing "
                                    "(teacher scores need pos_scores and neg_scores in every row)")
                where = f"{source}: row {i}, column {score_col!r}"
                scores[col].append(_check_scores(row[score_col], texts[col][-1], where))
    assert fmt is not None
    return Examples(format=fmt, texts=texts, labels=labels if fmt == "A" else None, sources=[s for s, _ in sources],
                    scores=scores)


def load_examples(
    name_or_path: str,
    subset: str | None = None,
    split: str = "train",
    data_format: str = "auto",
    rename: dict[str, str] | None = None,
    limit: int | None = None,
) -> Examples:
    from .beir import is_beir_dir, read_beir

    if is_beir_dir(name_or_path):
        # Relevant pairs are format B; format C negatives come from mining (mine_hard_negatives).
        beir = read_beir(name_or_path, split)
        examples = to_examples([(f"{name_or_path}/qrels/{split}.tsv", beir.pair_rows())], "B")
        examples.beir = beir
    else:
        examples = to_examples(read_source(name_or_path, subset, split), data_format, rename)
    if limit is not None and limit < len(examples):
        examples.texts = {k: v[:limit] for k, v in examples.texts.items()}
        if examples.labels is not None:
            examples.labels = examples.labels[:limit]
        if examples.scores is not None:
            examples.scores = {k: v[:limit] for k, v in examples.scores.items()}
    return examples


# ------------------------------------------------------------------ prompts
def apply_prompt(text: str, prompt: str | None) -> str:
    return prompt.replace("{text}", text) if prompt else text


def column_prompts(fmt: str, text_prompt: str | None, query_prompt: str | None, doc_prompt: str | None) -> dict:
    if fmt == "A":
        return {"text1": text_prompt, "text2": text_prompt}
    return {"query": query_prompt, "positive": doc_prompt, "negative": doc_prompt}


def positive_threshold(labels: Sequence[float], threshold: float | None) -> float:
    """Labels >= this count as positives for the in-batch negatives loss (format A).

    Binary 0/1 labels: 1. Graded labels: 0.8 x the largest label (4.0 on 0-5 STS
    scores, 0.8 on 0-1), so only near-paraphrases serve as positives. angle-emb
    instead casts floats to int, making every STS pair scoring >= 1 a positive.
    """
    if threshold is not None:
        return threshold
    top = max(labels) if labels else 1.0
    if set(labels) <= {0.0, 1.0}:
        return 1.0
    return 0.8 * top


# ------------------------------------------------------- torch dataset/collate
class PairDataset(torch.utils.data.Dataset):
    """Pre-tokenized examples; list fields are sampled per (seed, epoch, row).

    Every distinct text is tokenized once up front, so an epoch costs no
    tokenization and lengths for length-grouped batching are exact.
    """

    def __init__(self, examples: Examples, tokenizer: Any, maxlen: int, prompts: dict, seed: int,
                 append_eos: bool = False, n_negatives: int = 1):
        self.format = examples.format
        self.columns = list(examples.texts)
        self.labels = examples.labels
        self.scores = examples.scores
        self.n_negatives = n_negatives  # format C: train_group_size - 1 negative columns per example
        self.seed = seed
        self.epoch = 0
        vocab: dict[str, int] = {}
        self.cands: dict[str, list[list[int]]] = {}
        for col, values in examples.texts.items():
            col_ids = []
            for value in values:
                options = value if isinstance(value, list) else [value]
                ids = []
                for t in options:
                    t = apply_prompt(t, prompts.get(col))
                    ids.append(vocab.setdefault(t, len(vocab)))
                col_ids.append(ids)
            self.cands[col] = col_ids
        self.texts = list(vocab)
        enc = tokenizer(self.texts, truncation=True, max_length=maxlen, add_special_tokens=True)
        self.token_ids: list[list[int]] = enc["input_ids"]
        if append_eos and tokenizer.eos_token_id is not None:
            self.token_ids = [
                ids if ids and ids[-1] == tokenizer.eos_token_id else (ids + [tokenizer.eos_token_id])[-maxlen:]
                for ids in self.token_ids
            ]

    def __len__(self) -> int:
        return len(self.cands[self.columns[0]])

    def lengths(self) -> list[int]:
        """Per example: the longest first-choice text, for length-grouped batching."""
        return [max(len(self.token_ids[self.cands[c][i][0]]) for c in self.columns) for i in range(len(self))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = None
        text_idx = []
        picked: dict[str, list[int]] = {}
        for col in self.columns:
            opts = self.cands[col][i]
            k = self.n_negatives if col == "negative" else 1
            if k > 1:
                rng = rng or random.Random(hash((self.seed, self.epoch, i)))
                picked[col] = sample_group(rng, len(opts), k)
            elif len(opts) > 1:
                rng = rng or random.Random(hash((self.seed, self.epoch, i)))
                picked[col] = [rng.choice(range(len(opts)))]  # the index rng.choice(opts) picks
            else:
                picked[col] = [0]
            text_idx.extend(opts[j] for j in picked[col])
        item: dict[str, Any] = {"text_idx": text_idx}
        if self.labels is not None:
            item["label"] = self.labels[i]
        if self.scores is not None:  # aligned with the group: [positive, negative_1 .. negative_k]
            item["teacher_scores"] = [self.scores[c][i][j] for c in SCORE_COLUMNS for j in picked[c]]
        return item


def sample_group(rng: random.Random, n: int, k: int) -> list[int]:
    """k of the indices 0..n-1 without repeats, or each repeated ceil(k / n) times first when n < k.

    FlagEmbedding's negative sampling: a query with fewer than k negatives
    still gets k (so every example has the same number of columns).
    """
    pool = list(range(n)) * math.ceil(k / n)
    return rng.sample(pool, k)


@dataclass
class Collator:
    """Pads the texts of a batch into one (n_columns * B, T) tensor, column-major.

    Row k*B + i is column k of example i, so one forward pass embeds every
    side of every pair. Padding is to the longest text (dynamic) or maxlen.
    """

    dataset: PairDataset
    pad_token_id: int
    padding_side: str = "right"
    pad_to: int | None = None  # maxlen when tokenizer_padding == "max_length"
    multiple_of: int | None = None  # round the dynamic width up to this, capped at maxlen
    maxlen: int | None = None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n_cols = len(items[0]["text_idx"])
        idx = [it["text_idx"][k] for k in range(n_cols) for it in items]
        seqs = [self.dataset.token_ids[j] for j in idx]
        pad_to = self.pad_to or padded_width(max(len(s) for s in seqs), self.multiple_of, self.maxlen)
        batch = pad_sequences(seqs, self.pad_token_id, self.padding_side, pad_to)
        batch["text_idx"] = torch.tensor(idx, dtype=torch.long)
        if "teacher_scores" in items[0]:
            batch["teacher_scores"] = torch.tensor([it["teacher_scores"] for it in items], dtype=torch.float)
        if "label" in items[0]:
            batch["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.float)
        return batch


def padded_width(longest: int, multiple_of: int | None, maxlen: int | None) -> int:
    """The longest text rounded up to a multiple of `multiple_of`, but never past maxlen (or below longest)."""
    if not multiple_of:
        return longest
    width = -(-longest // multiple_of) * multiple_of
    return max(longest, min(width, maxlen or width))


def pad_sequences(seqs: list[list[int]], pad_id: int, side: str = "right", pad_to: int | None = None) -> dict:
    width = pad_to or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        s = s[:width]
        if side == "left":
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        else:
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}
