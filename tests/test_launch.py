"""`start` and `stop` against the real worker (a subprocess, with the fake Claude CLI), and the
run-end record they leave for `status` and `watch`.

Every worker a test starts is detached from the test, so each test collects the pids it started
(from `start`'s line or the session's lease) and kills them by pid in teardown.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import MAIN
from worker_helpers import fakes, history, ignores, overview, processes_with, sleepers, text, wait_for

from worker import launch
from worker.errors import NotStarted
from worker.session import SessionPaths, holder, pid_alive

STARTED = re.compile(
    r"samocode: started worker pid (?P<pid>\d+) on (?P<dir>\S+) \(output: (?P<out>\S+)/_worker\.out\)\n"
)
QA = "### Q1. Which?\n- A) a\n- B) b\n**Suggestion:** A\n**Answer:** _waiting_\n"


def to_qa(go: Path) -> dict:
    """A new session: one iteration that runs until the test makes `go`, then it waits for answers
    (exit 3)."""
    return {
        "investigation": {"until": str(go), "signal": {"status": "continue", "phase": "requirements"}},
        "requirements": {
            "signal": {"status": "waiting", "for": "qa_answers", "reason": "questions"},
            "files": {"_qa.md": QA},
        },
    }


TO_DONE = {
    "quality": {"signal": {"status": "continue", "phase": "done"}},
    "done": {"signal": {"status": "done", "summary": "all good"}, "files": {"{prefix}-summary.md": "s\n"}},
}


@pytest.fixture
def started(project):
    """Pids this test started or found holding a lease; killed (by pid) at the end."""
    pids: list[int] = []
    yield pids
    for folder in project.sessions.glob("*") if project.sessions.is_dir() else ():
        pid = holder(SessionPaths(folder))
        if pid and pid > 0:
            pids.append(pid)
    for pid in pids:  # as a parent would: TERM, so the worker stops its children too
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        try:
            wait_gone(pid, 20)
        except AssertionError:
            os.kill(pid, signal.SIGKILL)
    left = processes_with(str(project.root))
    for pid in left:  # a fake child or its sleeper the worker did not get to stop
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def run(project, command: str, session: str, *extra: str, timeout: float = 60):
    """`start` in a process of its own (it detaches a worker); the parent's commands (stop, status,
    watch) in this process (conftest's `cli`), as the command line runs them."""
    args = (command, "--config", str(project.config), "--session", session, *extra)
    return project.run(*args, timeout=timeout) if command == "start" else project.cli(*args, timeout=timeout)


def start(project, session: str, *extra: str, pids: list[int] | None = None):
    result = run(project, "start", session, *extra)
    if pids is not None and (match := STARTED.fullmatch(result.stdout)):
        pids.append(int(match["pid"]))
    return result


def make(project, name: str, fields: dict[str, str], done: bool = False) -> Path:
    from worker import overview as ov_mod

    folder = project.sessions / name
    folder.mkdir(parents=True)
    body = ov_mod.render_new(
        name, "2026-01-01 00:00", str(project.main_repo), "task", "", "[000 @ 01-01 00:00] x"
    )
    (folder / "_overview.md").write_text(ov_mod.set_fields(ov_mod.parse(body), fields))
    if done:
        line = {"time": "2026-01-01 00:00", "decision": "done", "phase": "done", "phase_after": "done"}
        (folder / "_signal_history.jsonl").write_text(json.dumps(line) + "\n")
    return folder


def record(folder: Path) -> dict:
    return json.loads((folder / "_worker.json").read_text())


def wait_gone(pid: int, limit: float = 30) -> None:
    wait_for(lambda: not pid_alive(pid), limit)


# -- start -----------------------------------------------------------------------------------------


def test_start_returns_at_once_and_the_worker_runs_on_after_the_starter_exited(project, started):
    go = project.root / "go"
    project.scenario(by_phase=to_qa(go))
    began = time.monotonic()
    result = start(project, "feat", "--task", "Build it", pids=started)
    took = time.monotonic() - began
    assert result.returncode == 0, result.stdout + result.stderr
    match = STARTED.fullmatch(result.stdout)
    assert match, result.stdout
    assert result.stderr == "" and took < 10, took
    pid, folder = int(match["pid"]), Path(match["dir"])
    assert folder.parent == project.sessions and folder.name.endswith("-feat") and match["out"] == str(folder)
    # The starter has exited; its worker holds the session and runs its first iteration (until `go`).
    assert pid_alive(pid) and holder(SessionPaths(folder)) == pid
    wait_for(lambda: project.records(), 10)
    assert pid_alive(pid)
    go.touch()
    wait_gone(pid)
    assert overview(folder).get("waiting for") == "qa_answers"
    assert record(folder) | {"started_at": "", "ended_at": ""} == {
        "pid": pid,
        "code": 3,
        "outcome": "waiting",
        "message": "waiting for qa_answers: questions",
        "started_at": "",
        "ended_at": "",
    }
    out = (folder / "_worker.out").read_text()
    assert "samocode: waiting: waiting for qa_answers: questions" in out.splitlines()[-1]


def _controlling_tty() -> None:  # runs in the parent stand-in, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_a_started_worker_survives_its_parent_group_being_killed_and_its_terminal_hanging_up(
    project, started
):
    """A stand-in for a parent CLI: a shell on its own terminal runs `start`, then the parent kills
    its whole process group (HUP, then KILL) and the terminal goes away."""
    go = project.root / "go"
    project.scenario(by_phase=to_qa(go))
    master, slave = pty.openpty()
    command = f"{sys.executable} {MAIN} start --config {project.config} --session feat --task t; sleep 60"
    parent = subprocess.Popen(
        ["sh", "-c", command],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=project.env,
        cwd=project.root,
        start_new_session=True,
        preexec_fn=_controlling_tty,  # the parent has a terminal, which then hangs up
    )
    os.close(slave)
    seen = b""
    try:
        end = time.monotonic() + 20
        while b"_worker.out)" not in seen and time.monotonic() < end:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 4096)
        match = re.search(rb"started worker pid (\d+) on (\S+) ", seen)
        assert match, seen
        pid, folder = int(match[1]), Path(match[2].decode())
        started.append(pid)
        os.killpg(parent.pid, signal.SIGHUP)
        os.close(master)
        master = -1
        with contextlib.suppress(ProcessLookupError):  # HUP may have ended the whole group already
            os.killpg(parent.pid, signal.SIGKILL)
        assert parent.wait(timeout=10) != 0
        time.sleep(0.5)
        assert pid_alive(pid) and holder(SessionPaths(folder)) == pid
        assert os.getsid(pid) == pid  # its own session: no terminal, no group of the parent's
    finally:
        if master >= 0:
            os.close(master)
        if parent.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
        go.touch()
    wait_gone(pid)  # it still reaches its gate
    assert record(folder)["code"] == 3 and overview(folder).get("waiting for") == "qa_answers"


def test_start_on_a_session_already_running_exits_6_and_keeps_the_holders_record(project, started):
    project.scenario(by_phase={"investigation": {"sleep": 60, "signal": {"status": "continue"}}})
    first = start(project, "busy", "--task", "t", pids=started)
    assert first.returncode == 0, first.stderr
    pid = int(STARTED.fullmatch(first.stdout)["pid"])
    folder = project.session_dir("busy")
    second = start(project, "busy", pids=started)
    assert second.returncode == 6, second.stdout + second.stderr
    assert re.fullmatch(rf"samocode: session locked by pid {pid} since [\d: -]+\n", second.stderr), (
        second.stderr
    )
    assert second.stdout == ""
    assert not (folder / "_worker.json").exists()  # the refused run wrote no record over the holder's
    assert pid_alive(pid) and holder(SessionPaths(folder)) == pid


@pytest.mark.parametrize(
    ("fields", "done", "code", "line", "stream"),
    [
        (
            {"Phase": "planning", "Blocked": "waiting_human"},
            False,
            3,
            "samocode: waiting: the plan waits for approval: run `approve` first",
            "stdout",
        ),
        (
            {"Phase": "implementation", "Blocked": "yes", "Last Action": "Blocked: no API key"},
            False,
            4,
            "samocode: blocked: session is blocked (Blocked: no API key); resolve it, then run `unblock` "
            "or set 'Blocked: no'",
            "stderr",
        ),
        ({"Phase": "done"}, True, 0, "samocode: done: the session is already done", "stdout"),
    ],
    ids=["waiting", "blocked", "done"],
)
def test_start_that_ends_at_once_exits_with_the_workers_code_and_line(
    project, started, fields, done, code, line, stream
):
    folder = make(project, "s", fields, done)
    result = start(project, "s", pids=started)
    assert result.returncode == code, result.stdout + result.stderr
    assert getattr(result, stream) == line + "\n"
    assert getattr(result, "stderr" if stream == "stdout" else "stdout") == ""
    assert project.records() == []  # no child was spent
    assert record(folder)["code"] == code and holder(SessionPaths(folder)) is None
    assert text(folder / "_worker.out").splitlines()[-1] == line


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--config", "{root}/missing.samocode", "--session", "s"], {}, ".samocode file not found"),
        (["--config", "{config}", "--session", "../s"], {}, "is not allowed"),
        (["--config", "{config}", "--session", "s"], {"CLAUDE_PATH": "/no/such/claude"}, "claude"),
        (["--config", "{config}", "--session", "s", "--timeout", "0"], {}, "must be above 0"),
    ],
    ids=["no-config", "bad-name", "no-cli", "bad-timeout"],
)
def test_start_reports_config_errors_before_detaching(project, started, args, env, needle):
    argv = [a.format(root=project.root, config=project.config) for a in args]
    result = project.cli("start", *argv, env=env)  # it stops before it would detach: in this process
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("samocode: ") and needle in result.stderr and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert not project.sessions.is_dir() or list(project.sessions.iterdir()) == []  # nothing made


def test_start_passes_every_run_option_to_the_worker(project, started):
    stay = {"status": "continue", "phase": "investigation"}
    go = project.root / "go"
    # Only the first child waits (until `go`): the worker is alive while its command line is read.
    project.scenario(
        sequence=[{"until": str(go), "signal": stay}], by_phase={"investigation": {"signal": stay}}
    )
    result = start(
        project, "opts", "--task", "the task", "--dive", "the dive", "--timeout", "77",
        "--provider", "claude", "--max-iterations", "2", pids=started,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pid = int(STARTED.fullmatch(result.stdout)["pid"])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    go.touch()
    wait_gone(pid)
    folder = project.session_dir("opts")
    assert record(folder)["code"] == 8  # --max-iterations 2 reached
    assert len(project.records()) == 2
    ov_text = (folder / "_overview.md").read_text()
    assert "the task" in ov_text and "the dive" in ov_text
    for flag, value in (
        ("--timeout", b"77.0"),
        ("--provider", b"claude"),
        ("--session", folder.name.encode()),
    ):
        assert cmdline[cmdline.index(flag.encode()) + 1] == value


# -- start: the launcher's own edge cases, through its seam ------------------------------------------


def _launch(tmp_path: Path, code: str, timeout: float = 5, kill_grace: float = launch.KILL_GRACE):
    paths = SessionPaths(tmp_path / "sessions" / "x")
    env = {**os.environ, "LAUNCH_TEST": str(tmp_path)}
    return paths, launch.start(
        [sys.executable, "-c", code], paths, timeout=timeout, env=env, kill_grace=kill_grace
    )


def test_a_worker_that_neither_starts_nor_ends_in_time_is_stopped_and_reported(tmp_path):
    began = time.monotonic()
    with pytest.raises(NotStarted, match=r"neither took the session nor exited within 0\.3 s; stopped it"):
        _launch(
            tmp_path,
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
            0.3,
            kill_grace=0.2,  # the product's 5 s between TERM and KILL, shortened
        )
    assert time.monotonic() - began < 5
    assert processes_with(str(tmp_path)) == []  # TERM was ignored: KILL followed


def test_a_worker_killed_before_it_started_is_reported(tmp_path):
    with pytest.raises(NotStarted, match="was killed by signal 9 before it started"):
        _launch(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")


def test_the_ready_word_returns_at_once_with_the_pid(tmp_path):
    code = "import os, sys, time; os.write(int(sys.argv[-1]), b'ready\\n'); time.sleep(30)"
    paths, result = _launch(tmp_path, code)
    try:
        assert isinstance(result, launch.Started) and result.output == paths.worker_out
        assert pid_alive(result.pid) and os.getsid(result.pid) == result.pid
        assert Path(f"/proc/{result.pid}/fd/0").resolve() == Path("/dev/null")
        assert Path(f"/proc/{result.pid}/fd/1").resolve() == paths.worker_out
    finally:
        os.kill(result.pid, signal.SIGKILL)


def test_a_worker_that_exits_at_once_gives_its_code_and_last_line(tmp_path):
    code = "import sys; print('noise'); print('samocode: blocked: because', file=sys.stderr); sys.exit(4)"
    _, result = _launch(tmp_path, code)
    assert result == launch.EndedAtOnce(4, "samocode: blocked: because")
    _, again = _launch(tmp_path, "import sys; sys.exit(3)")  # appended output: only this run's lines
    assert again == launch.EndedAtOnce(3, "samocode: the worker exited 3")


# -- stop ------------------------------------------------------------------------------------------


def test_stop_mid_iteration_interrupts_like_ctrl_c_and_the_next_start_resumes_to_done(project, started):
    folder = make(project, "s", {"Phase": "quality"})
    project.scenario(sequence=[{"sleep": 60, "spawn": "holder"}], by_phase=TO_DONE)
    first = start(project, "s", pids=started)
    assert first.returncode == 0, first.stderr
    pid = int(STARTED.fullmatch(first.stdout)["pid"])
    wait_for(lambda: sleepers(project.root), 15)  # the child and its grandchild are running

    began = time.monotonic()
    result = run(project, "stop", "s")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"samocode: stopped worker pid {pid} (exit 130)\n" and result.stderr == ""
    assert time.monotonic() - began < 15
    assert not pid_alive(pid) and holder(SessionPaths(folder)) is None
    assert sleepers(project.root) == [] and fakes(project.root) == []
    assert record(folder)["code"] == 130 and record(folder)["outcome"] == "interrupted"
    assert history(folder)[-1]["event"] == "interrupted"
    assert "Worker: not running · last run exited 130 (stopped) at " in run(project, "status", "s").stdout

    again = start(project, "s", pids=started)
    assert again.returncode == 0, again.stderr
    wait_gone(int(STARTED.fullmatch(again.stdout)["pid"]))
    assert overview(folder).get("phase") == "done" and record(folder)["code"] == 0
    assert [r["decision"] for r in history(folder) if r.get("decision")] == ["continue", "done"]


def test_stop_with_no_worker_says_so_and_exits_0(project):
    folder = make(project, "s", {})
    result = run(project, "stop", "s")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"samocode: no worker running on {folder}\n",
        "",
    )


def test_stop_gives_up_after_its_timeout_with_6_and_a_second_stop_finishes(project, started):
    make(project, "s", {"Phase": "quality"})
    project.scenario(sequence=[{"sleep": 60, "ignore_term": True}], by_phase=TO_DONE)
    env = {"SAMOCODE_KILL_GRACE": "1"}  # the child ignores TERM: the worker needs 1 s to KILL it
    first = project.run("start", "--config", str(project.config), "--session", "s", env=env)
    assert first.returncode == 0, first.stderr
    pid = int(STARTED.fullmatch(first.stdout)["pid"])
    started.append(pid)
    wait_for(
        lambda: [p for p in fakes(project.root) if ignores(p, signal.SIGTERM)], 15
    )  # its TERM handler is in
    quick = run(project, "stop", "s", "--timeout", "0.3")
    assert quick.returncode == 6, quick.stdout + quick.stderr
    assert quick.stderr == f"samocode: worker pid {pid} still running after 0.3 s\n"
    assert pid_alive(pid)
    patient = run(project, "stop", "s")
    assert patient.returncode == 0 and patient.stdout == f"samocode: stopped worker pid {pid} (exit 130)\n"


def test_stop_never_signals_a_pid_that_does_not_hold_the_lease(project):
    folder = make(project, "s", {})
    lease = folder / ".samocode.lease"
    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4000000 2026-01-01T00:00:00 worker\\n'); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder_proc = subprocess.Popen(
        [sys.executable, "-c", hold, str(lease)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder_proc.stdout.readline() == "held\n"
        result = run(project, "stop", "s")
        assert result.returncode == 6, result.stdout + result.stderr
        assert "lease names pid 4000000, which is not a process holding it here; nothing was signalled" in (
            result.stderr
        )
        assert holder_proc.poll() is None
    finally:
        holder_proc.kill()
        holder_proc.wait(timeout=10)


# -- the run-end record ----------------------------------------------------------------------------


def test_a_run_stopped_by_sigterm_records_143_and_status_and_watch_show_it(project):
    make(project, "s", {"Phase": "quality"})
    project.scenario(sequence=[{"sleep": 60}], by_phase=TO_DONE)
    worker = project.start("--config", str(project.config), "--session", "s")
    try:
        wait_for(lambda: project.records(), 15)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 143
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    folder = project.session_dir("s")
    rec = record(folder)
    assert (rec["pid"], rec["code"], rec["outcome"]) == (worker.pid, 143, "terminated")
    assert rec["message"] == "interrupted; the session continues on the next start"
    for stamp in (rec["started_at"], rec["ended_at"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", stamp), stamp
    status = run(project, "status", "s")
    assert re.search(
        r"^Worker: not running · last run exited 143 \(stopped\) at \d\d-\d\d \d\d:\d\d$", status.stdout, re.M
    )
    data = json.loads(run(project, "status", "s", "--json").stdout)
    assert data["last_run"] == {
        "code": 143,
        "outcome": "terminated",
        "message": rec["message"],
        "at": rec["ended_at"],
    }
    watched = run(project, "watch", "s", "--timeout", "0.2")
    assert watched.returncode == 0 and "Worker: not running · last run exited 143 (stopped)" in watched.stdout
    assert (
        json.loads(run(project, "watch", "s", "--timeout", "0.2", "--json").stdout)["last_run"]["code"] == 143
    )


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_start_refuses_a_worker_out_that_is_not_a_plain_file_without_hanging(project, started, kind):
    folder = make(project, "s", {"Phase": "quality"})
    out = folder / "_worker.out"
    elsewhere = project.root / "elsewhere.txt"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "symlink":
        out.symlink_to(elsewhere)
    else:
        out.mkdir()
    result = run(project, "start", "s", timeout=20)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"samocode: cannot write {out}: ") and result.stderr.count("\n") == 1
    assert project.records() == [] and not elsewhere.exists() and not (folder / "_worker.json").exists()


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        ("not json", "Worker: not running\n"),
        ('{"pid": 1}', "Worker: not running\n"),
        (None, "Worker: not running\n"),  # a directory
        ("huge", "Worker: not running · last run exited 4 (blocked (human_decision): "),
    ],
    ids=["junk", "missing-keys", "directory", "huge-message"],
)
def test_status_survives_any_worker_json_and_stays_under_1kb(project, content, shown):
    folder = make(project, "s", {"Phase": "implementation"})
    target = folder / "_worker.json"
    if content is None:
        target.mkdir()
    elif content == "huge":
        message = "blocked (human_decision): " + "why " * 2000
        stamp = "2026-11-29T14:02:00+00:00"
        target.write_text(
            json.dumps({"pid": 5, "code": 4, "outcome": "blocked", "message": message,
                        "started_at": stamp, "ended_at": stamp})
        )  # fmt: skip
    else:
        target.write_text(content)
    text_out = run(project, "status", "s")
    json_out = run(project, "status", "s", "--json")
    assert text_out.returncode == json_out.returncode == 0, text_out.stderr + json_out.stderr
    assert len(text_out.stdout.encode()) < 1024 and len(json_out.stdout.encode()) < 1024
    assert shown in text_out.stdout
    last = json.loads(json_out.stdout)["last_run"]
    if content == "huge":
        assert last["code"] == 4 and last["at"] == "2026-11-29T14:02:00+00:00"
        assert last["message"].startswith("blocked (human_decision): why why") and last["message"].endswith(
            "..."
        )
        assert re.search(r"at 11-29 \d\d:02\n", text_out.stdout)
    else:
        assert last is None
