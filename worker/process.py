"""Runs one child CLI: its own session, stdout streamed to a log, deadlines, and no survivors.

The only place samocode runs an AI CLI on a task (`providers.cli_version` and `doctor` only ask
one its version). The child gets stdin from a file (the prompt) or /dev/null, stdout through a
pipe we drain continuously (Claude Code drops what a slow reader leaves behind and still exits 0),
stderr straight into a file. What the child leaves running when it ends or is stopped is swept by
`proctree.terminate_tree`, which owns that discipline.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worker import cgroup
from worker.proctree import TAG_VAR, own_children, terminate_tree

MAX_LINE = 8 * 1024 * 1024  # longer stream lines are logged but not parsed
CHUNK = 256 * 1024
_F_SETPIPE_SZ = 1031


class Ending(str, enum.Enum):
    EXITED = "exited"
    TIMEOUT = "timeout"
    IDLE = "idle"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Invocation:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    stdin: Path | None = None  # a file fed as stdin (the prompt); /dev/null when None


@dataclass(frozen=True)
class Limits:
    timeout: float
    idle_timeout: float
    kill_grace: float = 5.0
    pipe_grace: float = 2.0  # how long a grandchild may hold stdout after the child exits


@dataclass(frozen=True)
class RunResult:
    ending: Ending
    exit_code: int | None
    duration: float
    stdout_bytes: int
    leftovers: int  # descendants still alive when the child ended (all killed)
    log_error: str = ""  # why the stream log could not be written (the stream was still drained)


class _Lines:
    """Hands the parser the stream lines that contain one of its markers.

    Most of a stream (assistant text, tool output) is only logged: a chunk without any marker
    is never split into lines, which keeps the worker at the child's own printing speed. Only the
    unfinished last line is carried over, and never more than MAX_LINE of it.
    """

    def __init__(self, on_line: Callable[[bytes], None], markers: tuple[bytes, ...]) -> None:
        self.on_line = on_line
        self.markers = markers
        self.partial = b""
        self.skipping = False  # inside an over-long line: drop it up to its newline

    def feed(self, chunk: bytes) -> None:
        last = chunk.rfind(b"\n")
        if last < 0:
            self._carry(chunk)
            return
        first = chunk.find(b"\n")
        if not self.skipping:  # the line the previous chunk started
            self._emit(self.partial + chunk[:first] if self.partial else chunk[:first])
        self.partial, self.skipping = b"", False
        # The lines wholly inside this chunk, scanned in place (no copy) before any is split out.
        if first < last and (
            not self.markers or any(chunk.find(m, first + 1, last) >= 0 for m in self.markers)
        ):
            for line in chunk[first + 1 : last].split(b"\n"):
                self._emit(line)
        self._carry(chunk[last + 1 :])

    def _emit(self, line: bytes) -> None:
        if not self.markers or any(m in line for m in self.markers):
            self.on_line(line)

    def _carry(self, rest: bytes) -> None:
        if self.skipping or not rest:
            return
        if len(self.partial) + len(rest) > MAX_LINE:
            self.partial, self.skipping = b"", True
        else:
            self.partial += rest

    def close(self) -> None:
        if self.partial and not self.skipping:
            self._emit(self.partial)
        self.partial = b""


def _write_all(fd: int, data: bytes) -> str:
    """Write all of `data`; the error text when the file system refuses (full disk), else ''."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def _outlive(
    proc: subprocess.Popen[bytes], stop: threading.Event, limits: Limits, started: float, last_output: float
) -> Ending:
    """Wait for a child that closed its stdout; how it ended (EXITED when it exited by itself)."""
    while True:
        now = time.monotonic()
        if stop.is_set():
            return Ending.INTERRUPTED
        if now - started >= limits.timeout:
            return Ending.TIMEOUT
        if now - last_output >= limits.idle_timeout:
            return Ending.IDLE
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)
            return Ending.EXITED


def open_exclusive(path: Path) -> tuple[Path, int]:
    """Open a new log file, never overwriting an earlier one (a suffix is added instead)."""
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
    raise FileExistsError(f"too many logs named like {path}")


def run(
    inv: Invocation,
    log_fd: int,
    stderr_fd: int,
    limits: Limits,
    on_line: Callable[[bytes], None],
    stop: threading.Event,
    markers: tuple[bytes, ...] = (),
    tag: str = "",
) -> RunResult:
    """Run the child to its end. Never raises for anything the child does.

    `on_line` gets the stdout lines containing one of `markers` (every line when empty). `tag`
    (made up when empty) goes into the environment of the child and everything it starts; the
    caller may record it first, so a worker that dies can have the processes swept later."""
    tag = tag or os.urandom(8).hex()
    env = {**inv.env, TAG_VAR: tag}
    started = time.monotonic()
    before = frozenset(own_children())
    try:
        stdin = open(inv.stdin, "rb") if inv.stdin else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                list(inv.argv),
                cwd=inv.cwd,
                env=env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=stderr_fd,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            if not isinstance(stdin, int):  # a file we opened, not DEVNULL
                stdin.close()
    except OSError as exc:
        # The CLI vanished or cannot run: reported like a child that failed at once.
        with contextlib.suppress(OSError):
            os.write(stderr_fd, f"samocode: cannot start {inv.argv[0]}: {exc.strerror}\n".encode())
        return RunResult(Ending.EXITED, 127, time.monotonic() - started, 0, 0)
    cgroup.join(tag, proc.pid)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    with contextlib.suppress(OSError):  # a bigger pipe means fewer wake-ups on a fast stream
        fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
    lines = _Lines(on_line, markers)
    total = 0
    log_error = ""
    last_output = started
    ending = Ending.EXITED
    exited_at: float | None = None
    eof = False
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not eof:
            now = time.monotonic()
            if stop.is_set():
                ending = Ending.INTERRUPTED
                break
            if now - started >= limits.timeout:
                ending = Ending.TIMEOUT
                break
            if now - last_output >= limits.idle_timeout and exited_at is None:
                ending = Ending.IDLE
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at >= limits.pipe_grace:
                break  # a descendant holds the pipe open; it is swept below
            wait = min(
                0.1, limits.timeout - (now - started), max(0.0, limits.idle_timeout - (now - last_output))
            )
            if not sel.select(max(wait, 0.01)):
                continue
            while True:
                try:
                    chunk = os.read(fd, CHUNK)
                except BlockingIOError:
                    break
                if not chunk:
                    eof = True
                    break
                if not log_error:
                    log_error = _write_all(log_fd, chunk)
                total += len(chunk)
                last_output = time.monotonic()
                lines.feed(chunk)
    lines.close()
    if eof and ending is Ending.EXITED and proc.poll() is None:
        # stdout closed but the child works on: it keeps its time and idle limits, no less.
        ending = _outlive(proc, stop, limits, started, last_output)
    # Whether a stopped child would have exited 0 or died of the TERM is a race: record neither.
    stopped_running = ending is not Ending.EXITED and proc.poll() is None
    if ending is not Ending.EXITED:
        leftovers = terminate_tree(proc, tag, limits.kill_grace, before=before)
    else:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=limits.pipe_grace)
        # Anything still tagged, or orphaned onto us, outlived the child: sweep it. A clean exit
        # (pipe closed, child gone, nothing reparented to us) costs no /proc scan.
        leftovers = 0
        if not eof or proc.poll() is None or own_children() - before - {proc.pid} or cgroup.pids(tag):
            leftovers = terminate_tree(proc, tag, limits.kill_grace, before=before)
        cgroup.remove(tag)
    proc.stdout.close()
    return RunResult(
        ending=ending,
        exit_code=None if stopped_running else proc.returncode,
        duration=time.monotonic() - started,  # up to the last descendant's end
        stdout_bytes=total,
        leftovers=leftovers,
        log_error=log_error,
    )
