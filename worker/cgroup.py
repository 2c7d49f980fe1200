"""A cgroup per iteration, where the worker may make one: a process can leave the child's process
group, session and environment (`setsid`, `env -i`), but not its cgroup.

The environment tag and the subreaper find a child's descendants while the worker lives; after a
`kill -9` of the worker, a daemon that cleared its environment is found only here. Used when a
writable cgroup holds the worker (root, or a delegated cgroup v2 subtree); otherwise every function
is a no-op and the tag does the work alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PREFIX = "samocode-"
# An iteration's cgroup is empty only in the instant between its mkdir and the child's join, and
# once its owner is about to remove it: one empty and older than this belongs to no live run.
STALE_AFTER = 60.0


@functools.cache  # the worker never moves itself: read once, not three times between two children
def _own_cgroup() -> Path | None:
    """Where new cgroups can go: beside the worker in the v1 `pids` hierarchy, else in cgroup v2."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    found: dict[str, str] = {}
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        found[controllers] = path.lstrip("/")
    if "pids" in found and (ROOT / "pids").is_dir():
        return ROOT / "pids" / found["pids"]
    if "" in found:  # cgroup v2, alone or beside v1 (then under unified/)
        base = ROOT if (ROOT / "cgroup.controllers").exists() else ROOT / "unified"
        return base / found[""]
    return None


def path_of(tag: str) -> Path | None:
    parent = _own_cgroup()
    return None if parent is None or not tag else parent / f"{PREFIX}{tag}"


def make(tag: str) -> Path | None:
    """The iteration's cgroup, created; None where the worker may not create one."""
    path = path_of(tag)
    if path is None:
        return None
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except OSError:
        return None
    return path


def join(tag: str, pid: int) -> None:
    """Move a just-started child into the iteration's cgroup (made here); its later children are born
    there. The child is moved right after its exec; the move can wait on the kernel (about 12 ms on a
    cgroup v1 kernel), still far less than any CLI takes to start before it can run a tool."""
    path = make(tag)
    if path is not None:
        with contextlib.suppress(OSError):
            (path / "cgroup.procs").write_text(str(pid))


def pids(tag: str) -> list[int]:
    """The processes in the iteration's cgroup (empty when there is none)."""
    path = path_of(tag)
    if path is None:
        return []
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def remove(tag: str) -> None:
    """Remove the iteration's cgroup once it is empty (a busy or missing one is left as it is)."""
    path = path_of(tag)
    if path is not None:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def remove_stale(wall: Callable[[], float] = time.time) -> list[str]:
    """Remove the empty `samocode-*` cgroups beside the worker made over STALE_AFTER seconds ago, and
    return their names. A worker killed mid-iteration leaves its iteration's cgroup, and only a
    restart of that session would remove it; one that still holds a process stays (rmdir fails) for
    that restart's sweep. `wall` is the real clock: the kernel stamps a cgroup with real time."""
    parent = _own_cgroup()
    if parent is None:
        return []
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(PREFIX)]
    except OSError:
        return []
    made_before = wall() - STALE_AFTER
    removed = []
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_mtime > made_before:
                continue
            os.rmdir(entry.path)
        except OSError:
            continue
        removed.append(entry.name)
    return removed
