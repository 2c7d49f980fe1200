"""Issue 13, against the real worker as a subprocess and the fake CLIs: a budget held inside an
iteration (Claude's --max-budget-usd), the signal's second copy, the pause before a rate-limit window
closes, and the fallback to the other provider."""

from __future__ import annotations

import json

import pytest
from worker_helpers import decisions, history, overview

from worker.config import Settings
from worker.process import Ending, RunResult
from worker.providers import Failure
from worker.providers.claude import budget_flag
from worker.providers.claude_stream import ClaudeStream
from worker.rails import Spend

STAY = {"signal": {"status": "continue", "phase": "investigation"}, "flow": "looked around"}


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# -- 1. a budget that stops inside an iteration ---------------------------------------------------------


def test_claude_is_given_the_smaller_remaining_of_the_two_caps():
    spend = Spend({"investigation": 0.30, "planning": 0.50}, known=True)
    both = Settings(max_cost_usd=1.0, max_phase_cost_usd=0.5)
    assert spend.remaining("investigation", both) == pytest.approx(0.20)  # phase: 0.50 - 0.30
    assert spend.remaining("testing", both) == pytest.approx(0.20)  # session: 1.00 - 0.80
    assert spend.remaining("investigation", Settings()) is None
    assert spend.remaining("planning", Settings(max_phase_cost_usd=0.4)) == 0.0  # never negative
    assert budget_flag(0.123456) == "0.1234" and budget_flag(0.0) == "0.0001"


@pytest.mark.parametrize("version", ["2.1.197", "2.1.332"])
def test_the_clis_budget_stop_is_read_as_a_budget_failure(version):
    stream = ClaudeStream()
    result = {"type": "result", "subtype": "error_max_budget_usd", "is_error": True, "total_cost_usd": 0.8}
    if version == "2.1.332":  # the newer CLI names it in terminal_reason too
        result = {**result, "subtype": "success", "terminal_reason": "budget_exhausted"}
    stream.feed(json.dumps(result).encode())
    run = RunResult(Ending.EXITED, exit_code=1, duration=0.1, stdout_bytes=100, tail=b"", leftovers=0)
    record = stream.finish(run, "")
    assert record.failure is Failure.BUDGET and record.cost_usd == 0.8


@pytest.mark.parametrize("version", ["2.1.197", "2.1.332"])
def test_a_budget_reached_inside_an_iteration_blocks_after_exactly_one_attempt(project, version):
    project.scenario(by_phase={"investigation": STAY})  # each call costs $0.0125
    env = {"SAMOCODE_MAX_COST_USD": "0.02", "FAKE_CLAUDE_VERSION": version}
    result = project.worker("inside", env=env)
    assert result.returncode == 4, result.stderr
    records = project.records()
    assert len(records) == 2, records  # the second iteration was stopped by the CLI, not retried
    assert [_flag(r["argv"], "--max-budget-usd") for r in records] == ["0.0200", "0.0075"]
    session = project.session_dir("inside")
    failed = [h for h in history(session) if h.get("event") == "attempt_failed"]
    assert [h["failure"] for h in failed] == ["budget"], failed
    last = decisions(session)[-1]
    assert (last["decision"], last["needs"], last["total"]) == ("blocked", "budget", 2)
    assert "session spend $0.03 reached SAMOCODE_MAX_COST_USD $0.02" in result.stderr
    assert overview(session).get("total cost") == "$0.03 (investigation $0.03)"


def test_without_a_cap_claude_gets_no_budget_flag(project):
    project.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "x"}}})
    assert project.worker("free").returncode == 4
    assert all("--max-budget-usd" not in r["argv"] for r in project.records())
