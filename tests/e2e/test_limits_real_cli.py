"""Issue 13 through the real worker, the real CLIs of each version set and the scripted server: a budget
held inside an iteration, the signal's second copy, the pause before a rate-limit window closes, and
the fallback to the other provider."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from .model_server import Reply, Shell, Tool, parse_session_context
from .test_failure_matrix import _output, _run_claude, _run_codex, _stop_here
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


# -- 2. no iteration lost to a forgotten signal ---------------------------------------------------------
COPY = {"status": "continue", "phase": "requirements", "summary": "dive written, no file"}


def _forgets_the_file(final):
    """Investigation does its work and answers with the signal, but writes no _signal.json; the next
    phase stops the session (exit 4)."""

    def script(prompt: str) -> list:
        ctx = parse_session_context(prompt)
        if ctx.phase != "investigation":
            return _stop_here(prompt)
        return [Shell(f"echo '# dive' > '{ctx.session_dir}/dive.md'"), final]

    return script


def _copied(history: list[dict], source: str) -> None:
    decisions = [h for h in history if h.get("decision")]
    assert [d["decision"] for d in decisions] == ["continue", "blocked"], history
    first = decisions[0]
    assert first["signal_source"] == source and first["signal"] == COPY, first
    assert first["signal_file_problem"] == "no _signal.json was written", first
    assert not [h for h in history if h.get("event") == "attempt_failed"], history


def test_claude_child_without_a_signal_file_moves_on_through_structured_output(tmp_path, claude_bin):
    script = _forgets_the_file(Tool("StructuredOutput", COPY))
    result, history, _, requests = _run_claude(tmp_path, claude_bin, script)
    assert result.returncode == 4, _output(result)
    _copied(history, "structured_output")
    first = requests[0]
    assert "StructuredOutput" in first.tool_names(), first.tool_names()


def test_codex_child_without_a_signal_file_moves_on_through_its_final_message(tmp_path, codex_bin):
    script = _forgets_the_file(Reply(json.dumps(COPY)))
    result, history, requests = _run_codex(tmp_path, codex_bin, script)
    assert result.returncode == 4, _output(result)
    _copied(history, "final_message")
    text = requests[0].body.get("text") or {}
    assert text.get("format", {}).get("type") == "json_schema", text  # --output-schema reached the API
