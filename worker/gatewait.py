"""The wait at a gate: a worker with Telegram stays on, instead of exiting, until a human answers.

How a parent command gets through while the worker waits: the worker keeps the session's lease (so
`status` says it runs, `stop` finds it and no second worker starts) but labels it `gate-wait`. A
command that finds the lease so labelled leaves a knock file naming its pid and keeps trying the
lease; the waiting worker sees the knock within a tenth of a second, lets go of the lease, takes it
back as soon as the command has released it, and looks at the gate again. Actions from the phone go
the same way: the worker lets go of the lease and calls the very command (`approve`, `answer`,
`unblock`, `revise`), which takes the lease, checks the state and refuses as it would on the
command line. Whatever opened the gate (a button, a reply, a command, a hand edit of the overview or
`_qa.md`), the worker notices it and goes on; when the wait runs out it exits as it would have.

The wait file (`.samocode.gatewait.json`) says what the worker waits for and until when, for
`status`; it counts only while its pid holds the lease.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from worker import brief
from worker.config import Settings
from worker.errors import ExitCode, SessionLocked
from worker.session import Lease, SessionPaths, lease_holder

if TYPE_CHECKING:
    from worker.bot import Conversation

LABEL = "gate-wait"  # the lease's fourth word while a worker waits ("PID STAMP worker gate-wait")
WAIT_FILE = ".samocode.gatewait.json"
KNOCK_FILE = ".samocode.knock"
KNOCK_WAIT = 20.0  # how long a command waits for the worker to let go (a Bot API call may be under way)
SLICE = 0.1  # how often the waiting worker looks for a knock, a stop and a changed session
RETAKE = 0.02  # how often the lease is tried while someone else holds it


LOST_MESSAGE = "another process took the session while this worker waited at the gate"


class End(enum.Enum):
    ANSWERED = "answered"  # the gate is open: go on
    TIMEOUT = "timeout"  # SAMOCODE_GATE_WAIT ran out: exit as before
    STOPPED = "stopped"  # Ctrl-C, SIGTERM or SIGHUP
    LOST = "lost"  # another process took the session while the lease was let go


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


def stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def enabled(settings: Settings) -> bool:
    return settings.gate_wait > 0 and bool(settings.telegram_token and settings.telegram_chat_id)


def _closing(end: End, kind: str) -> str:
    if end is End.TIMEOUT:
        return (
            f"⌛ The worker stopped waiting for {kind}; answer with samocode's commands and start it again."
        )
    return ""


def takes_over(settings: Settings, code: int, paths: SessionPaths) -> bool:
    """Whether a wait follows this stop (it then sends the stop's notification itself, with buttons)."""
    return (
        enabled(settings)
        and code in (ExitCode.WAITING, ExitCode.BLOCKED)
        and brief.gate_of(paths).kind in brief.HUMAN_GATES
        and not is_open(paths)
    )


class Wait:
    """The wait after a stop for a human (exit 3 or 4); see the module's text."""

    def __init__(
        self,
        paths: SessionPaths,
        lease: Lease | None,
        settings: Settings,
        stop: threading.Event,
        briefer: brief.Briefer,
        ready: Callable[[], None],
    ) -> None:
        self.paths = paths
        self.lease = lease
        self.settings = settings
        self.stop = stop
        self.briefer = briefer
        self.ready = ready  # `start` returns once the worker waits: it is running
        self.until = 0.0
        self.lost = False

    def at_gate(self, code: int) -> End | None:
        """None when the worker exits at once (no wait set, or not a stop a reply can end)."""
        # Not when a reply could not help, e.g. waiting for answers with no question open: exit as before.
        if self.lease is None or not takes_over(self.settings, code, self.paths):
            return None
        gate = brief.gate_of(self.paths)
        return self._wait(gate, Hold(self.paths, self.lease, self.stop))

    def _wait(self, gate: brief.Gate, hold: Hold) -> End:
        from worker.bot import Conversation

        self.until = time.time() + self.settings.gate_wait
        hold.label(f"worker {LABEL}")
        write_wait(self.paths, gate.kind, self.until)
        talk = Conversation(self.paths, self.settings, self.stop, lambda command: self._act(hold, command))
        end = End.TIMEOUT
        try:
            if gate.kind == brief.BLOCKED:  # the reason and what is needed follow in the body
                text = self.briefer.message("blocked", gate.phase, "", None)
            else:
                text = self.briefer.message("waiting", gate.phase, f"waiting for {gate.kind}", None)
            talk.open(gate, text, dt.datetime.fromtimestamp(self.until))
            self.ready()
            end = self._watch(hold, talk)
        finally:
            talk.close("" if end is End.ANSWERED or self.stop.is_set() else _closing(end, gate.kind))
            clear_wait(self.paths)
            if self.lease is not None and self.lease.fd is not None:
                hold.label("worker")
        return end

    def _watch(self, hold: Hold, talk: Conversation) -> End:
        keys = (stat_key(self.paths.overview), stat_key(self.paths.qa))
        while True:
            if self.stop.is_set():
                return End.STOPPED
            if self.lost:
                return End.LOST
            if time.time() >= self.until:
                return End.TIMEOUT
            changed = False
            if hold.knocked():
                if not hold.let_go(None, self.until):
                    self.lost = True
                    continue
                changed = True
            changed = talk.pump() or changed
            now_keys = (stat_key(self.paths.overview), stat_key(self.paths.qa))
            if (changed or now_keys != keys) and is_open(self.paths):
                return End.ANSWERED
            keys = now_keys
            self.stop.wait(SLICE)

    def _act(self, hold: Hold, command: Callable[[], str]) -> tuple[bool, str]:
        """Run a parent command with the lease let go for it; (done, what it said or why refused)."""
        from worker.errors import SamocodeError

        said: list[tuple[bool, str]] = []

        def then() -> None:
            try:
                said.append((True, command().replace("start the worker again", "the worker goes on")))
            except SamocodeError as exc:
                said.append((False, " ".join(str(exc).split())))

        if not hold.let_go(then, self.until):
            self.lost = True
        return said[0] if said else (False, "not done")


def is_open(paths: SessionPaths) -> bool:
    """Whether the session would pass its gate now (the check a new run makes)."""
    from worker import gate, journal, overview

    try:
        ov = overview.parse(overview.read_text(paths.overview))
        state = ov.state()
        history = journal.load_history(paths, limit=journal.RECENT)
    except (overview.OverviewError, journal.JournalError):
        return False
    return gate.check(ov, state, history, paths.qa).stop is None
