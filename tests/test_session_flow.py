"""A whole session through every phase and both human gates, the worker run as a subprocess (its
in-process twin, with more checks per step, is test_loop_inproc.py's)."""

from __future__ import annotations

import json

from inproc import GATED_SESSION, sig
from worker_helpers import GATED_PATH

from worker.overview import parse


def test_new_session_stops_at_qa_gate_then_plan_gate_then_runs_to_done(project):
    project.scenario(by_phase=GATED_SESSION)
    first = project.worker("feat", "--task", "Build the feature")
    assert first.returncode == 3, first.stderr
    session = project.session_dir("feat")
    ov = parse((session / "_overview.md").read_text())
    assert ov.get("phase") == "requirements"
    assert ov.get("blocked") == "waiting_human"
    assert ov.get("waiting for") == "qa_answers"
    assert "Build the feature" in ov.text
    # Still unanswered, a run stops at once without calling the provider: the in-process twin
    # (test_loop_inproc.py) and test_bad_input.py's unanswered-questions row, a real process, check it.
    # The human answers; requirements runs again and moves on to planning, which waits for approval.
    qa = session / "_qa.md"
    qa.write_text(qa.read_text().replace("_waiting_", "B"))
    FULL_AFTER_QA = {**GATED_SESSION, "requirements": {"signal": sig("continue", "planning")}}
    project.scenario(by_phase=FULL_AFTER_QA)
    second = project.worker("feat")
    assert second.returncode == 3, second.stderr
    ov = parse((session / "_overview.md").read_text())
    assert (ov.get("phase"), ov.get("waiting for")) == ("planning", "plan_approval")
    # Approval by hand-editing the overview, as the parent skill may do.
    text = (session / "_overview.md").read_text()
    text = text.replace("Phase: planning", "Phase: implementation").replace(
        "Blocked: waiting_human", "Blocked: no"
    )
    (session / "_overview.md").write_text(text)
    third = project.worker("feat")
    assert third.returncode == 0, third.stderr
    ov = parse((session / "_overview.md").read_text())
    assert ov.get("phase") == "done"
    assert "Phase set to implementation outside the worker (was planning)" in ov.text
    history = [json.loads(line) for line in (session / "_signal_history.jsonl").read_text().splitlines()]
    phases = [h["phase"] for h in history if h.get("decision")]
    assert phases == GATED_PATH
    assert all(h["accepted"] for h in history if h.get("decision"))
    implementation = next(h for h in history if h.get("decision") and h["phase"] == "implementation")
    assert implementation["iteration"] == 1  # the hand-set phase counts its iterations from 1
    worktree = project.worktrees / session.name
    assert (worktree / "feature.txt").read_text() == "hello\n"
    assert not (project.main_repo / "feature.txt").exists()
