"""angle-lab entry point: queue, run and watch training jobs.

    python main.py quickstart                      # queue the default job, run it, print where the model is
    python main.py queue --config job.json         # add a job to the queue, print its id
    python main.py worker                          # run queued jobs (recovers crashed ones)
    python main.py --job_id 7 [--db URL]           # run one QUEUED job in the foreground
    python main.py --input_file plugin_input.json  # a Transformer Lab input file, run into our jobs table
    plugin_harness.py --plugin_dir . --input_file F # inside Transformer Lab (backend/tlab_plugin.py)
    python main.py status [--job_id 7]             # show jobs
    python main.py stop --job_id 7                 # checkpoint and stop a job
    python main.py serve [--host 127.0.0.1 --port 8000]  # HTTP API + worker (see backend/api/)
    python main.py train --train_name_or_path ...  # train directly, no job (same as python -m plugin.train)

Exit code of run/quickstart/--input_file: 0 only when the job ended COMPLETE.
Heavy imports stay inside the commands that need them: `main.py train-job`
(started by `accelerate launch` in every rank) is what pays for torch.
"""

from __future__ import annotations

import time

PROCESS_STARTED_AT = time.time()  # first thing: the overhead benchmark measures from here

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent

def default_job_config() -> dict[str, Any]:
    """The README's training run: the offline MiniLM on STS-B with the recommended recipe, scored before and after.

    STS-B comes from ../shared/data/stsb, or the hub's sentence-transformers/stsb where that folder is absent.
    """
    from plugin.quickstart import RECOMMENDED_A, stsb_data

    return {**stsb_data(), **RECOMMENDED_A}


def _engine(db: str | None) -> Any:
    from backend.db import get_engine, init_db

    engine = get_engine(db)
    init_db(engine)
    return engine


def _settings() -> Any:
    from backend.settings import get_settings

    return get_settings()


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _json_file(path: str, what: str) -> dict[str, Any]:
    from plugin.cli import read_json_object

    return read_json_object(path, what)


# ------------------------------------------------------------------ watching
def _line(job: Any) -> str:
    d = job.job_data
    parts = [f"job {job.id} {job.status} {job.progress:3d}%"]
    if d.get("max_steps"):
        parts.append(f"step {d.get('step', 0)}/{d['max_steps']}")
    if isinstance(d.get("loss"), int | float):
        # The loss is logged every few steps on long runs: say which step it is from when that is not this one.
        at = d.get("loss_step")
        parts.append(f"loss {d['loss']:.4f}" + (f" (step {at})" if at is not None and at != d.get("step") else ""))
    if d.get("eta_s") is not None:
        parts.append(f"eta {d['eta_s']:.0f}s")
    if d.get("phase") and job.status in ("RUNNING", "STOPPING"):
        parts.append(f"({d['phase']})")
    return "  ".join(parts)


def _print_progress(engine: Any, job_id: int, done: threading.Event, every_s: float = 5.0) -> None:
    from backend import jobs

    last = ""
    while not done.wait(every_s):
        line = _line(jobs.get_job(engine, job_id))
        if line != last:
            print(line, flush=True)
            last = line


def _report(engine: Any, job_id: int) -> int:
    from backend import jobs

    job = jobs.get_job(engine, job_id)
    d = job.job_data
    print(_line(job))
    if job.status == "COMPLETE":
        metrics = d.get("metrics") or {}
        try:
            from plugin.cli import metrics_table

            print(metrics_table(metrics))
        except ImportError:
            print(json.dumps(metrics, indent=2))
        save_dir = (d.get("result") or {}).get("save_dir") or job.config.get("save_dir")
        print(f"model (sentence-transformers folder): {save_dir}")
        for path in d.get("artifacts") or []:
            print(f"  {path}")
    elif job.status == "FAILED":
        print(f"error: {d.get('error')}")
        if d.get("stderr_tail"):
            print("last lines of the trainer's stderr:\n" + d["stderr_tail"])
    elif job.status == "STOPPED":
        print(f"stopped; newest checkpoint: {d.get('last_checkpoint')}")
    logs = d.get("logs") or {}
    if logs:
        print(f"logs: {logs.get('stdout')}  {logs.get('stderr')}")
    return 0 if job.status == "COMPLETE" else 1


def run_foreground(engine: Any, job_id: int, quiet: bool = False) -> int:
    """Run one QUEUED job here; ^C checkpoints and stops it, a second ^C kills it."""
    from backend import jobs
    from backend.runner import JobRunner

    runner = JobRunner(engine, job_id, _settings())
    presses = 0

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            print(f"stopping job {job_id} at its next step (again to kill)...", file=sys.stderr, flush=True)
            runner.stop("interrupted in the terminal")
        else:
            runner.kill()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    done = threading.Event()
    printer = None
    if not quiet:
        printer = threading.Thread(target=_print_progress, args=(engine, job_id, done), daemon=True)
        printer.start()
    try:
        runner.run()
    except (jobs.JobStateError, jobs.JobNotFound) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        done.set()
    return _report(engine, job_id)


# ------------------------------------------------------------------ commands
def cmd_run(args: argparse.Namespace) -> int:
    _logging(args.verbose)
    return run_foreground(_engine(args.db), args.job_id, args.quiet)


def cmd_train_job(args: argparse.Namespace) -> int:
    from backend.trainjob import train_job

    _logging(args.verbose)
    settings = _settings()
    if settings.train_nice:
        os.nice(settings.train_nice)  # every rank: the API's requests go first, training takes what is left
    db = args.db or os.environ.get("ANGLE_LAB_DATABASE_URL") or settings.db_url
    return train_job(args.job_id, db, PROCESS_STARTED_AT)


def cmd_worker(args: argparse.Namespace) -> int:
    from backend.worker import Worker

    _logging(args.verbose)
    return Worker(_engine(args.db), _settings(), args.max_concurrent_jobs, args.exit_when_idle).run()


def _queue(engine: Any, config: dict[str, Any], launch: dict[str, Any]) -> int:
    from pydantic import ValidationError

    from backend import jobs
    from backend.models import JobCreate
    from plugin.config import error_list

    try:
        spec = JobCreate.model_validate({"config": config, "launch": launch})
    except ValidationError as e:
        lines = "\n".join(f"  {err['field']}: {err['message']}" for err in error_list(e))
        raise SystemExit(f"error: invalid job\n{lines}") from None
    try:
        job = jobs.create_job(engine, spec, _settings().runs_dir)
    except jobs.JobStateError as e:
        raise SystemExit(f"error: {e}") from None
    assert job.id is not None
    return job.id


def _config_from_flags(argv: list[str], base: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig flags as in `python -m plugin.train` (--epochs 2 ...), over `base` and --config."""
    from plugin.cli import build_parser

    values = vars(build_parser().parse_args(argv))
    config = dict(base)
    config_file = values.pop("config", None)
    if config_file:
        loaded = _json_file(config_file, "--config")
        config.update(loaded.get("config", loaded) if isinstance(loaded.get("config"), dict) else loaded)
    config.update(values)
    return config


def cmd_queue(args: argparse.Namespace, rest: list[str]) -> int:
    engine = _engine(args.db)
    launch = _json_file(args.launch, "--launch") if args.launch else {}
    job_id = _queue(engine, _config_from_flags(rest, {}), launch)
    print(job_id)
    return 0


def cmd_quickstart(args: argparse.Namespace, rest: list[str]) -> int:
    _logging(args.verbose)
    engine = _engine(args.db)
    launch = _json_file(args.launch, "--launch") if args.launch else {}
    job_id = _queue(engine, _config_from_flags(rest, default_job_config()), launch)
    print(f"queued job {job_id}; running it (^C stops it with a checkpoint)", flush=True)
    return run_foreground(engine, job_id, args.quiet)


def cmd_status(args: argparse.Namespace) -> int:
    from backend import jobs

    engine = _engine(args.db)
    if args.job_id is not None:
        try:
            job = jobs.get_job(engine, args.job_id)
        except jobs.JobNotFound as e:
            raise SystemExit(f"error: {e}") from None
        print(json.dumps(job.model_dump(mode="json"), indent=2))
    else:
        for job in jobs.list_jobs(engine, limit=args.limit):
            print(_line(job))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from backend import jobs

    try:
        job = jobs.request_stop(_engine(args.db), args.job_id)
    except (jobs.JobStateError, jobs.JobNotFound) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"job {job.id}: {job.status}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from backend.api import serve

    _logging(args.verbose)
    return serve(args.host, args.port, args.db, run_worker=not args.no_worker)


def cmd_input_file(args: argparse.Namespace) -> int:
    """Transformer Lab: {"config": {...}} (values may be strings); queued as a job and run here."""
    from backend import jobs
    from backend.tlab import split_input

    _logging(args.verbose)
    try:
        config, launch, ignored = split_input(_json_file(args.input_file, "--input_file"))
    except ValueError as e:
        raise SystemExit(f"error: --input_file {args.input_file}: {e}") from None
    engine = _engine(args.db)
    # Not validated here on purpose: a bad form must end as a FAILED job carrying the messages.
    job = jobs.create_raw_job(engine, config, launch, _settings().runs_dir,
                              job_data={"source": "transformerlab", "input_file": str(args.input_file),
                                        "ignored_input_keys": ignored})
    assert job.id is not None
    print(f"job {job.id} created from {args.input_file}", flush=True)
    return run_foreground(engine, job.id, args.quiet)


def cmd_tlab_plugin() -> int:
    """Transformer Lab's harness called main.main() (TL <= 0.30): report through TL's SDK, exit non-zero on failure.

    The harness discards main()'s return value, so the exit code is raised here.
    """
    from backend.tlab_plugin import run

    _logging()
    rc = run()
    if rc:
        raise SystemExit(rc)
    return 0


def cmd_train(rest: list[str]) -> int:
    from plugin.cli import main as train_main

    return train_main(rest)


# ------------------------------------------------------------------ parsing
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="database URL (default: ANGLE_LAB_DATABASE_URL or sqlite:///data/jobs.db)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--verbose", action="store_true", help="log at DEBUG level")


def build_parser() -> argparse.ArgumentParser:
    # Each flag's help shows its type and default; queue/quickstart's --help also lists the TrainConfig flags
    # they pass through. (plugin.cli costs pydantic only, which every command imports anyway.)
    from plugin.cli import TrainFlagsHelp
    from plugin.helpformat import FlagHelpFormatter

    parser = argparse.ArgumentParser(prog="main.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=FlagHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(name: str, text: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=FlagHelpFormatter, **kw)

    p = command("run-job", "run one QUEUED job in the foreground")
    p.add_argument("--job_id", type=int, required=True, help="the job to run")
    _common(p)
    p = command("train-job", "internal: one rank of a job, started by accelerate launch")
    p.add_argument("--job_id", type=int, required=True, help="the job this rank trains")
    _common(p)
    p = command("worker", "claim and run QUEUED jobs")
    p.add_argument("--max_concurrent_jobs", "--max-concurrent-jobs", type=int, default=None,
                   help="jobs run at once (default: ANGLE_LAB_MAX_CONCURRENT_JOBS, else 1)")
    p.add_argument("--exit_when_idle", "--exit-when-idle", action="store_true", help="exit once the queue is empty")
    _common(p)
    for name, text in (("queue", "queue a job; TrainConfig flags as in python -m plugin.train"),
                       ("quickstart", "queue the default job (MiniLM on STS-B, 1 epoch), run it, show the model; "
                                      "TrainConfig flags override its config")):
        p = command(name, text, add_help=False)
        p.add_argument("-h", "--help", action=TrainFlagsHelp)
        p.add_argument("--launch", metavar="FILE.json",
                       help="JSON file with launch options (num_processes, mixed_precision, ...)")
        _common(p)
    p = command("status", "list jobs, or show one")
    p.add_argument("--job_id", type=int, help="show this job's whole row as JSON (default: list the newest jobs)")
    p.add_argument("--limit", type=int, default=20, help="jobs listed")
    _common(p)
    p = command("stop", "ask a job to checkpoint and stop")
    p.add_argument("--job_id", type=int, required=True, help="the job to stop")
    _common(p)
    p = command("serve", "HTTP API with the worker inside (jobs run end to end)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; non-loopback needs ANGLE_LAB_API_TOKEN")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--no-worker", "--no_worker", dest="no_worker", action="store_true",
                   help="API only; run `main.py worker` elsewhere")
    _common(p)
    # `main.py train ...` is routed to plugin.cli before parsing, so `main.py train --help` is its help.
    sub.add_parser("train", help="train directly without a job (python -m plugin.train; see train --help)",
                   add_help=False)
    return parser


def legacy_parser() -> argparse.ArgumentParser:
    """`main.py --job_id N` and Transformer Lab's `main.py --input_file F` (no subcommand)."""
    parser = argparse.ArgumentParser(prog="main.py")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--job_id", type=int)
    group.add_argument("--input_file")
    _common(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--plugin_dir" in argv or any(a.startswith("--plugin_dir=") for a in argv):
        return cmd_tlab_plugin()  # TL's plugin_harness.py: its flags are read by TL's own SDK
    subcommands = {"run-job", "train-job", "worker", "queue", "quickstart", "status", "stop", "train", "serve"}
    if argv and argv[0] not in subcommands and any(a.split("=")[0] in ("--job_id", "--input_file") for a in argv):
        args, unknown = legacy_parser().parse_known_args(argv)
        if unknown:  # Transformer Lab may add flags of its own; only ours matter
            print(f"main.py: ignoring arguments {unknown}", file=sys.stderr)
        return cmd_input_file(args) if args.input_file else cmd_run(args)
    if argv and argv[0] == "train":
        return cmd_train(argv[1:])
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in ("queue", "quickstart"):
        return (cmd_queue if args.command == "queue" else cmd_quickstart)(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {"run-job": cmd_run, "train-job": cmd_train_job, "worker": cmd_worker, "status": cmd_status,
                "stop": cmd_stop, "serve": cmd_serve}
    if args.command not in commands:
        parser.print_help()
        return 2
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
