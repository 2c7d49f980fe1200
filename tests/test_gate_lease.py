"""The lease at a gate wait, in-process: a command knocks, the waiting worker lets go and takes it back."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from worker import gatelease
from worker.errors import SessionLocked
from worker.session import Lease, SessionPaths, lease_holder


@pytest.fixture
def waiting(tmp_path: Path):
    paths = SessionPaths(tmp_path)
    lease = Lease(paths)
    lease.acquire()
    stop = threading.Event()
    hold = gatelease.Hold(paths, lease, stop)
    hold.label(f"worker {gatelease.LABEL}")
    yield paths, hold, stop
    stop.set()
    lease.release()


def test_a_command_knocks_and_the_waiting_worker_lets_go_then_takes_the_lease_back(waiting):
    paths, hold, _ = waiting
    served: list[bool] = []

    def worker() -> None:
        end = time.monotonic() + 10
        while time.monotonic() < end and not served:
            if hold.knocked():
                served.append(hold.let_go(None, time.time() + 10))
            time.sleep(0.02)

    thread = threading.Thread(target=worker)
    thread.start()
    command = Lease(paths)
    started = time.monotonic()
    assert gatelease.step_in(paths, command, "approve")
    assert time.monotonic() - started < 2
    assert lease_holder(paths) == (os.getpid(), "approve")
    gatelease.withdraw(paths)
    command.release()
    thread.join(5)
    assert served == [True]
    assert lease_holder(paths) == (os.getpid(), "worker") and gatelease._waiting_pid(paths) == os.getpid()
    assert not (paths.dir / gatelease.KNOCK_FILE).exists()


def test_a_worker_that_is_not_waiting_is_not_knocked_at(tmp_path: Path):
    paths = SessionPaths(tmp_path)
    running = Lease(paths)
    running.acquire()
    try:
        started = time.monotonic()
        assert not gatelease.step_in(paths, Lease(paths), "approve")
        assert time.monotonic() - started < 0.5
        assert not (paths.dir / gatelease.KNOCK_FILE).exists()
        with pytest.raises(SessionLocked):
            Lease(paths).acquire("approve")
    finally:
        running.release()


def test_a_worker_that_does_not_let_go_in_time_leaves_the_command_locked_out(waiting):
    paths, _, _ = waiting
    assert not gatelease.step_in(paths, Lease(paths), "approve", wait=0.3)
    assert not (paths.dir / gatelease.KNOCK_FILE).exists()  # the knock is taken back


def test_a_knock_left_by_a_dead_command_is_removed_not_obeyed(waiting):
    paths, hold, _ = waiting
    dead = subprocess.Popen(["true"])
    dead.wait()
    (paths.dir / gatelease.KNOCK_FILE).write_text(f"{dead.pid} approve\n")
    assert not hold.knocked()
    assert not (paths.dir / gatelease.KNOCK_FILE).exists()


def test_status_sees_the_wait_only_while_its_worker_holds_the_lease(waiting):
    paths, hold, _ = waiting
    until = time.time() + 600
    gatelease.write_wait(paths, "plan_approval", until)
    what, when = gatelease.waiting(paths)
    assert what == "plan_approval" and abs(when.timestamp() - until) < 1
    assert gatelease.describe(what, when).startswith(
        "waiting for plan_approval (worker waits for a reply until "
    )
    hold.label("worker")
    assert gatelease.waiting(paths) is None  # the wait is over even if its file were left behind
    hold.label(f"worker {gatelease.LABEL}")
    gatelease.clear_wait(paths)
    assert gatelease.waiting(paths) is None


def test_fifos_planted_at_the_wait_files_block_neither_status_nor_a_command(waiting):
    paths, hold, _ = waiting
    for name in (gatelease.WAIT_FILE, gatelease.KNOCK_FILE):
        os.mkfifo(paths.dir / name)
    started = time.monotonic()
    assert gatelease.waiting(paths) is None
    assert not hold.knocked()
    gatelease.withdraw(paths)
    assert not gatelease.step_in(paths, Lease(paths), "approve", wait=0.3)
    assert time.monotonic() - started < 2
