"""The phase table and decide(): every rule the worker enforces on a valid signal."""

from __future__ import annotations

import pytest

from worker.errors import InvalidSignal
from worker.phases import PHASES, Phase, SessionState, Verdict, cap_reached, decide
from worker.signals import Need, Signal, Status, WaitFor, parse_signal


def state(phase: str, iteration: int = 1, total: int = 5) -> SessionState:
    return SessionState(Phase(phase), iteration, total)


def test_caps_match_the_issue():
    caps = {p.value: r.cap for p, r in PHASES.items()}
    assert caps == {
        "investigation": 20,
        "requirements": 10,
        "planning": 10,
        "implementation": 100,
        "testing": 20,
        "quality": 10,
        "done": 3,
    }


@pytest.mark.parametrize(
    ("phase", "target"),
    [
        ("investigation", "requirements"),
        ("requirements", "planning"),
        ("implementation", "testing"),
        ("implementation", "quality"),
        ("testing", "quality"),
        ("testing", "implementation"),
        ("testing", "done"),
        ("quality", "testing"),
        ("quality", "done"),
    ],
)
def test_allowed_moves_reset_the_phase_iteration(phase, target):
    d = decide(state(phase, 4), Signal(Status.CONTINUE, phase=target))
    assert (d.verdict, d.phase, d.iteration, d.total, d.accepted) == (
        Verdict.CONTINUE,
        Phase(target),
        1,
        6,
        True,
    )


@pytest.mark.parametrize(
    ("phase", "target"),
    [
        ("investigation", "planning"),
        ("investigation", "done"),
        ("requirements", "implementation"),
        ("implementation", "done"),
        ("quality", "implementation"),
        ("done", "investigation"),
    ],
)
def test_forbidden_moves_block_with_a_precise_reason(phase, target):
    d = decide(state(phase), Signal(Status.CONTINUE, phase=target))
    assert d.verdict is Verdict.BLOCKED and d.phase is Phase(phase)
    assert f"cannot move to {target}" in d.reason or "not allowed" in d.reason


def test_planning_never_moves_itself_to_implementation():
    d = decide(state("planning"), Signal(Status.CONTINUE, phase="implementation"))
    assert (d.verdict, d.phase, d.waiting_for) == (Verdict.WAITING, Phase.PLANNING, WaitFor.PLAN_APPROVAL)
    assert "cannot move itself" in d.converted


def test_staying_counts_the_iteration_until_the_cap():
    d = decide(state("quality", 3), Signal(Status.CONTINUE, phase="quality"))
    assert (d.verdict, d.iteration, d.total) == (Verdict.CONTINUE, 4, 6)
    capped = decide(state("quality", 10), Signal(Status.CONTINUE, phase="quality"))
    assert capped.verdict is Verdict.BLOCKED and "cap of 10" in capped.reason
    assert cap_reached(state("done", 4)) and not cap_reached(state("done", 3))


def test_done_only_in_phase_done():
    assert decide(state("done"), Signal(Status.DONE, summary="ok")).verdict is Verdict.DONE
    d = decide(state("quality"), Signal(Status.DONE, summary="ok"))
    assert d.verdict is Verdict.BLOCKED and "only valid in phase done" in d.reason


@pytest.mark.parametrize(
    ("phase", "wait", "ok"),
    [
        ("requirements", WaitFor.QA_ANSWERS, True),
        ("planning", WaitFor.PLAN_APPROVAL, True),
        ("implementation", WaitFor.HUMAN_ACTION, True),
        ("requirements", WaitFor.PLAN_APPROVAL, False),
        ("planning", WaitFor.QA_ANSWERS, False),
        ("quality", WaitFor.HUMAN_ACTION, False),
        ("investigation", WaitFor.QA_ANSWERS, False),
        ("implementation", None, False),
    ],
)
def test_waiting_is_checked_against_what_the_phase_may_wait_for(phase, wait, ok):
    d = decide(state(phase), Signal(Status.WAITING, waiting_for=wait, phase="done"))
    assert d.phase is Phase(phase)  # waiting never changes the phase, whatever the signal says
    assert (d.verdict is Verdict.WAITING) == ok


def test_blocked_keeps_the_phase_and_the_reason():
    d = decide(
        state("testing"),
        Signal(Status.BLOCKED, phase="done", reason="tests fail", needs=Need.ERROR_RESOLUTION),
    )
    assert (d.verdict, d.phase, d.reason, d.needs) == (
        Verdict.BLOCKED,
        Phase.TESTING,
        "tests fail",
        Need.ERROR_RESOLUTION,
    )
    assert d.accepted


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([], "must be a JSON object"),
        ({}, "no 'status'"),
        ({"status": "finished"}, "unknown status"),
        ({"status": "waiting", "for": "pizza"}, "unknown 'for'"),
        ({"status": "blocked", "needs": "coffee"}, "unknown 'needs'"),
        ({"status": "waiting", "for": "qa_answers", "waiting_for": "plan_approval"}, "disagree"),
        ({"status": 3}, "must be a string"),
    ],
)
def test_malformed_signals_are_invalid_with_a_reason(data, reason):
    with pytest.raises(InvalidSignal, match=reason):
        parse_signal(data)


def test_waiting_for_is_a_synonym_of_for():
    assert (
        parse_signal({"status": "waiting", "waiting_for": "plan_approval"}).waiting_for
        is WaitFor.PLAN_APPROVAL
    )


def test_unknown_phase_in_signal_blocks():
    d = decide(state("testing"), parse_signal({"status": "continue", "phase": "shipping"}))
    assert d.verdict is Verdict.BLOCKED and "unknown phase 'shipping'" in d.reason


@pytest.mark.parametrize(("key", "value"), [("for", "usage_limit"), ("needs", "budget")])
def test_a_child_may_not_send_the_worker_only_values(key, value):
    with pytest.raises(InvalidSignal, match=f"unknown '{key}' value '{value}'"):
        parse_signal({"status": "blocked", key: value, "reason": "x"})
