"""The loop run in-process (tests/inproc.py): a fake spawn plays the child, a fake sleep moves a
fake clock, so a wait of an hour takes no time. This file: phase moves, the human gates, the run's
own limits, and the signal (unusable, not allowed, its second copy). The other loop behaviours:
test_loop_failures_inproc.py, test_loop_limits_inproc.py, test_loop_rails_inproc.py. What needs a
real child (deadlines, descendants, OS signals, the console) stays with the subprocess tests in
test_rails.py and test_worker_failures.py."""

from __future__ import annotations

import json

import pytest
from inproc import BLOCK, GATED_SESSION, STAY, InProc, sig
from worker_helpers import GATED_PATH

from worker import signalcopy
from worker.errors import ExitCode


@pytest.fixture
def loop(project, monkeypatch) -> InProc:
    return InProc(project, monkeypatch)


# -- phase moves and the human gates ---------------------------------------------------------------


def test_a_new_session_stops_at_the_qa_gate_then_the_plan_gate_then_runs_to_done(loop, project):
    loop.scenario(by_phase=GATED_SESSION)
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
    loop.scenario(by_phase={**GATED_SESSION, "requirements": {"signal": sig("continue", "planning")}})
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
    assert [d["phase"] for d in decided] == GATED_PATH
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


# -- signals ---------------------------------------------------------------------------------------


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


def test_a_signal_left_as_a_directory_blocks_the_next_attempt_with_the_reason(loop):
    def as_dir(ctx: dict) -> None:
        (loop.session("dir") / "_signal.json").mkdir()

    loop.scenario(sequence=[{"then": as_dir}], by_phase={"investigation": STAY})
    outcome = loop.run("dir")
    assert outcome.code is ExitCode.BLOCKED and "directory" in outcome.message, outcome
    assert len(loop.child.calls) == 1  # the retry could not clear the signal: no second child
    assert loop.history("dir")[0]["event"] == "attempt_failed"


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


def test_codex_forgetting_the_file_still_moves_on_through_its_final_message(loop):
    copy = sig("continue", "requirements", summary="dive written")
    loop.scenario(
        sequence=[{"flow": "dive", "final_message": json.dumps(copy)}], by_phase={"requirements": BLOCK}
    )
    assert loop.run("ccopy", provider="codex").code is ExitCode.BLOCKED
    assert len(loop.child.calls) == 2
    first, _ = loop.decisions("ccopy")
    assert (first["decision"], first["signal_source"]) == ("continue", "final_message"), first


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
