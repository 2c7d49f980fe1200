"""The phase table, the single source of truth, and the pure `decide(state, signal)`.

Everything that says what a phase may do (next phases, signal statuses, iteration caps, what it
may wait for) lives in PHASES. The loop only applies the Decision this module returns; the
skill, workflow and agent texts are tested against this table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from worker.signals import Need, Signal, Status, WaitFor


class Phase(str, enum.Enum):
    INVESTIGATION = "investigation"
    REQUIREMENTS = "requirements"
    PLANNING = "planning"
    IMPLEMENTATION = "implementation"
    TESTING = "testing"
    QUALITY = "quality"
    DONE = "done"


@dataclass(frozen=True)
class PhaseRule:
    next_phases: frozenset[Phase]  # phases a `continue` may move to (staying is always allowed)
    statuses: frozenset[Status]
    cap: int  # iterations allowed in this phase before the session is blocked
    waits_for: frozenset[WaitFor]


def _rule(
    next_phases: set[Phase], statuses: set[Status], cap: int, waits_for: frozenset[WaitFor] = frozenset()
) -> PhaseRule:
    return PhaseRule(frozenset(next_phases), frozenset(statuses), cap, frozenset(waits_for))


_C, _B, _W, _D = Status.CONTINUE, Status.BLOCKED, Status.WAITING, Status.DONE

PHASES: dict[Phase, PhaseRule] = {
    Phase.INVESTIGATION: _rule({Phase.REQUIREMENTS}, {_C, _B}, 20),
    Phase.REQUIREMENTS: _rule({Phase.PLANNING}, {_C, _W, _B}, 10, frozenset({WaitFor.QA_ANSWERS})),
    # Planning never moves itself on: only a human approval sets implementation.
    Phase.PLANNING: _rule(set(), {_C, _W, _B}, 10, frozenset({WaitFor.PLAN_APPROVAL})),
    Phase.IMPLEMENTATION: _rule(
        {Phase.TESTING, Phase.QUALITY}, {_C, _W, _B}, 100, frozenset({WaitFor.HUMAN_ACTION})
    ),
    Phase.TESTING: _rule(
        {Phase.QUALITY, Phase.IMPLEMENTATION, Phase.DONE}, {_C, _W, _B}, 20, frozenset({WaitFor.HUMAN_ACTION})
    ),
    Phase.QUALITY: _rule({Phase.TESTING, Phase.DONE}, {_C, _B}, 10),
    Phase.DONE: _rule(set(), {_D, _B}, 3),
}


class Verdict(str, enum.Enum):
    CONTINUE = "continue"  # run another iteration
    DONE = "done"
    WAITING = "waiting"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class SessionState:
    """The worker-owned counters of a session, as read from the overview."""

    phase: Phase
    iteration: int  # number of the iteration about to run in this phase, from 1
    total: int  # iterations completed in the whole session


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    phase: Phase
    iteration: int
    total: int
    reason: str = ""
    waiting_for: WaitFor | None = None
    needs: Need | None = None
    converted: str = ""  # why the signal was not taken as written; empty when accepted

    @property
    def accepted(self) -> bool:
        return not self.converted


def parse_phase(text: str) -> Phase | None:
    try:
        return Phase(text.strip().lower())
    except ValueError:
        return None


def cap_reached(state: SessionState) -> str:
    """The reason the phase may not run another iteration, or '' when it may."""
    cap = PHASES[state.phase].cap
    if state.iteration > cap:
        return f"phase {state.phase.value} reached its cap of {cap} iterations"
    return ""


def _blocked(state: SessionState, reason: str, *, converted: str = "", needs: Need | None = None) -> Decision:
    return Decision(
        Verdict.BLOCKED,
        state.phase,
        state.iteration + 1,
        state.total + 1,
        reason=reason,
        needs=needs or Need.ERROR_RESOLUTION,
        converted=converted,
    )


def blocked_for(state: SessionState, reason: str, needs: Need = Need.ERROR_RESOLUTION) -> Decision:
    """A blocked decision the worker reaches without a usable signal (it counts the iteration)."""
    return _blocked(state, reason, converted=reason, needs=needs)


def decide(state: SessionState, signal: Signal) -> Decision:
    """What the worker does with a valid signal in a given state. Pure; never raises."""
    rule = PHASES[state.phase]
    here = state.phase.value

    if signal.status not in rule.statuses:
        allowed = ", ".join(sorted(s.value for s in rule.statuses))
        why = f"status '{signal.status.value}' is not allowed in phase {here} (allowed: {allowed})"
        if signal.status is Status.DONE:
            why = f"status 'done' is only valid in phase done, not {here}"
        return _blocked(state, why, converted=why)

    if signal.status is Status.DONE:
        return Decision(Verdict.DONE, state.phase, state.iteration, state.total + 1, reason=signal.summary)

    if signal.status is Status.BLOCKED:
        reason = signal.reason or signal.summary or "the agent reported blocked without a reason"
        return _blocked(state, reason, needs=signal.needs)

    if signal.status is Status.WAITING:
        if signal.waiting_for is None or signal.waiting_for not in rule.waits_for:
            allowed = ", ".join(sorted(w.value for w in rule.waits_for)) or "nothing"
            got = signal.waiting_for.value if signal.waiting_for else "no 'for'"
            why = f"phase {here} cannot wait for {got} (it may wait for: {allowed})"
            return _blocked(state, why, converted=why)
        return Decision(
            Verdict.WAITING,
            state.phase,
            state.iteration + 1,
            state.total + 1,
            reason=signal.reason or signal.summary,
            waiting_for=signal.waiting_for,
        )

    # continue
    if not signal.phase:
        why = "a 'continue' signal must name the next phase ('phase')"
        return _blocked(state, why, converted=why)
    target = parse_phase(signal.phase)
    if target is None:
        why = f"unknown phase '{signal.phase}' in signal"
        return _blocked(state, why, converted=why)
    if target is state.phase:
        nxt = SessionState(state.phase, state.iteration + 1, state.total + 1)
        if cap := cap_reached(nxt):
            return _blocked(state, cap, converted=cap)
        return Decision(Verdict.CONTINUE, state.phase, nxt.iteration, nxt.total, reason=signal.summary)
    if state.phase is Phase.PLANNING and target is Phase.IMPLEMENTATION:
        why = "planning cannot move itself to implementation; waiting for plan_approval instead"
        return Decision(
            Verdict.WAITING,
            state.phase,
            state.iteration + 1,
            state.total + 1,
            reason=signal.summary or "plan ready for approval",
            waiting_for=WaitFor.PLAN_APPROVAL,
            converted=why,
        )
    if target not in rule.next_phases:
        allowed = ", ".join(sorted(p.value for p in rule.next_phases)) or "none (only staying)"
        why = f"phase {here} cannot move to {target.value} (allowed: {allowed})"
        return _blocked(state, why, converted=why)
    return Decision(Verdict.CONTINUE, target, 1, state.total + 1, reason=signal.summary)
