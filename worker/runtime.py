"""What a loop run is given and what it gives back: its options, its collaborators (`Runtime`:
settings, provider, notifier, and the seams for spawning a child, sleeping and the clock), the
console line of an iteration and the run's `Outcome`."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from worker import process
from worker.config import Settings
from worker.errors import ExitCode
from worker.notify import Notifier
from worker.phases import Phase
from worker.providers import Provider


@dataclass(frozen=True)
class RunOptions:
    task: str = ""
    dive: str = ""
    max_iterations: int = 0  # 0 = no limit for this run


@dataclass(frozen=True)
class Outcome:
    code: ExitCode
    message: str
    session_dir: Path | None = None


@dataclass(frozen=True)
class IterationReport:
    """One console line's worth of facts about a finished iteration."""

    total: int
    phase: Phase
    verdict: str
    duration: float
    cost_usd: float | None
    detail: str = ""


class Spawn(Protocol):
    """Runs one child to its end (`process.run`): streams its stdout into `log_fd` and feeds
    `on_line` the lines holding one of `markers`; never raises for anything the child does."""

    def __call__(
        self,
        inv: process.Invocation,
        log_fd: int,
        stderr_fd: int,
        limits: process.Limits,
        on_line: Callable[[bytes], None],
        stop: threading.Event,
        markers: tuple[bytes, ...] = (),
        tag: str = "",
    ) -> process.RunResult: ...


def wait(stop: threading.Event, seconds: float) -> bool:
    """Sleep `seconds`, or less when `stop` is set; True when stopped."""
    return stop.wait(seconds)


@dataclass
class Runtime:
    """Collaborators of the loop. The defaults of the seams (spawn, sleep, clock) are the real ones,
    which the CLI uses; in-process tests (tests/inproc.py) pass a fake spawn that plays the child, a
    sleep that only records, and a clock that sleep moves."""

    settings: Settings
    provider: Provider
    notifier: Notifier
    stop: threading.Event
    report: Callable[[IterationReport], None] = lambda _r: None
    log: Callable[[str], None] = lambda _m: None
    spawn: Spawn = process.run
    sleep: Callable[[threading.Event, float], bool] = wait  # backoff and usage waits
    clock: Callable[[], float] = time.time  # wall clock, epoch seconds: stamps and usage resets
    monotonic: Callable[[], float] = time.monotonic  # durations
    stop_code: list[ExitCode] = field(default_factory=lambda: [ExitCode.INTERRUPTED])
    # Called once the session passed its gate, just before the first child; `start` waits for it.
    ready: Callable[[], None] = lambda: None
    # Called with how the run ended (an Outcome, or the exception that ends it) while the lease is
    # still held, so the run-end record of a later worker is never overwritten by this one.
    ended: Callable[[Outcome | None, BaseException | None], None] = lambda _o, _e: None

    def now(self) -> dt.datetime:
        """The clock as local time, for stamps."""
        return dt.datetime.fromtimestamp(self.clock())
