"""The `job` table and the schemas around it, split by use.

    python -c "from backend.models import JobCreate; print(JobCreate.model_json_schema()['properties'].keys())"

Column names follow Transformer Lab's job table where they coincide (id, type,
status, progress, job_data, created_at, updated_at) so its tooling reads ours.
`config` holds the TrainConfig exactly as submitted; `launch` holds the
runner-only options (LaunchOptions), which are not training parameters.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PField
from sqlalchemy import JSON, Column, DateTime, Index
from sqlmodel import Field, SQLModel

from plugin.config import TrainConfig


class JobStatus(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


ACTIVE = (JobStatus.RUNNING, JobStatus.STOPPING)
FINAL = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.STOPPED)

JOB_TYPE_TRAIN = "TRAIN"  # Transformer Lab's type for trainer plugins


def check_text(value: str | None, allowed: str = "") -> None:
    """Refuse NUL, other control characters and lone surrogates (no UTF-8 encoder takes them): text reaches
    file systems, the database and JSON responses. `allowed`: control characters the field may hold."""
    if value is None or value.isprintable():  # the fast path; isprintable is also False for the odd spaces below
        return
    for ch in value:
        code = ord(ch)
        if (code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000) and ch not in allowed:
            kind = "a lone surrogate" if code >= 0xD800 else "a control character"
            raise ValueError(f"contains {kind} (U+{code:04X})")


def utcnow() -> datetime:
    """Naive UTC: SQLite drops tzinfo anyway, so every timestamp is naive UTC on both backends."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Job(SQLModel, table=True):
    __tablename__ = "job"
    # The claim query: oldest QUEUED first. AUTOINCREMENT: an id is never reused (PostgreSQL: a sequence).
    __table_args__ = (Index("ix_job_status_created", "status", "created_at"), {"sqlite_autoincrement": True})

    id: int | None = Field(default=None, primary_key=True)
    type: str = Field(default=JOB_TYPE_TRAIN, max_length=32)
    status: str = Field(default=JobStatus.QUEUED.value, max_length=16)
    progress: int = Field(default=0, ge=0, le=100)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    launch: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    job_data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime, nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime, nullable=False))  # heartbeat
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime))
    attempt: int = Field(default=1, ge=1)
    pid: int | None = Field(default=None, description="The runner process watching the job (not the trainer).")
    host: str | None = Field(default=None, max_length=255, description="Where the runner runs: pids mean nothing elsewhere.")


class LaunchOptions(BaseModel):
    """How the runner starts the trainer; none of these change what is trained."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_processes: int = PField(1, ge=1, le=64, description="Processes `accelerate launch` starts (data parallel).")
    mixed_precision: Literal["no", "fp16", "bf16"] = PField("no", description="accelerate launch --mixed_precision.")
    config_file: str | None = PField(None, description="An accelerate config file (accelerate launch --config_file).")
    use_cpu: bool | None = PField(None, description="Force CPU; None: CPU when no GPU is visible.")
    max_attempts: int = PField(3, ge=1, le=100, description="Runs allowed after crashes of the runner or machine.")
    log_to_wandb: bool = PField(False, description="Also send progress and metrics to Weights & Biases.")
    stop_grace_s: float = PField(
        120.0, ge=0, le=86_400,
        description="After a stop request, seconds to wait for the checkpoint before SIGTERM goes to the trainer.",
    )

    @field_validator("config_file")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        # Form hosts send "" for an untouched text box.
        check_text(value)
        return value or None


class JobCreate(BaseModel):
    """What a client submits: a training config plus launch options."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["TRAIN"] = JOB_TYPE_TRAIN
    config: TrainConfig
    launch: LaunchOptions = PField(default_factory=LaunchOptions)


class JobPublic(SQLModel):
    """What clients see of a job."""

    id: int
    type: str
    status: JobStatus
    progress: int
    config: dict[str, Any]
    launch: dict[str, Any]
    job_data: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    attempt: int


# What a list row keeps of the config: enough to tell jobs apart in a table.
SUMMARY_CONFIG_KEYS = ("model_name_or_path", "train_name_or_path", "save_dir")


class JobSummary(SQLModel):
    """A job in a list: the full row minus its config and job_data's histories.

    Lists are what dashboards poll; a full row carries ~80 config values and
    every logged loss, which would make each poll cost kilobytes per job.
    """

    id: int
    type: str
    status: JobStatus
    progress: int
    config: dict[str, Any]  # SUMMARY_CONFIG_KEYS only
    job_data: dict[str, Any]  # scalar entries only (step, loss, eta, error...)
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    attempt: int

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        return cls(
            id=job.id or 0, type=job.type, status=job.status, progress=job.progress,
            config={k: job.config[k] for k in SUMMARY_CONFIG_KEYS if k in job.config},
            job_data={k: v for k, v in job.job_data.items() if not isinstance(v, dict | list)},
            created_at=job.created_at, started_at=job.started_at, updated_at=job.updated_at,
            finished_at=job.finished_at, attempt=job.attempt,
        )


class JobList(SQLModel):
    """One page of jobs, newest first; `total` counts every job matching the filter.

    Items are JobSummary rows, or full JobPublic rows with `view=full`.
    """

    items: list[JobSummary] | list[JobPublic]
    total: int
    limit: int
    offset: int


# ------------------------------------------------------------------ templates
class Template(SQLModel, table=True):
    """A saved job recipe: queue it again and again, with overrides."""

    __tablename__ = "job_template"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True, index=True)
    description: str = Field(default="", max_length=2000)
    # Only the keys the user set (exclude_unset): later default changes apply, and the default
    # per-job save_dir stays per job instead of one folder shared by every job of the template.
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    launch: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime, nullable=False))


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = PField(..., min_length=1, max_length=200)
    description: str = PField("", max_length=2000)
    config: TrainConfig
    launch: LaunchOptions = PField(default_factory=LaunchOptions)

    @field_validator("name")
    @classmethod
    def _name_text(cls, value: str) -> str:
        check_text(value)
        return value

    @field_validator("description")
    @classmethod
    def _description_text(cls, value: str) -> str:
        check_text(value, allowed="\t\n\r")
        return value


class TemplatePublic(SQLModel):
    id: int
    name: str
    description: str
    config: dict[str, Any]
    launch: dict[str, Any]
    created_at: datetime


class TemplateQueue(BaseModel):
    """Overrides merged over a template's config and launch before the job is validated and queued."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = PField(default_factory=dict, description="TrainConfig keys to override.")
    launch: dict[str, Any] = PField(default_factory=dict, description="LaunchOptions keys to override.")


# ------------------------------------------------------------------ uploaded datasets (POST/GET /datasets)
class DatasetPublic(BaseModel):
    """An uploaded dataset as checked on arrival. A job names it as `ref` (dataset:<name>) or `path`."""

    name: str
    ref: str = PField(description="What a job's train/valid/test_name_or_path may say: dataset:<name>.")
    path: str = PField(description="Where it is stored: <data_dir>/datasets/<name>.")
    kind: Literal["file", "beir", "folder"]
    format: Literal["A", "B", "C"] | None = PField(description="Detected data format (None: not checked).")
    columns: list[str]
    rows: int | None = PField(description="Rows (a BEIR folder: relevant pairs of its first split).")
    splits: list[str] = PField(default_factory=list, description="A BEIR folder's qrels splits.")
    preview: list[dict[str, Any]] = PField(description="The first rows, long values cut.")
    size_bytes: int
    created_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetPublic]
