"""`start` and `stop`: a worker that does not belong to whoever started it, and a way to end it.

`start` runs the worker in its own session (setsid) with stdin from /dev/null and its console
output appended to `SESSION_DIR/_worker.out`, so neither a parent that kills its process group nor
a terminal that hangs up reaches it, and the starter can exit while the worker runs on. The worker
tells the starter through a pipe when it has passed the session's gate (it then holds the lease and
is about to run its first child); a worker that ends before that (waiting, blocked, locked, done)
closes the pipe by exiting, and the starter hands on its exit code and last line.

`stop` ends a running worker as Ctrl-C does: SIGINT to the lease holder, after checking that the
process really holds this session's lease.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker import runrecord
from worker.errors import ConfigError, NotStarted, SessionLocked
from worker.session import SessionPaths, lease_holder, pid_alive

READY = b"ready\n"
READY_TIMEOUT = 30.0  # a worker passes its gate in well under a second; this bounds a stuck one
KILL_GRACE = 5.0  # between TERM and KILL for a worker that never got going
_ROOT = Path(__file__).resolve().parent.parent


def worker_command() -> list[str]:
    """How to run this same worker: main.py of the checkout or plugin folder, else the package."""
    main = _ROOT / "main.py"
    if main.is_file():
        return [sys.executable, str(main)]
    return [sys.executable, "-m", "worker"]


@dataclass(frozen=True)
class Started:
    pid: int
    session_dir: Path
    output: Path


@dataclass(frozen=True)
class EndedAtOnce:
    code: int
    line: str  # the worker's last line, e.g. "samocode: waiting: the plan waits for approval ..."


def start(
    command: Sequence[str],
    paths: SessionPaths,
    timeout: float = READY_TIMEOUT,
    env: Mapping[str, str] | None = None,
    kill_grace: float = KILL_GRACE,
) -> Started | EndedAtOnce:
    """Start `command` (a `run` command line; `--ready-fd N` is appended) detached, and wait until
    it is ready or has ended. Raises NotStarted (after stopping it) when it does neither in time.

    The session folder is created here, where the worker will look for it, so that its output has
    a home before the worker runs; the worker treats a folder without an overview as a new session."""
    if paths.dir.exists() and not paths.dir.is_dir():
        raise ConfigError(f"session path {paths.dir} is not a directory")
    try:
        paths.dir.mkdir(parents=True, exist_ok=True)
        out = _open_output(paths.worker_out)
    except OSError as exc:
        raise ConfigError(f"cannot write {paths.worker_out}: {exc.strerror}") from None
    offset = out.tell()
    read_end, write_end = os.pipe()
    try:
        with out:
            proc = subprocess.Popen(
                [*command, "--ready-fd", str(write_end)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                pass_fds=(write_end,),
                env=None if env is None else dict(env),
            )
    except OSError as exc:
        os.close(read_end)
        raise NotStarted(f"cannot run the worker ({command[0]}): {exc.strerror}") from None
    finally:
        os.close(write_end)
    try:
        said = _wait_for_word(read_end, timeout)
    finally:
        os.close(read_end)
    if said == READY:
        _let_go(proc)
        return Started(proc.pid, paths.dir, paths.worker_out)
    if said is None:  # neither ready nor ended: stop it, leave no process behind
        _kill_group(proc, kill_grace)
        raise NotStarted(
            f"the worker (pid {proc.pid}) neither took the session nor exited within {timeout:g} s; "
            f"stopped it (its output: {paths.worker_out})"
        )
    try:
        code = proc.wait(timeout=kill_grace)  # the pipe closed: it has ended or is ending
    except subprocess.TimeoutExpired:
        _kill_group(proc, kill_grace)
        raise NotStarted(
            f"the worker (pid {proc.pid}) closed its pipe without starting; stopped it "
            f"(its output: {paths.worker_out})"
        ) from None
    if code < 0:
        raise NotStarted(
            f"the worker (pid {proc.pid}) was killed by signal {-code} before it started "
            f"(its output: {paths.worker_out})"
        )
    return EndedAtOnce(code, last_line(paths.worker_out, offset) or f"samocode: the worker exited {code}")


def _open_output(path: Path):
    """`_worker.out` for appending: a regular file only (a FIFO would block, a symlink could point
    anywhere), so a hostile folder gives an error instead of a hang or a write elsewhere."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab")


def readiness(fd: int | None) -> Callable[[], None]:
    """The worker's side of the pipe: a `ready` callback that says READY once and closes it."""
    if fd is None:
        return lambda: None
    try:
        os.set_inheritable(fd, False)  # never into a child
    except OSError:
        return lambda: None
    pending = [fd]

    def ready() -> None:
        if pending:
            with contextlib.suppress(OSError):  # the starter may be gone: nothing to tell
                os.write(pending[0], READY)
            with contextlib.suppress(OSError):
                os.close(pending.pop())

    return ready


def _wait_for_word(fd: int, timeout: float) -> bytes | None:
    """READY, b"" when the pipe closed without it, or None on timeout."""
    deadline = time.monotonic() + timeout
    got = b""
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            return b""
        got += chunk
        if got.endswith(b"\n"):
            return READY if got == READY else b""
    return None


def _let_go(proc: subprocess.Popen) -> None:
    """The starter exits without waiting; the worker is reparented. Marked as handled so that
    Python does not warn about a child still running."""
    proc.returncode = 0


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """TERM, then KILL, to the worker's whole process group (it leads its own)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
            return


def last_line(path: Path, offset: int = 0) -> str:
    """The last non-empty line written to `path` after `offset` (at most the last 4 KB of it)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- stop --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stopped:
    pid: int
    code: int | None  # from the worker's run-end record; None when it wrote none


@dataclass(frozen=True)
class NotRunning:
    held_by: str = ""  # a command that holds the lease for a moment ("approve", ...), if any


def stop(
    paths: SessionPaths,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Stopped | NotRunning:
    """SIGINT to the worker on the session, then wait for it to end (lease released, process gone).

    Raises SessionLocked when the lease holder is not a worker process that holds this session's
    lease (nothing is signalled), or when the worker is still running after `timeout`."""
    deadline = clock() + timeout
    held = lease_holder(paths)
    for _ in range(20):  # the lease is written just after it is taken: give the pid a moment
        if held is None or held[0] > 0:
            break
        sleep(0.05)
        held = lease_holder(paths)
    if held is None:
        return NotRunning()
    pid, what = held
    if what != "worker":
        return NotRunning(what)
    if pid <= 0 or holds(pid, paths.lease) is False:
        if not _still_held(paths, pid):  # it ended between the two looks
            record = runrecord.read(paths.worker_record)
            return Stopped(pid, record.code if record and record.pid == pid else None)
        raise SessionLocked(
            f"the session's lease names pid {pid}, which is not a process holding it here; "
            "nothing was signalled"
        )
    with contextlib.suppress(ProcessLookupError):  # it may have ended by itself just now
        os.kill(pid, signal.SIGINT)
    while pid_alive(pid) or _still_held(paths, pid):
        if clock() >= deadline:
            raise SessionLocked(f"worker pid {pid} still running after {timeout:g} s")
        sleep(0.1)
    record = runrecord.read(paths.worker_record)
    return Stopped(pid, record.code if record and record.pid == pid else None)


def _still_held(paths: SessionPaths, pid: int) -> bool:
    held = lease_holder(paths)
    return held is not None and held[0] == pid


def holds(pid: int, path: Path) -> bool | None:
    """Whether process `pid` has `path` open (the lease fd); None when /proc cannot tell."""
    try:
        target = os.path.realpath(path)
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
    return False
