"""Uploaded datasets: what `POST /datasets` stores under <data_dir>/datasets, checked on arrival.

A data file (.jsonl/.json/.csv/.tsv/.parquet) is kept as <datasets>/<name>; a BEIR folder sent as a .zip
is unpacked to <datasets>/<name without .zip>/. Each is read and validated with the trainer's own readers
(plugin/data.py, plugin/beir.py), so a file accepted here is one a job can train on; what was found
(format, columns, rows, the first rows) is kept in <datasets>/.meta/<name>.json for the list.
Nothing here reads or writes outside the datasets folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from backend.settings import REPO_ROOT
from plugin.beir import beir_splits, is_beir_dir
from plugin.data import FILE_SUFFIXES, DataError, detect_format, load_examples, read_file, to_examples

ZIP_SUFFIX = ".zip"
UPLOAD_SUFFIXES = (*FILE_SUFFIXES, ZIP_SUFFIX)
META_DIR, UPLOADS_DIR = ".meta", ".uploads"  # dot folders: never listed, never read as data (read_source skips them)
NAME_MAX = 255
PREVIEW_ROWS = 5
PREVIEW_CHARS = 300  # per value: a preview, not a copy of the data
ZIP_MAX_MEMBERS = 10_000
ZIP_RATIO = 20  # unpacked bytes allowed per uploaded byte limit: a zip bomb stops at this
DATASET_REF = "dataset:"  # how a job names an uploaded dataset: dataset:<name>
_ROW = re.compile(r"\b(?:row|line) (\d+)")
_COLUMN = re.compile(r"\b(?:column|field) '([^']+)'")


class DatasetError(ValueError):
    """A refused upload, worded for the user; `row`/`column` when the data names them."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.field = field

    def as_error(self) -> dict[str, str]:
        error = {"field": self.field, "message": str(self)}
        if (row := _ROW.search(str(self))) is not None:
            error["row"] = row.group(1)
        if (column := _COLUMN.search(str(self))) is not None:
            error["column"] = column.group(1)
        return error


# ------------------------------------------------------------------ names
def name_error(name: str) -> str | None:
    """Why `name` cannot name an upload, or None. One plain file name: no folders, no '..', no controls."""
    if not name or not name.strip():
        return "required"
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        return f"at most {NAME_MAX} bytes"
    if "/" in name or "\\" in name:
        return "must be a file name, without path separators"
    if name in (".", "..") or ".." in name:
        return "must not contain '..'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return "must not contain control characters"
    if name.startswith(".") or name != name.strip():
        return "must not start with a dot or with/end in spaces"
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        return f"must end in one of {', '.join(UPLOAD_SUFFIXES)}"
    if name.lower().endswith(ZIP_SUFFIX) and len(name) == len(ZIP_SUFFIX):
        return "needs a name before .zip"
    return None


def stored_name(upload_name: str) -> str:
    """What the upload is called once stored: a zip's folder drops the .zip."""
    return upload_name[: -len(ZIP_SUFFIX)] if upload_name.lower().endswith(ZIP_SUFFIX) else upload_name


def dataset_path(root: Path, name: str) -> Path | None:
    """<root>/<name> for a stored dataset's name, None when the name is not one (or it is not there)."""
    if name_error(name) is not None and name_error(name + ".zip") is not None:
        return None
    path = root / name
    return path if path.exists() and not path.is_symlink() else None


# ------------------------------------------------------------------ validation
def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        return value[:PREVIEW_CHARS] + "…"
    if isinstance(value, list):
        return [_short(v) for v in value[:5]]
    return value


def _json_safe_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # A parquet row may hold bytes or dates: the preview shows them as text instead of failing the reply.
    return json.loads(json.dumps([{k: _short(v) for k, v in r.items()} for r in rows], default=str))


def _named(message: str, path: Path, name: str) -> str:
    """The trainer's message with the temp file's path replaced by the name the user gave."""
    return message.replace(str(path), name)


def describe_file(path: Path, name: str) -> dict[str, Any]:
    """Read and validate one data file; its format, columns, row count and first rows. DatasetError if bad."""
    try:
        rows = read_file(path)
        examples = to_examples([(str(path), rows)], "auto")
    except DataError as e:
        raise DatasetError(_named(str(e), path, name)) from None
    columns = list(rows[0].keys())
    return {"kind": "file", "format": examples.format or detect_format(columns), "columns": columns,
            "rows": len(rows), "preview": _json_safe_rows(rows[:PREVIEW_ROWS]), "splits": []}


def describe_beir(path: Path, name: str) -> dict[str, Any]:
    """Validate every split of a BEIR folder; rows are the relevant (query, document) pairs of the first split."""
    splits = beir_splits(path)
    if not splits:
        raise DatasetError(f"{name}: a BEIR folder needs at least one qrels/<split>.tsv")
    counts = {}
    preview: list[dict[str, Any]] = []
    for split in splits:
        try:
            examples = load_examples(str(path), split=split)
        except DataError as e:
            raise DatasetError(_named(str(e), path, name)) from None
        counts[split] = len(examples)
        if not preview:
            preview = [{"query": q, "positive": p} for q, p in
                       zip(examples.texts["query"][:PREVIEW_ROWS], examples.texts["positive"][:PREVIEW_ROWS], strict=True)]
    return {"kind": "beir", "format": "B", "columns": ["query", "positive"], "rows": counts[splits[0]],
            "preview": _json_safe_rows(preview), "splits": splits}


# ------------------------------------------------------------------ zips
def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def unpack_zip(archive: Path, into: Path, max_bytes: int, name: str) -> Path:
    """Unpack a zip safely into `into` (no absolute or '..' members, no links, a size and count cap) and
    return the BEIR folder in it: the top level or its one folder (what zipping a folder makes)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
            if len(members) > ZIP_MAX_MEMBERS:
                raise DatasetError(f"{name}: more than {ZIP_MAX_MEMBERS} files in the zip")
            if sum(m.file_size for m in members) > max_bytes:
                raise DatasetError(f"{name}: unpacks to more than {max_bytes} bytes")
            for m in members:
                parts = PurePosixPath(m.filename).parts
                if m.filename.startswith(("/", "\\")) or "\\" in m.filename or ".." in parts or (
                        parts and ":" in parts[0]):
                    raise DatasetError(f"{name}: member {m.filename!r} points outside the zip's folder")
                if _is_symlink(m):
                    raise DatasetError(f"{name}: member {m.filename!r} is a symbolic link; links are not unpacked")
            into.mkdir(parents=True)
            for m in members:
                target = into.joinpath(*PurePosixPath(m.filename).parts)
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        raise DatasetError(f"{name}: not a readable zip ({e})") from None
    if is_beir_dir(into):
        return into
    inner = [p for p in into.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(inner) == 1 and is_beir_dir(inner[0]):
        return inner[0]
    raise DatasetError(f"{name}: a zip must hold a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")


# ------------------------------------------------------------------ storing and listing
def meta_path(root: Path, name: str) -> Path:
    return root / META_DIR / f"{name}.json"


def store(upload: Path, upload_name: str, root: Path, max_unpacked: int) -> dict[str, Any]:
    """Validate the streamed-in file `upload` (in <root>/.uploads) and move it into place. Returns the
    dataset's description; DatasetError when refused (the temp files are gone either way)."""
    name = stored_name(upload_name)
    final = root / name
    work = upload.with_name(upload.name + ".d")
    try:
        if upload_name.lower().endswith(ZIP_SUFFIX):
            folder = unpack_zip(upload, work, max_unpacked, upload_name)
            info = describe_beir(folder, name)
            source = folder
        else:
            info = describe_file(upload, name)
            source = upload
        _move_new(source, final, name)
    finally:
        upload.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    info = {"name": name, "path": str(final), "ref": DATASET_REF + name, "size_bytes": size_of(final),
            "created_at": datetime.now(timezone.utc).isoformat(), **info}
    meta = meta_path(root, name)
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(info))
    return info


def _move_new(source: Path, final: Path, name: str) -> None:
    """Move into place, never over an existing dataset (two uploads of one name at once: the second is refused)."""
    taken = DatasetError(f"a dataset named {name!r} already exists: delete it first", field="name")
    if final.exists() or final.is_symlink():
        raise taken
    try:
        if source.is_dir():
            final.mkdir()  # fails if another upload got there first; rename then replaces the empty folder
            source.rename(final)
        else:
            os.link(source, final)  # a hard link fails instead of replacing an existing file
    except FileExistsError:
        raise taken from None


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def describe_stored(root: Path, name: str) -> dict[str, Any]:
    """A stored dataset's description: its metadata file, or what the folder shows when that is missing."""
    try:
        return dict(json.loads(meta_path(root, name).read_text()))
    except (OSError, ValueError):
        path = root / name
        return {"name": name, "path": str(path), "ref": DATASET_REF + name, "size_bytes": size_of(path),
                "created_at": datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(),
                "kind": "beir" if is_beir_dir(path) else "file" if path.is_file() else "folder",
                "format": None, "columns": [], "rows": None, "preview": [], "splits": []}


def list_datasets(root: Path) -> list[dict[str, Any]]:
    """Every dataset in the folder (also ones copied there by hand), newest first."""
    if not root.is_dir():
        return []
    items = [describe_stored(root, p.name) for p in root.iterdir()
             if not p.name.startswith(".") and not p.is_symlink()]
    return sorted(items, key=lambda d: d["created_at"], reverse=True)


def remove(root: Path, name: str) -> None:
    path = root / name
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    meta_path(root, name).unlink(missing_ok=True)


def uses(config: dict[str, Any], path: Path) -> str | None:
    """The config field of a job that reads `path` (or a file inside it), or None."""
    for field in ("train_name_or_path", "valid_name_or_path", "test_name_or_path"):
        value = config.get(field)
        if not isinstance(value, str) or not value:
            continue
        if value == DATASET_REF + path.name:
            return field
        try:
            resolved = (REPO_ROOT / Path(value).expanduser()).resolve()  # the trainer's cwd
        except (OSError, ValueError, RuntimeError):
            continue
        if resolved == path or resolved.is_relative_to(path):
            return field
    return None
