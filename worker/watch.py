"""`watch`: wait until the Status section changes, the worker exits or the time is up.

Each poll is a stat of the overview and a look at the lease; the overview is parsed only when its
stat changes. Also the short wait for a session started a moment ago to get its folder.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker import overview, session
from worker.errors import NoSession, OverviewError
from worker.session import SessionPaths, holder


def poll() -> float:
    """Seconds between watch's looks at the overview and the lease, read when a watch starts.
    SAMOCODE_TEST_WATCH_POLL is a test hook: the suite's watches (and the real-CLI parent's) need not
    wait a second for each change."""
    return float(os.environ.get("SAMOCODE_TEST_WATCH_POLL") or 1.0)


# How long watch waits for a worker to appear when none holds the lease. A worker takes its lease
# before it creates or reads anything, a fraction of a second after it starts, and `start` returns
# only once it has: a longer grace only delays the parent when the worker has already stopped.
START_GRACE = 3.0


@dataclass(frozen=True)
class WatchResult:
    reason: str  # "status changed" | "worker exited" | "no worker running" | "timeout"
    waited: float


def _look(paths: SessionPaths) -> tuple[tuple[int, int, int] | None, tuple | None]:
    """(stat key, Status fields) of the overview."""
    try:
        st = os.stat(paths.overview)
    except OSError:
        return None, None
    return (st.st_mtime_ns, st.st_size, st.st_ino), _fields(paths)


def _fields(paths: SessionPaths) -> tuple | None:
    try:
        ov = overview.parse(overview.read_bytes(paths.overview)[0])
    except OverviewError:
        return None
    return tuple(sorted((k, f.value) for k, f in ov.fields.items()))


def watch(
    paths: SessionPaths,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchResult:
    """Block until the Status fields change, the worker exits, or `timeout` passes.

    Each poll is a stat of the overview and a look at the lease; the overview is parsed only when
    its stat changes. With no worker at the start, a worker gets START_GRACE seconds to appear."""
    every = poll()
    start = clock()
    deadline = start + timeout
    key, first = _look(paths)
    seen = holder(paths)
    grace_end = start + START_GRACE
    while True:
        now = clock()
        if now >= deadline:
            return WatchResult("timeout", now - start)
        sleep(min(every, deadline - now))
        pid = holder(paths)
        new_key = None
        with contextlib.suppress(OSError):
            st = os.stat(paths.overview)
            new_key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if new_key != key:
            key = new_key
            if _fields(paths) != first:
                return WatchResult("status changed", clock() - start)
        if seen is not None and pid is None:
            return WatchResult("worker exited", clock() - start)
        seen = pid if pid is not None else seen
        if seen is None and clock() >= grace_end:
            return WatchResult("no worker running", clock() - start)


def await_session(sessions: Path, name: str, limit: float) -> SessionPaths:
    """A session started a moment ago may not have its folder yet: wait a little for it."""
    end = time.monotonic() + limit
    while True:
        try:
            paths = session.find_existing(sessions, name)
        except NoSession:
            if time.monotonic() >= end:
                raise
        else:
            # The folder comes first, the overview after the worktree: watch from the overview.
            if paths.overview.exists() or time.monotonic() >= end:
                return paths
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
