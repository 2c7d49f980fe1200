"""`samocode sessions`: one line per session in every state, newest activity first, cheap to build.

Sessions are made with the worker's own writers (the new-session template, history.append,
runrecord.write, the Lease), so the listing reads exactly what a worker leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli

from worker import history, runrecord, session_list
from worker.overview import render_new
from worker.session import Lease, SessionPaths

REPO = Path(__file__).resolve().parents[1]


def make(
    sessions: Path,
    folder: str,
    *,
    phase: str = "investigation",
    blocked: str = "no",
    waiting: str | None = None,
    last_action: str = "Looked around",
    cost: str | None = None,
    age: float = 0.0,
) -> SessionPaths:
    paths = SessionPaths(sessions / folder)
    paths.dir.mkdir(parents=True)
    text = render_new(folder, "2026-11-29 10:00", "/tmp/wd", "a task", "", "[000 @ 11-29 10:00] created")
    extra = f"Waiting For: {waiting}\n" if waiting else ""
    extra += f"Total Cost: {cost}\n" if cost else ""
    text = (
        text.replace("Phase: investigation", f"Phase: {phase}")
        .replace("Blocked: no", f"Blocked: {blocked}\n{extra}".rstrip("\n"))
        .replace("Last Action: Session created", f"Last Action: {last_action}")
    )
    paths.overview.write_text(text)
    stamp = time.time() - age
    os.utime(paths.overview, (stamp, stamp))
    return paths


def run_ended(paths: SessionPaths, code: int, message: str, age: float = 0.0) -> None:
    runrecord.write(paths.worker_record, runrecord.make(4242, code, message, "2026-11-29T10:00:00+00:00"))
    stamp = time.time() - age
    os.utime(paths.worker_record, (stamp, stamp))


def by_name(sessions: Path) -> dict[str, session_list.Entry]:
    return {e.session: e for e in session_list.list_sessions(sessions)}


def test_every_state(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    make(sessions, "26-11-29-fresh")
    make(sessions, "26-11-29-plan", phase="planning", blocked="waiting_human", waiting="plan_approval")
    make(sessions, "26-11-29-qa", phase="requirements", blocked="waiting_human", waiting="qa_answers")
    make(
        sessions,
        "26-11-29-stuck",
        phase="testing",
        blocked="yes",
        last_action="Blocked: the test DB needs a password",
    )
    done = make(sessions, "26-11-29-finished", phase="done", cost="$3.10 (investigation $1.00, done $2.10)")
    run_ended(done, 0, "session complete")
    writing = make(sessions, "26-11-29-summary", phase="done")  # in phase done, the summary not yet written
    (sessions / "26-11-29-broken").mkdir()
    (sessions / "26-11-29-broken" / "_overview.md").write_text("# no status here\n")
    running = make(sessions, "26-11-29-running", phase="implementation")

    lease = Lease(running)
    lease.acquire()
    try:
        found = by_name(sessions)
    finally:
        lease.release()

    assert found["26-11-29-fresh"].state == "active" and found["26-11-29-fresh"].worker_pid is None
    assert found["26-11-29-fresh"].last_run is None
    assert (found["26-11-29-plan"].state, found["26-11-29-plan"].detail) == (
        "waiting",
        "waiting for plan_approval",
    )
    assert found["26-11-29-qa"].detail == "waiting for qa_answers"
    stuck = found["26-11-29-stuck"]
    assert (stuck.state, stuck.phase) == ("blocked", "testing")
    assert stuck.detail == "the test DB needs a password"  # no "blocked: Blocked: ..." in the line
    finished = found["26-11-29-finished"]
    assert (finished.state, finished.spend) == ("done", "$3.10")
    assert finished.last_run == {
        "code": 0,
        "outcome": "done",
        "at": runrecord.read(done.worker_record).ended_at,
    }
    assert found[writing.dir.name].state == "active"
    assert found["26-11-29-broken"].state == "unreadable"
    assert "no '## Status' section" in found["26-11-29-broken"].detail
    assert found["26-11-29-running"].worker_pid == os.getpid()
    assert found["26-11-29-running"].state == "active"


def test_a_waiting_decision_in_the_history_counts_until_a_human_acts(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    paths = make(sessions, "26-11-29-hist", phase="implementation")
    history.append(paths.history, {"decision": "wait", "waiting_for": "human_action"})
    assert by_name(sessions)["26-11-29-hist"].detail == "waiting for human_action"
    history.append(paths.history, {"event": "unblocked"})
    assert by_name(sessions)["26-11-29-hist"].state == "active"


def test_lines_newest_activity_first_with_how_the_last_run_ended(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    old = make(
        sessions, "26-11-20-old", phase="planning", blocked="waiting_human", waiting="plan_approval", age=7200
    )
    run_ended(old, 3, "waiting for plan_approval", age=7200)
    make(sessions, "26-11-29-new", age=10)
    make(sessions, "26-11-25-middle", phase="testing", blocked="yes", last_action="x" * 300, age=3600)

    entries = session_list.list_sessions(sessions)
    assert [e.session for e in entries] == ["26-11-29-new", "26-11-25-middle", "26-11-20-old"]
    lines = session_list.render_text(sessions, entries).splitlines()
    assert lines[0].startswith(
        "26-11-29-new · investigation · active · not running, never run · $- · last activity "
    )
    assert lines[1].startswith("26-11-25-middle · testing · blocked: xxx")
    assert len(lines[1]) < 200, "a long blocked reason is clipped"
    assert lines[2].startswith(
        "26-11-20-old · planning · waiting for plan_approval · not running, last run exited 3 (waiting) at "
    )


def test_no_sessions_says_so(tmp_path: Path) -> None:
    assert (
        session_list.render_text(tmp_path, session_list.list_sessions(tmp_path))
        == f"no sessions in {tmp_path}"
    )
    assert session_list.list_sessions(tmp_path / "missing") == []


def test_folders_that_are_not_sessions_are_left_out(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    make(sessions, "26-11-29-real")
    (sessions / "notes").mkdir()
    (sessions / ".hidden").mkdir()
    (sessions / ".hidden" / "_overview.md").write_text("## Status\nPhase: planning\n")
    (sessions / "a-file.md").write_text("x")
    assert list(by_name(sessions)) == ["26-11-29-real"]


def test_reads_only_the_head_of_a_huge_overview(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    paths = make(sessions, "26-11-29-long", phase="testing")
    with paths.overview.open("a") as f:
        f.write("".join(f"- [{i:03d} @ 11-29 10:00] step\n" for i in range(400_000)))  # ~12 MB of Flow Log
    assert paths.overview.stat().st_size > 10_000_000
    assert len(session_list._head(paths.overview)) <= session_list.HEAD_BYTES
    assert by_name(sessions)["26-11-29-long"].phase == "testing"


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_sessions_command(tmp_path: Path, as_json: bool) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    config = repo / ".samocode"
    config.write_text(f"MAIN_REPO={repo}\nWORKTREES={tmp_path / 'wt'}\nSESSIONS={tmp_path / 'sessions'}\n")
    make(
        tmp_path / "sessions",
        "26-11-29-plan",
        phase="planning",
        blocked="waiting_human",
        waiting="plan_approval",
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SAMOCODE_ENV_FILE": str(tmp_path / "none.env")}
    done = cli(["sessions", "--config", str(config), *(["--json"] if as_json else [])], env, tmp_path)
    assert done.returncode == 0, done.stderr
    if as_json:
        (only,) = json.loads(done.stdout)
        assert only["session"] == "26-11-29-plan" and only["state"] == "waiting"
        assert only["detail"] == "waiting for plan_approval" and only["worker_pid"] is None
    else:
        assert done.stdout.startswith("26-11-29-plan · planning · waiting for plan_approval · not running")
        assert len(done.stdout.splitlines()) == 1


def test_sessions_command_with_a_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    """`sessions` as a real process: exit 2, nothing on stdout, one line on stderr."""
    done = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "sessions", "--config", str(tmp_path / "none")],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and ".samocode file not found" in done.stderr
