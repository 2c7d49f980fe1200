"""The failure-class table: the real worker, the real CLIs of each version set, the scripted server.

One row per class (success, subscription limit soon and beyond SAMOCODE_MAX_WAIT, API-key 429,
529/500, 401, max turns, not logged in; and Codex's rows as Codex reports them). Each row asserts what
the worker concludes with the pinned CLIs (claude 2.1.197, codex 0.169.0), on every version set:
the conftest runs each test once per set. Timeouts, resets and retries are short so the whole table
stays within a couple of minutes per set.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest

from .env import Login, claude_env, codex_env
from .model_server import Fail, FailKind, ModelServer, Reply, Shell, parse_session_context
from .test_worker_real_cli import _history, _project, _signal, _worker, _worker_env

pytestmark = pytest.mark.e2e

FAST = {
    "SAMOCODE_RETRY_DELAY": "0.2",
    "SAMOCODE_MAX_RETRIES": "1",
    "SAMOCODE_MAX_WAIT": "60",
    "SAMOCODE_USAGE_WAIT": "3600",  # a limit without a reset time: past MAX_WAIT, so the worker stops
}


def _stop_here(prompt: str) -> list:
    """The phase agent's whole work: signal blocked, so the worker ends after one iteration (exit 4)."""
    session = parse_session_context(prompt).session_dir
    stop = _signal(session, {"status": "blocked", "reason": "stop here", "needs": "human_decision"})
    return [Shell(stop), Reply("stopped")]


def _run_claude(tmp_path: Path, claude_bin: Path, script, *, login: Login = Login.API_KEY, **extra: str):
    _, config, sessions = _project(tmp_path)
    with ModelServer(script, unified_reset_in=3) as server:
        cli = claude_env(tmp_path / "home", server.port, login=login, api_timeout_ms=5000)
        if extra.pop("NO_LOGIN", ""):
            cli.pop("ANTHROPIC_API_KEY", None)
        env = _worker_env(cli, tmp_path, CLAUDE_PATH=str(claude_bin), **{**FAST, **extra})
        started = time.monotonic()
        result = _worker(config, env, timeout=120)
        elapsed = time.monotonic() - started
        requests = server.main_requests()
    return result, _history(sessions), elapsed, requests


def _run_codex(tmp_path: Path, codex_bin: Path, script, **extra: str):
    _, config, sessions = _project(tmp_path)
    with ModelServer(script) as server:
        env = _worker_env(
            codex_env(tmp_path / "home", server.port),
            tmp_path,
            CODEX_PATH=str(codex_bin),
            SAMOCODE_PROVIDER="codex",
            SAMOCODE_PRICE_INPUT_PER_MTOK="1.25",
            SAMOCODE_PRICE_OUTPUT_PER_MTOK="10",
            **{**FAST, **extra},
        )
        result = _worker(config, env, timeout=120)
        requests = server.main_requests()
    return result, _history(sessions), requests


def _overview(tmp_path: Path) -> str:
    (session,) = (tmp_path / "sessions").iterdir()
    return (session / "_overview.md").read_text()


def _output(result) -> str:
    return result.stdout + result.stderr


def _waiting_for_usage(result, history: list[dict], reset_in: float | None) -> None:
    """Exit 3, waiting for usage_limit; with a reported reset, the recorded reset is that time."""
    assert result.returncode == 3, _output(result)
    final = history[-1]
    assert final.get("decision") == "waiting" and final.get("waiting_for") == "usage_limit", final
    if reset_in is not None:
        resets = dt.datetime.fromisoformat(final["resets_at"]).timestamp()
        # The CLIs name the reset to the minute ("resets 5:24pm", "try again at 5:24 PM").
        assert abs(resets - (time.time() + reset_in)) < 180, (final, reset_in)


# --- Claude Code ------------------------------------------------------------------------------------
def test_claude_success_records_cost_tokens_and_the_cli_version(tmp_path, claude_bin, cli_set):
    result, history, _, _ = _run_claude(tmp_path, claude_bin, _stop_here)
    assert result.returncode == 4, _output(result)
    (decision,) = [h for h in history if h.get("decision")]
    assert decision["cost_usd"] and decision["cost_usd"] > 0, decision
    assert decision["tokens_in"] and decision["tokens_out"], decision
    assert not decision.get("stream_problem"), decision
    assert decision.get("cli") == f"claude {cli_set.claude}", decision  # from system/init


def test_claude_subscription_limit_resetting_soon_is_waited_out_then_resumed(tmp_path, claude_bin):
    def script(prompt: str) -> list:
        return [Fail(FailKind.UNIFIED_REJECTED, times=1, reset_in=3), *_stop_here(prompt)]

    result, history, elapsed, _ = _run_claude(tmp_path, claude_bin, script, login=Login.OAUTH)
    assert result.returncode == 4, _output(result)
    assert history[0]["event"] == "attempt_failed" and history[0]["failure"] == "usage_limit", history[0]
    assert "Usage limit hit; waiting until" in _overview(tmp_path)
    assert [h["event"] for h in history[1:3]] == ["usage_wait", "usage_resumed"], history
    assert history[1]["source"] == "reported reset", history[1]
    assert history[-1]["decision"] == "blocked" and history[-1]["reason"] == "stop here"
    assert elapsed >= 2, elapsed  # waited for the reset rather than retrying at once


def test_claude_subscription_limit_beyond_max_wait_stops_waiting_with_the_reset(tmp_path, claude_bin):
    script = [Fail(FailKind.UNIFIED_REJECTED, reset_in=2 * 3600)]
    result, history, _, requests = _run_claude(tmp_path, claude_bin, script, login=Login.OAUTH)
    _waiting_for_usage(result, history, reset_in=2 * 3600)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [h["failure"] for h in failed] == ["usage_limit"], history
    assert len(requests) == 1


def test_claude_api_key_429_every_time_stops_waiting_for_the_usage_limit(tmp_path, claude_bin):
    script = [Fail(FailKind.RATE_LIMIT, retry_after=0)]
    result, history, _, _ = _run_claude(tmp_path, claude_bin, script)
    _waiting_for_usage(result, history, reset_in=None)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [(h["failure"], h["api_status"]) for h in failed] == [("usage_limit", 429)], history


@pytest.mark.parametrize(("kind", "status"), [(FailKind.OVERLOADED, 529), (FailKind.SERVER_ERROR, 500)])
def test_claude_server_failure_every_time_is_overloaded_with_its_status(tmp_path, claude_bin, kind, status):
    result, history, _, _ = _run_claude(tmp_path, claude_bin, [Fail(kind)])
    assert result.returncode == 5, _output(result)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [(h["failure"], h["api_status"]) for h in failed] == [("overloaded", status)] * 2, history
    assert history[-1]["event"] == "provider_failed", history[-1]


def test_claude_401_is_auth_after_exactly_one_attempt(tmp_path, claude_bin):
    result, history, _, requests = _run_claude(tmp_path, claude_bin, [Fail(FailKind.UNAUTHORIZED)])
    assert result.returncode == 5, _output(result)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [(h["failure"], h["api_status"]) for h in failed] == [("auth", 401)], history
    assert history[-1]["event"] == "provider_failed", history[-1]
    assert len(requests) == 1, requests


def test_claude_max_turns_keeps_the_cost(tmp_path, claude_bin):
    script = [Shell("true"), Shell("true"), Reply("never reached")]
    result, history, _, _ = _run_claude(
        tmp_path, claude_bin, script, CLAUDE_MAX_TURNS="1", SAMOCODE_MAX_RETRIES="0"
    )
    assert result.returncode == 5, _output(result)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [h["failure"] for h in failed] == ["max_turns"], history
    assert failed[0]["cost_usd"] and failed[0]["cost_usd"] > 0, failed[0]


def test_claude_not_logged_in_is_auth_in_one_attempt_naming_the_fix(tmp_path, claude_bin):
    result, history, elapsed, _ = _run_claude(tmp_path, claude_bin, _stop_here, NO_LOGIN="1")
    assert result.returncode == 5, _output(result)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [h["failure"] for h in failed] == ["auth"], history
    fix = re.compile(r"/login|claude login|setup-token|ANTHROPIC_API_KEY")
    assert fix.search(failed[0]["message"] or ""), failed[0]
    assert fix.search(_output(result)), _output(result)
    assert elapsed < 30, elapsed


# --- Codex ------------------------------------------------------------------------------------------
def test_codex_success_records_tokens_and_an_estimated_cost(tmp_path, codex_bin):
    result, history, _ = _run_codex(tmp_path, codex_bin, _stop_here)
    assert result.returncode == 4, _output(result)
    (decision,) = [h for h in history if h.get("decision")]
    assert decision["tokens_in"] and decision["tokens_out"], decision
    assert decision["cost_usd"] > 0 and decision["cost_estimated"], decision


def test_codex_usage_limit_reached_stops_waiting_with_the_reset(tmp_path, codex_bin):
    result, history, requests = _run_codex(
        tmp_path, codex_bin, [Fail(FailKind.USAGE_LIMIT, reset_in=2 * 3600)]
    )
    _waiting_for_usage(result, history, reset_in=2 * 3600)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [h["failure"] for h in failed] == ["usage_limit"], history
    assert len(requests) == 1


@pytest.mark.parametrize("kind", [FailKind.OVERLOADED, FailKind.SERVER_ERROR])
def test_codex_server_failure_every_time_is_overloaded(tmp_path, codex_bin, kind):
    result, history, _ = _run_codex(tmp_path, codex_bin, [Fail(kind)])
    assert result.returncode == 5, _output(result)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [h["failure"] for h in failed] == ["overloaded"] * 2, history


def test_codex_401_is_auth_after_one_attempt(tmp_path, codex_bin):
    result, history, _ = _run_codex(tmp_path, codex_bin, [Fail(FailKind.UNAUTHORIZED)])
    assert result.returncode == 5, _output(result)
    failed = [h for h in history if h.get("event") == "attempt_failed"]
    assert [h["failure"] for h in failed] == ["auth"], history
