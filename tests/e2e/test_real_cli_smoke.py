"""The real `claude -p` and `codex exec` against the scripted loopback model server, run directly.

These prove the e2e infrastructure (install, environment, server) before the worker is put between.
The last section tests the server on its own with a plain HTTP client (no CLI, fast).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from worker import clock, tested

from . import realcli
from .env import Login, claude_env, codex_env
from .model_server import (
    Fail,
    FailKind,
    ModelServer,
    Reply,
    Shell,
    parse_session_context,
)

CLAUDE_ARGS = ("-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions")
CODEX_ARGS = ("exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox")
AGENT_BODY = "You are the samocode-x test agent (marker 5c1e). Do exactly one action."


def session_prompt(tmp_path: Path, phase: str = "investigation") -> tuple[Path, Path]:
    """A samocode-style prompt file with a session context section; returns (prompt file, session dir)."""
    session = tmp_path / "session"
    session.mkdir()
    prompt = tmp_path / "prompt.md"
    prompt.write_text(
        "# Workflow\nDo one action.\n\n"
        "## Session context\n"
        f"- Session Dir: {session}\n"
        f"- Working Dir: {tmp_path / 'work'}\n"
        f"- Phase: {phase}\n"
        "- Iteration: 1 (cap 5)\n"
    )
    (tmp_path / "work").mkdir()
    return prompt, session


def write_marker_script(text: str) -> list:
    """Pick the script from the prompt, as worker tests will: write a file into the session dir."""
    context = parse_session_context(text)
    if context.session_dir is None:
        return [Reply("no session context")]
    target = context.session_dir / f"{context.phase}.txt"
    return [Shell(f"echo phase={context.phase} > '{target}'"), Reply(f"wrote {target.name}")]


@pytest.mark.e2e
def test_doctor_reports_the_real_clis_versions_inside_the_tested_range(
    cli_set: realcli.VersionSet, claude_bin: Path, codex_bin: Path, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "SAMOCODE_ENV_FILE": str(tmp_path / "none.env"),
        "CLAUDE_PATH": str(claude_bin),
        "CODEX_PATH": str(codex_bin),
        "ANTHROPIC_API_KEY": "sk-test",
    }
    done = subprocess.run(
        [sys.executable, str(realcli.REPO / "main.py"), "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith(f"claude: {cli_set.claude} at ") and "(tested: " in line for line in lines)
    assert any(line.startswith(f"codex (not in use): {cli_set.codex} at ") for line in lines), lines
    assert "API key (ANTHROPIC_API_KEY)" in done.stdout
    assert lines[-1] == "all well"


def assert_limit_with_reset(text: str) -> None:
    """The meaning, not one wording: a limit was hit, and when it resets (2.1.197 says "session limit",
    2.1.332 "5-hour limit"; both "· resets 5:24pm (UTC)")."""
    assert re.search(r"\blimit\b", text, re.IGNORECASE), text
    assert re.search(r"\bresets\b.*\d{1,2}(:\d{2})?\s*[ap]m", text, re.IGNORECASE), text


# --- Claude Code ---------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_installed_cli_versions_are_the_set_and_inside_the_tested_range(
    cli_set: realcli.VersionSet,
) -> None:
    found = realcli.versions(cli_set)
    assert found["claude"].startswith(f"{cli_set.claude} "), found
    assert found["codex"].endswith(f" {cli_set.codex}"), found
    # worker/tested.py is what `samocode doctor` calls tested: a newer release must be added there
    # once the matrix has run green on it, never silently.
    assert tested.CLAUDE.contains(cli_set.claude), (cli_set, tested.CLAUDE.text)
    assert tested.CODEX.contains(cli_set.codex), (cli_set, tested.CODEX.text)


@pytest.mark.e2e
def test_claude_runs_a_bash_tool_call_and_reports_a_cost(
    claude_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, session = session_prompt(tmp_path)
    model_server.script = write_marker_script
    env = claude_env(tmp_path / "home", model_server.port)

    run = realcli.run_cli([str(claude_bin), *CLAUDE_ARGS, "--max-turns", "5"], prompt, tmp_path / "work", env)

    result = run.last("result")
    assert run.returncode == 0, run.stderr
    assert result["is_error"] is False
    assert result["total_cost_usd"] > 0
    assert result["num_turns"] == 2
    assert (session / "investigation.txt").read_text() == "phase=investigation\n"
    assert [r.outcome for r in model_server.main_requests()] == ["shell", "reply"], model_server.describe()


@pytest.mark.e2e
def test_claude_agents_json_with_agent_flag_replaces_system_prompt_and_cuts_tools(
    claude_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, session = session_prompt(tmp_path, phase="planning")
    model_server.script = write_marker_script
    agents = {
        "samocode-x": {
            "description": "test agent",
            "prompt": AGENT_BODY,
            "tools": ["Bash", "Read"],
            "model": "inherit",
        }
    }
    argv = [
        str(claude_bin),
        *CLAUDE_ARGS,
        "--max-turns",
        "5",
        "--agents",
        json.dumps(agents),
        "--agent",
        "samocode-x",
    ]

    run = realcli.run_cli(argv, prompt, tmp_path / "work", claude_env(tmp_path / "home", model_server.port))

    assert run.returncode == 0, run.stderr
    assert run.last("result")["is_error"] is False
    assert (session / "planning.txt").exists()
    init = run.of_type("system", "init")[0]
    assert init["tools"] == ["Bash", "Read"]
    assert "samocode-x" in init["agents"]
    requests = model_server.main_requests()
    assert requests, model_server.describe()
    for request in requests:
        # 2.1.332 adds a `DeferredToolPlaceholder` to every request: not a tool the agent can use.
        assert [t for t in request.tool_names() if t != "DeferredToolPlaceholder"] == ["Bash", "Read"]
        # The agent body takes the place of Claude Code's own (several KB) system prompt.
        assert AGENT_BODY in request.system_text()
        assert len(request.system_text()) < len(AGENT_BODY) + 400


@pytest.mark.e2e
def test_claude_unknown_agent_name_exits_1_before_any_model_call(
    claude_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, _ = session_prompt(tmp_path)
    model_server.script = [Reply("unused")]
    argv = [str(claude_bin), *CLAUDE_ARGS, "--agents", "{}", "--agent", "samocode-missing"]

    run = realcli.run_cli(argv, prompt, tmp_path / "work", claude_env(tmp_path / "home", model_server.port))

    assert run.returncode == 1
    assert "--agent 'samocode-missing' not found" in run.stderr
    assert run.events == []
    assert model_server.main_requests() == []


@pytest.mark.e2e
def test_claude_429_always_ends_in_an_error_result_with_status_429(
    claude_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, _ = session_prompt(tmp_path)
    model_server.script = [Fail(FailKind.RATE_LIMIT, retry_after=0)]
    env = claude_env(tmp_path / "home", model_server.port, max_retries=1)

    run = realcli.run_cli([str(claude_bin), *CLAUDE_ARGS], prompt, tmp_path / "work", env)

    result = run.last("result")
    assert run.returncode == 1
    assert result["is_error"] is True
    assert result["api_error_status"] == 429
    assert result["subtype"] == "success"  # sic: classify on is_error, not subtype
    assert result["total_cost_usd"] == 0
    retries = run.of_type("system", "api_retry")
    assert [(r["error_status"], r["error"]) for r in retries] == [(429, "rate_limit")]
    assert [r.outcome for r in model_server.main_requests()] == ["fail:rate_limit"] * 2


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("kind", "status", "text"),
    [
        (FailKind.OVERLOADED, 529, "529 Overloaded"),
        (FailKind.SERVER_ERROR, 500, "500 Internal server error"),
        (FailKind.HANG, None, "Request timed out"),
    ],
)
def test_claude_server_failures_end_in_error_results(
    claude_bin: Path, model_server: ModelServer, tmp_path: Path, kind: FailKind, status: int | None, text: str
) -> None:
    prompt, _ = session_prompt(tmp_path)
    model_server.script = [Fail(kind)]
    env = claude_env(tmp_path / "home", model_server.port, max_retries=0, api_timeout_ms=2000)

    run = realcli.run_cli([str(claude_bin), *CLAUDE_ARGS], prompt, tmp_path / "work", env)

    result = run.last("result")
    assert run.returncode == 1
    assert (result["is_error"], result["api_error_status"]) == (True, status)
    assert text in result["result"]


@pytest.mark.e2e
def test_claude_stream_error_is_healed_by_the_non_streaming_fallback(
    claude_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, _ = session_prompt(tmp_path)
    model_server.script = [Fail(FailKind.STREAM_ERROR, times=1), Reply("healed")]
    env = claude_env(tmp_path / "home", model_server.port, max_retries=0)

    run = realcli.run_cli([str(claude_bin), *CLAUDE_ARGS], prompt, tmp_path / "work", env)

    assert run.returncode == 0
    assert run.last("result")["result"] == "healed"
    calls = [(r.stream, r.outcome) for r in model_server.main_requests()]
    assert calls == [(True, "fail:stream_error"), (False, "reply")]


@pytest.mark.e2e
def test_claude_oauth_unified_rejected_gives_rate_limit_event_with_reset_and_no_retry(
    claude_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, _ = session_prompt(tmp_path)
    model_server.script = [Fail(FailKind.UNIFIED_REJECTED, reset_in=7200)]
    env = claude_env(tmp_path / "home", model_server.port, login=Login.OAUTH, max_retries=2)
    before = time.time()

    run = realcli.run_cli([str(claude_bin), *CLAUDE_ARGS], prompt, tmp_path / "work", env)

    assert run.returncode == 1
    events = run.of_type("rate_limit_event")
    assert events, run.stdout
    info = events[-1]["rate_limit_info"]
    assert info["status"] == "rejected"
    assert info["rateLimitType"] == "five_hour"
    assert before + 7200 - 5 <= info["resetsAt"] <= time.time() + 7200 + 5
    result = run.last("result")
    assert result["is_error"] is True
    assert result["api_error_status"] == 429
    assert_limit_with_reset(result["result"])
    assert len(model_server.main_requests()) == 1, model_server.describe()  # a rejected 429 is not retried


# --- Codex -------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_codex_exec_routed_by_config_toml_runs_exec_command(
    codex_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, session = session_prompt(tmp_path, phase="testing")
    model_server.script = write_marker_script
    env = codex_env(tmp_path / "home", model_server.port)
    argv = [str(codex_bin), *CODEX_ARGS, "-C", str(tmp_path / "work"), "-"]

    run = realcli.run_cli(argv, prompt, tmp_path / "work", env)

    assert run.returncode == 0, run.stderr
    done = run.last("turn.completed")
    assert done["usage"]["input_tokens"] > 0
    assert done["usage"]["output_tokens"] > 0
    commands = [e["item"] for e in run.of_type("item.completed") if e["item"]["type"] == "command_execution"]
    assert [c["exit_code"] for c in commands] == [0]
    assert (session / "testing.txt").read_text() == "phase=testing\n"
    requests = model_server.main_requests()
    assert [r.outcome for r in requests] == ["shell", "reply"], model_server.describe()
    assert all(r.model == "gpt-5.5" and r.path == "/v1/responses" for r in requests)


@pytest.mark.e2e
def test_codex_usage_limit_reached_gives_turn_failed_with_try_again_time(
    codex_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, _ = session_prompt(tmp_path)
    model_server.script = [Fail(FailKind.USAGE_LIMIT, reset_in=3 * 3600)]
    env = codex_env(tmp_path / "home", model_server.port, max_retries=2)
    argv = [str(codex_bin), *CODEX_ARGS, "-C", str(tmp_path / "work"), "-"]

    started = time.time()
    run = realcli.run_cli(argv, prompt, tmp_path / "work", env)

    assert run.returncode == 1
    message = run.last("turn.failed")["error"]["message"]
    assert "usage limit" in message
    # "try again at 4:56 PM." on the day itself, "try again at Nov 30th, 2026 12:07 AM." past midnight:
    # either way the worker reads the reset 3 h ahead (to the minute the CLI prints).
    reset = clock.reset_time(message, started)
    assert reset is not None, message
    assert abs(reset - (started + 3 * 3600)) <= 180, message
    assert len(model_server.main_requests()) == 1, model_server.describe()  # not retried


@pytest.mark.e2e
def test_codex_stalled_stream_ends_in_idle_timeout_turn_failed(
    codex_bin: Path, model_server: ModelServer, tmp_path: Path
) -> None:
    prompt, _ = session_prompt(tmp_path)
    model_server.script = [Fail(FailKind.STALL)]
    env = codex_env(tmp_path / "home", model_server.port, stream_idle_timeout_ms=1500)
    argv = [str(codex_bin), *CODEX_ARGS, "-C", str(tmp_path / "work"), "-"]

    run = realcli.run_cli(argv, prompt, tmp_path / "work", env)

    assert run.returncode == 1
    assert "idle timeout waiting for SSE" in run.last("turn.failed")["error"]["message"]


# --- the server on its own -------------------------------------------------------------------------------
def _post(port: int, path: str, body: dict, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


_TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def test_server_answers_non_streaming_messages_and_counts_tool_results() -> None:
    with ModelServer([Shell("true"), Reply("finished")]) as server:
        first = {
            "model": "m",
            "stream": False,
            "tools": _TOOLS,
            "messages": [{"role": "user", "content": "go"}],
        }
        status, _, raw = _post(server.port, "/v1/messages?beta=true", first)
        message = json.loads(raw)
        assert status == 200
        assert message["stop_reason"] == "tool_use"
        assert message["content"][0]["input"] == {"command": "true"}
        assert message["usage"]["input_tokens"] > 0
        tool_id = message["content"][0]["id"]
        second = {
            **first,
            "messages": [
                *first["messages"],
                {"role": "assistant", "content": message["content"]},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "ok"}],
                },
            ],
        }
        status, _, raw = _post(server.port, "/v1/messages", second)
        assert json.loads(raw)["content"] == [{"type": "text", "text": "finished"}]
        assert [r.step for r in server.main_requests()] == [0, 1]


def test_server_fails_times_then_goes_on_and_side_requests_never_fail() -> None:
    body = {"model": "m", "stream": False, "tools": _TOOLS, "messages": [{"role": "user", "content": "go"}]}
    with ModelServer([Fail(FailKind.OVERLOADED, times=1), Reply("after")]) as server:
        side = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "quota"}]}
        assert _post(server.port, "/v1/messages", side)[0] == 200
        status, _, raw = _post(server.port, "/v1/messages", body)
        assert (status, json.loads(raw)["error"]["type"]) == (529, "overloaded_error")
        status, _, raw = _post(server.port, "/v1/messages", body)
        assert status == 200
        assert json.loads(raw)["content"][0]["text"] == "after"
        assert [r.outcome for r in server.requests] == ["side", "fail:overloaded", "reply"]


def test_server_stop_is_not_blocked_by_hung_and_stalled_requests() -> None:
    body = {"model": "m", "stream": True, "tools": _TOOLS, "messages": [{"role": "user", "content": "go"}]}
    errors: list[BaseException] = []

    def call(server: ModelServer) -> None:
        try:
            _post(server.port, "/v1/messages", body, timeout=30)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    for kind in (FailKind.HANG, FailKind.STALL):
        server = ModelServer([Fail(kind)]).start()
        client = threading.Thread(target=call, args=(server,), daemon=True)
        client.start()
        deadline = time.monotonic() + 5
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.requests, kind
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3, kind
        client.join(timeout=5)
        assert not client.is_alive(), kind


def test_server_codex_usage_limit_body_and_unified_headers() -> None:
    with ModelServer([Fail(FailKind.USAGE_LIMIT, reset_in=60)]) as server:
        body = {
            "model": "gpt-5.5",
            "stream": True,
            "tools": [{"type": "function", "name": "exec_command"}],
            "input": [],
        }
        status, _, raw = _post(server.port, "/v1/responses", body)
        error = json.loads(raw)["error"]
        assert (status, error["type"], error["resets_in_seconds"]) == (429, "usage_limit_reached", 60)
        anthropic = {
            "model": "m",
            "stream": True,
            "tools": _TOOLS,
            "messages": [{"role": "user", "content": "go"}],
        }
        status, headers, _ = _post(server.port, "/v1/messages", anthropic)
        assert status == 429
        assert headers["anthropic-ratelimit-unified-status"] == "rejected"
        assert abs(int(headers["anthropic-ratelimit-unified-reset"]) - (time.time() + 60)) < 5


def test_parse_session_context_reads_the_worker_lines() -> None:
    text = (
        "intro\n## Session context\n- Session Dir: /s/d\n- Phase: quality\n- Iteration: 2 (cap 5)\n"
        "\n## Next\n- Phase: x\n"
    )
    context = parse_session_context(text)
    assert context.session_dir == Path("/s/d")
    assert context.phase == "quality"
    assert context.fields["Iteration"] == "2 (cap 5)"
    assert parse_session_context("no context").phase is None
