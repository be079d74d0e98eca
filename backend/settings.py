"""Job-service settings, read from the environment (prefix ANGLE_LAB_) or a .env file.

    python -c "from backend.settings import get_settings; print(get_settings().model_dump_json(indent=2))"

Every process of one deployment (API, worker, runner, trainer child) must see
the same database_url; the runner hands it to its child through the
environment rather than argv so a PostgreSQL password never shows in `ps`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

# Lists from the environment: a JSON list or comma-separated ("a,b"); NoDecode lets _split see the raw text.
PathList = Annotated[list[Path], NoDecode]
TextList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANGLE_LAB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(REPO_ROOT / "data", description="Folder the project owns: the SQLite file and job outputs.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; None means sqlite:///<data_dir>/jobs.db. postgresql+psycopg://... works too."
    )
    max_concurrent_jobs: int = Field(1, ge=1, le=64, description="Jobs one worker runs at the same time.")
    poll_interval_s: float = Field(0.5, gt=0, le=60, description="How often an idle worker looks for QUEUED jobs.")
    heartbeat_interval_s: float = Field(5.0, gt=0, le=600, description="How often a runner touches updated_at.")
    stale_after_s: float = Field(
        60.0, gt=0, description="A RUNNING job whose updated_at is older than this, and whose runner is gone, is recovered."
    )
    recover_interval_s: float = Field(30.0, gt=0, description="How often a worker looks for stale jobs.")
    progress_interval_s: float = Field(2.0, ge=0, le=600, description="Minimum seconds between progress writes.")
    stop_poll_s: float = Field(0.5, ge=0, le=60, description="Minimum seconds between stop-request checks in training.")
    prewarm_launcher: bool = Field(
        True, description="The worker keeps an `accelerate launch` process imported and waiting (about 2 s less "
        "from QUEUED to training, for ~0.3 GB of memory while idle).",
    )
    train_nice: int = Field(
        10, ge=0, le=19, description="Niceness of every training process: training is background work, so the "
        "API and the worker keep answering promptly while it uses every core (no effect on an idle machine).",
    )
    kill_grace_s: float = Field(15.0, ge=0, description="After SIGTERM, seconds before SIGKILL goes to the process group.")
    api_token: str | None = Field(
        None, description="Bearer token the HTTP API requires on every route but /health; None: no token "
        "(then `main.py serve` only binds to loopback and answers only loopback Host names and same-origin writes).",
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body the HTTP API accepts (413 above).")
    max_upload_bytes: int = Field(
        1 << 30, ge=1024, description="Largest dataset upload (POST /datasets) the HTTP API accepts (413 above); "
        "streamed to disk, so memory use does not grow with it.",
    )
    data_roots: PathList = Field(
        default_factory=list, description="Folders besides <data_dir>/datasets whose files API callers may train "
        "on (data, models, tokenizers, teachers, accelerate configs), e.g. ../shared/data. Relative to the "
        "project folder, where the trainer runs.",
    )
    output_roots: PathList = Field(
        default_factory=list, description="Folders besides <data_dir>/runs an API caller's config.save_dir may be "
        "inside. Relative to the project folder.",
    )
    allowed_hosts: TextList = Field(
        default_factory=list, description="Host header values a tokenless server answers besides the loopback ones "
        "(127.0.0.1, localhost, [::1] on the bound port), e.g. localhost:9000 behind an ssh tunnel; * allows any.",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # A relative data_dir would mean different folders for processes started in different cwds.
        return value.expanduser().resolve()

    @field_validator("data_roots", "output_roots", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        return value

    @field_validator("data_roots", "output_roots")
    @classmethod
    def _roots_absolute(cls, value: list[Path]) -> list[Path]:
        # Relative to the project folder: the trainer runs there, so that is where a job's relative paths point.
        return [(REPO_ROOT / v.expanduser()).resolve() for v in value]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'jobs.db'}"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def all_output_roots(self) -> list[Path]:
        """Where an API caller's job may write: the runs dir first, then the operator's roots."""
        return [self.runs_dir.resolve(), *self.output_roots]

    @property
    def all_data_roots(self) -> list[Path]:
        """Where an API caller's input paths may point: the datasets folder, the operator's roots, and the output
        roots (a model or checkpoint from an earlier job)."""
        return [self.datasets_dir.resolve(), *self.data_roots, *self.all_output_roots]


@lru_cache
def get_settings() -> Settings:
    return Settings()
