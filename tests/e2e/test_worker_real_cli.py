"""The real worker driving the real Claude Code and Codex CLIs against the scripted loopback server.

A session goes from start to the requirements gate, through the answers and the plan approval, to
done; the costs and tokens the CLIs report land in the history and in `status`; a hung API is ended
by the idle watchdog. Every failure class (a usage limit waited out among them) is in
test_failure_matrix.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from worker_helpers import GATED_PATH

from .env import claude_env, codex_env
from .model_server import Fail, FailKind, ModelServer, Reply, Shell, parse_session_context

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GIT_ID = {
    "GIT_AUTHOR_NAME": "e2e",
    "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
    "GIT_COMMITTER_NAME": "e2e",
    "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
}


def _signal(session: Path, data: dict) -> str:
    return f"printf '%s' '{json.dumps(data)}' > '{session}/_signal.json'"


def _last_action(session: Path, text: str) -> str:
    return f"sed -i 's/^Last Action:.*/Last Action: {text}/' '{session}/_overview.md'"


def phase_script(prompt: str) -> list:
    """What a phase agent would do, decided from the session context and the session's files."""
    ctx = parse_session_context(prompt)
    s, phase = ctx.session_dir, ctx.phase
    if s is None:
        return [Reply("no session")]
    prefix = ctx.fields.get("Artifact prefix", "00-00-00:00")
    if phase == "investigation":
        return [
            # The CLI's own environment, read from its Bash tool: proves the worker stripped CLAUDECODE.
            Shell(f"tr '\\0' '\\n' < /proc/$PPID/environ > '{s}/cli-env.txt'; true"),
            Shell(f"printf '# Dive\\n' > '{s}/{prefix}-dive-demo.md' && {_last_action(s, 'Dive written')}"),
            Shell(_signal(s, {"status": "continue", "phase": "requirements", "summary": "dived"})),
            Reply("Investigation done."),
        ]
    if phase == "requirements":
        qa = s / "_qa.md"
        if qa.exists() and "_waiting_" not in qa.read_text():
            return [
                Shell(f"printf '# Requirements\\n' > '{s}/{prefix}-requirements-demo.md'"),
                Shell(
                    _signal(s, {"status": "continue", "phase": "planning", "summary": "requirements written"})
                ),
                Reply("Requirements done."),
            ]
        return [
            Shell(
                "printf '## Q1: Colour?\\n- A) red\\n- B) blue\\n"
                f"**Suggestion:** A\\n**Answer:** _waiting_\\n'"
                f" > '{qa}'"
            ),
            Shell(_signal(s, {"status": "waiting", "for": "qa_answers", "reason": "one question"})),
            Reply("Questions written."),
        ]
    if phase == "planning":
        return [
            Shell(f"printf '## Phase 1\\n- [ ] write feature.txt\\n' > '{s}/{prefix}-plan-demo.md'"),
            Shell(_signal(s, {"status": "waiting", "for": "plan_approval", "reason": "plan ready"})),
            Reply("Plan written."),
        ]
    if phase == "implementation":
        return [
            Shell("printf 'hello\\n' > feature.txt && git add feature.txt && git commit -qm 'Add feature'"),
            Shell(_signal(s, {"status": "continue", "phase": "testing", "summary": "implemented"})),
            Reply("Implemented."),
        ]
    if phase == "testing":
        return [
            Shell(_signal(s, {"status": "continue", "phase": "quality", "summary": "tests pass"})),
            Reply("ok"),
        ]
    if phase == "quality":
        return [Shell(_signal(s, {"status": "continue", "phase": "done", "summary": "clean"})), Reply("ok")]
    if phase == "done":
        return [Shell(_signal(s, {"status": "done", "summary": "feature.txt added"})), Reply("Done.")]
    return [Reply(f"unknown phase {phase}")]


def _project(tmp_path: Path) -> tuple[Path, Path, Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, **GIT_ID}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    (repo / "README.md").write_text("demo\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=env)
    config = repo / ".samocode"
    config.write_text(f"MAIN_REPO={repo}\nWORKTREES={tmp_path / 'wt'}\nSESSIONS={tmp_path / 'sessions'}\n")
    return repo, config, tmp_path / "sessions"


def _worker(config: Path, env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args, "--config", str(config), "--session", "demo"]
        if args and not args[0].startswith("-")
        else [sys.executable, str(REPO / "main.py"), "--config", str(config), "--session", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _history(sessions: Path) -> list[dict]:
    (session,) = sessions.iterdir()
    return [json.loads(line) for line in (session / "_signal_history.jsonl").read_text().splitlines()]


def _worker_env(cli_env: dict, tmp_path: Path, **extra: str) -> dict:
    return {
        **cli_env,
        **GIT_ID,
        "SAMOCODE_ENV_FILE": str(tmp_path / "none.env"),
        "SAMOCODE_RETRY_DELAY": "0.2",
        "SAMOCODE_KILL_GRACE": "2",
        "SAMOCODE_STALL_ITERATIONS": "0",
        # The worker itself runs "inside" a Claude Code session: the child must not inherit that.
        "CLAUDECODE": "1",
        **extra,
    }


def _run_whole_session(config: Path, sessions: Path, env: dict) -> None:
    first = _worker(config, env, "--task", "Add feature.txt")
    assert first.returncode == 3, first.stdout + first.stderr
    (session,) = sessions.iterdir()
    qa = session / "_qa.md"
    assert "_waiting_" in qa.read_text()
    answered = _worker(config, env, "answer", "--accept-suggestions")
    assert answered.returncode == 0, answered.stderr
    second = _worker(config, env)
    assert second.returncode == 3, second.stdout + second.stderr
    approved = _worker(config, env, "approve")
    assert approved.returncode == 0, approved.stderr
    third = _worker(config, env)
    assert third.returncode == 0, third.stdout + third.stderr
    decisions = [h for h in _history(sessions) if h.get("decision")]
    assert [h["phase"] for h in decisions] == GATED_PATH
    assert all(h["accepted"] for h in decisions)
    worktree = config.parent.parent / "wt" / session.name
    assert (worktree / "feature.txt").read_text() == "hello\n"
    log = subprocess.run(
        ["git", "-C", str(worktree), "log", "--oneline"], capture_output=True, text=True
    ).stdout
    assert "Add feature" in log


def test_claude_session_from_start_through_both_gates_to_done(tmp_path, claude_bin):
    _, config, sessions = _project(tmp_path)
    with ModelServer(phase_script) as server:
        env = _worker_env(claude_env(tmp_path / "home", server.port), tmp_path, CLAUDE_PATH=str(claude_bin))
        _run_whole_session(config, sessions, env)
    (session,) = sessions.iterdir()
    cli_env = (session / "cli-env.txt").read_text().splitlines()
    assert not any(line.startswith("CLAUDECODE=") for line in cli_env)
    assert any(line.startswith("ANTHROPIC_BASE_URL=http://127.0.0.1") for line in cli_env)
    decisions = [h for h in _history(sessions) if h.get("decision")]
    assert all(h["cost_usd"] and h["cost_usd"] > 0 for h in decisions), decisions
    assert all(h["tokens_in"] and h["tokens_out"] for h in decisions)
    status = _worker(config, env, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["phase"] == "done"
    assert report["spend_usd"] == pytest.approx(sum(h["cost_usd"] for h in decisions), rel=1e-6)
    # The phase agent is appended to Claude Code's own system prompt, and its tool list is honoured.
    first = server.main_requests()[0]
    assert "## Signals" in first.system_text() and len(first.system_text()) > 3000
    # 2.1.332 adds a `DeferredToolPlaceholder` to every request: not a tool the agent can use.
    # StructuredOutput comes from --json-schema (the signal's second copy, worker/signalcopy.py).
    tools = sorted(t for t in first.tool_names() if t != "DeferredToolPlaceholder")
    assert tools == ["Bash", "Edit", "Glob", "Grep", "Read", "StructuredOutput", "Write"]


def test_codex_session_from_start_through_both_gates_to_done(tmp_path, codex_bin):
    _, config, sessions = _project(tmp_path)
    with ModelServer(phase_script) as server:
        env = _worker_env(
            codex_env(tmp_path / "home", server.port),
            tmp_path,
            CODEX_PATH=str(codex_bin),
            SAMOCODE_PROVIDER="codex",
            SAMOCODE_PRICE_INPUT_PER_MTOK="1.25",
            SAMOCODE_PRICE_OUTPUT_PER_MTOK="10",
        )
        _run_whole_session(config, sessions, env)
    decisions = [h for h in _history(sessions) if h.get("decision")]
    assert all(h["tokens_in"] and h["tokens_out"] for h in decisions), decisions
    assert all(h["cost_usd"] > 0 and h["cost_estimated"] for h in decisions)


def test_hung_api_is_ended_by_the_idle_watchdog(tmp_path, claude_bin):
    _, config, sessions = _project(tmp_path)
    with ModelServer([Fail(FailKind.HANG), Reply("never")]) as server:
        env = _worker_env(
            claude_env(tmp_path / "home", server.port, api_timeout_ms=600_000),
            tmp_path,
            CLAUDE_PATH=str(claude_bin),
            SAMOCODE_IDLE_TIMEOUT="3",
            SAMOCODE_MAX_RETRIES="0",
        )
        started = time.monotonic()
        result = _worker(config, env, timeout=120)
        elapsed = time.monotonic() - started
    assert result.returncode == 5, result.stdout + result.stderr
    history = _history(sessions)
    assert history[0]["failure"] == "idle" and history[0]["ending"] == "idle"
    assert elapsed < 3 + 2 + 20, elapsed
