"""The samocode-run skill followed by a scripted parent inside the real Claude Code CLI.

The plugin is installed in a scratch HOME, by install.sh's symlinks or by `claude plugin marketplace
add` + `claude plugin install`. `claude -p` is asked in words ("run samocode on demo …", so the model
calls the Skill tool) or with a slash command; the scripted model server plays the parent (tests/e2e/
parent.py, which runs the command lines of the skill as the CLI delivered it, through the real Bash
tool) and the children the worker spawns (the phase script of test_worker_real_cli). Proves that the
protocol in the skill takes a session through the Q&A and plan gates to done with a worker that is
not a background task of the chat, and that the worker outlives a parent that ends its turn.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_helpers import GATED_PATH

from worker import bootstrap

from .env import claude_env
from .model_server import Conversation, ModelServer, Reply, Shell, Tool, ToolCall, parse_session_context
from .parent import GIVE_UP, SKILL_MARK, ScriptedParent, is_child, next_action
from .test_plugin_bundle import BUNDLE_DIRS, BUNDLE_FILES, install_sh, marketplace_install
from .test_worker_real_cli import GIT_ID, _project, phase_script

REPO = Path(__file__).resolve().parents[2]
TASK = "Add feature.txt"
CLI_TIMEOUT = 600  # a whole session through both gates takes about 1-2 minutes here
OUTLIVE_TIMEOUT = 180
# After the mid-iteration Status change, the done child lives this long: more than a watch's 0.2 s poll,
# so a watch returns on that change while the worker still runs. The 2 s before the change leave the
# parent a turn to begin that watch.
DONE_ITERATION_S = 1


def child_script(prompt: str) -> list:
    """The children of test_worker_real_cli, plus the summary file the done phase writes. The done
    iteration takes a few seconds, so the parent sees `Phase: done` while the worker still runs."""
    ctx = parse_session_context(prompt)
    actions = phase_script(prompt)
    if ctx.phase == "done" and ctx.session_dir is not None:
        prefix = ctx.fields.get("Artifact prefix", "00-00-00:00")
        summary = ctx.session_dir / f"{prefix}-summary.md"
        overview = ctx.session_dir / "_overview.md"
        # A Status change mid-iteration: a watch begun after `Phase: done` was written returns on it.
        note = f"sed -i 's/^Last Action:.*/Last Action: Writing the summary/' '{overview}'"
        write = f"printf '# Summary\\nfeature.txt added\\n' > '{summary}'"
        return [Shell(f"sleep 2; {note}; sleep {DONE_ITERATION_S}; {write}"), *actions]
    return actions


# --- the installed plugin --------------------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the bundle and the worker, as a clone holds them (no .venv, no .tools)."""
    copy = tmp_path / "samocode"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in BUNDLE_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, copy / name)
    for name in BUNDLE_DIRS:
        shutil.copytree(REPO / name, copy / name, symlinks=True, ignore=ignore)
    return copy


def install(how: str, claude: Path, checkout: Path, home: Path, cwd: Path) -> str:
    """Install the plugin; returns the prefix its slash commands get ("" or "samocode:")."""
    home.mkdir(parents=True, exist_ok=True)
    if how == "symlinks":
        done = install_sh(checkout, home, "--no-venv")
        assert done.returncode == 0, done.stderr
        return ""
    marketplace_install(claude, checkout, claude_env(home, 9), cwd)
    ready_plugin_venv(checkout, home)
    return "samocode:"


def ready_plugin_venv(checkout: Path, home: Path) -> None:
    """The plugin's data-folder venv, as the launcher's first use would make it, but with no pip run:
    its python is this test's (which has the worker's packages), stamped with the plugin's dependencies."""
    data = bootstrap.plugin_data_dir(checkout, {"HOME": str(home)})
    assert data is not None, "the CLI did not record the plugin where the launcher looks for it"
    python = bootstrap.venv_python(data / "venv")
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    stamp = bootstrap.stamp_of(bootstrap.requirements(checkout))
    (data / "venv" / bootstrap.STAMP).write_text(stamp)


def parent_env(home: Path, port: int, claude: Path, tmp_path: Path) -> dict[str, str]:
    """The parent CLI's environment; its Bash tool, the worker and the children inherit it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # The copy has no .venv: the launcher falls back to a python3 that has the worker's packages.
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = claude_env(home, port)
    env.update(GIT_ID)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        SAMOCODE_LAUNCHER="1",  # skip a `samocode` on PATH: the installed copy's worker must run
        CLAUDE_PATH=str(claude),
        SAMOCODE_ENV_FILE=str(tmp_path / "none.env"),
        SAMOCODE_RETRY_DELAY="0.2",
        SAMOCODE_KILL_GRACE="2",
        SAMOCODE_STALL_ITERATIONS="0",
        SAMOCODE_TEST_WATCH_POLL="0.2",  # the parent's watches return soon after each change
    )
    return env


def run_parent(claude: Path, prompt: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """`claude -p PROMPT`; returns (exit code, final result text, all output for messages)."""
    done = subprocess.run(
        [
            str(claude),
            "-p",
            prompt,
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    result = ""
    for line in done.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "result":
            result = str(event.get("result", ""))
    return done.returncode, result, done.stdout[-3000:] + done.stderr[-2000:]


# --- what the parent did -----------------------------------------------------------------------------


def parent_calls(server: ModelServer) -> list[ToolCall]:
    """Every tool call of the parent, in order, with its result (from the last request that has it)."""
    calls: dict[str, ToolCall] = {}
    for request in server.main_requests():
        conv = Conversation(request.body or {})
        if is_child(conv):
            continue
        for call in conv.calls():
            if call.result is not None or call.id not in calls:
                calls[call.id] = call
    return list(calls.values())


def subcommand(call: ToolCall) -> str:
    """`watch` for `"…/scripts/samocode" watch --config …`, "" for any other command."""
    words = str(call.input.get("command", "")).split()
    for i, word in enumerate(words[:-1]):
        if word.strip('"').endswith("/scripts/samocode"):
            return words[i + 1]
    return ""


def assert_parent_kept_to_the_protocol(calls: list[ToolCall]) -> None:
    assert {c.name for c in calls} <= {"Skill", "Bash"}, [c.name for c in calls]
    for call in calls:
        command = str(call.input.get("command", ""))
        assert "_signal.json" not in command and "_overview.md" not in command, command
        assert not call.input.get("run_in_background"), call.input
    watches = [c for c in calls if subcommand(c) == "watch"]
    assert watches
    for call in watches:
        assert call.result is not None and len(call.result.encode()) < 1024, call.result


def at_done_running(report: str) -> bool:
    lines = report.splitlines()
    return any(x.startswith("Phase: done") for x in lines) and any(
        x.startswith("Worker: running") for x in lines
    )


def session_dir(sessions: Path) -> Path:
    (found,) = [p for p in sessions.iterdir() if p.is_dir()]
    return found


def decisions(session: Path) -> list[dict]:
    lines = (session / "_signal_history.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("decision")]


def samocode_pids(marker: str) -> list[int]:
    """Processes whose command line names `marker` (the project's .samocode path): workers of this test."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and ("main.py" in cmdline or " -m worker" in cmdline):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(repo, config, sessions); afterwards no worker of this test may be left (any left is killed)."""
    repo, config, sessions = _project(tmp_path)
    yield repo, config, sessions
    left = samocode_pids(str(config))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"samocode processes left behind: {left}"


def wait_for_no_worker(config: Path, limit: float = 30) -> list[int]:
    deadline = time.monotonic() + limit
    while (left := samocode_pids(str(config))) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def worker(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args, "--config", str(config), "--session", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )


# --- the tests ---------------------------------------------------------------------------------------

ROUTES = {
    # route -> prompt (the slash commands get the install's prefix)
    "words": f'run samocode on demo with task "{TASK}", auto-approve',
    "slash": f'/{{prefix}}samocode-run demo with task "{TASK}", auto-approve',
}


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["symlinks", "marketplace"])
@pytest.mark.parametrize("route", list(ROUTES))
def test_parent_follows_the_skill_through_both_gates_to_done(
    claude_bin: Path, checkout: Path, project, tmp_path: Path, route: str, how: str
) -> None:
    repo, config, sessions = project
    home = tmp_path / "home"
    prefix = install(how, claude_bin, checkout, home, repo)
    parent = ScriptedParent()
    with ModelServer(child_script, converse=parent) as server:
        env = parent_env(home, server.port, claude_bin, tmp_path)
        code, result, output = run_parent(claude_bin, ROUTES[route].format(prefix=prefix), env, repo)
        calls = parent_calls(server)
    assert parent.errors == []
    assert code == 0 and GIVE_UP not in result, output
    assert "is done" in result, result

    session = session_dir(sessions)
    assert [d["phase"] for d in decisions(session)] == GATED_PATH
    summaries = list(session.glob("*-summary.md"))
    assert summaries and summaries[0].read_text().startswith("# Summary")
    assert str(summaries[0].name) in result  # reported from the recorded exit's summary path
    record = json.loads((session / "_worker.json").read_text())
    assert (record["code"], record["outcome"]) == (0, "done")

    # Skill delivery: the natural-language route used the Skill tool, the slash route did not need it.
    skills = [c for c in calls if c.name == "Skill"]
    assert [c.input["skill"] for c in skills] == ([f"{prefix or ''}samocode-run"] if route == "words" else [])
    assert_parent_kept_to_the_protocol(calls)
    subs = [subcommand(c) for c in calls if subcommand(c)]
    assert subs.count("start") == 3 and "approve" in subs and "answer" in subs, subs
    assert "stop" not in subs
    # The phase said done before the done iteration ran: the parent watched on until the worker stopped.
    samocode = [c for c in calls if subcommand(c)]
    early = [
        i for i, c in enumerate(samocode) if subcommand(c) == "watch" and at_done_running(c.result or "")
    ]
    assert early, "no watch saw phase done with the worker running"
    assert all(subcommand(samocode[i + 1]) == "watch" for i in early)
    assert wait_for_no_worker(config) == []
    if how == "marketplace":  # the launcher used the ready venv: no pip run rebuilt it
        data = bootstrap.plugin_data_dir(checkout, {"HOME": str(home)})
        assert data is not None and sys.executable in bootstrap.venv_python(data / "venv").read_text()


@pytest.mark.e2e
def test_implement_command_approves_the_waiting_plan_and_runs_to_done(
    claude_bin: Path, checkout: Path, project, tmp_path: Path
) -> None:
    """/samocode-implement on a plan waiting for approval: the command is the approval."""
    repo, config, sessions = project
    home = tmp_path / "home"
    install("symlinks", claude_bin, checkout, home, repo)
    parent = ScriptedParent()
    with ModelServer(child_script, converse=parent) as server:
        env = parent_env(home, server.port, claude_bin, tmp_path)
        first = worker(config, env, "run", "--task", TASK)
        assert first.returncode == 3, first.stdout + first.stderr
        assert worker(config, env, "answer", "--accept-suggestions").returncode == 0
        second = worker(config, env, "run")
        assert second.returncode == 3 and "plan_approval" in second.stdout, second.stdout + second.stderr
        code, result, output = run_parent(claude_bin, "/samocode-implement demo", env, repo)
        calls = parent_calls(server)
    assert parent.errors == []
    assert code == 0 and "is done" in result, output
    subs = [subcommand(c) for c in calls if subcommand(c)]
    assert subs[:3] == ["status", "approve", "start"], subs
    assert "answer" not in subs
    assert_parent_kept_to_the_protocol(calls)
    assert decisions(session_dir(sessions))[-1]["phase"] == "done"
    assert wait_for_no_worker(config) == []


@pytest.mark.e2e
def test_worker_outlives_a_parent_that_ends_its_turn(
    claude_bin: Path, checkout: Path, project, tmp_path: Path
) -> None:
    """The parent starts the worker and ends its turn, so `claude -p` exits (and reaps whatever it
    started in the background): the worker still reaches the Q&A gate, and `status` says so after."""
    repo, config, sessions = project
    home = tmp_path / "home"
    install("symlinks", claude_bin, checkout, home, repo)
    parent = ScriptedParent()
    with ModelServer(child_script, converse=parent) as server:
        env = parent_env(home, server.port, claude_bin, tmp_path)
        prompt = f'start samocode on demo with task "{TASK}", then leave it running'
        code, result, output = run_parent(claude_bin, prompt, env, repo)
        parent_gone = dt.datetime.now().astimezone()
        alive = samocode_pids(str(config))
        calls = parent_calls(server)
        assert code == 0 and "running on its own" in result, output
        assert [subcommand(c) for c in calls if subcommand(c)] == ["status", "start"]
        started = next(c for c in calls if subcommand(c) == "start").result or ""
        assert alive and f"started worker pid {alive[0]} " in started, (alive, started)
        deadline = time.monotonic() + OUTLIVE_TIMEOUT
        report = ""
        while time.monotonic() < deadline:
            shown = worker(config, env, "status")
            report = shown.stdout
            if shown.returncode == 0 and "Worker: not running" in report:
                break
            time.sleep(1)
    assert parent.errors == []
    assert "last run exited 3 (waiting for qa_answers)" in report, report
    session = session_dir(sessions)
    record = json.loads((session / "_worker.json").read_text())
    assert (record["code"], record["outcome"]) == (3, "waiting")
    assert dt.datetime.fromisoformat(record["ended_at"]) >= parent_gone.replace(microsecond=0)
    assert "_waiting_" in (session / "_qa.md").read_text()
    assert wait_for_no_worker(config) == []


# --- the scripted parent itself, without a CLI (fast) ------------------------------------------------------

SKILL_DIR = "/x/skills/samocode-run"
LAUNCHER = f'"{SKILL_DIR}/scripts/samocode"'


def delivered_skill(text: str | None = None) -> str:
    """The skill as the CLI delivers it: the base-directory line, the body, the variables replaced."""
    body = (text or (REPO / "skills" / "samocode-run" / "SKILL.md").read_text()).split("---", 2)[2]
    return f"{SKILL_MARK} {SKILL_DIR}\n\n" + body.replace("${CLAUDE_SKILL_DIR}", SKILL_DIR).replace(
        "$ARGUMENTS", "demo"
    )


def conversation(request: str, skill: str, *results: tuple[str, str, bool]) -> Conversation:
    """A request after the Skill tool ran: (command, output, failed) per Bash call so far."""
    messages: list[dict] = [
        {"role": "user", "content": [{"type": "text", "text": request}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "s", "name": "Skill", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "s", "content": "Launching skill: samocode-run"},
                {"type": "text", "text": skill},
            ],
        },
    ]
    calls = [("realpath .samocode", "/p/.samocode", False), *results]
    for n, (command, output, failed) in enumerate(calls):
        use = {"type": "tool_use", "id": f"b{n}", "name": "Bash", "input": {"command": command}}
        result = {"type": "tool_result", "tool_use_id": f"b{n}", "content": output, "is_error": failed}
        messages += [{"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]
    return Conversation({"messages": messages})


REQUEST = f'run samocode on demo with task "{TASK}", auto-approve'
WATCH = f"{LAUNCHER} watch --config /p/.samocode --session demo --timeout 540"


def test_parent_runs_the_command_lines_of_the_delivered_skill() -> None:
    action = next_action(conversation(REQUEST, delivered_skill()))
    assert isinstance(action, Tool) and action.name == "Bash"
    assert action.input["command"] == f"{LAUNCHER} status --config /p/.samocode --session demo"
    assert action.input["timeout"] == 600000
    status = (action.input["command"], "Exit code 9\nsamocode: no session named 'demo' in /p/s", True)
    start = next_action(conversation(REQUEST, delivered_skill(), status))
    assert isinstance(start, Tool)
    assert start.input["command"] == f'{LAUNCHER} start --config /p/.samocode --session demo --task "{TASK}"'


def test_parent_watches_while_the_worker_runs_even_at_phase_done() -> None:
    report = "Phase: done (Iteration 1 / Total 8)\nBlocked: no   Waiting for: -\nWorker: running (pid 42)"
    action = next_action(conversation(REQUEST, delivered_skill(), (WATCH, report, False)))
    assert isinstance(action, Tool) and action.input["command"] == WATCH
    ended = report.replace(
        "running (pid 42)", "not running · last run exited 0 (/s/x-summary.md) at 11-29 14:02"
    )
    action = next_action(conversation(REQUEST, delivered_skill(), (WATCH, ended, False)))
    assert isinstance(action, Tool) and " status --config" in action.input["command"]


def test_parent_gives_up_on_a_skill_that_lost_its_protocol() -> None:
    """A skill without the stop rule, or without a command line, cannot be followed: the e2e tests fail."""
    text = (REPO / "skills" / "samocode-run" / "SKILL.md").read_text()
    for old, new in (
        ("Stop watching only when the report says", "Stop when the phase is done or the report says"),
        ('scripts/samocode" watch --config', 'scripts/samocode" status --config'),
        ("timeout: 600000", "a long timeout"),
    ):
        assert old in text
        action = next_action(conversation(REQUEST, delivered_skill(text.replace(old, new))))
        assert isinstance(action, Reply) and "skill unusable" in action.text, (old, action)
