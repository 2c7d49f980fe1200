"""The provider contract: how an AI CLI is invoked and how its output becomes an IterationRecord.

The loop knows nothing provider-specific. A provider builds the child's argv, environment and
prompt, and turns the child's stdout stream into the same record for every CLI.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from worker.errors import ConfigError
from worker.process import Ending, RunResult
from worker.prompt import AgentSpec

# Variables a child must never inherit: Claude Code refuses (or used to refuse) to start nested.
SCRUBBED_ENV = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_CHILD_SESSION")
# The worker's own secrets: a child that prints its environment (any Bash tool result may) would
# write them into the session's logs. The child's own API keys are not among them.
SECRET_ENV = ("TELEGRAM_BOT_TOKEN",)


class Failure(str, enum.Enum):
    """Why an attempt failed; the loop has one policy per class."""

    USAGE_LIMIT = "usage_limit"  # wait for the reset, then resume
    OVERLOADED = "overloaded"  # 429 without a reset, 5xx, 529: back off and retry
    AUTH = "auth"  # bad credentials: stop, no retry
    REFUSED = "refused"  # the CLI refused to start (nested session, root without sandbox): stop
    API_ERROR = "api_error"  # other API failure (timeouts, connection): retry
    MAX_TURNS = "max_turns"
    BUDGET = "budget"  # the CLI stopped at the budget it was given (--max-budget-usd): block, no retry
    EXIT = "exit"  # non-zero exit without a recognisable cause: retry
    NO_RESULT = "no_result"  # the stream ended without its final event: retry
    TIMEOUT = "timeout"
    IDLE = "idle"
    INTERRUPTED = "interrupted"


# Failures that retrying cannot fix.
FATAL = frozenset({Failure.AUTH, Failure.REFUSED})
# A child the worker stopped failed for that reason, whatever its CLI printed.
STOPPED = {
    Ending.TIMEOUT: Failure.TIMEOUT,
    Ending.IDLE: Failure.IDLE,
    Ending.INTERRUPTED: Failure.INTERRUPTED,
}


@dataclass(frozen=True)
class IterationRequest:
    workflow: str  # workflow.md
    context: str  # the session context section
    agent: AgentSpec
    cwd: Path
    scratch: Path  # a folder (the session's _logs) where a provider may keep files its CLI reads
    budget_usd: float | None = None  # what is left of the tighter spend cap; None = no cap


@dataclass(frozen=True)
class LimitWindow:
    """The last reported state of one rate-limit window (five_hour, seven_day, ...)."""

    name: str
    utilization: float | None = None  # 0..1
    resets_at: float | None = None  # epoch seconds
    status: str = ""  # allowed | allowed_warning | rejected

    def as_dict(self) -> dict:
        reset = self.resets_at
        if reset is not None and reset == int(reset):
            reset = int(reset)
        return {"utilization": self.utilization, "resets_at": reset, "status": self.status or None}


@dataclass(frozen=True)
class IterationRecord:
    """What one attempt cost and how it ended, the same for every provider."""

    failure: Failure | None = None
    message: str = ""  # the final message, or the error
    turns: int | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_cached: int | None = None
    cost_usd: float | None = None
    cost_estimated: bool = False
    resets_at: float | None = None  # epoch seconds, for usage limits
    api_status: int | None = None
    cli: str = ""  # "claude 2.1.332", when known
    stream_problem: str = ""  # what the worker could not understand in the stream; '' when all was
    limits: tuple[LimitWindow, ...] = ()  # the last reported state of each rate-limit window
    signal_copy: object = None  # the CLI's final answer as JSON (worker/signalcopy.py), when it is JSON
    signal_copy_source: str = ""  # structured_output | final_message


class StreamParser(Protocol):
    @property
    def markers(self) -> tuple[bytes, ...]: ...  # only lines containing one of these reach `feed`

    def feed(self, line: bytes) -> None: ...

    def finish(self, run: RunResult, stderr_tail: str) -> IterationRecord: ...


@dataclass(frozen=True)
class Prepared:
    """Everything the process runner needs, from one provider."""

    argv: tuple[str, ...]
    env: dict[str, str]
    prompt: str  # written to a file that becomes the child's stdin
    answer_file: Path | None = None  # where the CLI leaves its final message (the signal's copy)


class Provider(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    def prepare(self, request: IterationRequest) -> Prepared: ...

    def parser(self) -> StreamParser: ...


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if k not in SCRUBBED_ENV and k not in SECRET_ENV}


def find_executable(setting: str, value: str) -> str:
    """An absolute path to the CLI, or ConfigError saying how to fix it."""
    found = shutil.which(value)
    if found:
        return found
    if os.sep in value:
        raise ConfigError(f"{setting}={value}: no executable file there")
    raise ConfigError(f"'{value}' is not on PATH: install the CLI or set {setting} to its path")


def ending_failure(run: RunResult) -> Failure | None:
    """The failure of a child the worker stopped (timeout, idle, interrupt); None when it exited."""
    return STOPPED.get(run.ending)


def last_line(text: str, skip: tuple[str, ...] = ()) -> str:
    """The last non-blank line of a CLI's stderr (lines starting with `skip` are noise), shortened."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(skip or ("\0",))]
    return truncate(lines[-1], 300) if lines else ""


def parse_object(line: bytes) -> dict | None:
    """The line as a JSON object, or None (a fragment, an array, bad UTF-8, absurd nesting)."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def as_number(value: object) -> float | None:
    """A JSON number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


_VERSION = re.compile(rb"\b(\d+\.\d+\.\d+)\b")


@functools.lru_cache(maxsize=8)
def cli_version(path: str, timeout: float = 5.0) -> str:
    """`<path> --version`'s version number ('' when it cannot be had), asked once per worker run.

    Only for what the stream does not say itself (Codex never names its version). The answer is
    read up to 4 KB and the process group is killed afterwards, whatever the executable does."""
    try:
        proc = subprocess.Popen(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=child_env(os.environ),
            start_new_session=True,
        )
    except OSError:
        return ""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while len(out) < 4096 and b"\n" not in out and (left := deadline - time.monotonic()) > 0:
                if not sel.select(left):
                    break
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    found = _VERSION.search(out)
    return found.group(1).decode() if found else ""


def as_int(value: object) -> int | None:
    """A JSON integer (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def truncate(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
