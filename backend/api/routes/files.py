"""A job's files: its logs (tail or follow), its artifacts (list, one file, the folder as a streamed zip).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel

from backend.api.confine import output_dir
from backend.api.deps import JobId, Offset, Problem, SessionDep, SettingsDep, job_or_404

LOG_CHUNK_MAX = 1 << 20
ZIP_CHUNK = 1 << 20



class ArtifactFile(BaseModel):
    path: str
    size: int


class ArtifactList(BaseModel):
    job_id: int
    output_dir: str
    files: list[ArtifactFile]
    total_bytes: int


class LogChunk(BaseModel):
    job_id: int
    stream: str
    path: str
    size: int = 0
    offset: int = 0
    next_offset: int = 0
    text: str = ""


def safe_file(root: Path, rel: str) -> Path | None:
    """`rel` inside `root` as a real file, or None: no absolute paths, no '..', no symlink leading outside."""
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        return None
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return None
    try:
        real_root = root.resolve(strict=True)
        real = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(real_root) or not real.is_file():
        return None
    return real


def walk_files(root: Path, include_checkpoints: bool = True) -> list[tuple[Path, str]]:
    """(real path, relative name) of every regular file under root; symlinks leaving root are skipped."""
    try:
        real_root = root.resolve(strict=True)
    except OSError:
        return []
    out = []
    for folder, dirs, files in os.walk(real_root):
        rel_folder = Path(folder).relative_to(real_root)
        if not include_checkpoints and rel_folder == Path("."):
            dirs[:] = [d for d in dirs if d != "checkpoints"]
        dirs.sort()
        for name in sorted(files):
            rel = (rel_folder / name).as_posix()
            real = safe_file(real_root, rel)
            if real is not None:
                out.append((real, rel))
    return out


class _Sink:
    """A write-only stream zipfile can write to without seeking (it then uses data descriptors)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def pop(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def zip_stream(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    """The files as a zip, produced chunk by chunk: memory stays at one chunk whatever the model size."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as zf:  # type: ignore[arg-type]
        for path, arc in files:
            info = zipfile.ZipInfo.from_file(path, arc)
            info.compress_type = zipfile.ZIP_STORED  # weights barely compress; deflate would cost CPU for nothing
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                while chunk := src.read(ZIP_CHUNK):
                    dst.write(chunk)
                    if data := sink.pop():
                        yield data
            if data := sink.pop():
                yield data
    if data := sink.pop():
        yield data


router = APIRouter()


@router.get("/jobs/{job_id}/logs", response_model=LogChunk, tags=["files"])
def job_logs(job_id: JobId, session: SessionDep, settings: SettingsDep,
             stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stderr",
             tail: Annotated[int, Query(ge=1, le=10_000)] = 200, offset: Offset | None = None) -> LogChunk:
    """The trainer's log: the last `tail` lines, or (with `offset`) the bytes from there on (follow with next_offset)."""
    folder = output_dir(job_or_404(session, job_id), settings)
    rel = f"logs/{stream}.log"
    chunk = LogChunk(job_id=job_id, stream=stream, path=str(folder / rel))
    path = safe_file(folder, rel)  # a log file that is a symlink out of the folder is not followed
    if path is None:
        return chunk  # not started yet
    size = path.stat().st_size
    with open(path, "rb") as f:
        if offset is not None:
            start = min(offset, size)
            f.seek(start)
            data = f.read(LOG_CHUNK_MAX)
            text = data.decode(errors="replace")
        else:
            start = max(0, size - LOG_CHUNK_MAX)
            f.seek(start)
            data = f.read()
            text = "\n".join(data.decode(errors="replace").splitlines()[-tail:])
    return LogChunk(job_id=job_id, stream=stream, path=chunk.path, size=size, offset=start,
                    next_offset=start + len(data), text=text)


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactList, tags=["files"])
def list_artifacts(job_id: JobId, session: SessionDep, settings: SettingsDep) -> ArtifactList:
    """Every file in the job's output folder, with sizes."""
    folder = output_dir(job_or_404(session, job_id), settings)
    files = [ArtifactFile(path=rel, size=real.stat().st_size) for real, rel in walk_files(folder)]
    return ArtifactList(job_id=job_id, output_dir=str(folder), files=files, total_bytes=sum(f.size for f in files))


@router.get("/jobs/{job_id}/artifacts.zip", tags=["files"], response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}}})
def download_artifacts_zip(job_id: JobId, session: SessionDep, settings: SettingsDep,
                           include_checkpoints: bool = False) -> StreamingResponse:
    """The output folder as a zip, streamed (checkpoints left out unless asked for)."""
    files = walk_files(output_dir(job_or_404(session, job_id), settings), include_checkpoints)
    if not files:
        raise Problem(404, f"job {job_id} has no output files yet", [{"field": "job_id", "message": "no files"}])
    return StreamingResponse(zip_stream(files), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="job-{job_id}.zip"'})


@router.get("/jobs/{job_id}/artifacts/{path:path}", tags=["files"], response_class=FileResponse)
def download_artifact(job_id: JobId, path: str, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """One file of the output folder; anything outside it (.., absolute, symlinks) is a 404."""
    real = safe_file(output_dir(job_or_404(session, job_id), settings), path)
    if real is None:
        raise Problem(404, f"no artifact {path!r} in job {job_id}'s output folder", [{"field": "path", "message":
                      "no such file inside the output folder"}])
    return FileResponse(real, filename=real.name)


