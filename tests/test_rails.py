"""The rails of an unattended run against the real worker as a subprocess and the fake CLI, one test
per rail (the session lease, the budget, the stall breaker, usage-limit waits, backoff) plus timeouts,
idle kills and Ctrl-C at every waiting point. Each rail's other cases run in-process, without real
waits, in test_loop_rails_inproc.py and test_loop_limits_inproc.py."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from worker_helpers import decisions, fakes, find_session, history, overview, sleepers, text, wait_for

from worker import overview as overview_module
from worker.config import Settings
from worker.limits import plan_usage_wait

STAY = {"signal": {"status": "continue", "phase": "investigation"}, "flow": "looked around"}
BLOCK = {"signal": {"status": "blocked", "reason": "stop here", "needs": "human_decision"}}
SESSION_LIMIT = {
    "exit": 1,
    "result": {"is_error": True, "api_error_status": 429, "result": "You've hit your session limit"},
}


def _started(project, count: int = 1) -> None:
    wait_for(lambda: len(project.records()) >= count)


# -- the session lease -------------------------------------------------------------------------------


def test_a_second_worker_exits_6_naming_the_holder_and_a_dead_holders_lock_is_taken_over(project):
    project.scenario(by_phase={"investigation": {"sleep": 60, "spawn": "setsid"}})
    first = project.start("--config", str(project.config), "--session", "lease")
    try:
        _started(project)
        second = project.worker("lease")
        assert second.returncode == 6, second.stderr
        line = second.stderr.strip()
        assert re.fullmatch(
            rf"samocode: session locked by pid {first.pid} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d", line
        ), line
        refused = project.cli("approve", "--config", str(project.config), "--session", "lease")
        assert refused.returncode == 6 and f"pid {first.pid}" in refused.stderr
    finally:
        first.kill()  # kill -9: no cleanup of any kind
        first.wait(timeout=10)
    assert fakes(project.root), "the dead worker's child keeps running until someone sweeps it"
    project.scenario(by_phase={"investigation": BLOCK})
    third = project.worker("lease")
    assert third.returncode == 4, third.stderr
    session = project.session_dir("lease")
    interrupted = [r for r in history(session) if r.get("event") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["total"] == 1 and interrupted[0]["swept"] >= 1
    assert fakes(project.root) == [] and sleepers(project.root) == []
    assert [d["total"] for d in decisions(session)] == [1]  # the interrupted iteration ran again
    assert not (session / ".samocode.iteration.json").exists()


def test_a_finished_session_ends_at_once_without_calling_the_provider(project):
    done = {"signal": {"status": "done", "summary": "all good"}}
    folder = project.sessions / "fin"
    folder.mkdir(parents=True)
    text = overview_module.render_new("fin", "2026-01-01 00:00", "/x", "t", "", "[000 @ 01-01 00:00] x")
    (folder / "_overview.md").write_text(
        overview_module.set_fields(overview_module.parse(text), {"Phase": "done"})
    )
    project.scenario(by_phase={"done": done})
    assert project.worker("fin").returncode == 0
    before = (folder / "_overview.md").read_bytes()
    again = project.worker("fin")
    assert again.returncode == 0 and "already done" in again.stdout
    assert len(project.records()) == 1 and (folder / "_overview.md").read_bytes() == before


# -- spend -------------------------------------------------------------------------------------------


def test_the_session_budget_blocks_with_needs_budget_before_the_next_iteration(project):
    project.scenario(by_phase={"investigation": STAY})  # each call costs $0.0125
    result = project.worker("budget", env={"SAMOCODE_MAX_COST_USD": "0.03"})
    assert result.returncode == 4, result.stderr
    assert "blocked (budget): session spend $0.04 reached SAMOCODE_MAX_COST_USD $0.03" in result.stderr
    assert len(project.records()) == 3  # $0.0375 after the third: the fourth never starts
    session = project.session_dir("budget")
    last = decisions(session)[-1]
    assert (last["decision"], last["needs"], last["total"]) == ("blocked", "budget", 3)
    ov = overview(session)
    assert ov.get("blocked") == "yes" and ov.get("total iterations") == "3"
    assert ov.get("total cost") == "$0.04 (investigation $0.04)"
    assert "SAMOCODE_MAX_COST_USD" in ov.get("last action")
    shown = project.cli("status", "--config", str(project.config), "--session", "budget")
    assert "Spend: $0.04 (3000 in / 300 out)" in shown.stdout, shown.stdout
    # Blocked stays blocked: the next start spends nothing.
    again = project.worker("budget", env={"SAMOCODE_MAX_COST_USD": "0.03"})
    assert again.returncode == 4 and len(project.records()) == 3


# -- stall breaker -----------------------------------------------------------------------------------


def test_three_iterations_that_change_nothing_block_as_stalled_with_the_evidence(project):
    notes = [{**STAY, "files": {f"notes-{n}.md": "x\n"}} for n in range(3)]
    project.scenario(sequence=notes, by_phase={"investigation": STAY})
    result = project.worker("stall", env={"SAMOCODE_STALL_ITERATIONS": "3"})
    assert result.returncode == 4, result.stderr
    assert "stalled: 3 iterations in a row (#4-#6)" in result.stderr
    assert len(project.records()) == 6  # three with new files, three that only touched Status/Flow Log
    session = project.session_dir("stall")
    last = decisions(session)[-1]
    assert last["decision"] == "blocked" and last["needs"] == "human_decision"
    assert last["evidence"]["iterations"] == [4, 5, 6]
    assert last["evidence"]["dirty_files"] == 0 and len(last["evidence"]["head"]) == 7
    assert "stalled" in overview(session).get("last action")


# -- usage limits ------------------------------------------------------------------------------------


def test_ctrl_c_during_the_usage_wait_stops_at_once_and_clears_the_wait(project):
    project.scenario(sequence=[{**SESSION_LIMIT, "rate_limit": 600}])
    proc = project.start("--config", str(project.config), "--session", "cwait")
    session = wait_for(lambda: find_session(project.sessions, "cwait"))
    wait_for(lambda: "waiting for usage reset" in text(session / "_overview.md"))
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 3
    ov = overview(session)
    assert ov.get("waiting for") == "-" and "stopped while waiting" in ov.get("next")
    last = history(session)[-1]
    assert last["event"] == "interrupted" and last["detail"] == "Ctrl-C, during the usage wait"


def test_usage_wait_plan_uses_the_reported_reset_a_fallback_and_the_max_wait():
    settings = Settings(usage_wait=1800, max_wait=3600, retry_delay=5)
    now = 1_000_000.0
    reported = plan_usage_wait(now + 100, now, settings, hits=1, waited=0)
    assert reported.seconds == pytest.approx(101) and not reported.beyond
    fallback = plan_usage_wait(None, now, settings, hits=1, waited=0)
    assert fallback.seconds == 1800 and "SAMOCODE_USAGE_WAIT" in fallback.source
    past = plan_usage_wait(now - 10, now, settings, hits=3, waited=0)
    assert past.seconds == 20  # a reset already past: backoff, not a 30-minute wait
    assert plan_usage_wait(now + 100, now, settings, hits=2, waited=3550).beyond  # total counts


# -- failures and backoff -----------------------------------------------------------------------------


def test_ctrl_c_during_the_retry_delay_stops_at_once(project):
    project.scenario(by_phase={"investigation": {"exit": 1, "result": None, "stderr": "boom"}})
    env = {"SAMOCODE_RETRY_DELAY": "60"}
    proc = project.start("--config", str(project.config), "--session", "cdelay", env=env)
    session = wait_for(lambda: find_session(project.sessions, "cdelay"))
    wait_for(lambda: any(r.get("event") == "attempt_failed" for r in history(session)))
    wait_for(lambda: "retrying in 60 s" in text(session / "session.log"))  # logged as the delay begins
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143, err
    assert time.monotonic() - sent < 3
    last = history(session)[-1]
    assert last["event"] == "interrupted" and last["detail"] == "SIGTERM, during the retry delay"
    assert len(project.records()) == 1


# -- deadlines and descendants -------------------------------------------------------------------------


def test_a_short_timeout_is_honoured_within_grace_despite_a_half_line_and_a_child_ignoring_sigterm(project):
    hang = {"spawn": "both", "half_line": True, "ignore_term": True, "sleep": 60}
    project.scenario(by_phase={"investigation": hang})
    started = time.monotonic()
    result = project.worker(
        "deadline", "--timeout", "0.8", env={"SAMOCODE_MAX_RETRIES": "0", "SAMOCODE_KILL_GRACE": "0.3"}
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 5 and "(timeout)" in result.stderr, result.stderr
    attempt = history(project.session_dir("deadline"))[0]
    assert attempt["ending"] == "timeout" and attempt["failure"] == "timeout"
    # From the spawn to the last descendant's end: 0.8 s, then TERM ignored, KILL after the 0.3 s grace.
    assert 0.8 + 0.3 <= attempt["duration_s"] <= 0.8 + 0.3 + 0.75, attempt["duration_s"]
    assert elapsed < 0.8 + 0.3 + 4, elapsed  # plus the worker's own start-up
    # The half line came (after TERM was ignored and the sleepers started) before the deadline.
    (log,) = (project.session_dir("deadline") / "_logs").glob("*.jsonl")
    assert log.read_bytes().endswith(b'"text":"partial')
    assert sleepers(project.root) == [] and fakes(project.root) == []


def test_a_silent_child_is_killed_as_idle_with_all_its_descendants(project):
    project.scenario(by_phase={"investigation": {"spawn": "both", "sleep": 60}})
    env = {"SAMOCODE_IDLE_TIMEOUT": "0.5", "SAMOCODE_MAX_RETRIES": "0"}  # the retry: in-process
    result = project.worker("idle", env=env)
    assert result.returncode == 5 and "(idle)" in result.stderr, result.stderr
    attempts = [r for r in history(project.session_dir("idle")) if r.get("event") == "attempt_failed"]
    assert [(a["ending"], a["failure"]) for a in attempts] == [("idle", "idle")]
    assert all(a["duration_s"] < 0.5 + 1 + 0.75 for a in attempts)  # idle, then at most the 1 s grace
    assert sleepers(project.root) == [] and fakes(project.root) == []
    log = (project.session_dir("idle") / "session.log").read_text()
    assert "idle" in log and "timeout" not in log.replace("idle_timeout", "")


def test_ctrl_c_kills_a_setsid_grandchild_too(project):
    project.scenario(by_phase={"investigation": {"spawn": "both", "sleep": 60}})
    proc = project.start("--config", str(project.config), "--session", "cc")
    _started(project)
    wait_for(lambda: len(sleepers(project.root)) == 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert sleepers(project.root) == [] and fakes(project.root) == []
    assert os.path.exists(project.session_dir("cc") / "_overview.md")
