"""The parent's commands (status, watch, approve, resume, answer, unblock) on real session folders.

Sessions are made by the worker (in-process, tests/inproc.py, or a real run with the fake Claude CLI)
or written with `overview.render_new`. The commands run in this process through `worker.cli.main`
(`Project.cli`); each command runs as a real process in the exit-9 test (exit code, stdout against
stderr, no traceback), and `watch`'s loop also in a thread beside a real worker it outlives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest
from inproc import InProc
from worker_helpers import wait_for

from worker import flowlog, journal, overview, watch
from worker.session import Lease, SessionPaths, holder

PLAN = {"{prefix}-plan-x.md": "## Phase 1\n- [ ] a\n"}
TO_PLAN_WAIT = {
    "investigation": {"signal": {"status": "continue", "phase": "requirements"}, "flow": "Dived"},
    "requirements": {"signal": {"status": "continue", "phase": "planning"}, "flow": "Requirements"},
    "planning": {
        "signal": {"status": "waiting", "for": "plan_approval", "reason": "plan ready"},
        "files": PLAN,
        "flow": "Plan written -> plan-x.md",
    },
}
TO_DONE = {
    "implementation": {"signal": {"status": "continue", "phase": "testing"}, "code": {"f.txt": "hi\n"}},
    "testing": {"signal": {"status": "continue", "phase": "quality"}},
    "quality": {"signal": {"status": "continue", "phase": "done"}},
    "done": {"signal": {"status": "done", "summary": "all good"}},
}
QA = textwrap.dedent(
    """\
    ## Round 1

    ### Q1. Where should tokens be stored?
    Context: three processes.
    - A) In memory
    - B) In Redis
    **Suggestion:** B, because tokens must be shared.
    **Answer:** _waiting_

    ### Q2. Which log format?
    - A) JSON
    - B) Text
    **Suggestion:** A
    **Answer:** _waiting_
    """
)
REPORT_KEYS = {
    "session",
    "session_dir",
    "phase",
    "iteration",
    "total_iterations",
    "blocked",
    "waiting_for",
    "last_action",
    "next",
    "worker_pid",
    "spend_usd",
    "tokens_in",
    "tokens_out",
    "rails",
    "flow",
    "commits",
    "plan",
    "qa",
    "last_run",
    "limits",
    "stream_problem",
}


def cmd(project, command: str, session: str, *extra: str, timeout: float | None = None):
    """The command in this process (`Project.cli`); `timeout` ends a hang."""
    return project.cli(
        command, "--config", str(project.config), "--session", session, *extra, timeout=timeout
    )


def cmd_process(project, command: str, session: str, *extra: str, timeout: float = 60):
    """The command as a process through main.py (`Project.run`)."""
    return project.run(
        command, "--config", str(project.config), "--session", session, *extra, timeout=timeout
    )


def ov(folder: Path) -> overview.Overview:
    return overview.parse((folder / "_overview.md").read_text())


def history(folder: Path) -> list[dict]:
    path = folder / "_signal_history.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every session file except the lock/lease dot files the commands may touch."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def make(project, name: str, fields: dict[str, str], files: dict[str, str] | None = None) -> Path:
    """A session folder written directly: the template with some Status fields set."""
    folder = project.sessions / name
    folder.mkdir(parents=True)
    text = overview.render_new(
        name, "2026-01-01 00:00", str(project.main_repo), "task", "", "[000 @ 01-01 00:00] created"
    )
    (folder / "_overview.md").write_text(overview.set_fields(overview.parse(text), fields))
    for rel, content in (files or {}).items():
        (folder / rel).write_text(content)
    return folder


def refused(result, *needles: str) -> None:
    assert result.returncode == 7, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


# -- status ------------------------------------------------------------------------------------


def test_status_after_a_real_run_reports_phase_wait_plan_spend_flow_and_commits(project):
    project.scenario(by_phase=TO_PLAN_WAIT)
    assert project.worker("feat", "--task", "Build it").returncode == 3
    folder = project.session_dir("feat")

    text = cmd(project, "status", "feat")
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert len(out.encode()) < 1024
    labels = [line.split(":")[0] for line in out.splitlines() if not line.startswith("- ")]
    assert labels == [
        "Session",
        "Phase",
        "Blocked",
        "Last Action",
        "Next",
        "Worker",
        "Spend",
        "Rails",
        "Flow",
        "Commits",
    ]
    assert f"Session: {folder.name} ({folder})" in out
    assert "Phase: planning (Iteration 2 / Total 3)" in out
    assert "Blocked: waiting_human   Waiting for: plan_approval" in out
    assert "Next: Await plan approval (samocode approve)" in out
    assert re.search(
        r"^Worker: not running · last run exited 3 \(waiting for plan_approval\) at \d\d-\d\d \d\d:\d\d$",
        out,
        re.M,
    )
    assert "Spend: $0.04 (3000 in / 300 out)" in out  # three iterations at $0.0125, 1000/100 tokens
    assert "Rails: timeout 1800s · idle 600s · retries 3 · budget none · stall off" in out
    assert re.search(r"^- \[003 @ \d\d-\d\d \d\d:\d\d\] Waiting for plan_approval$", out, re.M)
    assert re.search(r"^- [0-9a-f]{7,} init$", out, re.M)

    data = json.loads(cmd(project, "status", "feat", "--json").stdout)
    assert set(data) == REPORT_KEYS
    assert (data["phase"], data["iteration"], data["total_iterations"]) == ("planning", 2, 3)
    assert (data["blocked"], data["waiting_for"], data["worker_pid"]) == (
        "waiting_human",
        "plan_approval",
        None,
    )
    assert data["spend_usd"] == pytest.approx(sum(r.get("cost_usd") or 0 for r in history(folder)))
    assert (data["tokens_in"], data["tokens_out"]) == (3000, 300)
    assert data["plan"] and Path(data["plan"]).parent == folder and data["plan"].endswith("-plan-x.md")
    assert data["qa"] is None
    assert len(data["flow"]) == 3 and data["flow"][-1].endswith("Waiting for plan_approval")
    assert data["commits"][0].endswith(" init")
    worker_json = json.loads((folder / "_worker.json").read_text())
    assert data["last_run"] == {
        "code": 3,
        "outcome": "waiting",
        "message": "waiting for plan_approval: plan ready",
        "at": worker_json["ended_at"],
    }
    assert data["rails"] == {
        "provider": "claude",
        "timeout_s": 1800.0,
        "idle_s": 600.0,
        "retries": 3,
        "budget_usd": None,
        "stall": None,
    }


def test_status_waiting_for_falls_back_to_the_history_then_the_signal(project):
    # No `Waiting For` field: the last decision says what the session waits for.
    folder = make(project, "hist", {"Phase": "requirements", "Blocked": "waiting_human"})
    (folder / "_signal_history.jsonl").write_text(
        json.dumps({"decision": "waiting", "waiting_for": "qa_answers", "cost_usd": 0.5}) + "\n"
    )
    data = json.loads(cmd(project, "status", "hist", "--json").stdout)
    assert (data["waiting_for"], data["spend_usd"], data["tokens_in"]) == ("qa_answers", 0.5, None)
    assert "Spend: $0.50 (0 in / 0 out)" in cmd(project, "status", "hist").stdout
    # No history: the last signal.
    folder = make(project, "sig", {"Phase": "planning", "Blocked": "waiting_human"})
    (folder / "_signal.json").write_text('{"status": "waiting", "waiting_for": "plan_approval"}')
    data = json.loads(cmd(project, "status", "sig", "--json").stdout)
    assert data["waiting_for"] == "plan_approval" and data["spend_usd"] is None
    assert "Spend: unknown" in cmd(project, "status", "sig").stdout


def test_status_stays_under_1kb_and_fast_with_huge_fields_and_a_10000_line_flow_log(project):
    huge = "é" * 4000 + " ✓ " + "x" * 4000
    folder = make(project, "big", {"Last Action": huge, "Next": huge, "Waiting For": huge[:300]})
    text = (folder / "_overview.md").read_text()
    flow = "".join(f"- [{i:03d} @ 01-01 00:00] Step {i} " + "y" * 60 + " -> f.md\n" for i in range(1, 10001))
    (folder / "_overview.md").write_text(text.replace("\n## Files", "\n" + flow + "\n## Files"))
    for n in range(3):
        (folder / f"01-01-00:0{n}-plan-{'z' * 60}.md").write_text("plan")
    (folder / "_qa.md").write_text(QA)
    for args in ((), ("--json",)):
        started = time.monotonic()
        result = cmd(project, "status", "big", *args)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.encode("utf-8")) < 1024, len(result.stdout.encode())
        assert elapsed < 3.0, elapsed
    assert "[10000 @" in result.stdout
    data = json.loads(result.stdout)
    assert data["flow"][-1].startswith("[10000 @") and data["last_action"].startswith("éé")
    # Whole, or cut at the end when the temporary folder is deep (the order of the cuts:
    # test_command_layer::test_a_report_too_long_for_1kb_clips_its_paths_the_plan_last).
    plan, qa = str(folder / f"01-01-00:02-plan-{'z' * 60}.md"), str(folder / "_qa.md")
    for shown, real in ((data["plan"], plan), (data["qa"], qa)):
        assert shown == real or (shown.endswith("...") and real.startswith(shown[:-3])), (shown, real)


def test_a_running_worker_shows_in_status_locks_out_write_commands_and_ends_watch(project, monkeypatch):
    """A real worker; the watch runs in a thread through its sleep seam, so the test knows when the
    watch has looked at the running worker (a watch process may still be importing when a fast test
    stops the worker, and then rightly finds none running)."""
    project.scenario(by_phase={"investigation": {"sleep": 60, "signal": {"status": "continue"}}})
    monkeypatch.setenv("SAMOCODE_TEST_WATCH_POLL", "0.1")
    looks: list[float] = []
    ended: list[watch.WatchResult] = []

    def counted(seconds: float) -> None:
        looks.append(seconds)
        time.sleep(seconds)

    def watching() -> None:  # started before the worker: it waits for the session
        ended.append(watch.watch(watch.await_session(project.sessions, "busy", 30), 40, sleep=counted))

    project.sessions.mkdir(exist_ok=True)  # as `watch` loading .samocode makes it
    watcher = threading.Thread(target=watching, daemon=True)
    watcher.start()
    worker = project.start("--config", str(project.config), "--session", "busy", "--task", "t")
    try:
        wait_for(lambda: any(project.sessions.iterdir()))
        folder = project.session_dir("busy")
        wait_for(lambda: holder(SessionPaths(folder)) == worker.pid)
        wait_for(lambda: bool(project.records()))  # the fake child is running
        report = cmd(project, "status", "busy")
        assert f"Worker: running (pid {worker.pid})" in report.stdout
        assert json.loads(cmd(project, "status", "busy", "--json").stdout)["worker_pid"] == worker.pid
        before = snapshot(folder)
        for command, extra in (("approve", ()), ("unblock", ("--note", "x")), ("resume", ("--goal", "y"))):
            result = cmd(project, command, "busy", *extra)
            assert result.returncode == 6, (command, result.stderr)
            assert re.fullmatch(
                rf"samocode: session locked by pid {worker.pid} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\n",
                result.stderr,
            )
        assert snapshot(folder) == before
        seen = len(looks)
        wait_for(lambda: len(looks) >= seen + 2)  # a whole look, started while the worker held the lease
        assert watcher.is_alive() and not ended  # nothing changed in the Status section yet
        os.kill(worker.pid, signal.SIGTERM)
        stopped = time.monotonic()
        assert worker.wait(timeout=20) == 143
        watcher.join(timeout=10)
        assert time.monotonic() - stopped < 4
        assert [r.reason for r in ended] == ["worker exited"]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    assert "Worker: not running" in cmd(project, "status", "busy").stdout


# -- approve ------------------------------------------------------------------------------------


@pytest.fixture
def loop(project, monkeypatch) -> InProc:
    """The worker in-process (tests/inproc.py) where a test's point is the command, not the worker."""
    return InProc(project, monkeypatch)


def test_approve_then_run_proceeds_through_implementation_to_done(project, loop):
    loop.scenario(by_phase=TO_PLAN_WAIT)
    assert loop.run("feat", task="Build it").code == 3
    folder = project.session_dir("feat")
    calls = len(loop.child.calls)
    assert loop.run("feat").code == 3 and len(loop.child.calls) == calls  # still waits

    result = cmd(project, "approve", "feat")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("samocode: plan approved (") and "-plan-x.md" in result.stdout
    state = ov(folder)
    assert state.get("phase") == "implementation" and state.get("iteration") == "1"
    assert state.get("total iterations") == "3"
    assert (state.get("blocked"), state.get("waiting for")) == ("no", "-")
    assert state.get("last action") == "Plan approved for implementation"
    assert state.get("next") == "Execute first implementation phase"
    assert re.fullmatch(
        r"- \[003 @ \d\d-\d\d \d\d:\d\d\] Plan approved for implementation via samocode approve",
        flowlog.flow_entries(state.text, 1)[0],
    )
    record = history(folder)[-1]
    assert (record["event"], record["phase"], record["phase_after"]) == (
        "approved",
        "planning",
        "implementation",
    )
    assert record["overview"]["fields"]["Phase"] == "implementation"  # the change, journaled first
    assert record["overview"]["flow"] == [flowlog.flow_entries(state.text, 1)[0].removeprefix("- ")]
    status = json.loads(cmd(project, "status", "feat", "--json").stdout)
    assert (status["phase"], status["waiting_for"]) == ("implementation", None)
    refused(cmd(project, "approve", "feat"), "phase is implementation", "already approved")

    loop.scenario(by_phase=TO_DONE)
    final = loop.run("feat")
    assert final.code == 0, final.message
    decisions = [h for h in history(folder) if h.get("decision")]
    assert [d["phase"] for d in decisions][-4:] == ["implementation", "testing", "quality", "done"]
    assert all(d["accepted"] for d in decisions)
    assert loop.child.calls[calls]["phase"] == "implementation"


PLANNING_WAIT = {"Phase": "planning", "Blocked": "waiting_human", "Next": "Await plan approval"}


@pytest.mark.parametrize(
    ("fields", "files", "needles"),
    [
        ({}, PLAN, ["phase is investigation, not planning", "no plan yet"]),
        ({"Phase": "requirements", "Blocked": "waiting_human"}, PLAN, ["phase is requirements"]),
        ({"Phase": "implementation"}, PLAN, ["phase is implementation", "already approved"]),
        ({"Phase": "done"}, PLAN, ["phase is done", "resume --goal"]),
        (
            {"Phase": "planning", "Next": "Write the plan"},
            PLAN,
            ["does not wait for plan approval", "Blocked: no"],
        ),
        (PLANNING_WAIT, {}, ["no plan file in {folder}: planning has not produced a plan yet"]),
        (PLANNING_WAIT, {"01-01-00:00-dive-x.md": "d", "plan.md": "p"}, ["no plan file in"]),
    ],
    ids=["investigation", "requirements", "implementation", "done", "not-waiting", "no-plan", "no-dash-plan"],
)
def test_approve_refuses_with_exit_7_and_changes_nothing(project, fields, files, needles):
    folder = make(project, "s", fields, {k.replace("{prefix}", "01-01-00:00"): v for k, v in files.items()})
    before = snapshot(folder)
    result = cmd(project, "approve", "s")
    refused(result, *(n.format(folder=folder) for n in needles))
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert snapshot(folder) == before


def test_approve_refuses_with_exit_6_while_the_lease_is_taken(project):
    """The lease taken on another open file (a worker in another process: see the running-worker test)."""
    folder = make(project, "s", PLANNING_WAIT, {"01-01-00:00-plan-x.md": "p"})
    before = snapshot(folder)
    lease = Lease(SessionPaths(folder))
    lease.acquire("test")
    try:
        result = cmd(project, "approve", "s")
    finally:
        lease.release()
    assert result.returncode == 6 and f"session locked by pid {os.getpid()} since " in result.stderr
    assert snapshot(folder) == before
    assert cmd(project, "approve", "s").returncode == 0  # the same command once the lease is free


@pytest.mark.parametrize(
    ("fields", "extra"),
    [
        ({"Phase": "planning", "Blocked": "waiting_human"}, {}),
        ({"Phase": "planning", "Next": "Ready for plan approval"}, {}),
        ({"Phase": "planning", "Next": "Human: approve the plan"}, {}),
        ({"Phase": "planning", "Waiting For": "plan_approval"}, {}),
        (
            {"Phase": "planning"},
            {"_signal_history.jsonl": json.dumps({"decision": "waiting", "waiting_for": "plan_approval"})},
        ),
        ({"Phase": "planning"}, {"_signal.json": '{"status": "waiting", "for": "plan_approval"}'}),
    ],
    ids=["blocked-waiting", "next-plan-approval", "next-approve-the-plan", "field", "history", "signal"],
)
def test_approve_accepts_every_sign_of_a_waiting_plan(project, fields, extra):
    folder = make(project, "s", {**fields, "Total Iterations": "7"}, {"01-01-00:00-plan-x.md": "p", **extra})
    had_field = "waiting for" in ov(folder).fields
    result = cmd(project, "approve", "s")
    assert result.returncode == 0, result.stderr
    state = ov(folder)
    assert (state.get("phase"), state.get("iteration"), state.get("blocked")) == ("implementation", "1", "no")
    assert ("waiting for" in state.fields) == had_field  # cleared only where it exists
    assert re.search(
        r"^- \[007 @ .*\] Plan approved for implementation via samocode approve$", state.text, re.M
    )


# -- resume ---------------------------------------------------------------------------------------


def test_resume_reopens_a_done_session_and_refuses_any_other_phase(project):
    folder = make(project, "s", {"Phase": "done", "Total Iterations": "12", "Iteration": "2"})
    result = cmd(project, "resume", "s", "--goal", "Add  dark\nmode")
    assert result.returncode == 0, result.stderr
    state = ov(folder)
    assert (state.get("phase"), state.get("iteration"), state.get("blocked")) == ("investigation", "1", "no")
    assert state.get("total iterations") == "12"
    assert state.get("last action") == "Resuming session for: Add dark mode"
    assert state.get("next") == "Investigate approach for Add dark mode"
    assert re.fullmatch(
        r"- \[012 @ \d\d-\d\d \d\d:\d\d\] Resuming: Add dark mode", flowlog.flow_entries(state.text)[-1]
    )
    assert history(folder)[-1]["event"] == "resumed"
    for phase in ("investigation", "planning", "testing"):
        other = make(project, f"r-{phase}", {"Phase": phase})
        before = snapshot(other)
        refused(cmd(project, "resume", f"r-{phase}", "--goal", "x"), f"phase is {phase}, not done")
        assert snapshot(other) == before
    make(project, "r-blocked", {"Phase": "quality", "Blocked": "yes"})
    refused(cmd(project, "resume", "r-blocked", "--goal", "x"), "unblock --note")


# -- answer ---------------------------------------------------------------------------------------


def qa_scenario() -> dict:
    return {
        "investigation": {"signal": {"status": "continue", "phase": "requirements"}},
        "requirements": {
            "signal": {"status": "waiting", "for": "qa_answers", "reason": "2 questions"},
            "files": {"_qa.md": QA},
        },
    }


def test_answer_set_then_accept_suggestions_lets_the_worker_go_on(project, loop):
    loop.scenario(by_phase=qa_scenario())
    assert loop.run("qa", task="t").code == 3
    folder = project.session_dir("qa")
    assert json.loads(cmd(project, "status", "qa", "--json").stdout)["qa"] == str(folder / "_qa.md")

    first = cmd(project, "answer", "qa", "--set", "1=C) the sessions table")
    assert first.returncode == 0, first.stderr
    assert "answered Q1" in first.stdout and "still waiting: Q2" in first.stdout
    qa = (folder / "_qa.md").read_text()
    assert "**Answer:** C) the sessions table\n" in qa and qa.count("_waiting_") == 1
    calls = len(loop.child.calls)
    assert loop.run("qa").code == 3 and len(loop.child.calls) == calls  # Q2 still waits

    refused(cmd(project, "answer", "qa", "--set", "1=B"), "question 1 is already answered", "waiting: Q2")
    second = cmd(project, "answer", "qa", "--accept-suggestions")
    assert second.returncode == 0 and "all answered" in second.stdout
    qa = (folder / "_qa.md").read_text()
    assert "**Answer:** A\n" in qa and "_waiting_" not in qa
    assert qa == QA.replace("_waiting_", "C) the sessions table", 1).replace("_waiting_", "A")
    assert [r["questions"] for r in history(folder) if r.get("event") == "answered"] == [[1], [2]]

    loop.scenario(
        by_phase={
            "requirements": {"signal": {"status": "continue", "phase": "planning"}},
            "planning": {"signal": {"status": "waiting", "for": "plan_approval"}, "files": PLAN},
        }
    )
    assert loop.run("qa").code == 3
    assert loop.child.calls[calls]["phase"] == "requirements"
    assert ov(folder).get("phase") == "planning"


def test_answer_accept_suggestions_fills_every_waiting_answer(project):
    folder = make(project, "s", {"Phase": "requirements", "Blocked": "waiting_human"}, {"_qa.md": QA})
    result = cmd(project, "answer", "s", "--accept-suggestions", "--set", "2=B")
    assert result.returncode == 0, result.stderr
    qa = (folder / "_qa.md").read_text()
    assert "**Answer:** B, because tokens must be shared.\n" in qa and "**Answer:** B\n" in qa


@pytest.mark.parametrize(
    ("qa", "args", "needle"),
    [
        (None, ["--accept-suggestions"], "there are no questions to answer"),
        (QA.replace("_waiting_", "A"), ["--accept-suggestions"], "no question in _qa.md waits"),
        (QA, ["--set", "3=x"], "there is no question 3"),
        (QA.replace("_waiting_", "A", 1), ["--set", "1=x"], "question 1 is already answered"),
        (QA.replace("**Suggestion:** A\n", ""), ["--accept-suggestions"], "Q2 has no suggestion"),
    ],
    ids=["no-qa", "nothing-waits", "no-such-question", "answered", "no-suggestion"],
)
def test_answer_refuses_with_exit_7_and_changes_nothing(project, qa, args, needle):
    folder = make(project, "s", {"Phase": "requirements", "Blocked": "waiting_human"})
    if qa is not None:
        (folder / "_qa.md").write_text(qa)
    before = snapshot(folder)
    refused(cmd(project, "answer", "s", *args), needle)
    assert snapshot(folder) == before


# -- unblock --------------------------------------------------------------------------------------


def test_unblock_clears_a_real_block_and_the_worker_goes_on(project, loop):
    loop.scenario(
        sequence=[{"signal": {"status": "blocked", "reason": "no DB access", "needs": "access"}}],
        by_phase={"investigation": {"signal": {"status": "continue", "phase": "requirements"}}},
    )
    assert loop.run("b", task="t").code == 4
    folder = project.session_dir("b")
    calls = len(loop.child.calls)
    assert loop.run("b").code == 4 and len(loop.child.calls) == calls  # still blocked

    result = cmd(project, "unblock", "b", "--note", "Use the staging DB")
    assert result.returncode == 0, result.stderr
    state = ov(folder)
    assert state.get("blocked") == "no"
    assert state.get("last action") == "Unblocked by human: Use the staging DB"
    assert state.get("next") == "Use the staging DB"
    assert re.fullmatch(
        r"- \[001 @ .*\] Human direction: Use the staging DB", flowlog.flow_entries(state.text)[-1]
    )
    refused(cmd(project, "unblock", "b", "--note", "again"), "session is not blocked (Blocked: no")

    loop.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "again"}}})
    assert loop.run("b").code == 4
    assert len(loop.child.calls) == calls + 1 and loop.child.calls[calls]["phase"] == "investigation"


def test_unblock_restarts_the_count_of_a_phase_that_hit_its_cap(project):
    folder = make(project, "s", {"Phase": "investigation", "Iteration": "21", "Blocked": "yes"})
    assert cmd(project, "unblock", "s", "--note", "Keep going").returncode == 0
    assert ov(folder).get("iteration") == "1"


def test_unblock_of_a_budget_block_says_the_cap_still_applies(project, loop):
    loop.scenario(by_phase={"investigation": {"signal": {"status": "continue", "phase": "investigation"}}})
    cap = 0.01  # one fake iteration costs $0.0125
    assert loop.run("money", task="t", max_cost_usd=cap).code == 4
    folder = project.session_dir("money")
    assert [h["needs"] for h in history(folder) if h.get("decision")][-1] == "budget"
    result = cmd(project, "unblock", "money", "--note", "Spend more")
    assert result.returncode == 0 and "spend cap still applies" in result.stdout
    calls = len(loop.child.calls)
    assert loop.run("money", max_cost_usd=cap).code == 4 and len(loop.child.calls) == calls


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({}, "Blocked: no"),
        (PLANNING_WAIT, "use `approve`"),
        ({"Phase": "requirements", "Blocked": "waiting_human", "Waiting For": "qa_answers"}, "use `answer`"),
        ({"Phase": "done"}, "resume --goal"),
    ],
    ids=["running-state", "plan-wait", "qa-wait", "done"],
)
def test_unblock_refuses_when_not_blocked_and_changes_nothing(project, fields, needle):
    folder = make(project, "s", fields)
    before = snapshot(folder)
    refused(cmd(project, "unblock", "s", "--note", "x"), "session is not blocked", needle)
    assert snapshot(folder) == before


# -- watch -----------------------------------------------------------------------------------------


def test_watch_ignores_flow_log_edits_and_returns_soon_after_a_status_change(project):
    folder = make(project, "w", {})
    ended = threading.Event()
    seen: dict[str, float | bool] = {}

    def edits() -> None:  # another writer, while the watch runs in the main thread
        time.sleep(0.3)
        journal.apply_change(
            folder / "_overview.md", {}, ["[001 @ 01-01 00:00] a note outside the Status section"]
        )
        time.sleep(0.5)  # 5 of watch's looks (SAMOCODE_TEST_WATCH_POLL=0.1) after the edit
        seen["ended early"] = ended.is_set()
        journal.apply_change(folder / "_overview.md", {"Last Action": "Child did something"}, [])
        seen["changed"] = time.monotonic()

    writer = threading.Thread(target=edits)
    writer.start()
    try:
        result = cmd(project, "watch", "w", "--timeout", "30", timeout=20)
        returned = time.monotonic()
    finally:
        ended.set()
        writer.join(timeout=10)
    assert seen["ended early"] is False
    assert 0 <= returned - seen["changed"] < 2.0
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert out.startswith("Watch: status changed after ")
    assert "Last Action: Child did something" in out and len(out.encode()) < 1024


def test_watch_honours_its_timeout(project):
    make(project, "w", {})
    started = time.monotonic()
    result = cmd(project, "watch", "w", "--timeout", "1")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert 1.0 <= elapsed < 1.6, elapsed
    assert result.stdout.startswith("Watch: timeout after 1s\nSession: w (")
    data = json.loads(cmd(project, "watch", "w", "--timeout", "0.3", "--json").stdout)
    assert data["watch"]["reason"] == "timeout" and set(data) >= REPORT_KEYS


# -- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--config", "{config}"],
        ["watch", "--config", "{config}", "--session", "w", "--timeout", "0"],
        ["watch", "--config", "{config}", "--session", "w", "--timeout", "soon"],
        ["resume", "--config", "{config}", "--session", "w"],
        ["resume", "--config", "{config}", "--session", "w", "--goal", "  "],
        ["unblock", "--config", "{config}", "--session", "w", "--note", ""],
        ["answer", "--config", "{config}", "--session", "w"],
        ["answer", "--config", "{config}", "--session", "w", "--set", "first=A"],
        ["answer", "--config", "{config}", "--session", "w", "--set", "1=A", "--set", "1=B"],
        ["answer", "--config", "{config}", "--session", "w", "--set", "1=_waiting_"],
        ["approve", "--config", "{config}", "--session", "w", "--force"],
        ["approve", "--config", "{config}", "--session", "../w"],
        ["status", "--config", "{root}/missing.samocode", "--session", "w"],
    ],
    ids=[
        "no-session",
        "timeout-zero",
        "timeout-text",
        "no-goal",
        "blank-goal",
        "empty-note",
        "answer-nothing",
        "set-bad",
        "set-twice",
        "set-waiting",
        "unknown-flag",
        "bad-name",
        "no-config",
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_no_traceback(project, args):
    folder = make(project, "w", {"Phase": "done"})
    before = snapshot(folder)
    result = project.cli(*(a.format(config=project.config, root=project.root) for a in args))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("samocode: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--json"],
        ["watch", "--timeout", "0.5"],
        ["stop"],
        ["approve"],
        ["answer", "--accept-suggestions"],
        ["unblock", "--note", "go"],
        ["resume", "--goal", "more"],
    ],
    ids=lambda c: "-".join(c[:2]).replace("--", ""),
)
def test_a_session_that_does_not_exist_is_exit_9_not_the_config_error_code(project, command):
    """Each command as a real process: its exit code, nothing on stdout, one line on stderr."""
    make(project, "w", {"Phase": "done"})  # another session exists; "nope" matches none
    result = cmd_process(project, command[0], "nope", *command[1:])
    assert result.returncode == 9, result.stdout + result.stderr
    assert result.stderr == f"samocode: no session named 'nope' in {project.sessions}\n"
    assert result.stdout == ""
    assert sorted(p.name for p in project.sessions.iterdir()) == ["w"]  # nothing was created


class FakeClock:
    """Virtual time for the watch loop: sleeping advances it, and every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_watch_loop_clamps_its_last_sleep_to_the_timeout(project):
    folder = make(project, "w", {})
    lease = Lease(SessionPaths(folder))
    lease.acquire("test")  # a "worker" that stays: only the timeout can end the watch
    try:
        fake = FakeClock()
        result = watch.watch(SessionPaths(folder), 3.5, fake.clock, fake.sleep)
    finally:
        lease.release()
    assert (result.reason, result.waited) == ("timeout", 3.5)
    assert fake.sleeps == [1.0, 1.0, 1.0, 0.5]


def test_watch_loop_gives_up_on_a_session_with_no_worker_after_the_start_grace(project):
    folder = make(project, "w", {})
    fake = FakeClock()
    result = watch.watch(SessionPaths(folder), 540, fake.clock, fake.sleep)
    assert result.reason == "no worker running"
    assert watch.START_GRACE <= result.waited <= watch.START_GRACE + 1
