"""The injected kill points of test_crash_resume.py with the loop in-process: each run armed with a
kill point goes in a fork of the test process (tests/inproc.py's loop, the worker's own
SAMOCODE_TEST_CRASH_AT hook), which dies by SIGKILL exactly where a worker would; the restarts run
in-process. The same checks as the subprocess tests: done, every line valid, one decision per
iteration, interrupted iterations recorded, the lease free."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from typing import Any

import pytest
from inproc import InProc
from test_crash_resume import POINTS, assert_interrupted_as_expected, assert_resumed_cleanly, session_script
from worker_helpers import decisions, overview

from worker import commands, crashpoint
from worker.errors import ExitCode
from worker.session import SessionPaths


def run_killed_at(loop: InProc, name: str, point: str) -> int:
    """The loop in a fork of this process, armed to SIGKILL itself at `point` (the worker's own
    hook): the exit code of a run that ended, or -SIGKILL. The fork's children count on in the loop's
    script, as the fake CLI's counter file does."""
    calls_r, calls_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the fork ends by os._exit or by the kill
        code = 70
        try:
            os.close(calls_r)
            crashpoint._CRASH_AT = point  # the fork's own copy: the test process is not armed
            crashpoint._passes.clear()
            play = loop.child

            def counted(*args: Any, **kwargs: Any) -> Any:
                os.write(calls_w, b".")
                return play(*args, **kwargs)

            loop.child = counted  # type: ignore[assignment]
            code = int(loop.run(name).code)
        finally:
            os._exit(code)
    os.close(calls_w)
    with os.fdopen(calls_r, "rb") as calls:
        made = len(calls.read())
    _, status = os.waitpid(pid, 0)
    loop.child.offset -= made  # the next call takes the script's next step
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def settle() -> None:
    """Wait for this process's non-daemon threads, as a worker's exit does: an overview write frees
    its old copy (a `.old.tmp` link) in one, and a live process's link is not a leftover."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(timeout=2)


def drive_inproc(loop: InProc, name: str, point: str | None = None) -> list[int]:
    """`drive` in-process: with a `point`, the first run (and each until the kill fired) in a fork
    armed at it."""
    codes: list[int] = []
    armed = point is not None
    for _ in range(12):
        code = run_killed_at(loop, name, point) if point and armed else int(loop.run(name).code)
        codes.append(code)
        if code == ExitCode.DONE:
            settle()
            return codes
        if code == ExitCode.WAITING:
            commands.approve(SessionPaths(loop.session(name)), dt.datetime.now())
        else:
            assert code == -signal.SIGKILL, codes
            armed = False
    raise AssertionError(f"no done after 12 runs: {codes}")


@pytest.mark.parametrize("point", list(POINTS))
def test_an_injected_kill_in_process_resumes_to_done(project, monkeypatch, point):
    loop = InProc(project, monkeypatch)
    loop.scenario(sequence=POINTS[point], by_phase=session_script())
    codes = drive_inproc(loop, "inj", point)
    assert -signal.SIGKILL in codes, f"the loop never reached {point}: {codes}"
    assert_interrupted_as_expected(assert_resumed_cleanly(project, "inj"), point)


def test_a_kill_between_history_and_overview_is_replayed_exactly_once(project, monkeypatch):
    loop = InProc(project, monkeypatch)
    loop.scenario(by_phase=session_script())
    assert run_killed_at(loop, "replay", "history@2") == -signal.SIGKILL
    session = loop.session("replay")
    assert overview(session).get("phase") == "requirements"  # the overview lags the history
    assert decisions(session)[-1]["phase_after"] == "planning"
    drive_inproc(loop, "replay")
    ov = overview(session)
    assert ov.text.count("Phase requirements -> planning") == 1
    assert_resumed_cleanly(project, "replay")


def test_a_parent_command_after_the_kill_wins_and_the_count_is_carried_over(project, monkeypatch):
    loop = InProc(project, monkeypatch)
    loop.scenario(by_phase=session_script())
    assert run_killed_at(loop, "sup", "history@3") == -signal.SIGKILL
    session = loop.session("sup")
    assert decisions(session)[-1]["waiting_for"] == "plan_approval"
    assert overview(session).get("blocked") == "no"  # the wait never reached the overview
    commands.approve(SessionPaths(session), dt.datetime.now())
    drive_inproc(loop, "sup")
    ov = overview(session)
    assert "Waiting for plan_approval" in ov.text  # the lost Flow Log line carried over
    assert_resumed_cleanly(project, "sup")
