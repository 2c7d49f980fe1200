"""Rehearsal: a fake provider that sends exactly the signals the agent texts prescribe.

The `## Signals` table of each agent file is followed mechanically, so an agent text that tells the
child to send a signal the worker would reject fails here: the whole path through both gates, and
every row of every table, with the loop in-process (tests/inproc.py) and `approve` through
`worker.cli.main`; the same path with the real worker as a subprocess is test_session_flow.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_texts import load_agent
from inproc import InProc

from worker import overview
from worker.phases import Phase

PHASES = [p.value for p in Phase]


def row(phase: str, outcome_start: str) -> dict:
    """The signal the `phase` agent prescribes for the outcome whose text starts so."""
    matches = [r.signal for r in load_agent(phase).signals if r.outcome.startswith(outcome_start)]
    assert len(matches) == 1, f"{phase}: no single outcome starting '{outcome_start}'"
    return matches[0]


def history(session: Path) -> list[dict]:
    return [json.loads(x) for x in (session / "_signal_history.jsonl").read_text().splitlines()]


def test_following_the_agent_texts_takes_a_session_through_both_gates_to_done(project, monkeypatch):
    plan = {"{prefix}-plan-demo.md": "## Phase 1\n- [ ] a\n"}
    path = [
        {"signal": row("investigation", "More to explore")},
        {"signal": row("investigation", "Dive complete")},
        {
            "signal": row("requirements", "Questions written"),
            "files": {"_qa.md": "## Q1\n**Answer:** _waiting_\n"},
        },
        {"signal": row("requirements", "Requirements written")},
        {"signal": row("planning", "Plan written"), "files": plan},
        {"signal": row("implementation", "Plan phase done")},
        {"signal": row("implementation", "All items ticked, behaviour to test")},
        {"signal": row("testing", "Passed, quality not run yet")},
        {"signal": row("quality", "Fixed blocking issues")},
        {"signal": row("testing", "Passed after quality")},
        {"signal": row("done", "Summary written")},
    ]
    loop = InProc(project, monkeypatch)
    loop.scenario(sequence=path)  # one script across the three runs: calls go on counting
    assert loop.run("rehearsal").code == 3  # questions wait for answers
    session = loop.session("rehearsal")
    qa = session / "_qa.md"
    qa.write_text(qa.read_text().replace("_waiting_", "A"))
    assert loop.run("rehearsal").code == 3  # the plan waits for approval
    approved = project.cli("approve", "--config", str(project.config), "--session", "rehearsal")
    assert approved.returncode == 0, approved.stderr
    final = loop.run("rehearsal")
    assert final.code == 0, final.message
    decisions = [h for h in history(session) if h.get("decision")]
    assert len(decisions) == len(path) == len(loop.child.calls)
    assert all(d["accepted"] for d in decisions), [d for d in decisions if not d["accepted"]]
    assert overview.parse((session / "_overview.md").read_text()).get("phase") == "done"


ALL_ROWS = [(phase, r.outcome, r.signal) for phase in PHASES for r in load_agent(phase).signals]


@pytest.mark.parametrize(
    ("phase", "outcome", "signal"), ALL_ROWS, ids=[f"{p}:{o[:40]}" for p, o, _ in ALL_ROWS]
)
def test_every_prescribed_signal_is_accepted_in_its_phase(project, monkeypatch, phase, outcome, signal):
    """In-process (tests/inproc.py): one iteration of the loop in that phase, the row's signal sent."""
    name = "row"
    loop = InProc(project, monkeypatch)
    folder = loop.session(name)
    folder.mkdir(parents=True)
    text = overview.render_new(
        name, "2026-01-01 00:00", str(project.main_repo), "task", "", "[000 @ 01-01 00:00] x"
    )
    (folder / "_overview.md").write_text(overview.set_fields(overview.parse(text), {"Phase": phase}))
    loop.scenario(sequence=[{"signal": signal}])
    result = loop.run(name, max_iterations=1)
    expected = {"continue": 8, "waiting": 3, "blocked": 4, "done": 0}[signal["status"]]
    assert result.code == expected, result.message
    decision = loop.decisions(name)[-1]
    assert decision["accepted"], decision
