"""Codex as a provider: `codex exec --json`, the prompt (agent inlined) on stdin.

Observed on codex-cli 0.169.0: with the prompt in argv and an open stdin pipe Codex blocks
forever, so the prompt goes on stdin (`-`) from a file, which ends in EOF. Codex reports tokens
but never cost; cost is estimated from the configured per-million-token prices.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker import signalcopy
from worker.clock import reset_time
from worker.process import RunResult
from worker.prompt import compose
from worker.providers import (
    Failure,
    IterationRecord,
    IterationRequest,
    Prepared,
    as_int,
    child_env,
    cli_version,
    ending_failure,
    find_executable,
    last_line,
    parse_object,
    truncate,
)

if TYPE_CHECKING:
    from worker.config import Settings

_NOISE = ("WARNING: ",)  # stderr lines codex prints on every run (e.g. about PATH aliases)

# Completed items that are an action of the model (the closest thing Codex has to Claude's turns).
_ACTIONS = frozenset({"agent_message", "command_execution", "file_change", "mcp_tool_call", "web_search"})
# The compact shape every Codex release so far prints. Anchored at the line's start these are the
# objects' own keys, never text inside a string, so a completed command's output (up to 1 MiB) need
# not be decoded to be counted; a line in any other shape is parsed whole.
_ITEM_HEAD = re.compile(rb'\{"type":"item\.completed","item":\{"id":"[^"\\]*","type":"([a-z_]+)"')
_REFUSALS = (
    "error: unexpected argument",  # clap: a flag this codex does not know
    "error: invalid value",
    "Error finding codex home",
    "Not inside a trusted directory",
)
_STATUS = re.compile(r"(?:last status:|unexpected status)\s+(\d{3})\b")
_USAGE_LIMIT = re.compile(r"usage limit", re.IGNORECASE)
_OVERLOADED = re.compile(r"high demand|high load|overloaded|too many requests", re.IGNORECASE)
_AUTH = re.compile(
    r"unauthorized|forbidden|incorrect api key|invalid api key|missing environment variable"
    r"|not logged in|log ?in again|refresh token",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CodexProvider:
    path: str
    model: str  # '' = the user's Codex default
    timeout: float
    price_input: float = 0.0  # USD per million tokens
    price_output: float = 0.0
    price_cached: float = 0.0
    signal_copy: bool = True
    name: str = "codex"

    @classmethod
    def from_settings(cls, settings: Settings) -> CodexProvider:
        return cls(
            path=find_executable("CODEX_PATH", settings.codex_path),
            model=settings.codex_model,
            timeout=settings.timeout_override or settings.codex_timeout,
            price_input=settings.price_input_per_mtok,
            price_output=settings.price_output_per_mtok,
            price_cached=settings.price_cached_per_mtok,
            signal_copy=bool(settings.signal_copy),
        )

    def argv(self, cwd: os.PathLike[str] | str, copy: tuple[str, ...] = ()) -> tuple[str, ...]:
        model = ("-m", self.model) if self.model else ()
        return (
            self.path,
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "-C",
            str(cwd),
            *model,
            *copy,
            "-",  # the prompt is read from stdin up to EOF
        )

    def prepare(self, request: IterationRequest) -> Prepared:
        # Codex has no subagents: the phase agent's body is part of the prompt. Its `tools` and
        # `model` frontmatter are Claude's and do not apply.
        copy: tuple[str, ...] = ()
        answer = None
        if self.signal_copy:
            # The signal's second copy: the final message shaped by the schema (Codex does not check
            # it; the worker does) and written to a file of its own.
            schema_file = request.scratch / "signal-schema.json"
            schema_file.write_text(json.dumps(signalcopy.schema(strict=True), indent=1), encoding="utf-8")
            answer = request.scratch / "last-answer.txt"
            copy = ("--output-schema", str(schema_file), "-o", str(answer))
        return Prepared(
            argv=self.argv(request.cwd, copy),
            env=child_env(os.environ),
            prompt=compose(request.workflow, request.context, request.agent),
            answer_file=answer,
        )

    def parser(self) -> CodexStream:
        path = self.path
        prices = Prices(self.price_input, self.price_output, self.price_cached)
        return CodexStream(prices, version_probe=lambda: cli_version(path))


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; all zero = unknown."""

    input: float = 0.0
    output: float = 0.0
    cached: float = 0.0

    def cost(self, uncached: int, cached: int, output: int) -> float | None:
        if not (self.input or self.output or self.cached):
            return None
        # A cached price left at zero means "not configured": bill those tokens as input,
        # so a budget cap errs on the high side.
        cached_rate = self.cached or self.input
        return (uncached * self.input + cached * cached_rate + output * self.output) / 1_000_000


class CodexStream:
    """Reads the `--json` events that matter; everything else is only logged.

    Events are told apart by their parsed top-level "type", whatever the key order or spacing."""

    # Bare quoted values of "type": only lines with one of these reach `feed` (item.started and
    # partial output never do), and a word inside a JSON string (quotes escaped) never matches.
    markers = (b'"item.completed"', b'"turn.completed"', b'"turn.failed"', b'"error"')

    def __init__(self, prices: Prices | None = None, version_probe: Callable[[], str] | None = None) -> None:
        self.prices = prices or Prices()
        self.usage: dict | None = None
        self.failed: str | None = None  # turn.failed's message
        self.last_error = ""  # the last `error` event (retry notices, the final error)
        self.message = ""  # the last agent message
        self.actions = 0
        self._probe = version_probe

    def feed(self, line: bytes) -> None:
        head = _ITEM_HEAD.match(line)
        if head and head.group(1) != b"agent_message" and line.rstrip().endswith(b"}"):
            self.actions += head.group(1).decode() in _ACTIONS
            return
        event = parse_object(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "item.completed":
            item = event.get("item")
            if not isinstance(item, dict):
                return
            if item.get("type") in _ACTIONS:
                self.actions += 1
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                self.message = item["text"]
        elif kind == "turn.completed":
            usage = event.get("usage")
            # The usage is the thread's running total, so the last one counts.
            self.usage = usage if isinstance(usage, dict) else {}
        elif kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.failed = str(message or self.last_error or "turn failed")
        elif kind == "error":
            self.last_error = str(event.get("message") or "")

    def finish(self, run: RunResult, stderr_tail: str) -> IterationRecord:
        usage = self._usage()
        if (stopped := ending_failure(run)) is not None:
            return IterationRecord(failure=stopped, message=f"child {run.ending.value}", **usage)
        if self.failed is not None:
            return _error_record(self.failed, usage)
        if self.usage is None:
            refusal = next((r for r in _REFUSALS if r in stderr_tail), "")
            if refusal:
                return IterationRecord(
                    failure=Failure.REFUSED, message=_first_line_with(stderr_tail, refusal)
                )
            if self.last_error:  # an error event, then the stream ended without turn.failed
                return _error_record(self.last_error, {})
            if run.exit_code == 0 or run.stdout_bytes:
                # It printed, yet nothing said how the turn ended: never a bare retry. Codex never
                # names its version in the stream: asked only now, once per worker run.
                version = self._probe() if self._probe else ""
                what = "the CLI's result event (turn.completed) was not understood"
                problem = f"{what} — CLI version {version or 'unknown'}"
                failure = Failure.NO_RESULT if run.exit_code == 0 else Failure.EXIT
                why = last_line(stderr_tail, _NOISE) if run.exit_code else ""
                message = f"exit {run.exit_code}: {why or problem}" if run.exit_code else problem
                return IterationRecord(
                    failure=failure,
                    message=message,
                    stream_problem=problem,
                    cli=f"codex {version}" if version else "",
                    **usage,
                )
            return IterationRecord(
                failure=Failure.EXIT,
                message=f"exit {run.exit_code}: {last_line(stderr_tail, _NOISE)}".strip(),
            )
        if run.exit_code not in (0, None):
            why = last_line(stderr_tail, _NOISE)
            return IterationRecord(
                failure=Failure.EXIT,
                message=f"exit {run.exit_code} after turn.completed: {why}".strip(),
                **usage,
            )
        return IterationRecord(message=truncate(self.message), **usage)

    def _usage(self) -> dict:
        usage = self.usage or {}
        total_in = as_int(usage.get("input_tokens"))
        cached = as_int(usage.get("cached_input_tokens"))
        out = as_int(usage.get("output_tokens"))  # includes reasoning_output_tokens
        # OpenAI counts cached tokens inside input_tokens; the record keeps them apart, as Claude does.
        uncached = max(total_in - (cached or 0), 0) if total_in is not None else None
        cost = None
        if uncached is not None or out is not None:
            cost = self.prices.cost(uncached or 0, cached or 0, out or 0)
        return {
            "turns": self.actions if self.usage is not None or self.actions else None,
            "tokens_in": uncached,
            "tokens_out": out,
            "tokens_cached": cached,
            "cost_usd": cost,
            "cost_estimated": cost is not None,
        }


def _error_record(message: str, usage: dict) -> IterationRecord:
    """The record of a run that Codex ended with an error message (turn.failed or a last `error`)."""
    failure, status = classify(message)
    return IterationRecord(
        failure=failure,
        message=truncate(message),
        resets_at=reset_time(message) if failure is Failure.USAGE_LIMIT else None,
        api_status=status,
        **usage,
    )


def classify(message: str) -> tuple[Failure, int | None]:
    """A Codex error message -> the failure class and the HTTP status it names, if any."""
    found = _STATUS.search(message)
    status = int(found.group(1)) if found else None
    if _USAGE_LIMIT.search(message):
        return Failure.USAGE_LIMIT, status or 429
    if status in (401, 403) or _AUTH.search(message):
        return Failure.AUTH, status
    if status == 429 or (status is not None and status >= 500) or _OVERLOADED.search(message):
        return Failure.OVERLOADED, status
    return Failure.API_ERROR, status


def _first_line_with(text: str, needle: str) -> str:
    line = next((ln for ln in text.splitlines() if needle in ln), needle)
    return truncate(line, 300)
