"""Process helpers: is a recorded pid still the same live process, and stopping a whole process group.

    python -c "import os; from backend.procs import process_alive, start_time; print(process_alive(os.getpid(), start_time(os.getpid())))"

A bare pid is not an identity: after a crash the number can be reused by an
unrelated process. Where /proc exists we also record the process start time
and compare it; a zombie counts as gone.
"""

from __future__ import annotations

import os
import signal
import socket
import time


def hostname() -> str:
    return socket.gethostname()


def start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after its closing ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 overall: starttime
    except (IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] == "Z"


def process_alive(pid: int | None, started: int | None = None) -> bool:
    """True if `pid` runs and (when `started` is given and knowable) is the process that started then."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _is_zombie(pid):
        return False
    if started is not None:
        now_started = start_time(pid)
        if now_started is not None and now_started != started:
            return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to every process of group `pgid`; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_group(pgid: int, grace_s: float) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after `grace_s` seconds."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.1)
    signal_group(pgid, signal.SIGKILL)
