"""Whether a session may start an iteration at all: checked once per run, before anything is spent.

A blocked session stops (exit 4); a session whose human has not acted yet stops (exit 3: the plan
is not approved, or `_qa.md` still has unanswered questions); a finished session ends (exit 0). Any
other wait is over: the human acted, and starting the worker again says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker import history as hist
from worker.errors import ExitCode
from worker.overview import Overview
from worker.phases import Phase, SessionState
from worker.signals import WaitFor


@dataclass(frozen=True)
class Gate:
    stop: ExitCode | None  # None: go on
    message: str = ""
    ended_wait: str | None = None  # the wait that is over now ('' when it named nothing)


def check(ov: Overview, state: SessionState, history: list[dict], qa: Path) -> Gate:
    blocked = ov.get("blocked").lower()
    wait = _value(ov.get("waiting for")).lower() or hist.last_wait(history)
    if blocked.startswith("yes"):
        reason = ov.get("last action") or "blocked"
        return Gate(
            ExitCode.BLOCKED,
            f"session is blocked ({reason}); resolve it, then run `unblock` or set 'Blocked: no'",
        )
    if blocked.startswith("waiting"):
        if state.phase is Phase.PLANNING and hist.waits_for_plan_approval(
            blocked, ov.get("waiting for"), ov.get("next"), history
        ):
            return Gate(ExitCode.WAITING, "the plan waits for approval: run `approve` first")
        if wait == WaitFor.QA_ANSWERS.value and _unanswered(qa):
            return Gate(ExitCode.WAITING, f"questions in {qa} still wait for answers")
        return Gate(None, ended_wait=wait)
    if state.phase is Phase.DONE and (hist.last_decision(history) or {}).get("decision") == "done":
        return Gate(ExitCode.DONE, "the session is already done")
    return Gate(None)


def phase_set_by_hand(state: SessionState, history: list[dict]) -> str | None:
    """The phase the session was last left in by the worker or a parent command, when the overview
    now names another one (someone edited the Phase line); None when they agree."""
    for record in reversed(history):
        after = record.get("phase_after")
        if after:
            return str(after) if after != state.phase.value else None
    return None


def _value(text: str) -> str:
    return "" if text.strip() in ("", "-") else text.strip()


def _unanswered(path: Path) -> bool:
    if not path.is_file():  # a FIFO would block the read
        return False
    try:
        return "_waiting_" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
