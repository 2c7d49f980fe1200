"""Issue 13 through the real worker, the real CLIs of each version set and the scripted server: a budget
held inside an iteration, the signal's second copy, the pause before a rate-limit window closes, and
the fallback to the other provider."""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import pytest

from .env import Login, claude_env, codex_env
from .model_server import Fail, FailKind, ModelServer, Reply, Shell, Tool, parse_session_context
from .test_failure_matrix import FAST, _output, _run_claude, _run_codex, _stop_here
from .test_worker_real_cli import REPO, _history, _project, _signal, _worker, _worker_env

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


# -- 3. pause before the window closes ------------------------------------------------------------------
def test_claude_window_above_the_threshold_is_waited_out_before_the_next_iteration(tmp_path, claude_bin):
    """The server reports the 5-hour window at 97% (2.1.197 prints a utilization only past the
    server's early-warning threshold): the worker waits for its reset (3 s away), then goes on."""
    _, config, sessions = _project(tmp_path)

    def script(prompt: str) -> list:
        ctx = parse_session_context(prompt)
        if ctx.phase != "investigation":
            return _stop_here(prompt)
        move = {"status": "continue", "phase": "requirements", "summary": "dived"}
        return [Shell(_signal(ctx.session_dir, move)), Reply("done")]

    with ModelServer(script, unified_reset_in=4, unified_windows={"5h": 0.97}) as server:
        cli = claude_env(tmp_path / "home", server.port, login=Login.OAUTH)
        env = _worker_env(cli, tmp_path, CLAUDE_PATH=str(claude_bin), **FAST)
        started = time.monotonic()
        result = _worker(config, env, timeout=120)
        elapsed = time.monotonic() - started
        calls = [r.at for r in server.main_requests()]
    assert result.returncode == 4, _output(result)
    history = _history(sessions)
    events = [h.get("event") or h.get("decision") for h in history]
    assert events == ["continue", "usage_wait", "usage_resumed", "blocked"], history
    assert history[0]["limits"]["five_hour"]["utilization"] == 0.97, history[0]
    wait = history[1]
    assert wait["source"] == "pause" and wait["pause"]["window"] == "five_hour", wait
    assert elapsed >= 3, elapsed
    # The second iteration's first call came after the reset the first one reported.
    gap = [b - a for a, b in itertools.pairwise(calls)]
    assert max(gap) >= 2.5, gap


# -- 4. fall back to the other provider -------------------------------------------------------------------
def test_claude_limited_for_an_hour_runs_on_codex_then_back_on_claude_after_the_reset(
    tmp_path, claude_bin, codex_bin
):
    """Claude's first call hits a subscription limit resetting in an hour; with Codex as the fallback the
    next attempt runs on Codex. Its scripted child then moves the worker's clock past the reset (the test
    hook SAMOCODE_TEST_CLOCK_FILE), and the next iteration runs on Claude again."""
    _, config, sessions = _project(tmp_path)
    skew = tmp_path / "clock-skew"

    def script(prompt: str) -> list:
        ctx = parse_session_context(prompt)
        if ctx.phase != "investigation":
            return _stop_here(prompt)
        move = {"status": "continue", "phase": "requirements", "summary": "dived on the fallback"}
        return [
            Fail(FailKind.UNIFIED_REJECTED, times=1, reset_in=3600),
            Shell(f"echo 3700 > '{skew}' && " + _signal(ctx.session_dir, move)),
            Reply("done"),
        ]

    with ModelServer(script) as server:
        cli = {
            **codex_env(tmp_path / "codex-home", server.port),
            **claude_env(tmp_path / "home", server.port, login=Login.OAUTH),
        }
        env = _worker_env(
            cli,
            tmp_path,
            CLAUDE_PATH=str(claude_bin),
            CODEX_PATH=str(codex_bin),
            SAMOCODE_FALLBACK_PROVIDER="codex",
            SAMOCODE_TEST_CLOCK_FILE=str(skew),
            **FAST,
        )
        record = _started(config, sessions, env)  # through `samocode start`, as the skill runs it
        protocols = [r.protocol for r in server.main_requests()]
    assert record["code"] == 4, record
    history = _history(sessions)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [(h["provider"], h["failure"]) for h in failed] == [("claude", "usage_limit")], history
    switches = [(h["from"], h["to"]) for h in history if h.get("event") == "provider_switched"]
    assert switches == [("claude", "codex"), ("codex", "claude")], history
    decisions = [h for h in history if h.get("decision")]
    assert [(d["provider"], d["decision"]) for d in decisions] == [
        ("codex", "continue"),
        ("claude", "blocked"),
    ]
    assert protocols[0] == "anthropic" and "openai" in protocols and protocols[-1] == "anthropic", protocols
