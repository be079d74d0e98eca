"""A pre-started `accelerate launch`: the worker keeps one waiting so a job does not wait for it to import.

    python -m backend.launcher     # started by the worker; reads one JSON line on stdin, then runs it

`accelerate launch` spends about 2 s importing accelerate and torch before it
starts the training process; that was most of the runner's overhead. This
process pays it while the worker is idle. When a job comes it receives the
job's `accelerate launch` arguments, environment and log files, and runs
accelerate's own launch code with them (the same `launch_command` the
`accelerate launch` CLI calls), so the trainer starts exactly as it would
from the CLI. An empty line or a closed stdin (worker shut down or died)
ends it without launching anything.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from subprocess import DEVNULL, PIPE, Popen
from typing import Any

from backend.settings import REPO_ROOT


def main() -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser

    parser = launch_command_parser()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    job: dict[str, Any] = json.loads(line)
    os.environ.update(job["env"])  # accelerate copies os.environ into the trainer's environment
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(target, fd)
        os.close(target)
    launch_command(parser.parse_args(job["argv"]))
    return 0


class Standby:
    """The worker's handle on one waiting launcher process (its own session, like a direct launch)."""

    def __init__(self) -> None:
        self.proc: Popen[bytes] = Popen([sys.executable, "-m", "backend.launcher"], stdin=PIPE, stdout=DEVNULL,
                                        stderr=DEVNULL, cwd=str(REPO_ROOT), start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def hand_over(self, argv: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> Popen[bytes] | None:
        """Give it a job; returns its Popen (now the job's launcher), or None if it is no longer usable."""
        if not self.alive() or self.proc.stdin is None:
            return None
        message = json.dumps({"argv": argv, "env": env, "stdout": str(stdout), "stderr": str(stderr)})
        try:
            self.proc.stdin.write(message.encode() + b"\n")
            self.proc.stdin.close()
        except OSError:
            return None
        return self.proc

    def close(self) -> None:
        """Let it exit without launching (the worker is going away)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.proc.kill()


if __name__ == "__main__":
    sys.exit(main())
