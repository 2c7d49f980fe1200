"""The loop's behaviours run in-process (tests/inproc.py): a fake spawn plays the child, a fake
sleep moves a fake clock, so a wait of an hour takes no time. What needs a real child (deadlines,
descendants, signals, the console) stays with the subprocess tests in test_rails.py and
test_worker_failures.py."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from inproc import InProc

from worker import signalcopy
from worker.errors import ExitCode
from worker.session import SessionPaths
from worker.status import render_text
from worker.statusbuild import build, rails_of


@pytest.fixture
def loop(project) -> InProc:
    return InProc(project)


def sig(status: str, phase: str | None = None, **extra: str) -> dict:
    return {"status": status, **({"phase": phase} if phase else {}), **extra}


STAY = {"signal": sig("continue", "investigation"), "flow": "looked around"}
BLOCK = {"signal": sig("blocked", reason="stop here", needs="human_decision")}
LIMIT = {
    "exit": 1,
    "result": {"is_error": True, "api_error_status": 429, "result": "You've hit your session limit"},
}
FULL = {
    "investigation": {
        "signal": sig("continue", "requirements", summary="dived"),
        "flow": "Investigated",
        "files": {"{prefix}-dive-x.md": "# dive\n"},
        "overview": {"Last Action": "Dive written"},
    },
    "requirements": {
        "signal": sig("waiting", **{"for": "qa_answers"}, reason="questions"),
        "files": {"_qa.md": "## Q1\n**Answer:** _waiting_\n"},
    },
    "planning": {
        "signal": sig("waiting", **{"for": "plan_approval"}),
        "files": {"{prefix}-plan-x.md": "- [ ] a\n"},
    },
    "implementation": {"signal": sig("continue", "testing"), "code": {"feature.txt": "hello\n"}},
    "testing": {"signal": sig("continue", "quality")},
    "quality": {"signal": sig("continue", "done")},
    "done": {"signal": sig("done", summary="all good")},
}


# -- phase moves and the human gates ------------------------------------------------------------------


def test_a_new_session_stops_at_the_qa_gate_then_the_plan_gate_then_runs_to_done(loop, project):
    loop.scenario(by_phase=FULL)
    assert loop.run("feat", task="Build the feature").code is ExitCode.WAITING
    ov = loop.overview("feat")
    assert (ov.get("phase"), ov.get("blocked"), ov.get("waiting for")) == (
        "requirements",
        "waiting_human",
        "qa_answers",
    )
    assert "Build the feature" in ov.text
    calls = len(loop.child.calls)
    assert loop.run("feat").code is ExitCode.WAITING and len(loop.child.calls) == calls  # unanswered
    qa = loop.session("feat") / "_qa.md"
    qa.write_text(qa.read_text().replace("_waiting_", "B"))
    loop.scenario(by_phase={**FULL, "requirements": {"signal": sig("continue", "planning")}})
    assert loop.run("feat").code is ExitCode.WAITING
    ov = loop.overview("feat")
    assert (ov.get("phase"), ov.get("waiting for")) == ("planning", "plan_approval")
    path = loop.session("feat") / "_overview.md"
    text = path.read_text().replace("Phase: planning", "Phase: implementation")
    path.write_text(text.replace("Blocked: waiting_human", "Blocked: no"))  # approval by hand
    assert loop.run("feat").code is ExitCode.DONE
    ov = loop.overview("feat")
    assert ov.get("phase") == "done"
    assert "Phase set to implementation outside the worker (was planning)" in ov.text
    decided = loop.decisions("feat")
    assert [d["phase"] for d in decided] == [
        "investigation",
        "requirements",
        "requirements",
        "planning",
        "implementation",
        "testing",
        "quality",
        "done",
    ]
    assert all(d["accepted"] for d in decided)
    assert next(d for d in decided if d["phase"] == "implementation")["iteration"] == 1
    worktree = project.worktrees / loop.session("feat").name
    assert (worktree / "feature.txt").read_text() == "hello\n"
    assert not (project.main_repo / "feature.txt").exists()
    assert [r.phase.value for r in loop.reports][-1] == "done"


def test_a_phase_move_is_notified_and_reported(loop):
    loop.scenario(sequence=[{"signal": sig("continue", "requirements")}, BLOCK])
    assert loop.run("move").code is ExitCode.BLOCKED
    assert [r.verdict for r in loop.reports] == ["continue -> requirements", "blocked"]
    assert any("investigation -> requirements" in t for t in loop.notes.sent), loop.notes.sent
    assert "Phase investigation -> requirements" in loop.overview("move").text


def test_a_blocked_session_does_not_start_until_unblocked(loop):
    loop.scenario(by_phase={"investigation": BLOCK})
    assert loop.run("b").code is ExitCode.BLOCKED
    assert loop.run("b").code is ExitCode.BLOCKED and len(loop.child.calls) == 1


def test_max_iterations_stops_the_run_with_exit_8_and_the_next_run_goes_on(loop):
    loop.scenario(by_phase={"investigation": STAY})
    outcome = loop.run("lim", max_iterations=2)
    assert outcome.code is ExitCode.LIMIT and "stopped after 2 iterations" in outcome.message
    assert len(loop.child.calls) == 2
    assert loop.run("lim", max_iterations=1).code is ExitCode.LIMIT
    assert [d["total"] for d in loop.decisions("lim")] == [1, 2, 3]


# -- signals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (None, "no _signal.json was written"),
        ("", "_signal.json is empty"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
        ('{"status": "finished"}', "unknown status"),
        ('{"phase": "requirements"}', "no 'status'"),
    ],
)
def test_an_unusable_signal_is_a_failed_attempt_retried_once_then_blocks(loop, bad, reason):
    loop.scenario(sequence=[{"signal": bad}, {"signal": bad}], by_phase={"investigation": STAY})
    assert loop.run("s1").code is ExitCode.BLOCKED
    ov = loop.overview("s1")
    assert ov.get("blocked") == "yes" and reason in ov.get("last action")
    assert ov.get("phase") == "investigation" and ov.get("total iterations") == "1"
    records = loop.history("s1")
    assert [r.get("event") for r in records[:2]] == ["attempt_failed", "attempt_failed"]
    assert records[-1]["decision"] == "blocked" and reason in records[-1]["reason"]
    assert len(loop.child.calls) == 2  # exactly one retry, no hot loop
    assert loop.clock.slept == [5.0]  # the retry waited SAMOCODE_RETRY_DELAY, on the fake clock


def test_a_bad_signal_then_a_good_one_is_progress_and_the_retry_is_told_why(loop):
    loop.scenario(
        sequence=[{"signal": "{"}, {"signal": sig("continue", "requirements")}],
        by_phase={"requirements": {"signal": sig("blocked", reason="need a human", needs="human_decision")}},
    )
    assert loop.run("s2").code is ExitCode.BLOCKED
    assert loop.overview("s2").get("phase") == "requirements"
    assert loop.child.calls[1]["phase"] == "investigation"
    assert "could not use its signal" in loop.child.calls[1]["prompt"]
    decided = loop.decisions("s2")
    assert [d["decision"] for d in decided] == ["continue", "blocked"]
    assert decided[0]["total"] == 1 and decided[-1]["needs"] == "human_decision"


@pytest.mark.parametrize(
    ("signal_", "reason"),
    [
        (sig("done", summary="x"), "only valid in phase done"),
        (sig("continue", "implementation"), "cannot move to implementation"),
        (sig("waiting", **{"for": "plan_approval"}), "not allowed in phase investigation"),
        (sig("continue"), "must name the next phase"),
    ],
)
def test_a_signal_the_phase_does_not_allow_blocks_with_the_reason(loop, signal_, reason):
    loop.scenario(by_phase={"investigation": {"signal": signal_}})
    assert loop.run("s3").code is ExitCode.BLOCKED
    assert reason in loop.overview("s3").get("last action")
    last = loop.history("s3")[-1]
    assert last["decision"] == "blocked" and not last["accepted"] and reason in last["converted"]
    assert last["signal"] == signal_


def test_claude_forgetting_the_file_still_moves_on_through_structured_output(loop):
    copy = sig("continue", "requirements", summary="dive written")
    loop.scenario(sequence=[{"flow": "dive", "structured_output": copy}], by_phase={"requirements": BLOCK})
    assert loop.run("copy").code is ExitCode.BLOCKED
    assert len(loop.child.calls) == 2  # no second attempt of the first iteration
    schema = loop.child.calls[0]["argv"][loop.child.calls[0]["argv"].index("--json-schema") + 1]
    assert json.loads(schema) == signalcopy.schema()
    first, second = loop.decisions("copy")
    assert (first["decision"], first["phase_after"]) == ("continue", "requirements"), first
    assert first["signal_source"] == "structured_output" and first["signal"] == copy
    assert first["signal_file_problem"] == "no _signal.json was written"
    assert second["signal_source"] == "file" and "signal_disagreement" not in second
    assert not [h for h in loop.history("copy") if h.get("event") == "attempt_failed"]


def test_a_file_and_a_copy_that_disagree_go_by_the_file_and_say_so(loop):
    copy = sig("continue", "requirements")
    loop.scenario(sequence=[{**BLOCK, "structured_output": copy}])
    assert loop.run("disagree").code is ExitCode.BLOCKED
    (only,) = loop.decisions("disagree")
    assert only["decision"] == "blocked" and only["signal_source"] == "file"
    assert only["signal_disagreement"] == {"source": "structured_output", "copy": copy}


def test_an_invalid_copy_and_no_file_is_still_a_failed_attempt_naming_both(loop):
    loop.scenario(sequence=[{"final_message": '{"status": "maybe"}'}] * 2)
    assert loop.run("neither").code is ExitCode.BLOCKED
    failed = [h for h in loop.history("neither") if h.get("event") == "attempt_failed"]
    assert len(failed) == 2
    assert failed[0]["reason"] == (
        "no _signal.json was written; its final message: unknown status 'maybe'"
        " (allowed: continue, done, blocked, waiting)"
    )


def test_the_copy_can_be_turned_off(loop):
    loop.scenario(sequence=[{"flow": "dive", "structured_output": sig("continue", "requirements")}] * 2)
    assert loop.run("off", signal_copy=0).code is ExitCode.BLOCKED  # no valid signal after 2 attempts
    assert len(loop.child.calls) == 2
    assert all("--json-schema" not in c["argv"] for c in loop.child.calls)


# -- failures and backoff -----------------------------------------------------------------------------


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


# -- usage limits -------------------------------------------------------------------------------------


def test_a_usage_limit_is_waited_out_on_the_clock_shown_in_status_then_resumed(loop):
    loop.scenario(sequence=[{**LIMIT, "rate_limit": 300}, BLOCK])
    shown = []  # what `samocode status` says while the worker waits
    folder = SessionPaths(loop.session("usage"))
    loop.clock.on_sleep = lambda _s: shown.append(render_text(build(folder, rails_of(None))))
    assert loop.run("usage").code is ExitCode.BLOCKED
    assert sum(loop.clock.slept) == pytest.approx(301, abs=1)  # until the reset, plus its margin
    assert re.search(r"Next: waiting for usage reset until \d\d:\d\d", shown[0]), shown[0]
    assert "Waiting for: usage_limit" in shown[0]
    events = [r.get("event") or r.get("decision") for r in loop.history("usage")]
    assert events == ["attempt_failed", "usage_wait", "usage_resumed", "blocked"]
    wait = loop.history("usage")[1]
    assert wait["source"] == "reported reset" and 299 <= wait["seconds"] <= 302
    ov = loop.overview("usage")
    assert ov.get("waiting for") == "-" and ov.get("blocked") == "yes"
    assert re.search(r"Usage limit hit; waiting until \d\d:\d\d", ov.text)
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


def test_ctrl_c_during_the_usage_wait_stops_at_once_and_clears_the_wait(loop):
    loop.scenario(sequence=[{**LIMIT, "rate_limit": 600}])
    loop.clock.on_sleep = lambda _s: loop.stop.set()
    assert loop.run("cwait").code is ExitCode.INTERRUPTED
    ov = loop.overview("cwait")
    assert ov.get("waiting for") == "-" and "stopped while waiting" in ov.get("next")
    last = loop.history("cwait")[-1]
    assert last["event"] == "interrupted" and last["detail"] == "Ctrl-C, during the usage wait"


def test_a_window_above_the_threshold_is_waited_out_before_the_next_iteration(loop):
    near = {**STAY, "limits": {"five_hour": 0.96}, "limits_reset": 300}
    loop.scenario(sequence=[near, BLOCK])
    assert loop.run("pause").code is ExitCode.BLOCKED
    assert sum(loop.clock.slept) >= 300
    events = [h.get("event") or h.get("decision") for h in loop.history("pause")]
    assert events == ["continue", "usage_wait", "usage_resumed", "blocked"], events
    wait = loop.history("pause")[1]
    assert wait["source"] == "pause" and wait["pause"] == {"window": "five_hour", "utilization": 0.96}
    assert re.search(r"Paused at 96% of the 5-hour window until \d\d:\d\d", loop.overview("pause").text)
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


# -- spend ---------------------------------------------------------------------------------------------


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


# -- stall breaker --------------------------------------------------------------------------------------


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


# -- the working tree, the overview, the run's own stops --------------------------------------------------


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


def test_a_signal_left_as_a_directory_blocks_the_next_attempt_with_the_reason(loop):
    def as_dir(ctx: dict) -> None:
        (loop.session("dir") / "_signal.json").mkdir()

    loop.scenario(sequence=[{"then": as_dir}], by_phase={"investigation": STAY})
    outcome = loop.run("dir")
    assert outcome.code is ExitCode.BLOCKED and "directory" in outcome.message, outcome
    assert len(loop.child.calls) == 1  # the retry could not clear the signal: no second child
    assert loop.history("dir")[0]["event"] == "attempt_failed"


def test_a_phase_at_its_cap_blocks_before_the_next_iteration(loop):
    loop.scenario(by_phase={"investigation": STAY, "quality": {"signal": sig("continue", "quality")}})
    path = loop.session("cap")
    assert loop.run("cap", max_iterations=1).code is ExitCode.LIMIT  # makes the session, one child
    text = (path / "_overview.md").read_text()
    (path / "_overview.md").write_text(text.replace("Phase: investigation", "Phase: quality"))
    outcome = loop.run("cap")
    assert outcome.code is ExitCode.BLOCKED and "cap" in outcome.message, outcome
    assert len(loop.child.calls) == 1 + 10  # quality's cap is 10 iterations
    last = loop.decisions("cap")[-1]
    assert (last["decision"], last["phase"], last["total"]) == ("blocked", "quality", 11)


def test_a_stop_after_an_iteration_ends_the_run_between_iterations(loop):
    loop.scenario(by_phase={"investigation": STAY})
    loop.on_report = lambda _r: loop.stop.set()  # Ctrl-C once the first iteration is decided
    assert loop.run("between").code is ExitCode.INTERRUPTED
    assert [d["total"] for d in loop.decisions("between")] == [1] and len(loop.child.calls) == 1
    last = loop.history("between")[-1]
    assert last["event"] == "interrupted" and last["detail"] == "Ctrl-C, between iterations"


# -- codex, and the fallback provider -------------------------------------------------------------------

FAR = {**LIMIT, "rate_limit": 3600}


def _providers(loop: InProc) -> list[str]:
    return ["codex" if c["argv"][1:2] == ["exec"] else "claude" for c in loop.child.calls]


def test_codex_records_tokens_and_an_estimated_cost(loop):
    loop.scenario(by_phase={"investigation": BLOCK})
    prices = {"price_input_per_mtok": 1.25, "price_output_per_mtok": 10.0, "price_cached_per_mtok": 0.125}
    assert loop.run("c1", provider="codex", **prices).code is ExitCode.BLOCKED
    entry = loop.decisions("c1")[0]
    assert (entry["tokens_in"], entry["tokens_cached"], entry["tokens_out"]) == (10000, 2000, 300)
    assert entry["cost_usd"] == pytest.approx((10000 * 1.25 + 2000 * 0.125 + 300 * 10) / 1e6)
    assert entry["cost_estimated"] is True and entry["provider"] == "codex"


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


def test_a_codex_usage_limit_without_a_reset_waits_samocode_usage_wait_then_resumes(loop):
    loop.scenario(sequence=[{"usage_limit": True}], by_phase={"investigation": BLOCK})
    assert loop.run("c8", provider="codex", usage_wait=60).code is ExitCode.BLOCKED
    assert sum(loop.clock.slept) == 60 and len(loop.child.calls) == 2  # slept in rounds of 30 s
    attempts = [h for h in loop.history("c8") if h.get("event") == "attempt_failed"]
    assert [a["failure"] for a in attempts] == ["usage_limit"]
    assert "Usage limit hit; waiting until" in loop.overview("c8").text


def test_a_far_reset_runs_the_next_attempts_on_the_fallback_and_comes_back_after_it(loop):
    slow = {**STAY, "takes": 4000}  # the fallback's iteration outlasts the primary's reset
    loop.scenario(sequence=[FAR, slow, BLOCK])
    outcome = loop.run("fb", fallback_provider="codex")  # 3600 s is past SAMOCODE_FALLBACK_AFTER (900)
    assert outcome.code is ExitCode.BLOCKED
    assert _providers(loop) == ["claude", "codex", "claude"] and loop.clock.slept == []
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
    assert _providers(loop) == ["claude", "claude"] and sum(loop.clock.slept) == pytest.approx(121, abs=1)


def test_a_limit_on_both_waits_for_the_earlier_reset(loop):
    codex_far = {"exit": 1, "rate_limit": 3 * 3600}
    loop.scenario(sequence=[FAR, codex_far, BLOCK])
    assert loop.run("both", fallback_provider="codex").code is ExitCode.BLOCKED
    assert _providers(loop) == ["claude", "codex", "claude"]  # back on claude, whose reset came first
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
    assert _providers(loop) == ["claude", "codex"] and loop.clock.slept == []  # no hour-long pause
    (switch,) = [h for h in loop.history("pausefb") if h.get("event") == "provider_switched"]
    assert (switch["from"], switch["to"]) == ("claude", "codex")
    assert "(paused at 97% of the 5-hour window until" in loop.overview("pausefb").text
    assert not [h for h in loop.history("pausefb") if h.get("event") == "usage_wait"]


def test_without_a_cap_claude_gets_no_budget_flag(loop):
    loop.scenario(by_phase={"investigation": BLOCK})
    assert loop.run("free").code is ExitCode.BLOCKED
    assert all("--max-budget-usd" not in c["argv"] for c in loop.child.calls)


def test_codex_forgetting_the_file_still_moves_on_through_its_final_message(loop):
    copy = sig("continue", "requirements", summary="dive written")
    loop.scenario(
        sequence=[{"flow": "dive", "final_message": json.dumps(copy)}], by_phase={"requirements": BLOCK}
    )
    assert loop.run("ccopy", provider="codex").code is ExitCode.BLOCKED
    assert len(loop.child.calls) == 2
    first, _ = loop.decisions("ccopy")
    assert (first["decision"], first["signal_source"]) == ("continue", "final_message"), first


def test_codex_failures_exhaust_the_retries_then_exit_5(loop):
    loop.scenario(
        by_phase={"investigation": {"exit": 1, "result": {"is_error": True, "api_error_status": 429}}}
    )
    outcome = loop.run("c5", provider="codex", max_retries=1)
    assert outcome.code is ExitCode.PROVIDER_FAILED
    assert "codex failed (overloaded)" in outcome.message and "after 2 attempts" in outcome.message
    assert len(loop.child.calls) == 2


def _status(loop: InProc, name: str) -> str:
    return render_text(build(SessionPaths(loop.session(name)), rails_of(None)))


def test_status_says_paused_while_the_worker_waits(loop):
    near = {**STAY, "limits": {"five_hour": 0.97}, "limits_reset": 300}
    loop.scenario(sequence=[near, BLOCK])
    shown = []
    loop.clock.on_sleep = lambda _s: shown.append(_status(loop, "paused"))
    assert loop.run("paused").code is ExitCode.BLOCKED
    assert re.search(r"paused at 97% of the 5-hour window until \d\d:\d\d", shown[0]), shown[0]


def test_status_shows_the_fallback_provider_while_the_session_runs_on_it(loop):
    shown = []
    on_fallback = {**STAY, "then": lambda _ctx: shown.append(_status(loop, "onfb"))}
    loop.scenario(sequence=[FAR, on_fallback, BLOCK])
    assert loop.run("onfb", fallback_provider="codex").code is ExitCode.BLOCKED
    line = r"^Provider: codex \(fallback for claude until \d\d:\d\d\)$"
    assert re.search(line, shown[0], re.MULTILINE), shown[0]
