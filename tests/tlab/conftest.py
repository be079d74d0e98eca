"""Transformer Lab's own code around a copy of this checkout, laid out as TL installs and runs it.

TL's harness and plugin SDK come from ../shared/tlab (copied unchanged from TL's repository), the
`lab` SDK from PyPI (transformerlab==0.1.1 for the plugin era, 0.1.46 for the task era). TL's pinned
stack (torch 2.8/2.9, transformers 4.57.1, sentence-transformers 3.4.1, ...) cannot be installed here:
its torch pin pulls a multi-GB CUDA build. So each venv gets our CPU torch 2.13.0 first, standing in
for TL's, and then our own setup.sh installs the rest, as it does inside TL. Each venv is built once
per test session with uv (as TL makes a plugin's venv; about a minute each).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, write_jsonl

SHARED_TLAB = REPO.parent / "shared" / "tlab"
HARNESS = SHARED_TLAB / "plugin-era" / "plugin_sdk" / "plugin_harness.py"
TORCH_PIN = "torch==2.13.0"

if not HARNESS.is_file():
    pytest.skip("../shared/tlab (Transformer Lab's harness and SDK) is not beside the checkout",
                allow_module_level=True)


def copy_checkout(dest: Path) -> Path:
    """The repository's files (tracked, and untracked ones git does not ignore), as a gallery folder holds them."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in names:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def uv() -> str:
    """uv, as on a TL machine (TL makes plugin venvs with it); a dev dependency here (pyproject's [dev])."""
    found = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("uv is not installed (bash setup.sh installs it with the dev tools)")
    return found


def local_wheels() -> list[str]:
    """pip's configured --find-links (this machine keeps the CPU torch wheel there; uv does not read pip's config)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True,
                         text=True)
    return [arg for link in out.stdout.split() for arg in ("--find-links", link)] if out.returncode == 0 else []


def build_venv(folder: Path, lab_sdk: str, setup_command: str) -> Path:
    """`folder/venv` made with uv, TL's lab SDK in it, then our setup run with it active, in `folder`, as TL does
    (`source venv/bin/activate && bash setup.sh`), with uv on PATH as on a TL machine."""
    uv_bin = uv()
    subprocess.run([uv_bin, "venv", "-q", "--python", sys.executable, str(folder / "venv")], check=True)
    python = folder / "venv" / "bin" / "python"
    subprocess.run([uv_bin, "pip", "install", "-q", "--python", str(python), *local_wheels(), TORCH_PIN, lab_sdk],
                   check=True)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = f"{Path(uv_bin).parent}:{env.get('PATH', '')}"
    setup = subprocess.run(["/bin/bash", "-c", f"source venv/bin/activate && {setup_command}"], cwd=folder,
                           capture_output=True, text=True, timeout=1200, env=env)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert "angle-lab runtime ok" in setup.stdout
    return python


@dataclass
class TL:
    """One Transformer Lab home: its workspace, the installed plugin (or task) folder and its venv's python."""

    home: Path
    workspace: Path
    folder: Path
    python: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANGLE_LAB_", "VIRTUAL_ENV"))}
        env.update({"TFL_HOME_DIR": str(self.home), "TFL_WORKSPACE_DIR": str(self.workspace),
                    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1",
                    "PATH": f"{self.python.parent}:{env.get('PATH', '')}", **extra})
        return env

    def lab(self, code: str, **env: str) -> Any:
        """Run `code` with TL's lab SDK in the venv; it prints one JSON value, returned here."""
        out = subprocess.run([str(self.python), "-c", code], env=self.env(**env), capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def install_dataset(self, dataset_id: str, rows: Path) -> None:
        """A local dataset in TL's workspace, made with the lab SDK as TL's dataset upload does."""
        target = self.lab(
            "import asyncio, json; from lab import Dataset\n"
            f"async def go():\n ds = await Dataset.create({dataset_id!r}); await ds.set_metadata(location='local')\n"
            " return await ds.get_dir()\n"
            "print(json.dumps(asyncio.run(go())))")
        for f in rows.iterdir():
            (Path(target) / f.name).write_bytes(f.read_bytes())


def make_home(root: Path) -> tuple[Path, Path]:
    home = root / "tl-home"
    workspace = home / "workspace"
    workspace.mkdir(parents=True)
    return home, workspace


@pytest.fixture(scope="session")
def tl_plugin(tmp_path_factory) -> TL:
    """TL <= 0.30 with our plugin installed: workspace/plugins/<uniqueId>/ + its venv, setup.sh run by 'TL'."""
    home, workspace = make_home(tmp_path_factory.mktemp("tl-plugin"))
    unique_id = json.loads((REPO / "index.json").read_text())["uniqueId"]
    folder = copy_checkout(workspace / "plugins" / unique_id)
    python = build_venv(folder, "transformerlab==0.1.1", "bash setup.sh")
    assert not (folder / ".venv").exists()  # inside TL, setup.sh installs into TL's venv and nothing else
    return TL(home, workspace, folder, python)


@pytest.fixture(scope="session")
def tl_task(tmp_path_factory) -> TL:
    """Current TL with our task: the repository as TL checks it out for a task, a venv, task.yaml's setup run."""
    import yaml

    home, workspace = make_home(tmp_path_factory.mktemp("tl-task"))
    folder = copy_checkout(home / "task-checkout")
    setup = yaml.safe_load((folder / "tlab_task" / "task.yaml").read_text())["setup"]
    python = build_venv(folder, "transformerlab==0.1.46", setup)
    return TL(home, workspace, folder, python)


def pairs(n: int, bad_row: int | None = None) -> list[dict[str, Any]]:
    """Format A rows; `bad_row` (1-based) gets a label that is not a number."""
    words = "cat dog bird fish car bus train plane red blue green small big fast slow happy sad".split()
    rows = []
    for i in range(n):
        a = " ".join(words[(i * 7 + k) % len(words)] for k in range(3 + i % 5))
        b = " ".join(words[(i * 5 + 2 * k) % len(words)] for k in range(3 + i % 4))
        rows.append({"text1": a, "text2": b, "label": float(i % 6)})
    if bad_row is not None:
        rows[bad_row - 1]["label"] = "very similar"
    return rows


def write_pairs(folder: Path, n: int = 64, bad_row: int | None = None, dev: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", pairs(n, bad_row))
    if dev:
        write_jsonl(folder / "dev.jsonl", pairs(24))
    return folder
