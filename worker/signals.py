"""The `_signal.json` protocol: the child's verdict, read strictly (its history is `history.py`).

The child writes `_signal.json` as its very last act. The worker clears it before each attempt,
reads it once after the child exits, and never trusts anything it cannot parse: a missing,
oversized, symlinked or malformed signal is an `InvalidSignal`, never progress.
"""

from __future__ import annotations

import enum
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import InvalidSignal

MAX_SIGNAL_BYTES = 64 * 1024


class Status(str, enum.Enum):
    CONTINUE = "continue"
    DONE = "done"
    BLOCKED = "blocked"
    WAITING = "waiting"


class WaitFor(str, enum.Enum):
    """What a `waiting` signal waits for (the `for` field)."""

    QA_ANSWERS = "qa_answers"
    PLAN_APPROVAL = "plan_approval"
    HUMAN_ACTION = "human_action"
    USAGE_LIMIT = "usage_limit"  # set by the worker itself, never by a child


class Need(str, enum.Enum):
    """What a `blocked` signal needs from the human (the `needs` field)."""

    ERROR_RESOLUTION = "error_resolution"
    HUMAN_DECISION = "human_decision"
    ACCESS = "access"
    BUDGET = "budget"  # set by the worker itself when a spend cap is reached


# Values a child may send; the worker reserves the others for its own decisions.
CHILD_WAIT_FOR = frozenset({WaitFor.QA_ANSWERS, WaitFor.PLAN_APPROVAL, WaitFor.HUMAN_ACTION})
CHILD_NEEDS = frozenset({Need.ERROR_RESOLUTION, Need.HUMAN_DECISION, Need.ACCESS})


@dataclass(frozen=True)
class Signal:
    status: Status
    phase: str | None = None
    summary: str = ""
    reason: str = ""
    needs: Need | None = None
    waiting_for: WaitFor | None = None


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidSignal(f"field '{key}' must be a string, got {type(value).__name__}")
    return value.strip()


def _vocabulary(key: str, text: str, kind: type[enum.Enum], allowed: frozenset) -> Any:
    """The enum member a child may send for `key`, None when absent; worker-only values are refused."""
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value not in allowed:
        names = ", ".join(sorted(v.value for v in allowed))
        raise InvalidSignal(f"unknown '{key}' value '{text}' (allowed: {names})")
    return value


def parse_signal(data: object) -> Signal:
    """Turn decoded JSON into a Signal, or raise InvalidSignal naming the first problem."""
    if not isinstance(data, dict):
        raise InvalidSignal(f"signal must be a JSON object, got {type(data).__name__}")
    status_text = _text(data, "status").lower()
    if not status_text:
        raise InvalidSignal("signal has no 'status'")
    try:
        status = Status(status_text)
    except ValueError:
        allowed = ", ".join(s.value for s in Status)
        raise InvalidSignal(f"unknown status '{status_text}' (allowed: {allowed})") from None

    wait_text = _text(data, "for").lower()
    alias = _text(data, "waiting_for").lower()
    if wait_text and alias and wait_text != alias:
        raise InvalidSignal(f"'for' ({wait_text}) and 'waiting_for' ({alias}) disagree")
    waiting_for = _vocabulary("for", wait_text or alias, WaitFor, CHILD_WAIT_FOR)
    needs = _vocabulary("needs", _text(data, "needs").lower(), Need, CHILD_NEEDS)
    phase = _text(data, "phase").lower() or None
    return Signal(
        status=status,
        phase=phase,
        summary=_text(data, "summary"),
        reason=_text(data, "reason"),
        needs=needs,
        waiting_for=waiting_for,
    )


def read_signal(path: Path) -> tuple[Signal, dict[str, Any]]:
    """Read and parse the signal file. Returns the signal and the raw object for the history."""
    try:
        # O_NONBLOCK: a FIFO planted as the signal must not hang the worker.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InvalidSignal("no _signal.json was written") from None
    except OSError as exc:
        if path.is_symlink():
            raise InvalidSignal("_signal.json is a symlink; refusing to follow it") from None
        raise InvalidSignal(f"cannot open _signal.json: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise InvalidSignal("_signal.json is not a regular file")
        raw = handle.read(MAX_SIGNAL_BYTES + 1)
    if len(raw) > MAX_SIGNAL_BYTES:
        raise InvalidSignal(f"_signal.json is larger than {MAX_SIGNAL_BYTES // 1024} KiB")
    if not raw.strip():
        raise InvalidSignal("_signal.json is empty")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidSignal("_signal.json is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidSignal(f"_signal.json is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    signal = parse_signal(data)
    return signal, data


def clear_signal(path: Path) -> None:
    """Remove any signal (or a symlink named like one) so only this attempt's verdict counts."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise InvalidSignal("_signal.json is a directory; remove it by hand") from None
