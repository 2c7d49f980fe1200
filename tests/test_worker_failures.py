"""The worker against a misbehaving child: failures, timeouts, Ctrl-C, the console, the environment.

The real worker as a subprocess with the fake Claude CLI, for what needs a real child (deadlines,
descendants, signals, the console, the child's environment) or the real command line; in-process
(tests/inproc.py) where only the next start's set-up matters.
Bad signals, retries and the repairs the loop makes run in-process (test_loop_inproc.py,
test_loop_failures_inproc.py, test_loop_rails_inproc.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from inproc import InProc
from worker_helpers import ignores, wait_for

from worker import process
from worker.errors import ExitCode
from worker.overview import parse


def history(session: Path) -> list[dict]:
    path = session / "_signal_history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def overview(session: Path):
    return parse((session / "_overview.md").read_text())


# Provider failures retried, then exit 5: test_loop_failures_inproc.py, in-process.


def _pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    return alive


def _sleepers(tag_dir: Path) -> list[int]:
    """`sleep 300` processes started from this test's scratch folder (the fakes run there)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if cmd[:2] == [b"sleep", b"300"] and str(tag_dir).encode() in env:
            found.append(int(entry))
    return found


def test_timeout_kills_child_and_grandchildren_even_when_one_holds_the_pipe(project):
    hang = {"spawn": "both", "half_line": True, "sleep": 60}
    project.scenario(by_phase={"investigation": hang})
    started = time.monotonic()
    result = project.worker("s7", "--timeout", "0.7", env={"SAMOCODE_MAX_RETRIES": "0"})
    elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stderr
    assert "timeout" in result.stderr
    assert elapsed < 0.7 + 1 + 4, elapsed  # timeout + kill grace + start-up margin
    assert _pids_alive(_sleepers(project.root)) == []
    records = history(project.session_dir("s7"))
    assert records[0]["event"] == "attempt_failed" and records[0]["ending"] == "timeout"
    # The half line came (after the sleepers were started) before the deadline: there was a pipe holder.
    (log,) = (project.session_dir("s7") / "_logs").glob("*.jsonl")
    assert log.read_bytes().endswith(b'"text":"partial')


# An idle child killed and recorded as idle: test_rails.py, with its descendants.


def test_leftover_descendants_of_a_successful_child_are_swept(project):
    project.scenario(
        by_phase={"investigation": {"spawn": "setsid", "signal": {"status": "blocked", "reason": "x"}}}
    )
    result = project.worker("s9")
    assert result.returncode == 4
    assert _pids_alive(_sleepers(project.root)) == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_the_child_and_record_it(project, sig, code):
    project.scenario(by_phase={"investigation": {"spawn": "both", "sleep": 60}})
    proc = project.start("--config", str(project.config), "--session", "s10")
    wait_for(lambda: len(_sleepers(project.root)) == 2)  # the child and both its sleepers run
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == code, err
    session = project.session_dir("s10")
    assert "interrupted" in overview(session).text.split("## Flow Log")[1]
    assert history(session)[-1]["event"] == "interrupted"
    assert _pids_alive(_sleepers(project.root)) == []
    assert not (session / ".samocode.iteration.json").exists()


def test_child_environment_has_claudecode_removed_and_prompt_on_stdin(project):
    project.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "x"}}})
    result = project.worker("s11", env={"CLAUDECODE": "1", "CLAUDE_CODE_ENTRYPOINT": "cli"})
    assert result.returncode == 4
    rec = project.records()[0]
    assert "CLAUDECODE" not in rec["env"] and "CLAUDE_CODE_ENTRYPOINT" not in rec["env"]
    assert rec["prompt_bytes"] > 1000
    argv = rec["argv"]
    assert argv[:5] == ["-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"]
    agent_file = argv[argv.index("--append-system-prompt-file") + 1]
    assert "samocode-investigation" in agent_file and "## Signals" in Path(agent_file).read_text()
    assert argv[argv.index("--tools") + 1] == "Read,Write,Edit,Glob,Grep,Bash"
    assert argv[argv.index("--model") + 1] == "opus"
    assert rec["cwd"] == str(project.worktrees / project.session_dir("s11").name)


def test_the_telegram_token_reaches_neither_the_child_nor_a_session_file(project):
    token = "123456:CHILD-MUST-NOT-SEE-THIS"
    project.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "x"}}})
    # A closed port: the notification fails fast; the token is still in the worker's environment.
    env = {"TELEGRAM_BOT_TOKEN": token, "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_BASE": "http://127.0.0.1:9"}
    result = project.worker("s13", env=env)
    assert result.returncode == 4
    rec = project.records()[0]
    assert rec["env"].get("TELEGRAM_CHAT_ID") == "42"  # the recording sees TELEGRAM_* variables
    assert "TELEGRAM_BOT_TOKEN" not in rec["env"]
    leaked = [
        p for p in project.session_dir("s13").rglob("*") if p.is_file() and token.encode() in p.read_bytes()
    ]
    assert leaked == [] and token not in result.stdout + result.stderr


def test_a_worktree_removed_between_runs_is_recreated_on_the_next_start(project, monkeypatch):
    """The two runs in-process (tests/inproc.py): the next start's set-up is the point, not the process."""
    loop = InProc(project, monkeypatch)
    loop.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "x"}}})
    assert loop.run("s15").code is ExitCode.BLOCKED
    tree = project.worktrees / loop.session("s15").name
    shutil.rmtree(tree)  # git still lists it, as prunable
    unblocked = project.cli("unblock", "--config", str(project.config), "--session", "s15", "--note", "go")
    assert unblocked.returncode == 0, unblocked.stderr
    assert loop.run("s15").code is ExitCode.BLOCKED
    assert tree.is_dir() and [c["cwd"] for c in loop.child.calls] == [str(tree)] * 2


def test_without_git_on_path_a_git_project_is_refused_not_worked_in_place(project, tmp_path):
    project.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "x"}}})
    assert project.worker("s16").returncode == 4
    bin_dir = tmp_path / "nogit"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python3")
    unblocked = project.cli("unblock", "--config", str(project.config), "--session", "s16", "--note", "go")
    assert unblocked.returncode == 0, unblocked.stderr
    shutil.rmtree(project.worktrees / project.session_dir("s16").name)
    calls = len(project.records())
    result = project.worker("s16", env={"PATH": str(bin_dir)})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "git is not on PATH" in result.stderr
    assert len(project.records()) == calls  # no child ran in MAIN_REPO instead


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


def test_a_child_that_closes_stdout_and_works_on_is_not_cut_short(tmp_path):
    """The child runner itself, its pipe grace (2 s in the product) shortened: a child that closes
    stdout and works on well past the grace is neither killed nor cut short; it runs to its end."""
    done = tmp_path / "done"
    code = f"import os, time; os.close(1); time.sleep(0.5); open({str(done)!r}, 'w').write('x')"
    invocation = process.Invocation((sys.executable, "-c", code), dict(os.environ), tmp_path)
    limits = process.Limits(timeout=30, idle_timeout=30, pipe_grace=0.2)
    with open(tmp_path / "log", "wb") as log, open(tmp_path / "err", "wb") as err:
        run = process.run(
            invocation, log.fileno(), err.fileno(), limits, lambda _line: None, threading.Event()
        )
    assert run.ending is process.Ending.EXITED and run.exit_code == 0, run
    assert done.read_text() == "x" and run.duration >= 0.5 and run.leftovers == 0


def test_a_child_silent_after_closing_stdout_is_still_killed_as_idle_with_no_racy_exit_code(project):
    project.scenario(sequence=[{"close_stdout": True, "sleep": 30}] * 2)
    result = project.worker("s18", env={"SAMOCODE_MAX_RETRIES": "0", "SAMOCODE_IDLE_TIMEOUT": "0.5"})
    assert result.returncode in (4, 5), result.stdout + result.stderr
    attempts = [r for r in history(project.session_dir("s18")) if r.get("ending")]
    assert attempts and all(r["ending"] == "idle" and r["exit_code"] is None for r in attempts), attempts


def test_a_console_that_goes_away_leaves_the_worker_working_to_its_stop(project):
    go = {"signal": {"status": "continue", "phase": "investigation"}}
    project.scenario(sequence=[go, go, go, {"signal": {"status": "blocked", "reason": "stop here"}}])
    proc = project.start("--config", str(project.config), "--session", "s19")
    try:
        assert proc.stdout is not None
        proc.stdout.read(1)  # `samocode ... | head -c1`
        proc.stdout.close()
        proc.wait(timeout=60)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 4, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    decisions = [r["decision"] for r in history(project.session_dir("s19")) if r.get("decision")]
    assert decisions == ["continue", "continue", "continue", "blocked"]
    assert "console output gone" in (project.session_dir("s19") / "session.log").read_text()


@pytest.mark.parametrize(
    ("signum", "code", "name"), [(signal.SIGHUP, 129, "SIGHUP"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_hang_up_stops_the_run_and_is_told_apart_from_termination(project, signum, code, name):
    action = {"spawn": "setsid", "sleep": 30, "signal": {"status": "continue", "phase": "investigation"}}
    project.scenario(sequence=[action])
    proc = project.start("--config", str(project.config), "--session", "s20")
    try:
        deadline = time.monotonic() + 20
        while not _sleepers(project.root) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sleepers(project.root), "the child never started its sleeper"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, out + err
    last = history(project.session_dir("s20"))[-1]
    assert last["event"] == "interrupted" and name in json.dumps(last), last
    assert _sleepers(project.root) == []  # the child's own-session sleeper went with it


def test_ctrl_c_while_the_child_rewrites_the_overview_loses_nothing(project):
    tear = {"tear_overview": True, "pause_after_signal": 30}
    block = {"signal": {"status": "blocked", "reason": "stop here", "needs": "human_decision"}}
    project.scenario(sequence=[tear, block])
    proc = project.start("--config", str(project.config), "--session", "s21")
    try:
        deadline = time.monotonic() + 20
        folder = None
        while time.monotonic() < deadline:
            folder = next(project.sessions.iterdir(), None) if project.sessions.is_dir() else None
            overview_file = folder / "_overview.md" if folder else None
            if overview_file and overview_file.exists() and "## Files" not in overview_file.read_text():
                break  # torn: the file's end is missing
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert folder is not None
    restored = [r for r in history(folder) if r.get("event") == "overview_restored"]
    assert len(restored) == 1, history(folder)
    copies = list(folder.glob("_overview.unusable-*.md"))
    assert len(copies) == 1  # the torn bytes are kept for the human, as they were
    assert (folder / "_overview.md").read_text().startswith(copies[0].read_text())
    again = project.worker("s21")  # the restart goes on from the restored overview
    assert again.returncode == 4 and "stop here" in again.stderr, again.stdout + again.stderr
    text = (folder / "_overview.md").read_text()
    assert "## Task" in text and "the child" not in text.split("## Status")[0]


def test_a_stop_signal_after_the_run_has_ended_does_not_replace_its_exit_code(project):
    project.scenario(by_phase={"investigation": {"signal": {"status": "blocked", "reason": "stop here"}}})
    assert project.worker("s23").returncode == 4  # from now on every start ends at once, blocked
    caught = 0
    for _ in range(10):  # until the window was hit twice: each miss is a worker start spent
        if caught == 2:
            break
        proc = project.start("--config", str(project.config), "--session", "s23")
        try:
            while proc.poll() is None and not ignores(proc.pid, signal.SIGHUP):
                time.sleep(0.0005)
            if proc.poll() is None:  # the run is over and recorded: the worker is on its way out
                caught += 1
                proc.send_signal(signal.SIGHUP)
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 4, proc.returncode
    assert caught, "never saw the worker between its outcome and its exit"
