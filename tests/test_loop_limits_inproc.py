"""The loop in-process (tests/inproc.py) at usage limits: waits on the fake clock (and what status
shows meanwhile), waits past SAMOCODE_MAX_WAIT, the pause before a window closes, and the fallback
provider."""

from __future__ import annotations

import re

import pytest
from inproc import BLOCK, FAR, LIMIT, STAY, InProc, providers
from worker_helpers import CLOCK

from worker.errors import ExitCode
from worker.session import SessionPaths
from worker.status import render_text
from worker.statusbuild import build, rails_of


@pytest.fixture
def loop(project, monkeypatch) -> InProc:
    return InProc(project, monkeypatch)


# -- usage limits ----------------------------------------------------------------------------------


def test_a_usage_limit_is_waited_out_on_the_clock_shown_in_status_then_resumed(loop):
    loop.scenario(sequence=[{**LIMIT, "rate_limit": 300}, BLOCK])
    shown = []  # what `samocode status` says while the worker waits
    folder = SessionPaths(loop.session("usage"))
    loop.clock.on_sleep = lambda _s: shown.append(render_text(build(folder, rails_of(None))))
    assert loop.run("usage").code is ExitCode.BLOCKED
    assert sum(loop.clock.slept) == pytest.approx(301, abs=1)  # until the reset, plus its margin
    assert re.search(rf"Next: waiting for usage reset until {CLOCK}", shown[0]), shown[0]
    assert "Waiting for: usage_limit" in shown[0]
    events = [r.get("event") or r.get("decision") for r in loop.history("usage")]
    assert events == ["attempt_failed", "usage_wait", "usage_resumed", "blocked"]
    wait = loop.history("usage")[1]
    assert wait["source"] == "reported reset" and 299 <= wait["seconds"] <= 302
    ov = loop.overview("usage")
    assert ov.get("waiting for") == "-" and ov.get("blocked") == "yes"
    assert re.search(rf"Usage limit hit; waiting until {CLOCK}", ov.text)
    assert len(loop.child.calls) == 2


def test_a_reset_beyond_max_wait_stops_as_waiting_for_usage_limit_then_a_restart_tries_again(loop):
    loop.scenario(sequence=[{**LIMIT, "rate_limit": 3600}, BLOCK])
    outcome = loop.run("later", max_wait=60)
    assert outcome.code is ExitCode.WAITING
    assert "waiting for usage_limit: usage limit resets at" in outcome.message
    assert "past SAMOCODE_MAX_WAIT (60 s)" in outcome.message and loop.clock.slept == []
    ov = loop.overview("later")
    assert (ov.get("blocked"), ov.get("waiting for")) == ("waiting_human", "usage_limit")
    assert ov.get("total iterations") == "0"  # nothing was done: the count stays
    assert loop.run("later").code is ExitCode.BLOCKED and len(loop.child.calls) == 2


def test_a_limit_with_no_reset_time_waits_samocode_usage_wait(loop):
    loop.scenario(sequence=[LIMIT, BLOCK])
    assert loop.run("nores", usage_wait=120).code is ExitCode.BLOCKED
    assert sum(loop.clock.slept) == pytest.approx(120)
    assert loop.history("nores")[1]["source"] == "no reset time given: SAMOCODE_USAGE_WAIT"


def test_a_codex_usage_limit_without_a_reset_waits_samocode_usage_wait_then_resumes(loop):
    loop.scenario(sequence=[{"usage_limit": True}], by_phase={"investigation": BLOCK})
    assert loop.run("c8", provider="codex", usage_wait=60).code is ExitCode.BLOCKED
    assert sum(loop.clock.slept) == 60 and len(loop.child.calls) == 2  # slept in rounds of 30 s
    attempts = [h for h in loop.history("c8") if h.get("event") == "attempt_failed"]
    assert [a["failure"] for a in attempts] == ["usage_limit"]
    assert "Usage limit hit; waiting until" in loop.overview("c8").text


def test_ctrl_c_during_the_usage_wait_stops_at_once_and_clears_the_wait(loop):
    loop.scenario(sequence=[{**LIMIT, "rate_limit": 600}])
    loop.clock.on_sleep = lambda _s: loop.stop.set()
    assert loop.run("cwait").code is ExitCode.INTERRUPTED
    ov = loop.overview("cwait")
    assert ov.get("waiting for") == "-" and "stopped while waiting" in ov.get("next")
    last = loop.history("cwait")[-1]
    assert last["event"] == "interrupted" and last["detail"] == "Ctrl-C, during the usage wait"


# -- the pause before a window closes --------------------------------------------------------------


def test_a_window_above_the_threshold_is_waited_out_before_the_next_iteration(loop):
    near = {**STAY, "limits": {"five_hour": 0.96}, "limits_reset": 300}
    loop.scenario(sequence=[near, BLOCK])
    assert loop.run("pause").code is ExitCode.BLOCKED
    assert sum(loop.clock.slept) >= 300
    events = [h.get("event") or h.get("decision") for h in loop.history("pause")]
    assert events == ["continue", "usage_wait", "usage_resumed", "blocked"], events
    wait = loop.history("pause")[1]
    assert wait["source"] == "pause" and wait["pause"] == {"window": "five_hour", "utilization": 0.96}
    assert re.search(rf"Paused at 96% of the 5-hour window until {CLOCK}", loop.overview("pause").text)
    assert any(re.search(r"paused at 96% of the 5-hour window", t) for t in loop.notes.sent)


def test_below_the_threshold_or_turned_off_there_is_no_pause(loop):
    near = {**STAY, "limits": {"five_hour": 0.96}, "limits_reset": 600}
    loop.scenario(sequence=[near, BLOCK])
    assert loop.run("nopause", pause_at=0).code is ExitCode.BLOCKED
    assert [h.get("event") for h in loop.history("nopause") if h.get("event")] == []
    assert loop.clock.slept == []


def test_a_pause_past_the_longest_wait_stops_as_waiting_for_the_usage_limit(loop):
    near = {**STAY, "limits": {"five_hour": 0.99}, "limits_reset": 3 * 3600}
    loop.scenario(sequence=[near])
    assert loop.run("far", max_wait=60).code is ExitCode.WAITING
    last = loop.decisions("far")[-1]
    assert last["decision"] == "waiting" and last["waiting_for"] == "usage_limit"
    assert "paused at 99% of the 5-hour window" in last["reason"]
    assert len(loop.child.calls) == 1


def _status(loop: InProc, name: str) -> str:
    return render_text(build(SessionPaths(loop.session(name)), rails_of(None)))


def test_status_says_paused_while_the_worker_waits(loop):
    near = {**STAY, "limits": {"five_hour": 0.97}, "limits_reset": 300}
    loop.scenario(sequence=[near, BLOCK])
    shown = []
    loop.clock.on_sleep = lambda _s: shown.append(_status(loop, "paused"))
    assert loop.run("paused").code is ExitCode.BLOCKED
    assert re.search(rf"paused at 97% of the 5-hour window until {CLOCK}", shown[0]), shown[0]


# -- the fallback provider -------------------------------------------------------------------------


def test_a_far_reset_runs_the_next_attempts_on_the_fallback_and_comes_back_after_it(loop):
    slow = {**STAY, "takes": 4000}  # the fallback's iteration outlasts the primary's reset
    loop.scenario(sequence=[FAR, slow, BLOCK])
    outcome = loop.run("fb", fallback_provider="codex")  # 3600 s is past SAMOCODE_FALLBACK_AFTER (900)
    assert outcome.code is ExitCode.BLOCKED
    assert providers(loop) == ["claude", "codex", "claude"] and loop.clock.slept == []
    lines = loop.history("fb")
    switches = [h for h in lines if h.get("event") == "provider_switched"]
    assert [(s["from"], s["to"]) for s in switches] == [("claude", "codex"), ("codex", "claude")]
    assert [h["provider"] for h in lines if h.get("event") == "attempt_failed"] == ["claude"]
    assert [d["provider"] for d in loop.decisions("fb")] == ["codex", "claude"]
    text = loop.overview("fb").text
    assert "Switched to codex: claude's usage limit resets at" in text and "Switched back to claude" in text
    assert any("switched to codex: claude's usage limit resets at" in t for t in loop.notes.sent)
    assert any("switched back to claude" in t for t in loop.notes.sent)


def test_a_near_reset_is_waited_for_on_the_same_provider(loop):
    loop.scenario(sequence=[{**LIMIT, "rate_limit": 120}, BLOCK])
    assert loop.run("near", fallback_provider="codex").code is ExitCode.BLOCKED
    assert providers(loop) == ["claude", "claude"] and sum(loop.clock.slept) == pytest.approx(121, abs=1)


def test_a_limit_on_both_waits_for_the_earlier_reset(loop):
    codex_far = {"exit": 1, "rate_limit": 3 * 3600}
    loop.scenario(sequence=[FAR, codex_far, BLOCK])
    assert loop.run("both", fallback_provider="codex").code is ExitCode.BLOCKED
    assert providers(loop) == ["claude", "codex", "claude"]  # back on claude, whose reset came first
    assert 3500 <= sum(loop.clock.slept) <= 3700  # claude's reset, not codex's three hours
    events = [h.get("event") for h in loop.history("both") if h.get("event")]
    assert events == [
        "attempt_failed",
        "provider_switched",
        "attempt_failed",
        "provider_switched",
        "usage_wait",
        "usage_resumed",
    ], events


def test_a_long_pause_runs_the_next_iteration_on_the_fallback_instead(loop):
    near = {**STAY, "limits": {"five_hour": 0.97}, "limits_reset": 3600}
    loop.scenario(sequence=[near, BLOCK])
    assert loop.run("pausefb", fallback_provider="codex").code is ExitCode.BLOCKED
    assert providers(loop) == ["claude", "codex"] and loop.clock.slept == []  # no hour-long pause
    (switch,) = [h for h in loop.history("pausefb") if h.get("event") == "provider_switched"]
    assert (switch["from"], switch["to"]) == ("claude", "codex")
    assert "(paused at 97% of the 5-hour window until" in loop.overview("pausefb").text
    assert not [h for h in loop.history("pausefb") if h.get("event") == "usage_wait"]


def test_status_shows_the_fallback_provider_while_the_session_runs_on_it(loop):
    shown = []
    on_fallback = {**STAY, "then": lambda _ctx: shown.append(_status(loop, "onfb"))}
    loop.scenario(sequence=[FAR, on_fallback, BLOCK])
    assert loop.run("onfb", fallback_provider="codex").code is ExitCode.BLOCKED
    line = rf"^Provider: codex \(fallback for claude until {CLOCK}\)$"
    assert re.search(line, shown[0], re.MULTILINE), shown[0]
