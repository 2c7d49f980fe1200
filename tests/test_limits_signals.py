"""Issue 13, against the real worker as a subprocess and the fake CLIs: a budget held inside an
iteration (Claude's --max-budget-usd), the signal's second copy, the pause before a rate-limit window
closes, and the fallback to the other provider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from worker_helpers import decisions, history, overview

from worker import signalcopy
from worker.config import Settings
from worker.process import Ending, RunResult
from worker.providers import Failure
from worker.providers.claude import budget_flag
from worker.providers.claude_stream import ClaudeStream
from worker.rails import Spend
from worker.signals import parse_signal

FAKE_CODEX = Path(__file__).parent / "fakes" / "fake_codex.py"
STAY = {"signal": {"status": "continue", "phase": "investigation"}, "flow": "looked around"}


@pytest.fixture
def codex(project):
    """The project fixture with the fake codex as CODEX_PATH and no claude at all."""
    project.env.update(CODEX_PATH=str(FAKE_CODEX), CLAUDE_PATH=str(project.root / "no-claude"))
    return project


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


# -- 2. no iteration lost to a forgotten signal -----------------------------------------------------------

SIGNAL = {"status": "continue", "phase": "requirements", "summary": "dive written"}
WORK = {"flow": "dive written", "files": {"{prefix}-dive-x.md": "# dive\n"}}


def test_the_schemas_accept_every_signal_a_child_may_send():
    lenient, strict = signalcopy.schema(), signalcopy.schema(strict=True)
    assert lenient["required"] == ["status"] and set(strict["required"]) == set(strict["properties"])
    assert strict["properties"]["for"]["enum"][-1] is None  # unused keys are null in strict mode
    assert "budget" not in strict["properties"]["needs"]["enum"]  # the worker's own values are not offered
    assert "usage_limit" not in lenient["properties"]["for"]["enum"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"status": "done", "summary": "s"}', {"status": "done", "summary": "s"}),
        ('```json\n{"status": "done"}\n```', {"status": "done"}),
        ("All done, see the summary.", None),
        ("{not json", None),
    ],
)
def test_a_final_message_is_read_as_json_only_when_it_is_json(text, expected):
    assert signalcopy.from_text(text) == expected


def test_the_file_wins_and_a_copy_that_decides_otherwise_is_recorded():
    file_signal = parse_signal(SIGNAL)
    agree = signalcopy.choose(
        file_signal, SIGNAL, "", {**SIGNAL, "summary": "other words"}, "structured_output"
    )
    assert (agree.signal, agree.source, agree.facts) == (
        file_signal,
        "file",
        None,
    )  # wording is no disagreement
    other = {"status": "blocked", "reason": "r", "needs": "access"}
    differ = signalcopy.choose(file_signal, SIGNAL, "", other, "final_message")
    assert differ.signal == file_signal and differ.source == "file"
    assert differ.facts == {"signal_disagreement": {"source": "final_message", "copy": other}}
    used = signalcopy.choose(None, None, "no _signal.json was written", SIGNAL, "structured_output")
    assert used.signal == file_signal and used.source == "structured_output" and used.raw == SIGNAL
    assert used.facts == {"signal_file_problem": "no _signal.json was written"}
    bad = signalcopy.choose(None, None, "no _signal.json was written", {"status": "maybe"}, "final_message")
    assert bad.signal is None and "its final message: unknown status 'maybe'" in bad.invalid


@pytest.mark.parametrize("version", ["2.1.197", "2.1.332"])
def test_claude_forgetting_the_file_still_moves_on_through_structured_output(project, version):
    forgot = {**WORK, "structured_output": SIGNAL}
    block = {"signal": {"status": "blocked", "reason": "stop", "needs": "human_decision"}}
    project.scenario(sequence=[forgot], by_phase={"requirements": block})
    result = project.worker("copy", env={"FAKE_CLAUDE_VERSION": version})
    assert result.returncode == 4, result.stderr
    records = project.records()
    assert len(records) == 2, records  # no second attempt of the first iteration
    schema = json.loads(_flag(records[0]["argv"], "--json-schema"))
    assert schema == signalcopy.schema()
    first, second = decisions(project.session_dir("copy"))
    assert (first["decision"], first["phase_after"]) == ("continue", "requirements"), first
    assert first["signal_source"] == "structured_output" and first["signal"] == SIGNAL
    assert first["signal_file_problem"] == "no _signal.json was written"
    assert second["signal_source"] == "file" and "signal_disagreement" not in second
    assert not [h for h in history(project.session_dir("copy")) if h.get("event") == "attempt_failed"]


def test_codex_forgetting_the_file_still_moves_on_through_its_final_message(codex):
    forgot = {**WORK, "final_message": json.dumps(SIGNAL)}
    block = {"signal": {"status": "blocked", "reason": "stop", "needs": "human_decision"}}
    codex.scenario(sequence=[forgot], by_phase={"requirements": block})
    result = codex.worker("ccopy", "--provider", "codex")
    assert result.returncode == 4, result.stderr
    assert len(codex.records()) == 2
    first, _ = decisions(codex.session_dir("ccopy"))
    assert (first["decision"], first["signal_source"]) == ("continue", "final_message"), first


def test_a_file_and_a_copy_that_disagree_go_by_the_file_and_say_so(project):
    stop = {"status": "blocked", "reason": "stop", "needs": "human_decision"}
    project.scenario(sequence=[{"signal": stop, "structured_output": SIGNAL}])
    assert project.worker("disagree").returncode == 4
    (only,) = decisions(project.session_dir("disagree"))
    assert only["decision"] == "blocked" and only["signal_source"] == "file"
    assert only["signal_disagreement"] == {"source": "structured_output", "copy": SIGNAL}


def test_an_invalid_copy_and_no_file_is_still_a_failed_attempt_naming_both(project):
    project.scenario(sequence=[{"final_message": '{"status": "maybe"}'}] * 2)
    result = project.worker("neither")
    assert result.returncode == 4, result.stderr
    failed = [h for h in history(project.session_dir("neither")) if h.get("event") == "attempt_failed"]
    assert len(failed) == 2
    assert failed[0]["reason"] == "no _signal.json was written; its final message: unknown status 'maybe'" + (
        " (allowed: continue, done, blocked, waiting)"
    )


def test_the_copy_can_be_turned_off(project):
    project.scenario(sequence=[{**WORK, "structured_output": SIGNAL}] * 2)
    result = project.worker("off", env={"SAMOCODE_SIGNAL_COPY": "0"})
    assert result.returncode == 4, result.stderr  # no valid signal after 2 attempts
    assert all("--json-schema" not in r["argv"] for r in project.records())
