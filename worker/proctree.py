"""The process-tree discipline: no process a child starts outlives its iteration.

The worker is the subreaper of everything it starts, so orphans reparent to it; each run's tag goes
into the environment of the child and all it starts, so a descendant that left the child's process
group or session is still found; and where the worker may make one, a cgroup holds them too.
`terminate_tree` looks its victims up again on every round and TERMs, then KILLs, all of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable

from worker import cgroup
from worker.session import pid_alive

TAG_VAR = "SAMOCODE_RUN_TAG"
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants reparent to the worker, so it can find and reap them (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries this run's tag (they may have left our group)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def own_children() -> set[int]:
    children: set[int] = set()
    try:
        for task in os.scandir("/proc/self/task"):
            with open(f"{task.path}/children") as handle:
                children.update(int(pid) for pid in handle.read().split())
    except OSError:
        pass
    return children


def _signal_all(pgid: int | None, pids: Iterable[int], sig: int) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def terminate_tree(
    proc: subprocess.Popen[bytes] | None,
    tag: str,
    grace: float,
    orphans: frozenset[int] = frozenset(),
    before: frozenset[int] | None = None,
) -> int:
    """TERM the child's group, every tagged process and our orphans; KILL what is left after
    `grace`. Returns how many processes besides the child there were.

    The victims are looked up again on every round: a process whose parent dies meanwhile
    reparents to us (we are the subreaper) and is caught on the next look."""
    pgid = proc.pid if proc is not None else None
    child = proc.pid if proc is not None else -1
    seen: set[int] = set(orphans)
    sig = signal.SIGTERM
    started = time.monotonic()
    while True:
        found = set(tagged_pids(tag)) | set(cgroup.pids(tag)) if tag else set()
        if before is not None:
            found |= own_children() - before - {child}
        seen |= found
        alive = [p for p in seen if pid_alive(p)]
        child_alive = proc is not None and proc.poll() is None
        if not alive and not child_alive:
            break
        _signal_all(pgid, alive, sig)
        _reap(seen)
        waited = time.monotonic() - started
        if sig == signal.SIGTERM and waited >= grace:
            sig = signal.SIGKILL
            continue
        if waited >= grace + max(grace, 2.0):
            break  # unkillable (D state): give up rather than hang the worker
        time.sleep(0.02 if waited < 0.2 else 0.05)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(grace, 1.0))
    _reap(seen)
    cgroup.remove(tag)
    return len(seen)
