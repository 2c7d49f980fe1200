"""The wait at a gate: a worker with Telegram stays on, instead of exiting, until a human answers.

A parent command given meanwhile gets the lease from the waiting worker (`gatelease`: the knock).
Actions from the phone go the same way: the worker lets go of the lease and calls the very command
(`approve`, `answer`, `unblock`, `revise`), which takes the lease, checks the state and refuses as it
would on the command line. Whatever opened the gate (a button, a reply, a command, a hand edit of the
overview or `_qa.md`), the worker notices it and goes on; when the wait runs out it exits as it would
have (3, or 4 when blocked).
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from worker import brief
from worker.config import Settings
from worker.errors import ExitCode
from worker.gatelease import LABEL, Hold, clear_wait, write_wait
from worker.session import Lease, SessionPaths

if TYPE_CHECKING:
    from worker.bot import Conversation

SLICE = 0.1  # how often the waiting worker looks for a knock, a stop and a changed session


LOST_MESSAGE = "another process took the session while this worker waited at the gate"


class End(enum.Enum):
    ANSWERED = "answered"  # the gate is open: go on
    TIMEOUT = "timeout"  # SAMOCODE_GATE_WAIT ran out: exit as before
    STOPPED = "stopped"  # Ctrl-C, SIGTERM or SIGHUP
    LOST = "lost"  # another process took the session while the lease was let go


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
    from worker.errors import OverviewError, SessionFileError

    try:
        ov = overview.parse(overview.read_bytes(paths.overview)[0])
        state = ov.state()
        history = journal.load_history(paths, limit=journal.RECENT)
    except (OverviewError, SessionFileError):
        return False
    return gate.check(ov, state, history, paths.qa).stop is None
