"""JSON Lines read row by row, each row a JSON object; errors name the file and the line.

    .venv/bin/python -c "from plugin.jsonl import json_objects; print(sum(1 for _ in json_objects('x.jsonl')))"

Shared by data.py (training files) and beir.py (corpus and queries), which import nothing else of each other's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DataError


def json_objects(path: Path, unit: str = "row") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; `unit` names a line in messages ("row", "line")."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: {unit} {lineno} is not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise DataError(f"{path}: {unit} {lineno} must be a JSON object, got {type(row).__name__}")
            yield lineno, row
