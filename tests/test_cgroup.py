"""Empty cgroups that killed runs left are removed at the next worker start, of any session.

Real cgroups beside this process (root, or a delegated cgroup v2 subtree); skipped where none can be
made. The kernel stamps a cgroup with real time, and `os.utime` ages one as a run killed long ago.
The worker starts of other test processes remove every stale cgroup too, so a test's aged cgroup
may be gone before the test itself looks.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from inproc import STAY, InProc

from worker import cgroup


@pytest.fixture
def made():
    """Makes `samocode-<tag>` cgroups with this test's own tags; removes whatever is left after it."""
    tags: list[str] = []

    def make(age: float) -> Path:
        tag = "test" + os.urandom(6).hex()
        path = cgroup.make(tag)
        if path is None:
            pytest.skip("no writable cgroup here: the worker makes none either")
        tags.append(tag)
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
        return path

    yield make
    for tag in tags:
        cgroup.remove(tag)


def test_only_empty_cgroups_older_than_a_minute_are_removed(made):
    old, fresh, busy = made(600), made(5), made(600)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (busy / "cgroup.procs").write_text(str(sleeper.pid))
        os.utime(busy, (time.time() - 600,) * 2)  # old for sure after the join: only its process keeps it
        removed = cgroup.remove_stale()
        assert not old.exists()  # removed here, or by another test process's worker start
        assert fresh.exists() and fresh.name not in removed  # it may be between its mkdir and the join
        assert busy.exists() and busy.name not in removed  # its processes wait for the restart's sweep
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_the_line_between_stale_and_fresh_is_stale_after(made):
    just_under, just_over = made(cgroup.STALE_AFTER - 10), made(cgroup.STALE_AFTER + 10)
    removed = cgroup.remove_stale()
    assert not just_over.exists() and just_under.exists() and just_under.name not in removed


def test_a_worker_start_removes_an_empty_cgroup_another_sessions_killed_run_left(project, monkeypatch, made):
    """Tried up to five times: another test process's worker start may take the aged cgroup first.
    Without the removal at start-up, the cgroup is still there after the run and the test fails."""
    loop = InProc(project, monkeypatch)
    for attempt in range(5):
        left = made(3600)
        loop.scenario(sequence=[STAY])
        loop.run(f"fresh{attempt}", task="t", max_iterations=1)
        assert not left.exists()
        if [line for line in loop.log if line.startswith("removed ") and left.name in line]:
            return
    pytest.fail("five times another process removed the cgroup first")
