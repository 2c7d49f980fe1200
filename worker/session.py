"""Session names, folders and file paths: `SESSIONS/YY-MM-DD-name/` and what lives in it."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ConfigError, NoSession, SessionLocked

_DATED = re.compile(r"^\d{2}-\d{2}-\d{2}-(?P<name>.+)$")
MAX_NAME_BYTES = 120
_BAD_NAME = re.compile(r"[/\\*?\[\]{}\s]|\.\.|^\.|^-")


@dataclass(frozen=True)
class SessionPaths:
    dir: Path

    @property
    def name(self) -> str:
        """The session's name without its date prefix."""
        match = _DATED.match(self.dir.name)
        return match.group("name") if match else self.dir.name

    @property
    def overview(self) -> Path:
        return self.dir / "_overview.md"

    @property
    def signal(self) -> Path:
        return self.dir / "_signal.json"

    @property
    def history(self) -> Path:
        return self.dir / "_signal_history.jsonl"

    @property
    def qa(self) -> Path:
        return self.dir / "_qa.md"

    @property
    def logs(self) -> Path:
        return self.dir / "_logs"

    @property
    def session_log(self) -> Path:
        return self.dir / "session.log"

    @property
    def lease(self) -> Path:
        return self.dir / ".samocode.lease"

    @property
    def worker_out(self) -> Path:
        """The console output of a worker started with `start` (appended run after run)."""
        return self.dir / "_worker.out"

    @property
    def worker_record(self) -> Path:
        """How the last worker run ended (`worker.runrecord`)."""
        return self.dir / "_worker.json"

    @property
    def in_flight(self) -> Path:
        """Marker of an iteration under way; found at start-up, it means the last worker died."""
        return self.dir / ".samocode.iteration.json"


def check_name(name: str) -> str:
    """The name, or ConfigError when it could escape SESSIONS or is not a plain folder name."""
    if not name or not name.strip():
        raise ConfigError("session name is empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # bytes from the command line that are not UTF-8
        raise ConfigError(f"session name {name!a} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:  # file systems count bytes: 255 for the dated folder and its files
        raise ConfigError(f"session name is {size} bytes long; at most {MAX_NAME_BYTES} (UTF-8)")
    if _BAD_NAME.search(name):
        raise ConfigError(
            f"session name '{name}' is not allowed: use letters, digits, '-', '_' or '.', "
            "with no '/', '..', spaces or glob characters"
        )
    return name


def resolve(sessions: Path, name: str, today: dt.date) -> tuple[SessionPaths, bool]:
    """exact folder -> newest dated folder with exactly this name -> new dated folder.

    Returns the paths and whether the session already exists.
    """
    check_name(name)
    exact = sessions / name
    if exact.exists() or exact.is_symlink():
        if not exact.is_dir():
            raise ConfigError(f"session folder {exact} exists but is not a directory")
        return SessionPaths(exact), True
    dated = sorted(
        child
        for child in sessions.iterdir()
        if (m := _DATED.match(child.name)) and m.group("name") == name and child.is_dir()
    )
    if dated:
        return SessionPaths(dated[-1]), True
    return SessionPaths(sessions / f"{today:%y-%m-%d}-{name}"), False


def find_existing(sessions: Path, name: str) -> SessionPaths:
    """For commands that only make sense on an existing session."""
    paths, exists = resolve(sessions, name, dt.date.today())
    if not exists:
        raise NoSession(f"no session named '{name}' in {sessions}")
    return paths


class Lease:
    """One worker per session: an exclusive flock held for the whole run.

    The kernel drops the lock when its holder dies, so a lease left by a killed worker is simply
    taken over. The file says who holds it, for the refusal message.
    """

    def __init__(self, paths: SessionPaths) -> None:
        self.path = paths.lease
        self.fd: int | None = None

    def acquire(self, what: str = "worker") -> None:

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            os.close(fd)
            pid, since = [*holder, "?", "?"][:2]
            raise SessionLocked(f"session locked by pid {pid} since {since.replace('T', ' ')}") from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {stamp} {what}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:

        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def holder(paths: SessionPaths) -> int | None:
    """The pid of the worker running on the session, or None."""
    held = lease_holder(paths)
    return None if held is None else held[0]


def lease_holder(paths: SessionPaths) -> tuple[int, str] | None:
    """(pid, what) of whoever holds the lease now ("worker", or a command such as "approve"),
    or None; the pid is -1 when the lease file does not name one."""

    try:
        fd = os.open(paths.lease, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            pid = int(text[0]) if text and text[0].isdigit() else -1
            return pid, text[2] if len(text) > 2 else ""
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a parent that does not reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
