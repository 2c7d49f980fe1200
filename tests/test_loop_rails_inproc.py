"""The loop in-process (tests/inproc.py) against its rails: the session and phase budgets (before an
iteration and inside one) and the stall breaker."""

from __future__ import annotations

import pytest
from inproc import BLOCK, STAY, InProc, sig

from worker.errors import ExitCode


@pytest.fixture
def loop(project, monkeypatch) -> InProc:
    return InProc(project, monkeypatch)


# -- spend -----------------------------------------------------------------------------------------


def test_the_session_budget_blocks_with_needs_budget_before_the_next_iteration(loop):
    loop.scenario(by_phase={"investigation": STAY})  # each call costs $0.0125
    outcome = loop.run("budget", max_cost_usd=0.03)
    assert outcome.code is ExitCode.BLOCKED
    assert "blocked (budget): session spend $0.04 reached SAMOCODE_MAX_COST_USD $0.03" in outcome.message
    assert len(loop.child.calls) == 3  # $0.0375 after the third: the fourth never starts
    last = loop.decisions("budget")[-1]
    assert (last["decision"], last["needs"], last["total"]) == ("blocked", "budget", 3)
    ov = loop.overview("budget")
    assert ov.get("blocked") == "yes" and ov.get("total iterations") == "3"
    assert ov.get("total cost") == "$0.04 (investigation $0.04)"
    assert loop.run("budget", max_cost_usd=0.03).code is ExitCode.BLOCKED and len(loop.child.calls) == 3


def test_a_budget_reached_inside_an_iteration_blocks_after_exactly_one_attempt(loop):
    loop.scenario(by_phase={"investigation": STAY})
    outcome = loop.run("inside", max_cost_usd=0.02)
    assert outcome.code is ExitCode.BLOCKED
    budgets = [c["argv"][c["argv"].index("--max-budget-usd") + 1] for c in loop.child.calls]
    assert budgets == ["0.0200", "0.0075"]  # the second was stopped by the CLI, not retried
    failed = [h for h in loop.history("inside") if h.get("event") == "attempt_failed"]
    assert [h["failure"] for h in failed] == ["budget"]
    last = loop.decisions("inside")[-1]
    assert (last["decision"], last["needs"], last["total"]) == ("blocked", "budget", 2)
    assert "session spend $0.03 reached SAMOCODE_MAX_COST_USD $0.02" in outcome.message


def test_a_phase_budget_stops_the_phase_that_spent_it(loop):
    cheap = {"result": {"total_cost_usd": 0.008}}
    move = {"signal": sig("continue", "requirements"), **cheap}
    loop.scenario(
        sequence=[{**STAY, **cheap}, move],
        by_phase={"requirements": {"signal": sig("continue", "requirements")}},
    )
    outcome = loop.run("phase-budget", max_phase_cost_usd=0.02)
    assert outcome.code is ExitCode.BLOCKED
    assert "phase requirements spend $0.03 reached SAMOCODE_MAX_PHASE_COST_USD $0.02" in outcome.message
    assert len(loop.child.calls) == 4
    assert (
        loop.overview("phase-budget").get("total cost") == "$0.04 (investigation $0.02, requirements $0.03)"
    )


def test_without_a_cap_claude_gets_no_budget_flag(loop):
    loop.scenario(by_phase={"investigation": BLOCK})
    assert loop.run("free").code is ExitCode.BLOCKED
    assert all("--max-budget-usd" not in c["argv"] for c in loop.child.calls)


# -- stall breaker ---------------------------------------------------------------------------------


def test_three_iterations_that_change_nothing_block_as_stalled_with_the_evidence(loop):
    notes = [{**STAY, "files": {f"notes-{n}.md": "x\n"}} for n in range(3)]
    loop.scenario(sequence=notes, by_phase={"investigation": STAY})
    outcome = loop.run("stall", stall_iterations=3)
    assert outcome.code is ExitCode.BLOCKED and "stalled: 3 iterations in a row (#4-#6)" in outcome.message
    assert len(loop.child.calls) == 6  # three with new files, three that only touched Status/Flow Log
    last = loop.decisions("stall")[-1]
    assert last["decision"] == "blocked" and last["needs"] == "human_decision"
    assert last["evidence"]["iterations"] == [4, 5, 6]
    assert last["evidence"]["dirty_files"] == 0 and len(last["evidence"]["head"]) == 7
    assert "stalled" in loop.overview("stall").get("last action")


def test_the_stall_count_carries_over_restarts(loop):
    loop.scenario(by_phase={"investigation": STAY})
    assert loop.run("stall2", max_iterations=1, stall_iterations=3).code is ExitCode.LIMIT
    assert loop.run("stall2", max_iterations=1, stall_iterations=3).code is ExitCode.LIMIT
    third = loop.run("stall2", max_iterations=1, stall_iterations=3)
    assert third.code is ExitCode.BLOCKED and "stalled" in third.message


def test_a_commit_each_iteration_is_progress(loop):
    commits = [{**STAY, "code": {f"f{n}.txt": "x\n"}} for n in range(4)]
    loop.scenario(sequence=[*commits, BLOCK])
    outcome = loop.run("busy", stall_iterations=2)
    assert outcome.code is ExitCode.BLOCKED and "stop here" in outcome.message
    assert len(loop.child.calls) == 5
