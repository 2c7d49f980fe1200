"""Whether a session may start an iteration at all: checked once per run, before anything is spent.

A blocked session stops (exit 4); a session whose human has not acted yet stops (exit 3: the plan
is not approved, or `_qa.md` still has unanswered questions); a finished session ends (exit 0). Any
other wait is over: the human acted, and starting the worker again says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker import history as hist
from worker import plans
from worker.errors import ExitCode
from worker.overview import Overview
from worker.phases import Phase, SessionState
from worker.signals import WaitFor


@dataclass(frozen=True)
class Gate:
    stop: ExitCode | None  # None: go on
    message: str = ""
    ended_wait: str | None = None  # the wait that is over now ('' when it named nothing)


def check(ov: Overview, state: SessionState, history: list[dict], qa_file: Path) -> Gate:
    blocked = ov.get("blocked").lower()
    wait = hist.waits_for(ov.get("waiting for"), history)
    if blocked.startswith("yes"):
        reason = ov.get("last action") or "blocked"
        return Gate(
            ExitCode.BLOCKED,
            f"session is blocked ({reason}); resolve it, then run `unblock` or set 'Blocked: no'",
        )
    if blocked.startswith("waiting"):
        from worker import qa  # here: only a waiting session needs the _qa.md parser (start-up time)

        if state.phase is Phase.PLANNING and plans.waits_for_approval(
            blocked, ov.get("waiting for"), ov.get("next"), history
        ):
            return Gate(ExitCode.WAITING, "the plan waits for approval: run `approve` first")
        if wait == WaitFor.QA_ANSWERS.value and qa.still_waiting(qa_file):
            return Gate(ExitCode.WAITING, f"questions in {qa_file} still wait for answers")
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
