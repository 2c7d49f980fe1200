"""Issue 13 through the real worker, the real CLIs of each version set and the scripted server: a budget
held inside an iteration, the signal's second copy, the pause before a rate-limit window closes, and
the fallback to the other provider."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from .model_server import Reply, Shell
from .test_failure_matrix import _output, _run_claude
from .test_worker_real_cli import REPO

pytestmark = pytest.mark.e2e


def _attempts(history: list[dict]) -> list[dict]:
    return [h for h in history if h.get("event") == "attempt_failed" or h.get("decision")]


def _started(config: Path, sessions: Path, env: dict, timeout: float = 120) -> dict:
    """`samocode start`, then wait for the detached worker's run-end record."""
    import subprocess

    done = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "start", "--config", str(config), "--session", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode in (0, 3, 4), done.stdout + done.stderr
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = list(sessions.glob("*/_worker.json"))
        if records and "code" in (record := json.loads(records[0].read_text())):
            return record
        time.sleep(0.2)
    raise AssertionError("the started worker did not end in time")


# -- 1. a budget that stops inside an iteration -----------------------------------------------------------
def test_claude_budget_reached_inside_an_iteration_blocks_after_exactly_one_attempt(tmp_path, claude_bin):
    # One call of the scripted server costs more than a cent: the CLI stops after its first call.
    script = [Shell("echo working > work.txt"), Shell("echo more >> work.txt"), Reply("never reached")]
    result, history, _, requests = _run_claude(tmp_path, claude_bin, script, SAMOCODE_MAX_COST_USD="0.01")
    assert result.returncode == 4, _output(result)
    attempts = _attempts(history)
    assert [h.get("failure") or h.get("decision") for h in attempts] == ["budget", "blocked"], history
    assert attempts[0]["cost_usd"] > 0.01, attempts[0]  # overshoot by up to one model call
    assert attempts[-1]["needs"] == "budget", attempts[-1]
    assert "SAMOCODE_MAX_COST_USD $0.01" in attempts[-1]["reason"], attempts[-1]
    assert len(requests) == 1, [r.line() for r in requests]  # checked after each call: one call made
