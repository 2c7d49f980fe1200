"""The worker loop run in-process: `run_session` with a fake spawn that plays the child and a fake
sleep that moves a fake clock instead of waiting.

The fake child takes the same scenario actions as tests/fakes/fake_claude.py and fake_codex.py (the
session work is the same code, fake_common.perform) and prints Claude Code 2.1.197 stream-json, or
codex's --json events, into the iteration's log, which the real parsers read. Usage: see `InProc`
and tests/test_loop_*inproc.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worker import cli, clirun, process, session
from worker.config import Settings, load_project
from worker.errors import ExitCode, SamocodeError
from worker.loop import run_session
from worker.overview import Overview, parse
from worker.providers.registry import get_provider
from worker.runtime import IterationReport, Outcome, RunOptions, Runtime

FAKES = Path(__file__).resolve().parent / "fakes"
sys.path.insert(0, str(FAKES))
import fake_codex  # noqa: E402 (the fakes are scripts, found on their own folder)
from fake_common import context, perform  # noqa: E402

# Real sleeps never happen in-process, so every setting that would make a test wait is harmless. The
# CLI paths only have to exist (the fake spawn plays the child): a provider, primary or fallback,
# is found as the worker finds it.
DEFAULTS = {
    "stall_iterations": 0,
    "retry_delay": 5.0,
    "claude_path": str(FAKES / "fake_claude.py"),
    "codex_path": str(FAKES / "fake_codex.py"),
}
RESULT = {  # Claude Code's final event of a clean run
    **{"type": "result", "subtype": "success", "is_error": False, "api_error_status": None},
    **{"duration_ms": 10, "num_turns": 2, "result": "done", "stop_reason": "end_turn", "session_id": "fake"},
    "total_cost_usd": 0.0125,
    "usage": {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 50},
}
ENDINGS = {e.value: e for e in process.Ending}


class FakeClock:
    """Wall and monotonic time in one: it moves only when the loop sleeps or a child `takes` time."""

    def __init__(self) -> None:
        self.t = time.time()
        self.slept: list[float] = []  # every sleep the loop asked for, in seconds
        self.on_sleep: Callable[[float], None] = lambda _s: None  # e.g. set the stop event

    def time(self) -> float:
        return self.t

    def sleep(self, stop: threading.Event, seconds: float) -> bool:
        if stop.is_set():
            return True
        self.slept.append(seconds)
        self.t += seconds
        self.on_sleep(seconds)
        return stop.is_set()


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, text: str) -> bool:
        self.sent.append(text)
        return True


class FakeChild:
    """The spawn seam: one call plays one child. Invocation k takes sequence[k] while it lasts,
    then by_phase[phase] (as the fake CLIs do). Action keys beyond fake_claude.py's session work
    (signal, overview, flow, files, code, answer_qa, tear_overview, remove_worktree) and stream
    (result: merged, None for no result line; exit; rate_limit: reset in s; limits; stderr;
    structured_output; final_message): `ending` (timeout | idle | interrupted: how the run ended),
    `takes` (seconds the child uses on the fake clock), `stop` (the stop event is set while the
    child runs: Ctrl-C mid-iteration), `then` (a callable run after the work, given the context).
    A codex argv (`codex exec ...`, the provider or the fallback set to codex) gets codex's --json
    events instead, with fake_codex.py's keys (usage_limit, codex_error, usage)."""

    def __init__(self, clock: FakeClock, stop: threading.Event) -> None:
        self.clock = clock
        self.stop = stop
        self.sequence: list[dict] = []
        self.by_phase: dict[str, dict] = {}
        self.offset = 0  # calls made before the current scenario
        self.calls: list[dict] = []  # argv, phase, cwd, prompt of every child

    def __call__(
        self,
        inv: process.Invocation,
        log_fd: int,
        stderr_fd: int,
        limits: process.Limits,
        on_line: Callable[[bytes], None],
        stop: threading.Event,
        markers: tuple[bytes, ...] = (),
        tag: str = "",
    ) -> process.RunResult:
        prompt = inv.stdin.read_text() if inv.stdin else ""
        ctx = context(prompt)
        n = len(self.calls) - self.offset
        action = self.sequence[n] if n < len(self.sequence) else self.by_phase.get(ctx["Phase"], {})
        argv = list(inv.argv)
        self.calls.append({"argv": argv, "phase": ctx["Phase"], "cwd": str(inv.cwd), "prompt": prompt})
        if action.get("stderr"):
            os.write(stderr_fd, (action["stderr"] + "\n").encode())
        codex = argv[1:2] == ["exec"]
        lines, exit_code = (self._codex if codex else self._claude)(action, ctx, argv)
        if action.get("stop"):
            self.stop.set()
        self.clock.t += float(action.get("takes", 0.0))
        data = b""
        for event in lines:
            line = json.dumps(event).encode()
            data += line + b"\n"
            if not markers or any(m in line for m in markers):
                on_line(line)
        os.write(log_fd, data)
        ending = ENDINGS[action.get("ending", "interrupted" if action.get("stop") else "exited")]
        code = exit_code if ending is process.Ending.EXITED else -15
        return process.RunResult(ending, code, float(action.get("takes", 0.0)), len(data), 0)

    def _claude(self, action: dict, ctx: dict, argv: list[str]) -> tuple[list[dict], int]:
        """Claude Code 2.1.197's stream-json; like the CLI, a cost past --max-budget-usd ends the
        run before the work is done."""
        lines = [
            {"type": "system", "subtype": "init", "session_id": "fake", "claude_code_version": "2.1.197"}
        ]
        result: dict | None = {**RESULT}
        budget = float(argv[argv.index("--max-budget-usd") + 1]) if "--max-budget-usd" in argv else None
        cost = (action.get("result") or {}).get("total_cost_usd", RESULT["total_cost_usd"])
        if budget is not None and cost > budget:
            stopped = {"subtype": "error_max_budget_usd", "is_error": True, "errors": ["budget"]}
            action = {**action, "exit": 1, "result": {**(action.get("result") or {}), **stopped}}
        else:
            self._work(action, ctx)
        if action.get("limits"):
            reset = self.clock.t + action.get("limits_reset", 3600)
            lines.append(_rate_limit("allowed", action["limits"], reset))
        if action.get("rate_limit") is not None:
            lines.append(_rate_limit("rejected", {"five_hour": 1.0}, self.clock.t + action["rate_limit"]))
        if action.get("final_message") is not None:
            result = {**RESULT, "result": action["final_message"]}
        if action.get("structured_output") is not None and "--json-schema" in argv:
            result = {**RESULT, "structured_output": action["structured_output"], "stop_reason": "tool_use"}
        if "result" in action and action["result"] is None:
            result = None
        elif action.get("result"):
            result = {**(result or {}), **action["result"]}
        return [*lines, result] if result is not None else lines, int(action.get("exit", 0))

    def _codex(self, action: dict, ctx: dict, argv: list[str]) -> tuple[list[dict], int]:
        """codex exec --json (0.169.0) events, the failures worded as fake_codex.py words them; the
        session work is done only when the turn completes."""
        lines = [{"type": "thread.started", "thread_id": "fake"}, {"type": "turn.started"}]
        if action.get("rate_limit") is not None:  # fake_codex names the reset from the real clock
            action = {**action, "rate_limit": action["rate_limit"] + self.clock.t - time.time()}
        final, notices = fake_codex.failure(action)
        if final is not None:
            errors = [{"type": "error", "message": m} for m in [*notices, final]]
            return [*lines, *errors, {"type": "turn.failed", "error": {"message": final}}], int(
                action.get("exit", 1)
            ) or 1
        self._work(action, ctx)
        if "result" in action and action["result"] is None:
            return lines, int(action.get("exit", 0))  # the stream ends without turn.completed
        final = action.get("final_message") or (action.get("result") or {}).get("result") or "done"
        lines.append(
            {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": final}}
        )
        for flag in ("-o", "--output-last-message"):
            if flag in argv[:-1]:
                Path(argv[argv.index(flag) + 1]).write_text(final, encoding="utf-8")
        usage = {
            "input_tokens": 12000,
            "cached_input_tokens": 2000,
            "output_tokens": 300,
            **(action.get("usage") or {}),
        }
        return [*lines, {"type": "turn.completed", "usage": usage}], int(action.get("exit", 0))

    @staticmethod
    def _work(action: dict, ctx: dict) -> None:
        perform(action, ctx)
        if action.get("then"):
            action["then"](ctx)


def _rate_limit(status: str, windows: dict, resets: float) -> dict:
    info = {"status": status, "resetsAt": int(resets), "rateLimitType": "five_hour", "isUsingOverage": False}
    used = windows.get("five_hour", 0)
    if status == "allowed" and used >= 0.9:  # the server's early warning: the only utilization 2.1.197 gives
        info.update(status="allowed_warning", utilization=used, surpassedThreshold=0.9)
    return {"type": "rate_limit_event", "rate_limit_info": info, "uuid": "fake", "session_id": "fake"}


class InProc:
    """One scratch project (the `project` fixture of conftest.py) driven in-process.

    loop = InProc(project, monkeypatch)
    loop.scenario(by_phase={"investigation": {"signal": {...}}})
    outcome = loop.run("name", max_retries=1)   # Settings fields as keywords
    loop.history("name"), loop.overview("name"), loop.child.calls, loop.clock.slept, loop.notes.sent
    """

    def __init__(self, project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        # The fake child's git runs in this process's environment: the test's home and identity.
        for key, value in project.env.items():
            if key == "HOME" or key.startswith("GIT_"):
                monkeypatch.setenv(key, value)
        self.project = load_project(project.config)
        self.stop = threading.Event()
        self.clock = FakeClock()
        self.child = FakeChild(self.clock, self.stop)
        self.notes = FakeNotifier()
        self.reports: list[IterationReport] = []
        self.on_report: Callable[[IterationReport], None] = lambda _r: None  # after each iteration
        self.log: list[str] = []
        self.stop_code = [ExitCode.INTERRUPTED]  # what a stop means: set [0] to TERMINATED for SIGTERM

    def scenario(self, sequence: list | None = None, by_phase: dict | None = None) -> None:
        """A new script; the calls so far are kept (`calls` counts them all)."""
        self.child.sequence, self.child.offset = list(sequence or []), len(self.child.calls)
        self.child.by_phase = dict(by_phase or {})

    def run(
        self, name: str, task: str = "", dive: str = "", max_iterations: int = 0, **settings: object
    ) -> Outcome:
        paths, exists = session.resolve(self.project.sessions, name, dt.date.today())
        merged = dataclasses.replace(Settings(), **{**DEFAULTS, **settings})  # type: ignore[arg-type]
        provider = get_provider(merged.provider, merged)
        rt = Runtime(
            settings=merged,
            provider=provider,
            notifier=self.notes,
            stop=self.stop,
            report=self._report,
            log=self.log.append,
            spawn=self.child,
            sleep=self.clock.sleep,
            clock=self.clock.time,
            monotonic=self.clock.time,
            stop_code=self.stop_code,
        )
        self.stop.clear()
        return run_session(paths, exists, self.project, RunOptions(task, dive, max_iterations), rt)

    def _report(self, report: IterationReport) -> None:
        self.reports.append(report)
        self.on_report(report)

    def session(self, name: str) -> Path:
        return session.resolve(self.project.sessions, name, dt.date.today())[0].dir

    def history(self, name: str) -> list[dict]:
        path = self.session(name) / "_signal_history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def decisions(self, name: str) -> list[dict]:
        return [r for r in self.history(name) if r.get("decision")]

    def overview(self, name: str) -> Overview:
        return parse((self.session(name) / "_overview.md").read_text())


def sig(status: str, phase: str | None = None, **extra: str) -> dict:
    return {"status": status, **({"phase": phase} if phase else {}), **extra}


STAY = {"signal": sig("continue", "investigation"), "flow": "looked around"}
BLOCK = {"signal": sig("blocked", reason="stop here", needs="human_decision")}
LIMIT = {
    "exit": 1,
    "result": {"is_error": True, "api_error_status": 429, "result": "You've hit your session limit"},
}
FAR = {**LIMIT, "rate_limit": 3600}  # a usage limit an hour away

# A whole session: the Q&A gate, then (once answered) the plan gate, then on to done.
GATED_SESSION = {
    "investigation": {
        "signal": sig("continue", "requirements", summary="dived"),
        "flow": "Investigated",
        "files": {"{prefix}-dive-x.md": "# dive\n"},
        "overview": {"Last Action": "Dive written"},
    },
    "requirements": {
        "signal": sig("waiting", **{"for": "qa_answers"}, reason="questions"),
        "files": {"_qa.md": "## Q1\n**Answer:** _waiting_\n"},
    },
    "planning": {
        "signal": sig("waiting", **{"for": "plan_approval"}),
        "files": {"{prefix}-plan-x.md": "- [ ] a\n"},
    },
    "implementation": {"signal": sig("continue", "testing"), "code": {"feature.txt": "hello\n"}},
    "testing": {"signal": sig("continue", "quality")},
    "quality": {"signal": sig("continue", "done")},
    "done": {"signal": sig("done", summary="all good")},
}


def providers(loop: InProc) -> list[str]:
    """Which CLI each child was."""
    return ["codex" if c["argv"][1:2] == ["exec"] else "claude" for c in loop.child.calls]


def run_as_cli(loop: InProc, name: str, **settings: object) -> subprocess.CompletedProcess[str]:
    """`loop.run(name)` as `samocode run` ends it: the exit code, and what the CLI layer prints of the
    outcome: clirun.last_line on its stream, or for a SamocodeError out of the loop cli.error_lines
    on stderr. The start and iteration lines are left out; any other exception propagates (a real
    process would have printed a traceback)."""
    argv = ["samocode", "run", "--session", name]
    try:
        outcome = loop.run(name, **settings)
    except SamocodeError as exc:
        return subprocess.CompletedProcess(argv, int(exc.exit_code), "", cli.error_lines(exc) + "\n")
    line, on_stdout = clirun.last_line(outcome)
    line += "\n"
    return subprocess.CompletedProcess(argv, int(outcome.code), *((line, "") if on_stdout else ("", line)))


def signal_as(kind: str) -> Callable[[dict], None]:
    """fake_claude.py's `signal_as` action for the in-process child, as its `then` (after the work,
    as the fake does it): `_signal.json` made a FIFO, a directory, a symlink, N MB or given bytes."""
    from fake_claude import odd_signal

    return lambda ctx: odd_signal(kind, ctx["Session Dir"])
