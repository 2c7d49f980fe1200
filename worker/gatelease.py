"""The session's lease while a worker waits at a gate (`gatewait`), and how a command gets through.

The waiting worker keeps the lease (so `status` says it runs, `stop` finds it and no second worker
starts) and adds a fourth word to it, `gate-wait`. A command that finds the lease so marked leaves a
knock file naming its pid and keeps trying the lease; the waiting worker sees the knock within a
tenth of a second, lets go of the lease, takes it back as soon as the command has released it (the
command removes its knock first), and looks at the gate again. The wait file says what the worker
waits for and until when, for `status`; it counts only while its pid holds the lease so marked.

Light on purpose: `status` and every write command import it. Its small files are read and written
without blocking, so a FIFO planted at one of their names holds nobody up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import SessionLocked
from worker.session import Lease, SessionPaths, lease_holder

if TYPE_CHECKING:
    import threading

LABEL = "gate-wait"  # the lease's fourth word while a worker waits ("PID STAMP worker gate-wait")
WAIT_FILE = ".samocode.gatewait.json"
KNOCK_FILE = ".samocode.knock"
KNOCK_WAIT = 20.0  # how long a command waits for the worker to let go (a Bot API call may be under way)
RETAKE = 0.02  # how often the lease is tried while someone else holds it


# -- the command's side ---------------------------------------------------------------------------------


def step_in(paths: SessionPaths, lease: Lease, what: str, wait: float = KNOCK_WAIT) -> bool:
    """After SessionLocked: when a worker waits at a gate, knock and take the lease once it lets go.
    True when the lease is now held; False when nobody waits or the worker did not let go in time."""
    if _waiting_pid(paths) is None:
        return False
    knock = paths.dir / KNOCK_FILE
    try:
        write_small(knock, f"{os.getpid()} {what}\n")
    except OSError:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            lease.acquire(what)
            return True
        except SessionLocked:
            time.sleep(RETAKE)
    withdraw(paths)
    return False


def withdraw(paths: SessionPaths) -> None:
    """Remove this process's knock (before its lease is released, so the worker never sees it again)."""
    knock = paths.dir / KNOCK_FILE
    with contextlib.suppress(OSError, ValueError):
        if _knocker(knock) == os.getpid():
            knock.unlink()


def _knocker(knock: Path) -> int | None:
    text = read_small(knock).split()
    return int(text[0]) if text and text[0].isdigit() else None


def write_small(path: Path, text: str, sync: bool = False) -> None:
    """Write a small file (never blocking on a FIFO planted there: ENXIO instead). OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_small(path: Path, limit: int = 4096) -> str:
    """The start of a small regular file, '' otherwise: a FIFO or device planted there never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


# -- what status shows --------------------------------------------------------------------------------


def waiting(paths: SessionPaths) -> tuple[str, dt.datetime] | None:
    """(what, until) while a worker waits at a gate for a reply, else None."""
    pid = _waiting_pid(paths)
    if pid is None:
        return None
    try:
        data = json.loads(read_small(paths.dir / WAIT_FILE) or "{}")
        if data.get("pid") != pid:
            return None
        return str(data["for"]), dt.datetime.fromtimestamp(float(data["until"]))
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None


def _waiting_pid(paths: SessionPaths) -> int | None:
    """The pid of the worker holding the lease while it waits at a gate, else None."""
    held = lease_holder(paths)
    if held is None or held[1] != "worker":
        return None
    words = read_small(paths.lease, 200).split()
    return held[0] if words[3:4] == [LABEL] else None


def describe(what: str, until: dt.datetime) -> str:
    return f"waiting for {what} (worker waits for a reply until {until:%H:%M})"


# -- the worker's side ----------------------------------------------------------------------------------


class Hold:
    """The worker's lease during a wait: labelled, let go for a command, taken back."""

    def __init__(self, paths: SessionPaths, lease: Lease, stop: threading.Event) -> None:
        self.paths = paths
        self.lease = lease
        self.stop = stop

    def label(self, what: str) -> None:
        if self.lease.fd is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            os.ftruncate(self.lease.fd, 0)
            os.pwrite(self.lease.fd, f"{os.getpid()} {stamp} {what}\n".encode(), 0)

    def knocked(self) -> bool:
        """A live command knocks (a knock left by a dead one is removed)."""
        knock = self.paths.dir / KNOCK_FILE
        pid = _knocker(knock)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                knock.unlink()
            return False
        except PermissionError:
            pass
        return True

    def let_go(self, then: Callable[[], object] | None, until: float) -> bool:
        """Release the lease, run `then` (a command, which takes the lease itself) or wait until the
        knocking command is done, and take the lease back. False when it could not be taken back
        before `until` (someone else kept it) or the worker was told to stop."""
        self.lease.release()
        try:
            if then is not None:
                then()
            else:
                end = time.monotonic() + KNOCK_WAIT
                while self.knocked() and time.monotonic() < end and not self.stop.wait(RETAKE):
                    pass
        finally:
            taken = self._retake(until)
        return taken

    def _retake(self, until: float) -> bool:
        while True:
            try:
                self.lease.acquire("worker")
                self.label(f"worker {LABEL}")
                return True
            except SessionLocked:
                if time.time() >= until or self.stop.wait(RETAKE):
                    return False


def write_wait(paths: SessionPaths, what: str, until: float) -> None:
    data = {"pid": os.getpid(), "for": what, "until": until}
    with contextlib.suppress(OSError):
        tmp = paths.dir / (WAIT_FILE + ".tmp")
        write_small(tmp, json.dumps(data))
        os.replace(tmp, paths.dir / WAIT_FILE)


def clear_wait(paths: SessionPaths) -> None:
    with contextlib.suppress(OSError):
        (paths.dir / WAIT_FILE).unlink()
