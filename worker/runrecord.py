"""How the last worker run on a session ended: `SESSION_DIR/_worker.json`, one small object.

Written once per run, at its end, while the run still holds the session's lease, so a run that
was refused for the lease never overwrites the record of the run holding it. `status` and `watch`
read it to say, after the fact, why the worker is no longer running.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from worker.errors import ExitCode, SamocodeError

MAX_MESSAGE = 500  # a blocked reason or a provider's error can be long; the record stays small


@dataclass(frozen=True)
class RunEnd:
    pid: int
    code: int
    outcome: str  # ExitCode name in lower case ("done", "waiting", ...), "error" for any other code
    message: str
    started_at: str  # ISO-8601, local time with its offset
    ended_at: str


def now_iso(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now()).astimezone().isoformat(timespec="seconds")


def outcome_name(code: int) -> str:
    try:
        return ExitCode(code).name.lower()
    except ValueError:
        return "error"


def make(pid: int, code: int, message: str, started_at: str, ended_at: str | None = None) -> RunEnd:
    text = " ".join(message.split())[:MAX_MESSAGE]
    return RunEnd(pid, int(code), outcome_name(code), text, started_at, ended_at or now_iso())


def write(path: Path, record: RunEnd) -> None:
    """Atomic: a reader sees the old record or the new one, never half of one. Raises OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(asdict(record), ensure_ascii=False) + "\n").encode("utf-8")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # left by a killed run with our pid; O_EXCL below never follows a planted link
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read(path: Path) -> RunEnd | None:
    """The record, or None when there is none or it is not one (a hand-edited or foreign file)."""
    try:
        if not path.is_file() or path.stat().st_size > 64 * 1024:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunEnd(
            pid=int(data["pid"]),
            code=int(data["code"]),
            outcome=str(data["outcome"]),
            message=str(data.get("message") or ""),
            started_at=str(data.get("started_at") or ""),
            ended_at=str(data["ended_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Ended(Protocol):
    """How a loop run ended (worker.loop.Outcome), as far as the record needs it."""

    @property
    def code(self) -> int: ...

    @property
    def message(self) -> str: ...


def ending(outcome: Ended | None, failure: BaseException | None) -> tuple[int, str]:
    """(code, message) of a run that returned `outcome` (a loop Outcome) or raised `failure`,
    with the codes `cli.main` exits with."""
    if outcome is not None:
        return int(outcome.code), str(outcome.message)
    if isinstance(failure, SamocodeError):
        return int(failure.exit_code), str(failure)
    if isinstance(failure, KeyboardInterrupt):
        return int(ExitCode.INTERRUPTED), "interrupted"
    return 1, f"crashed: {type(failure).__name__}: {failure}"


def recorder(paths, started_at: str, warn: Callable[..., None]):
    """The loop's `ended` callback: writes the record for this process; a failed write is logged
    (the run's own exit code still tells the caller how it ended)."""

    def ended(outcome: Ended | None, failure: BaseException | None) -> None:
        code, message = ending(outcome, failure)
        try:
            write(paths.worker_record, make(os.getpid(), code, message, started_at))
        except OSError as exc:
            warn("cannot write %s: %s", paths.worker_record, exc.strerror)

    return ended
