"""BEIR retrieval data: a folder of corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

    corpus.jsonl    {"_id": str, "title": str (optional), "text": str, ...}  one document a line
    queries.jsonl   {"_id": str, "text": str, ...}                            one query a line
    qrels/dev.tsv   header "query-id<TAB>corpus-id<TAB>score", then one judgement a line (score > 0: relevant)

As training data every relevant (query, document) pair is a format B row (the
document as "title text"); with mine_hard_negatives the run mines format C
negatives from the whole corpus. As valid/test data every query of the split
ranks the whole corpus (plugin.evaluate.corpus_metrics). Errors name the file,
the 1-based line and the field.

    .venv/bin/python -m pytest tests/plugin/test_beir.py
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError
from .jsonl import json_objects

CORPUS_FILE, QUERIES_FILE, QRELS_DIR = "corpus.jsonl", "queries.jsonl", "qrels"


def is_beir_dir(path: str | Path) -> bool:
    """A folder holding corpus.jsonl, queries.jsonl and a qrels/ folder."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / CORPUS_FILE).is_file() and (p / QUERIES_FILE).is_file() and (p / QRELS_DIR).is_dir()


def beir_splits(path: str | Path) -> list[str]:
    """Split names with a qrels file: ["dev", "train"] for qrels/dev.tsv, qrels/train.tsv."""
    return sorted(p.stem for p in (Path(path).expanduser() / QRELS_DIR).glob("*.tsv"))


def doc_text(title: str, text: str) -> str:
    """A document as one string: "title text" (BEIR's and sentence-transformers' convention)."""
    return f"{title} {text}".strip() if title else text.strip()


@dataclass
class BeirSplit:
    """One split of a BEIR folder: the whole corpus, the split's judged queries and their qrels.

    doc_ids[j] names docs[j]; queries and qrels only hold queries with a relevant document;
    qrels[qid][doc_id] is the graded relevance (> 0).
    """

    path: str
    split: str
    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]

    def pairs(self) -> list[tuple[str, str, str]]:
        """(query id, query text, relevant document id) for every relevant pair, in qrels order."""
        text = dict(zip(self.query_ids, self.queries, strict=True))
        return [(q, text[q], d) for q in self.query_ids for d in self.qrels[q]]

    def pair_rows(self) -> list[dict[str, str]]:
        """Format B rows {query, positive}: one per relevant pair, the document as "title text"."""
        docs = dict(zip(self.doc_ids, self.docs, strict=True))
        return [{"query": q, "positive": docs[d]} for _, q, d in self.pairs()]


def _jsonl(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        raise DataError(f"{path}: file not found (a BEIR folder needs {CORPUS_FILE}, {QUERIES_FILE} and {QRELS_DIR}/)")
    for lineno, row in json_objects(path, unit="line"):
        for key in required:
            value = row.get(key)
            if key == "_id" and isinstance(value, int) and not isinstance(value, bool):
                row[key] = value = str(value)  # some converters write numeric ids
            if not isinstance(value, str):
                raise DataError(f"{path}: line {lineno}, field {key!r}: expected a string, got {value!r:.80}")
        if "title" in row and row["title"] is not None and not isinstance(row["title"], str):
            raise DataError(f"{path}: line {lineno}, field 'title': expected a string, got {row['title']!r:.80}")
        row["_lineno"] = lineno
        rows.append(row)
    return rows


def read_qrels(path: Path) -> list[tuple[int, str, str, int]]:
    """(line, query id, corpus id, score) of a qrels TSV (header query-id, corpus-id, score)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    out = []
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        if [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise DataError(f"{path}: line 1 must be the header query-id<TAB>corpus-id<TAB>score, got {header!r:.80}")
        for lineno, line in enumerate(f, 2):
            if not line.strip():
                continue
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) < 3:
                raise DataError(f"{path}: line {lineno}: expected 3 TAB-separated columns "
                                f"(query-id, corpus-id, score), got {len(cells)}")
            qid, did, score = (c.strip() for c in cells[:3])
            for name, value in (("query-id", qid), ("corpus-id", did)):
                if not value:
                    raise DataError(f"{path}: line {lineno}, column {name!r}: empty id")
            try:
                rel = int(float(score))
            except ValueError:
                raise DataError(f"{path}: line {lineno}, column 'score': expected a number, got {score!r:.40}") from None
            out.append((lineno, qid, did, rel))
    return out


def read_beir(path: str | Path, split: str) -> BeirSplit:
    """Read and check a BEIR folder's corpus, queries and qrels/<split>.tsv."""
    root = Path(path).expanduser()
    qrels_file = root / QRELS_DIR / f"{split}.tsv"
    if not qrels_file.is_file():
        raise DataError(f"{root}: no qrels for split {split!r} ({qrels_file} is missing); "
                        f"splits here: {', '.join(beir_splits(root)) or 'none'}")
    corpus_file, queries_file = root / CORPUS_FILE, root / QUERIES_FILE
    doc_ids, docs = [], []
    doc_line: dict[str, int] = {}
    doc_index: dict[str, int] = {}
    for row in _jsonl(corpus_file, ("_id", "text")):
        if row["_id"] in doc_line:
            raise DataError(f"{corpus_file}: line {row['_lineno']}, field '_id': duplicate id {row['_id']!r} "
                            f"(first on line {doc_line[row['_id']]})")
        doc_line[row["_id"]] = row["_lineno"]
        doc_index[row["_id"]] = len(doc_ids)
        doc_ids.append(row["_id"])
        docs.append(doc_text(row.get("title") or "", row["text"]))
    if not docs:
        raise DataError(f"{corpus_file}: no documents (empty file)")
    query_text: dict[str, str] = {}
    for row in _jsonl(queries_file, ("_id", "text")):
        query_text[row["_id"]] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    for lineno, qid, did, rel in read_qrels(qrels_file):
        if qid not in query_text:
            raise DataError(f"{qrels_file}: line {lineno}, column 'query-id': {qid!r} is not in {queries_file}")
        if did not in doc_line:
            raise DataError(f"{qrels_file}: line {lineno}, column 'corpus-id': {did!r} is not in {corpus_file}")
        if rel > 0:
            if not query_text[qid].strip():
                raise DataError(f"{queries_file}: query {qid!r} (judged on {qrels_file} line {lineno}) has empty text")
            if not docs[doc_index[did]]:
                raise DataError(f"{corpus_file}: line {doc_line[did]}: document {did!r} (relevant on {qrels_file} "
                                f"line {lineno}) has empty title and text")
            qrels.setdefault(qid, {})[did] = rel
    if not qrels:
        raise DataError(f"{qrels_file}: no relevant (score > 0) judgements")
    qids = list(qrels)
    return BeirSplit(str(root), split, doc_ids, docs, qids, [query_text[q] for q in qids], qrels)

