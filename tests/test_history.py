"""One history and one journal for every writer; one overview reader that never blocks; the in-flight
marker after a samocode error. The commands run in this process (`Project.cli`), the worker as a
subprocess through main.py."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_commands import PLAN, QA, cmd, make

from worker import history, plans
from worker.signals import WaitFor

REPO = Path(__file__).resolve().parents[1]

# -- the history module ----------------------------------------------------------------------------


def test_append_closes_a_torn_line_and_read_skips_it(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_bytes(b'{"event": "x"}\n{"torn": ')
    history.append(path, {"event": "approved"})
    lines = path.read_bytes().splitlines()
    assert lines[1] == b'{"torn": ' and json.loads(lines[2])["event"] == "approved"
    assert [r["event"] for r in history.read(path)] == ["x", "approved"]


def test_read_with_a_limit_reads_the_last_lines_only(tmp_path):
    path = tmp_path / "h.jsonl"
    with path.open("w") as f:
        for i in range(5000):
            f.write(json.dumps({"n": i, "pad": "x" * 100}) + "\n")
    assert [r["n"] for r in history.read(path, limit=3)] == [4997, 4998, 4999]
    assert len(history.read(path)) == 5000
    assert history.read(tmp_path / "none.jsonl") == []


DECIDED = {"decision": "waiting", "waiting_for": WaitFor.PLAN_APPROVAL.value, "needs": None}


@pytest.mark.parametrize(
    ("records", "pending", "wait", "human"),
    [
        ([], {}, "", False),
        ([DECIDED], DECIDED, "plan_approval", False),
        ([DECIDED, {"event": "approved"}], {}, "", True),
        ([{"event": "unblocked"}, DECIDED], DECIDED, "plan_approval", False),
        ([DECIDED, {"event": "attempt_failed"}], DECIDED, "plan_approval", False),
    ],
    ids=["empty", "decision", "human-after", "human-before", "worker-event-after"],
)
def test_the_last_decision_unless_a_human_acted_after_it(records, pending, wait, human):
    assert history.pending_decision(records) == pending
    assert history.last_wait(records) == wait
    assert history.human_acted_last(records) is human
    assert history.last_decision(records) == (DECIDED if DECIDED in records else None)


@pytest.mark.parametrize(
    ("blocked", "field", "next_text", "records", "signal", "expected"),
    [
        ("waiting_human", "plan_approval", "", [], "", True),
        ("waiting_human", "-", "", [], "", True),  # names nothing: planning waits for its plan
        ("waiting_human", "usage_limit", "", [], "", False),
        ("waiting_human", "", "", [DECIDED], "", True),
        ("no", "", "Await plan approval (samocode approve)", [], "", True),
        ("no", "", "", [DECIDED], "", True),
        ("no", "", "", [DECIDED, {"event": "approved"}], "", False),
        ("no", "", "", [], "plan_approval", True),
        ("no", "", "Write the plan", [], "", False),
    ],
)
def test_plan_approval_detection(blocked, field, next_text, records, signal, expected):
    assert plans.waits_for_approval(blocked, field, next_text, records, signal) is expected


# -- commands write through the journal -------------------------------------------------------------


def test_a_command_record_after_a_torn_line_is_readable(project):
    folder = make(project, "t", {"Blocked": "yes"})
    (folder / "_signal_history.jsonl").write_bytes(b'{"event": "x"}\n{"torn": ')
    result = cmd(project, "unblock", "t", "--note", "use the staging database")
    assert result.returncode == 0, result.stderr
    lines = (folder / "_signal_history.jsonl").read_text().splitlines()
    assert lines[:2] == ['{"event": "x"}', '{"torn": ']
    record = json.loads(lines[2])
    assert record["event"] == "unblocked" and record["overview"]["fields"]["Blocked"] == "no"
    assert [r.get("event") for r in history.read(folder / "_signal_history.jsonl")] == ["x", "unblocked"]


def test_a_command_flow_line_already_there_is_not_appended_again(project):
    """The journal appends a Flow Log line only when missing: the same command record replayed
    (here: a second identical change) leaves one line."""
    from worker import journal

    folder = make(project, "r", {"Blocked": "yes"})
    assert cmd(project, "unblock", "r", "--note", "go").returncode == 0
    change = history.read(folder / "_signal_history.jsonl")[-1]["overview"]
    before = (folder / "_overview.md").read_text()
    journal.apply_change(folder / "_overview.md", change["fields"], change["flow"])
    assert (folder / "_overview.md").read_text() == before
    assert before.count("Human direction: go") == 1


# -- a FIFO at _overview.md: every command and the worker answer at once -------------------------------

FIFO_CASES = {
    "status": (("status",), 0),
    "watch": (("watch", "--timeout", "0.3"), 0),
    "approve": (("approve",), 7),
    "unblock": (("unblock", "--note", "x"), 7),
    "resume": (("resume", "--goal", "more"), 7),
    "answer": (("answer", "--accept-suggestions"), 0),  # touches _qa.md and the history only
}


def fifo_session(project, name: str) -> Path:
    folder = make(
        project,
        name,
        {"Phase": "planning", "Blocked": "yes"},
        {**{k.format(prefix="11-29-16:00"): v for k, v in PLAN.items()}, "_qa.md": QA},
    )
    (folder / "_overview.md").unlink()
    os.mkfifo(folder / "_overview.md")
    return folder


@pytest.mark.parametrize("case", FIFO_CASES, ids=FIFO_CASES.keys())
def test_a_fifo_overview_never_hangs_a_command(project, case):
    args, code = FIFO_CASES[case]
    folder = fifo_session(project, "f")
    result = cmd(project, args[0], "f", *args[1:], timeout=20)  # a hang fails here
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if code == 7:
        assert len(result.stderr.strip().splitlines()) == 1
        assert "_overview.md is not a regular file" in result.stderr
    elif case in ("status", "watch"):
        assert "_overview.md unusable: _overview.md is not a regular file" in result.stdout
    else:
        assert len(result.stdout.strip().splitlines()) == 1 and "answered" in result.stdout
    assert stat.S_ISFIFO(os.lstat(folder / "_overview.md").st_mode)  # nothing replaced it


def test_a_fifo_overview_never_hangs_the_worker(project):
    folder = fifo_session(project, "f")
    result = project.worker("f", timeout=20)
    assert result.returncode == 4, result.stdout + result.stderr
    out = (result.stdout + result.stderr).strip().splitlines()
    assert [line for line in out if "not a regular file" in line], out
    assert "Traceback" not in result.stderr
    assert not project.records()  # no child was spent
    assert not (folder / ".samocode.iteration.json").exists()


# -- the in-flight marker after an error that is not the journal's ------------------------------------


def install_copy(root: Path) -> Path:
    """samocode's files in a folder of their own, so one can be taken away."""
    target = root / "install"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "worker", target / "worker", ignore=ignore)
    shutil.copytree(REPO / "agents", target / "agents", ignore=ignore)
    for name in ("main.py", "workflow.md"):
        shutil.copy2(REPO / name, target / name)
    return target


def test_an_install_error_mid_iteration_leaves_no_marker(project, tmp_path):
    install = install_copy(tmp_path)
    agent = install / "agents" / "investigation-agent.md"
    saved = agent.read_bytes()
    agent.unlink()
    project.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "r"}}})

    def worker():
        return subprocess.run(
            [sys.executable, str(install / "main.py"), "--config", str(project.config), "--session", "m"],
            env=project.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )

    first = worker()
    assert first.returncode == 2, first.stdout + first.stderr
    assert "investigation-agent.md" in first.stderr and "Traceback" not in first.stderr
    folder = project.session_dir("m")
    assert not (folder / ".samocode.iteration.json").exists()
    assert not project.records()

    agent.write_bytes(saved)
    second = worker()
    assert second.returncode == 4, second.stdout + second.stderr
    events = [r.get("event") for r in history.read(folder / "_signal_history.jsonl")]
    assert "interrupted" not in events, events
    assert "the worker died" not in (folder / "_overview.md").read_text()


def test_the_stall_breakers_digest_does_not_block_on_a_fifo_overview(tmp_path):
    """A child may leave a FIFO at _overview.md: the digest taken right after it must not hang."""
    import signal as sig

    from worker import stall

    (tmp_path / "notes.md").write_text("n\n")
    os.mkfifo(tmp_path / "_overview.md")

    def hung(*_):
        raise RuntimeError("session_state blocked on the FIFO")

    old = sig.signal(sig.SIGALRM, hung)
    sig.alarm(5)
    try:
        digest, count = stall.session_state(tmp_path)
    finally:
        sig.alarm(0)
        sig.signal(sig.SIGALRM, old)
    assert count == 2 and len(digest) == 64


def test_a_fifo_overview_never_hangs_the_session_list(project):
    fifo_session(project, "f")
    make(project, "ok", {})
    result = project.cli("sessions", "--config", str(project.config), timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    unreadable = [line for line in result.stdout.splitlines() if "not a regular file" in line]
    assert len(unreadable) == 1 and "ok" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


# -- running totals: the spend without summing a history that grows ------------------------------------


def test_every_line_carries_the_running_totals(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append(path, {"phase": "planning", "cost_usd": 0.25, "tokens_in": 100, "tokens_out": 10})
    history.append(path, {"event": "approved"})
    path.write_bytes(path.read_bytes() + b'{"torn": ')
    history.append(path, {"phase": "implementation", "cost_usd": 0.5, "tokens_in": 50})
    sums = [r["sums"] for r in history.read(path)]
    costs = {"planning": 0.25, "implementation": 0.5}
    assert sums[-1] == {"cost_usd": costs, "tokens_in": 150, "tokens_out": 10}
    assert sums[1] == sums[0]  # a line without cost carries the totals on
    assert history.totals(path) == sums[-1]
    assert history.totals(tmp_path / "none.jsonl") == {"cost_usd": {}, "tokens_in": None, "tokens_out": None}


def test_a_history_from_before_the_totals_is_summed_once(tmp_path, monkeypatch):
    path = tmp_path / "h.jsonl"
    old = [{"phase": "testing", "cost_usd": 0.5, "tokens_out": 7}] * 3
    path.write_text("".join(json.dumps(r) + "\n" for r in old) + "junk\n")
    assert history.totals(path)["cost_usd"] == {"testing": 1.5}  # summed: no line has totals
    history.append(path, {"phase": "testing", "cost_usd": 0.5})
    monkeypatch.setattr(history, "_all", lambda fd: pytest.fail("read the whole history"))
    history.append(path, {"phase": "done", "cost_usd": 1.0})
    expected = {"cost_usd": {"testing": 2.0, "done": 1.0}, "tokens_in": None, "tokens_out": 21}
    assert history.totals(path) == expected


def test_status_spend_comes_from_the_newest_line_not_a_long_history(project, monkeypatch):
    from worker import statusbuild

    folder = make(project, "long", {})
    for i in range(3000):
        record = {"phase": "implementation", "cost_usd": 0.01, "n": i}
        history.append(folder / "_signal_history.jsonl", record)
    monkeypatch.setattr(history, "_all", lambda fd: pytest.fail("read the whole history"))
    report = statusbuild.build(statusbuild.SessionPaths(folder), {"error": "x"})
    assert report.spend_usd == pytest.approx(30.0)
