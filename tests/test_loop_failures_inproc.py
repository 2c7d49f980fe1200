"""The loop in-process (tests/inproc.py) against failing children: retries and backoff on the fake
clock, failures that are never retried, stops mid-iteration and between iterations, a working tree
or an overview the child destroyed."""

from __future__ import annotations

import subprocess

import pytest
from inproc import BLOCK, STAY, InProc, sig

from worker.errors import ExitCode


@pytest.fixture
def loop(project, monkeypatch) -> InProc:
    return InProc(project, monkeypatch)


# -- failures and backoff --------------------------------------------------------------------------


def test_provider_failures_are_retried_then_exit_5(loop):
    fail = {"exit": 1, "result": {"is_error": True, "api_error_status": 500, "result": "API Error: 500"}}
    loop.scenario(by_phase={"investigation": fail})
    outcome = loop.run("s4", max_retries=2)
    assert outcome.code is ExitCode.PROVIDER_FAILED and "after 3 attempts" in outcome.message
    assert len(loop.child.calls) == 3
    assert loop.history("s4")[-1]["event"] == "provider_failed"
    assert not (loop.session("s4") / ".samocode.iteration.json").exists()


def test_overload_backs_off_exponentially_then_exits_5(loop):
    fail = {"exit": 1, "result": {"is_error": True, "api_error_status": 529, "result": "API Error: 529"}}
    loop.scenario(by_phase={"investigation": fail})
    outcome = loop.run("overload", retry_delay=0.2, max_retries=3)
    assert outcome.code is ExitCode.PROVIDER_FAILED
    assert "(overloaded)" in outcome.message and "after 4 attempts" in outcome.message
    assert loop.clock.slept == [0.2, 0.4, 0.8]
    assert [m for m in loop.log if "retrying in" in m][-1].endswith("retrying in 0.8 s")


def test_retry_then_success_keeps_task_and_dive(loop):
    loop.scenario(sequence=[{"exit": 1, "result": None, "stderr": "boom"}, BLOCK])
    assert loop.run("s5", task="TASK-TEXT", dive="DIVE-TEXT").code is ExitCode.BLOCKED
    assert len(loop.child.calls) == 2
    assert all("TASK-TEXT" in c["prompt"] and "DIVE-TEXT" in c["prompt"] for c in loop.child.calls)
    assert "boom" in loop.child.calls[1]["prompt"] or "exit" in loop.child.calls[1]["prompt"]


@pytest.mark.parametrize(
    ("fail", "what"),
    [
        (
            {"exit": 1, "result": {"is_error": True, "api_error_status": 401, "result": "Invalid API key"}},
            "auth",
        ),
        (
            {
                "exit": 1,
                "result": None,
                "stderr": "Error: Claude Code cannot be launched inside another Claude Code session.",
            },
            "refused",
        ),
    ],
)
def test_auth_and_refusal_are_not_retried(loop, fail, what):
    loop.scenario(by_phase={"investigation": fail})
    outcome = loop.run("s6")
    assert outcome.code is ExitCode.PROVIDER_FAILED
    assert f"({what})" in outcome.message and "not retried" in outcome.message
    assert len(loop.child.calls) == 1 and loop.clock.slept == []


def test_codex_overload_is_retried_then_succeeds_and_bad_credentials_stop_at_once(loop):
    loop.scenario(sequence=[{"exit": 1, "result": {"is_error": True, "api_error_status": 429}}, BLOCK])
    assert loop.run("c4", provider="codex").code is ExitCode.BLOCKED
    attempts = [h for h in loop.history("c4") if h.get("event") == "attempt_failed"]
    assert [a["failure"] for a in attempts] == ["overloaded"]
    assert "429 Too Many Requests" in attempts[0]["message"]
    loop.scenario(by_phase={"investigation": {"result": {"is_error": True, "api_error_status": 401}}})
    outcome = loop.run("c6", provider="codex")
    assert outcome.code is ExitCode.PROVIDER_FAILED and "(auth)" in outcome.message
    assert "not retried" in outcome.message and len(loop.child.calls) == 3


def test_codex_failures_exhaust_the_retries_then_exit_5(loop):
    loop.scenario(
        by_phase={"investigation": {"exit": 1, "result": {"is_error": True, "api_error_status": 429}}}
    )
    outcome = loop.run("c5", provider="codex", max_retries=1)
    assert outcome.code is ExitCode.PROVIDER_FAILED
    assert "codex failed (overloaded)" in outcome.message and "after 2 attempts" in outcome.message
    assert len(loop.child.calls) == 2


def test_codex_records_tokens_and_an_estimated_cost(loop):
    loop.scenario(by_phase={"investigation": BLOCK})
    prices = {"price_input_per_mtok": 1.25, "price_output_per_mtok": 10.0, "price_cached_per_mtok": 0.125}
    assert loop.run("c1", provider="codex", **prices).code is ExitCode.BLOCKED
    entry = loop.decisions("c1")[0]
    assert (entry["tokens_in"], entry["tokens_cached"], entry["tokens_out"]) == (10000, 2000, 300)
    assert entry["cost_usd"] == pytest.approx((10000 * 1.25 + 2000 * 0.125 + 300 * 10) / 1e6)
    assert entry["cost_estimated"] is True and entry["provider"] == "codex"


# -- stops -----------------------------------------------------------------------------------------


def test_a_child_stopped_mid_iteration_is_recorded_and_runs_again_next_time(loop):
    loop.scenario(sequence=[{**STAY, "stop": True}, BLOCK])
    outcome = loop.run("cc")
    assert outcome.code is ExitCode.INTERRUPTED
    last = loop.history("cc")[-1]
    assert last["event"] == "interrupted" and last["detail"] == "Ctrl-C" and last["total"] == 1
    assert not (loop.session("cc") / ".samocode.iteration.json").exists()
    assert loop.run("cc").code is ExitCode.BLOCKED
    assert [d["total"] for d in loop.decisions("cc")] == [1]


def test_sigterm_during_the_retry_delay_stops_at_once(loop):
    loop.scenario(by_phase={"investigation": {"exit": 1, "result": None, "stderr": "boom"}})
    loop.stop_code[0] = ExitCode.TERMINATED
    loop.clock.on_sleep = lambda _s: loop.stop.set()
    assert loop.run("cdelay", retry_delay=60).code is ExitCode.TERMINATED
    last = loop.history("cdelay")[-1]
    assert last["event"] == "interrupted" and last["detail"] == "SIGTERM, during the retry delay"
    assert len(loop.child.calls) == 1 and loop.clock.slept == [60]


def test_a_stop_after_an_iteration_ends_the_run_between_iterations(loop):
    loop.scenario(by_phase={"investigation": STAY})
    loop.on_report = lambda _r: loop.stop.set()  # Ctrl-C once the first iteration is decided
    assert loop.run("between").code is ExitCode.INTERRUPTED
    assert [d["total"] for d in loop.decisions("between")] == [1] and len(loop.child.calls) == 1
    last = loop.history("between")[-1]
    assert last["event"] == "interrupted" and last["detail"] == "Ctrl-C, between iterations"


# -- the working tree and the overview -------------------------------------------------------------


def test_a_worktree_removed_mid_run_is_recreated_on_its_branch(loop, project):
    stay = sig("continue", "investigation")
    loop.scenario(
        sequence=[
            {"code": {"a.txt": "1\n"}, "signal": stay},
            {"remove_worktree": True, "signal": stay},
            BLOCK,
        ]
    )
    outcome = loop.run("s14")
    assert outcome.code is ExitCode.BLOCKED and "stop here" in outcome.message
    tree = project.worktrees / loop.session("s14").name
    assert [c["cwd"] for c in loop.child.calls] == [str(tree)] * 3
    assert (tree / "a.txt").read_text() == "1\n"  # back on its branch, with the commit made before
    head = subprocess.run(
        ["git", "-C", str(tree), "symbolic-ref", "--short", "HEAD"], capture_output=True, text=True
    )
    assert head.stdout.strip() == "s14"


def test_a_child_that_breaks_the_overview_but_signals_still_moves_the_session(loop):
    loop.scenario(sequence=[{"tear_overview": True, "signal": sig("continue", "requirements")}, BLOCK])
    assert loop.run("s22").code is ExitCode.BLOCKED
    assert loop.overview("s22").get("phase") == "requirements"
    assert any(r.get("event") == "overview_restored" for r in loop.history("s22"))


@pytest.mark.parametrize("ending", ["timeout", "idle"])
def test_a_child_killed_at_a_deadline_is_a_failed_attempt_retried_after_the_delay(loop, ending):
    killed = {"flow": "half done", "ending": ending, "takes": 600, "result": None}  # no signal, no result
    loop.scenario(sequence=[killed, BLOCK])
    assert loop.run("deadline").code is ExitCode.BLOCKED
    failed = [h for h in loop.history("deadline") if h.get("event") == "attempt_failed"]
    assert [(f["ending"], f["failure"]) for f in failed] == [(ending, ending)]
    assert loop.clock.slept == [5.0] and len(loop.child.calls) == 2
    assert [d["decision"] for d in loop.decisions("deadline")] == [
        "blocked"
    ]  # the killed one decided nothing


@pytest.mark.parametrize("ending", ["timeout", "idle"])
def test_a_child_killed_at_a_deadline_after_its_signal_has_that_signal_used_not_rerun(loop, ending):
    """Its one action was done (and maybe committed): running it again could repeat it. The decision
    says how the child ended."""
    killed = {"signal": sig("continue", "requirements"), "ending": ending, "takes": 600, "result": None}
    loop.scenario(sequence=[killed, BLOCK])
    assert loop.run("late").code is ExitCode.BLOCKED
    assert len(loop.child.calls) == 2 and loop.clock.slept == []
    made = loop.decisions("late")
    assert [(d["phase"], d["decision"]) for d in made] == [
        ("investigation", "continue"),
        ("requirements", "blocked"),
    ]
    assert (made[0]["failure"], made[0]["signal_source"]) == (ending, "file")
    assert not [h for h in loop.history("late") if h.get("event") == "attempt_failed"]
