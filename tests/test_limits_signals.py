"""Issue 13, against the real worker as a subprocess and the fake CLIs: a budget held inside an
iteration (Claude's --max-budget-usd), the signal's second copy, the pause before a rate-limit window
closes, and the fallback to the other provider. One subprocess test per rail (and `samocode start`);
the rest of each rail's behaviour runs in-process in test_loop_limits_inproc.py,
test_loop_rails_inproc.py and test_loop_inproc.py (same test names), where an hour's wait takes no time."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from worker_helpers import CLOCK, decisions, find_session, history, overview, wait_for

from worker import limits, signalcopy
from worker.config import Settings
from worker.process import Ending, RunResult
from worker.providers import Failure
from worker.providers.claude import budget_flag
from worker.providers.claude_stream import ClaudeStream
from worker.signals import parse_signal
from worker.spend import Spend

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
    run = RunResult(Ending.EXITED, exit_code=1, duration=0.1, stdout_bytes=100, leftovers=0)
    record = stream.finish(run, "")
    assert record.failure is Failure.BUDGET and record.cost_usd == 0.8


def test_a_budget_reached_inside_an_iteration_blocks_after_exactly_one_attempt(project):
    version = "2.1.332"  # 2.1.197's shape: the in-process test of the same name
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


def test_claude_forgetting_the_file_still_moves_on_through_structured_output(project):
    version = "2.1.332"  # 2.1.197's shape: the in-process test of the same name
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


# -- 3. pause before the window closes ------------------------------------------------------------------


def test_the_fullest_window_that_resets_last_is_the_one_paused_for():
    now = 1_000_000.0
    windows = {
        "five_hour": {"utilization": 0.96, "resets_at": now + 600},
        "seven_day": {"utilization": 0.97, "resets_at": now + 900},
        "seven_day_opus": {"utilization": 0.5, "resets_at": now + 9000},
        "gone": {"utilization": 0.99, "resets_at": now - 1},  # its reset has passed
    }
    pause = limits.pause_for(windows, 95, now)
    assert pause == limits.Pause("seven_day", 0.97, now + 900)
    assert limits.pause_for(windows, 98, now) is None
    assert limits.pause_for(windows, 0, now) is None  # off
    text = limits.Pause("five_hour", 0.96, now + 600).text(now)
    assert re.fullmatch(rf"paused at 96% of the 5-hour window until {CLOCK}", text), text


def test_status_says_paused_while_the_worker_waits(project):
    near = {**STAY, "limits": {"five_hour": 0.97}, "limits_reset": 30}
    project.scenario(sequence=[near])
    worker = project.start("--config", str(project.config), "--session", "paused")
    try:
        session = wait_for(lambda: find_session(project.sessions, "paused"))
        wait_for(lambda: any(h.get("event") == "usage_wait" for h in history(session)))
        shown = project.cli("status", "--config", str(project.config), "--session", "paused")
        assert re.search(rf"paused at 97% of the 5-hour window until {CLOCK}", shown.stdout), shown.stdout
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=30)
    assert worker.returncode == 130
    assert len(project.records()) == 1  # the second iteration never started


# -- 4. fall back to the other provider -------------------------------------------------------------------


def _providers(project) -> list[str]:
    return ["codex" if r["argv"][:1] == ["exec"] else "claude" for r in project.records()]


def test_the_fallback_provider_is_checked_as_a_setting(project):
    args = ("--config", str(project.config), "--session", "bad")
    result = project.cli(*args, env={"SAMOCODE_FALLBACK_PROVIDER": "gemini"})  # stops before it runs
    assert result.returncode == 2
    assert "SAMOCODE_FALLBACK_PROVIDER must be claude or codex, got 'gemini'" in result.stderr


def test_a_restarted_worker_resumes_a_fallback_still_in_force_and_only_that():
    now = 1_000_000.0
    to_codex = {"event": "provider_switched", "from": "claude", "to": "codex", "until_epoch": now + 60}
    back = {"event": "provider_switched", "from": "codex", "to": "claude", "until_epoch": None}
    assert limits.resumed([to_codex], "claude", now) == limits.Fallback("claude", "codex", now + 60)
    assert limits.resumed([to_codex, back], "claude", now) is None  # it went back already
    assert limits.resumed([to_codex], "claude", now + 61) is None  # the reset has passed
    assert limits.resumed([to_codex], "codex", now) is None  # the primary changed since


def test_the_fallback_is_taken_only_for_a_wait_longer_than_fallback_after():
    assert limits.fall_back("claude", "codex", 2000.0, 1000.0, 900) == limits.Fallback(
        "claude", "codex", 2000.0
    )
    assert limits.fall_back("claude", "codex", 1800.0, 1000.0, 900) is None
    assert limits.fall_back("claude", "", 9000.0, 1000.0, 900) is None
    assert limits.fall_back("codex", "codex", 9000.0, 1000.0, 900) is None
    on = limits.Fallback("claude", "codex", 5000.0)
    assert limits.both_limited(on, 4000.0) == (False, 4000.0)  # the fallback's reset comes first
    assert limits.both_limited(on, 6000.0) == (True, 5000.0)  # the primary's: back to it, wait for it


# -- through `samocode start` ----------------------------------------------------------------------------


def _run_started(project, name: str, env: dict) -> dict:
    """`samocode start`, then the detached worker's run-end record once it has ended."""
    started = project.run("start", "--config", str(project.config), "--session", name, env=env)
    assert started.returncode in (0, 3, 4), started.stdout + started.stderr
    record = project.session_dir(name) / "_worker.json"
    wait_for(lambda: record.is_file() and "code" in json.loads(record.read_text() or "{}"), timeout=60)
    return json.loads(record.read_text())


def test_under_samocode_start_the_budget_stops_inside_and_the_copy_is_used(project):
    forgot = {**WORK, "structured_output": SIGNAL}  # no _signal.json: the copy moves it on
    project.scenario(sequence=[forgot], by_phase={"requirements": STAY})
    ended = _run_started(project, "started", {"SAMOCODE_MAX_COST_USD": "0.02"})
    assert (ended["code"], ended["outcome"]) == (4, "blocked"), ended
    session = project.session_dir("started")
    first, last = decisions(session)
    assert first["signal_source"] == "structured_output"
    assert (last["decision"], last["needs"]) == ("blocked", "budget")
    failed = [h["failure"] for h in history(session) if h.get("event") == "attempt_failed"]
    assert failed == ["budget"] and len(project.records()) == 2


def test_a_long_pause_runs_the_next_iteration_on_the_fallback_instead(codex):
    near = {**STAY, "limits": {"five_hour": 0.97}, "limits_reset": 3600}
    block = {"signal": {"status": "blocked", "reason": "stop", "needs": "human_decision"}}
    codex.scenario(sequence=[near, block])
    env = {
        "CLAUDE_PATH": str(Path(__file__).parent / "fakes" / "fake_claude.py"),
        "SAMOCODE_FALLBACK_PROVIDER": "codex",
    }
    result = codex.worker("pausefb", env=env)
    assert result.returncode == 4, result.stderr
    assert _providers(codex) == ["claude", "codex"]  # no hour-long pause: codex ran at once
    session = codex.session_dir("pausefb")
    (switch,) = [h for h in history(session) if h.get("event") == "provider_switched"]
    assert (switch["from"], switch["to"]) == ("claude", "codex")
    assert "(paused at 97% of the 5-hour window until" in (session / "_overview.md").read_text()
    assert not [h for h in history(session) if h.get("event") == "usage_wait"]
