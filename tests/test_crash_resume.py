"""kill -9 of the worker at any moment, then a plain restart, continues the session.

Two kinds of kill points:
- injected: SAMOCODE_TEST_CRASH_AT=<step>[@n] makes the worker SIGKILL itself exactly between two of
  its own writes (marker, child exit, signal read, history line, overview, marker removal, a failed
  attempt's line, the usage wait, the recovery itself), one session per point: every point with the
  loop run in a fork of the test process (the hook is the same; the fork dies as the worker would),
  a handful of them with the worker as a subprocess;
- external: one session whose worker the test kills with SIGKILL 12 times at spread moments
  (while the child works, right after it wrote its signal, while the worker decides), restarting
  it each time; and fifty INT/TERM/HUP at random moments.
Every session must then reach done with a valid overview, every history line valid JSON, exactly
one decision per iteration (the overview's Total Iterations agreeing), every Flow Log line the
worker journaled present, interrupted iterations recorded and re-run, and no process left behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from worker_helpers import decisions, fakes, find_session, history, overview, sleepers, wait_for

from worker.session import SessionPaths, holder

MAIN = Path(__file__).resolve().parents[1] / "main.py"
PHASES = ["investigation", "requirements", "planning", "implementation", "testing", "quality", "done"]


def session_script(pause: float = 0.0, sleep: float = 0.0) -> dict:
    """A whole session; the plan gate is passed with `approve` by the driver."""

    def act(signal_: dict, **extra: object) -> dict:
        return {"signal": signal_, "sleep": sleep, "pause_after_signal": pause, **extra}

    def go(phase: str) -> dict:
        return {"status": "continue", "phase": phase, "summary": f"to {phase}"}

    return {
        "investigation": act(go("requirements"), flow="Investigated", files={"{prefix}-dive-x.md": "d\n"}),
        "requirements": act(go("planning"), flow="Requirements written"),
        "planning": act(
            {"status": "waiting", "for": "plan_approval", "reason": "plan ready"},
            files={"{prefix}-plan-x.md": "## Phase 1\n- [ ] a\n"},
        ),
        "implementation": act(go("testing"), flow="Implemented", files={"notes.md": "n\n"}),
        "testing": act(go("quality")),
        "quality": act(go("done")),
        "done": act({"status": "done", "summary": "all good"}, files={"{prefix}-summary.md": "s\n"}),
    }


def drive(project, name: str, env: dict | None = None, limit: int = 12) -> list[int]:
    """Run the worker until done, approving the plan when asked; returns the exit codes seen.

    An injected crash point counts passes within one worker process: `env` stays until it fired."""
    codes = []
    for _ in range(limit):
        result = project.worker(name, env=env, timeout=60)
        codes.append(result.returncode)
        if result.returncode == 0:
            return codes
        if result.returncode == 3:
            approved = project.run("approve", "--config", str(project.config), "--session", name)
            assert approved.returncode == 0, approved.stderr + result.stdout
        else:
            assert result.returncode == -signal.SIGKILL, (result.returncode, result.stdout, result.stderr)
            env = None  # the injected crash happens once
    raise AssertionError(f"no done after {limit} runs: {codes}")


def assert_resumed_cleanly(project, name: str) -> list[dict]:
    session = find_session(project.sessions, name)
    assert session is not None
    records = history(session)  # strict: a torn or invalid line fails here
    ov = overview(session)
    assert (ov.get("phase"), ov.get("blocked")) == ("done", "no"), ov.text
    made = decisions(session)
    assert [d["phase"] for d in made] == PHASES, [(d["phase"], d["decision"]) for d in made]
    assert [d["total"] for d in made] == list(range(1, len(PHASES) + 1))
    assert ov.get("total iterations") == str(len(PHASES))
    assert made[-1]["decision"] == "done"
    for record in records:  # no lost worker Flow Log entry
        for line in (record.get("overview") or {}).get("flow", []):
            assert line in ov.text, (line, ov.text)
    for record in records:
        if record.get("event") == "interrupted":  # recorded, then run again
            assert any(d["total"] == record["total"] for d in made), record
    assert not (session / ".samocode.iteration.json").exists()
    assert not (session / "_signal.json").is_symlink()
    assert [p for p in os.listdir(session) if p.endswith(".tmp")] == []
    assert holder(SessionPaths(session)) is None  # the lease is free
    assert fakes(project.root) == [] and sleepers(project.root) == []
    return records


# -- injected kill points ------------------------------------------------------------------------------

BAD_SIGNAL_FIRST = [{"signal": "{not json"}]
USAGE_FIRST = [
    {
        "exit": 1,
        "rate_limit": 1,
        "result": {"is_error": True, "api_error_status": 429, "result": "You've hit your session limit"},
    }
]
# @n: the n-th pass in one worker process; the first run ends at the plan gate after 3 iterations,
# the run after the approval does the last 4.
POINTS = {
    "marker@1": [],  # marker written, child not started yet
    "child-exited@2": [],  # child done, its signal not read yet
    "signal-read@3": [],  # signal read, nothing written yet
    "history@1": [],  # decision in the history, overview not yet written
    "history@3": [],  # the same for the plan-approval wait
    "history@4": [],  # the same for the final done (second run)
    "overview@2": [],  # overview written, marker still there
    "marker-cleared@2": [],  # between iterations
    "attempt-failed@1": BAD_SIGNAL_FIRST,  # a failed attempt recorded, retry not started
    "usage-wait@1": USAGE_FIRST,  # while waiting for a usage reset
}
# The worker as a subprocess killing itself at a handful of them; every one of them in-process below.
SUBPROCESS_POINTS = ["marker@1", "child-exited@2", "history@1", "usage-wait@1"]


def assert_interrupted_as_expected(records: list[dict], point: str) -> None:
    step = point.split("@")[0]
    if step in ("marker", "child-exited", "signal-read", "attempt-failed", "usage-wait"):
        assert any(r.get("event") == "interrupted" for r in records), "the dead iteration was not recorded"
    else:  # the decision was already journaled: replayed, not re-run
        assert not any(r.get("event") == "interrupted" for r in records)


@pytest.mark.parametrize("point", SUBPROCESS_POINTS)
def test_an_injected_kill_resumes_to_done(project, point):
    project.scenario(sequence=POINTS[point], by_phase=session_script())
    codes = drive(project, "inj", env={"SAMOCODE_TEST_CRASH_AT": point})
    assert -signal.SIGKILL in codes, f"the worker never reached {point}: {codes}"
    assert_interrupted_as_expected(assert_resumed_cleanly(project, "inj"), point)


def test_a_kill_during_recovery_is_recovered_by_the_next_start(project):
    project.scenario(by_phase=session_script())
    first = project.worker("rec", env={"SAMOCODE_TEST_CRASH_AT": "marker@2"})
    assert first.returncode == -signal.SIGKILL
    second = project.worker("rec", env={"SAMOCODE_TEST_CRASH_AT": "recovery"})
    assert second.returncode == -signal.SIGKILL
    drive(project, "rec")
    records = assert_resumed_cleanly(project, "rec")
    assert len([r for r in records if r.get("event") == "interrupted"]) == 1


# -- external kill -9 ----------------------------------------------------------------------------------


def test_a_stale_signal_from_the_killed_run_is_not_acted_upon(project):
    move = {"signal": {"status": "continue", "phase": "requirements"}, "pause_after_signal": 30}
    block = {"signal": {"status": "blocked", "reason": "second opinion", "needs": "human_decision"}}
    project.scenario(sequence=[move, block])
    proc = project.start("--config", str(project.config), "--session", "stale")
    session = wait_for(lambda: find_session(project.sessions, "stale"))
    wait_for(lambda: (session / "_signal.json").exists(), step=0.01)
    proc.kill()
    proc.wait(timeout=10)
    assert (session / "_signal.json").exists() and fakes(project.root)
    result = project.worker("stale")
    assert result.returncode == 4, result.stderr
    ov = overview(session)
    assert ov.get("phase") == "investigation" and "second opinion" in ov.get("last action")
    interrupted = [r for r in history(session) if r.get("event") == "interrupted"]
    assert len(interrupted) == 1 and '"requirements"' in interrupted[0]["stale_signal"]
    assert [d["decision"] for d in decisions(session)] == ["blocked"]
    assert fakes(project.root) == []


def test_twelve_kills_at_spread_moments_across_one_session_all_resume_to_done(project):
    # Each child works 0.1 s, writes its signal, and exits 0.1 s later.
    project.scenario(by_phase=session_script(pause=0.1, sleep=0.1))
    rng = random.Random(7)
    # Delays after the restarted worker's first child starts: inside the child (before and after
    # its signal), and past its end, while the worker decides or starts the next iteration.
    delays = [0.02, 0.06, 0.12, 0.16, 0.2, 0.23, 0.26, 0.28, 0.32, 0.38]
    delays += [rng.uniform(0.0, 0.4) for _ in range(2)]
    kills = 0
    for delay in delays:
        seen = len(project.records())
        proc = project.start("--config", str(project.config), "--session", "spread")
        try:
            wait_for(lambda p=proc, n=seen: len(project.records()) > n or p.poll() is not None, 20, 0.01)
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        elif proc.returncode == 3:  # it reached the plan gate before the kill
            approved = project.run("approve", "--config", str(project.config), "--session", "spread")
            assert approved.returncode == 0, approved.stderr
    assert kills >= 10, kills
    drive(project, "spread")
    records = assert_resumed_cleanly(project, "spread")
    assert any(r.get("event") == "interrupted" for r in records)


# -- INT, TERM and HUP at random moments ----------------------------------------------------------------

STOPS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def test_fifty_random_int_term_hup_to_the_worker_or_its_group_all_resume_to_done(project):
    """Each try starts the worker in a group of its own (as a terminal does), sends it or its whole
    group INT, TERM or HUP at a random moment, and checks that the stop was recorded with its own
    code and left no process; the sessions are then driven on to done."""
    # Each child lives ~0.1 s (start-up, 0.05 s of work, its signal, 0.03 s more): a stop 0-0.25 s
    # after a child starts lands inside it, in the worker's decision, or in the next iteration.
    project.scenario(by_phase=session_script(pause=0.03, sleep=0.05))
    rng = random.Random(20261129)
    sessions, name, stops = [], "sig0", 0
    for attempt in range(50):
        seen = len(project.records())
        proc = subprocess.Popen(
            [sys.executable, str(MAIN), "--config", str(project.config), "--session", name],
            env=project.env,
            cwd=project.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        sig = rng.choice(list(STOPS))
        try:
            wait_for(lambda p=proc, n=seen: len(project.records()) > n or p.poll() is not None, 20, 0.01)
            time.sleep(rng.uniform(0.0, 0.25))
            # Until we reap it the worker stays at least a zombie, so its pid and group are still ours;
            # once poll() has reaped it (it stopped at a gate first), there is nobody left to signal.
            if proc.poll() is None:
                if rng.random() < 0.5:
                    os.killpg(proc.pid, sig)  # Ctrl-C, or a closing terminal, reaches the whole group
                else:
                    os.kill(proc.pid, sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in err, err
        assert fakes(project.root) == [] and sleepers(project.root) == [], (
            f"try {attempt}: a process was left"
        )
        code = proc.returncode
        if code == STOPS[sig]:
            stops += 1
        elif code == 3:  # it reached the plan gate first
            approved = project.run("approve", "--config", str(project.config), "--session", name)
            assert approved.returncode == 0, approved.stderr
        elif code == 0:  # this session is done: check it, go on with a new one
            assert_resumed_cleanly(project, name)
            sessions.append(name)
            name = f"sig{len(sessions)}"
        else:
            raise AssertionError(f"try {attempt}: {sig!r} gave exit {code}: {err}")
    assert stops >= 35, stops
    drive(project, name)
    assert_resumed_cleanly(project, name)


def _daemons() -> list[int]:
    """`sleep 301` processes: the fake's daemon, which cleared its environment (no tag to find)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"301"]:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_daemon_with_a_cleared_environment_is_swept_after_a_kill_9(project):
    from worker import cgroup

    if cgroup.make("probe") is None:
        pytest.skip(
            "no writable cgroup here: the environment tag is the only trace, and this daemon has none"
        )
    cgroup.remove("probe")
    before = set(_daemons())
    daemon = {"spawn": "daemon", "sleep": 30, "signal": {"status": "continue", "phase": "requirements"}}
    block = {"signal": {"status": "blocked", "reason": "stop here", "needs": "human_decision"}}
    project.scenario(sequence=[daemon, block])
    proc = project.start("--config", str(project.config), "--session", "daemon")
    try:
        wait_for(lambda: set(_daemons()) - before, 20, 0.02)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    left = set(_daemons()) - before
    try:
        assert left, "the daemon should outlive the killed worker until the restart"
        result = project.worker("daemon")
        assert result.returncode == 4, result.stdout + result.stderr
        assert not set(_daemons()) & left, "the restart did not sweep the dead run's daemon"
        interrupted = [
            r for r in history(find_session(project.sessions, "daemon")) if r.get("event") == "interrupted"
        ]
        assert len(interrupted) == 1
    finally:
        for pid in set(_daemons()) & left:
            os.kill(pid, signal.SIGKILL)
