"""What the worker writes when something happens in an iteration, built as data.

Each builder returns a `Change`: the history line, the Status fields and the Flow Log lines that
`journal.commit` then writes in crash-safe order. No I/O here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from worker.errors import ExitCode
from worker.flowlog import flow_line
from worker.history import stamp
from worker.limits import UsageWait
from worker.phases import Decision, SessionState, Verdict
from worker.providers import IterationRecord
from worker.signals import Need, WaitFor
from worker.spend import Spend


@dataclass(frozen=True)
class Change:
    record: dict
    fields: dict[str, str | None] = field(default_factory=dict)
    flow: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Applied:
    """A decision as written, and how the run ends because of it (code None: it goes on)."""

    change: Change
    code: ExitCode | None
    message: str


def worker_stop(
    state: SessionState,
    verdict: Verdict,
    reason: str,
    needs: Need = Need.ERROR_RESOLUTION,
    waiting_for: WaitFor | None = None,
) -> Decision:
    """A stop the worker decides instead of running an iteration: the counters stay as they are."""
    return Decision(
        verdict,
        state.phase,
        state.iteration,
        state.total,
        reason=reason,
        waiting_for=waiting_for,
        needs=needs if verdict is Verdict.BLOCKED else None,
        converted=reason,
    )


def record_fields(record: IterationRecord | None) -> dict:
    """The provider's facts about one attempt, for its history line."""
    if record is None:
        return {}
    # Present only when there is something to say, so that a plain record stays short.
    seen: dict[str, object] = {"cli": record.cli} if record.cli else {}
    if record.stream_problem:
        seen["stream_problem"] = record.stream_problem
    if record.limits:
        seen["limits"] = {w.name: w.as_dict() for w in record.limits}
    return {
        **seen,
        "failure": record.failure.value if record.failure else None,
        "cost_usd": record.cost_usd,
        "cost_estimated": record.cost_estimated or None,
        "turns": record.turns,
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "tokens_cached": record.tokens_cached,
        "api_status": record.api_status,
        "message": record.message[:500] or None,
    }


def next_for(wait: WaitFor) -> str:
    return {
        WaitFor.QA_ANSWERS: "Await answers in _qa.md, then run samocode again",
        WaitFor.PLAN_APPROVAL: "Await plan approval (samocode approve)",
        WaitFor.HUMAN_ACTION: "Await the human action described in Last Action, then run samocode again",
        WaitFor.USAGE_LIMIT: "Run samocode again after the usage limit resets",
    }[wait]


def decision(
    state: SessionState,
    decided: Decision,
    record: IterationRecord | None,
    extra: dict,
    spend: Spend,
    now: dt.datetime,
) -> Applied:
    """The decision's history line and overview change. `spend` already counts this attempt."""
    entry = {
        "time": stamp(now),
        "iteration": state.iteration,
        "total": decided.total,
        "phase": state.phase.value,
        "phase_after": decided.phase.value,
        "decision": decided.verdict.value,
        "accepted": decided.accepted,
        "converted": decided.converted or None,
        "reason": decided.reason or None,
        "waiting_for": decided.waiting_for.value if decided.waiting_for else None,
        "needs": decided.needs.value if decided.needs and decided.verdict is Verdict.BLOCKED else None,
        **record_fields(record),
        **extra,
        "total_cost_usd": round(spend.total, 6),
    }
    fields: dict[str, str | None] = {
        "Phase": decided.phase.value,
        "Iteration": str(decided.iteration),
        "Total Iterations": str(decided.total),
        "Blocked": "no",
    }
    if spend.known:
        fields["Total Cost"] = spend.overview_text()
    flow: list[str] = []
    code: ExitCode | None = None
    message = ""
    verdict = decided.verdict
    if verdict is Verdict.CONTINUE:
        if decided.phase is not state.phase:
            flow.append(flow_line(decided.total, now, f"Phase {state.phase.value} -> {decided.phase.value}"))
    elif verdict is Verdict.DONE:
        code, message = ExitCode.DONE, decided.reason or "session complete"
        flow.append(flow_line(decided.total, now, "Session done -> _overview.md"))
    elif verdict is Verdict.WAITING:
        assert decided.waiting_for is not None
        fields["Blocked"] = "waiting_human"
        fields["Waiting For"] = decided.waiting_for.value
        if decided.converted:
            fields["Last Action"] = decided.converted
        fields["Next"] = next_for(decided.waiting_for)
        code = ExitCode.WAITING
        message = f"waiting for {decided.waiting_for.value}: {decided.reason}".rstrip(": ")
        flow.append(flow_line(decided.total, now, f"Waiting for {decided.waiting_for.value}"))
    else:
        needs = decided.needs.value if decided.needs else Need.HUMAN_DECISION.value
        fields["Blocked"] = "yes"
        fields["Last Action"] = f"Blocked: {decided.reason}"
        fields["Next"] = f"Human: {needs.replace('_', ' ')}, then unblock"
        code, message = ExitCode.BLOCKED, f"blocked ({needs}): {decided.reason}"
        flow.append(flow_line(decided.total, now, f"Blocked: {decided.reason}"))
    if verdict is not Verdict.WAITING:
        fields["Waiting For"] = None  # cleared only where the field exists
    return Applied(Change(entry, fields, flow), code, message)


def _line(iteration_id: str, state: SessionState, event: str, now: dt.datetime, **facts: object) -> dict:
    return {
        "id": iteration_id or None,
        "time": stamp(now),
        "iteration": state.iteration,
        "total": state.total + 1,
        "phase": state.phase.value,
        "event": event,
        **facts,
    }


def attempt_failed(
    iteration_id: str, state: SessionState, record: IterationRecord, facts: dict, now: dt.datetime
) -> Change:
    return Change(_line(iteration_id, state, "attempt_failed", now, **facts, **record_fields(record)))


def interrupted(
    iteration_id: str,
    state: SessionState,
    record: IterationRecord | None,
    signal_name: str,
    during: str,
    now: dt.datetime,
) -> Change:
    """Ctrl-C or SIGTERM: the iteration runs again on the next start."""
    total = state.total + 1
    what = f"{signal_name}, {during}" if during else signal_name
    fields: dict[str, str | None] = {}
    if "usage" in during:
        fields = {
            "Waiting For": None,
            "Next": "Run samocode again (stopped while waiting for the usage reset)",
        }
    return Change(
        _line(iteration_id, state, "interrupted", now, detail=what, **record_fields(record)),
        fields,
        [flow_line(total, now, f"Worker interrupted ({what}); iteration {total} runs again on restart")],
    )


def provider_failed(
    iteration_id: str, state: SessionState, what: str, message: str, now: dt.datetime
) -> Change:
    return Change(
        _line(iteration_id, state, "provider_failed", now, failure=what, message=message[:500]),
        {
            "Last Action": f"Provider failed: {what}",
            "Next": "Fix the provider problem, then run samocode again",
        },
        [flow_line(state.total + 1, now, f"Provider failed ({what}); worker stopped")],
    )


def usage_wait(iteration_id: str, state: SessionState, plan: UsageWait, now: dt.datetime) -> Change:
    """What `status` shows while the worker waits: Waiting For usage_limit, Next with the time."""
    until = dt.datetime.fromtimestamp(plan.until).isoformat(timespec="seconds")
    return Change(
        _line(
            iteration_id,
            state,
            "usage_wait",
            now,
            until=until,
            seconds=round(plan.seconds, 1),
            source=plan.source,
        ),
        {"Waiting For": WaitFor.USAGE_LIMIT.value, "Next": f"waiting for usage reset until {plan.clock}"},
        [flow_line(state.total + 1, now, f"Usage limit hit; waiting until {plan.clock} ({plan.source})")],
    )


def usage_resumed(iteration_id: str, state: SessionState, now: dt.datetime) -> Change:
    return Change(
        _line(iteration_id, state, "usage_resumed", now),
        {"Waiting For": None, "Next": "Resuming after the usage reset"},
    )


def wait_ended(state: SessionState, wait: str, now: dt.datetime) -> Change:
    """A waiting session started again after its human acted: the wait is over."""
    return Change(
        {"time": stamp(now), "event": "wait_ended", "phase": state.phase.value, "waiting_for": wait or None},
        {"Blocked": "no", "Waiting For": "-"},
        [flow_line(state.total, now, f"Resumed after waiting for {wait or 'a human'}")],
    )


def overview_restored(state: SessionState, reason: str, copy: str, now: dt.datetime) -> Change:
    """The child left the overview unusable; the worker put back the copy from before the attempt."""
    return Change(
        {"time": stamp(now), "event": "overview_restored", "phase": state.phase.value, "reason": reason},
        {},
        [flow_line(state.total, now, f"_overview.md was unusable ({reason}); restored -> {copy}")],
    )


def phase_set_by_hand(state: SessionState, was: str, now: dt.datetime) -> Change:
    """The Phase line was edited outside the worker: honour it, and count its iterations from 1."""
    return Change(
        {"time": stamp(now), "event": "phase_set_by_hand", "phase": was, "phase_after": state.phase.value},
        {"Iteration": "1"},
        [flow_line(state.total, now, f"Phase set to {state.phase.value} outside the worker (was {was})")],
    )
