"""Claude Code as a provider: `claude -p --output-format stream-json`, agent via `--agents`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.process import RunResult
from worker.prompt import compose
from worker.providers import (
    Failure,
    IterationRecord,
    IterationRequest,
    Prepared,
    as_int,
    child_env,
    ending_failure,
    find_executable,
    last_line,
    truncate,
)

if TYPE_CHECKING:
    from worker.config import Settings

_INTERESTING = (b'"type":"result"', b'"type":"rate_limit_event"', b'"type":"system"')
_REFUSALS = (
    "cannot be used with root/sudo privileges",
    "cannot be launched inside another Claude Code session",
    "Input must be provided either through stdin or as a prompt argument",
)


@dataclass(frozen=True)
class ClaudeProvider:
    path: str
    model: str
    max_turns: int
    timeout: float
    name: str = "claude"

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaudeProvider:
        return cls(
            path=find_executable("CLAUDE_PATH", settings.claude_path),
            model=settings.claude_model,
            max_turns=settings.claude_max_turns,
            timeout=settings.timeout_override or settings.claude_timeout,
        )

    def prepare(self, request: IterationRequest) -> Prepared:
        """The phase agent goes in as an appended system prompt, not as `--agent`: an agent replaces
        Claude Code's own system prompt (its tool guidance) and we want both."""
        agent = request.agent
        agent_file = request.scratch / f"{agent.name}.agent.md"
        agent_file.write_text(agent.body, encoding="utf-8")
        model = agent.model if agent.model and agent.model != "inherit" else self.model
        argv = [
            self.path,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--model",
            model,
            "--max-turns",
            str(self.max_turns),
            "--append-system-prompt-file",
            str(agent_file),
        ]
        if agent.tools:
            argv += ["--tools", ",".join(agent.tools)]
        return Prepared(
            argv=tuple(argv), env=child_env(os.environ), prompt=compose(request.workflow, request.context)
        )

    def parser(self) -> ClaudeStream:
        return ClaudeStream()


class ClaudeStream:
    """Reads the stream-json events that matter; everything else is only logged."""

    # Bare quoted names: any JSON spacing matches, and string contents (escaped quotes) never do.
    markers = (b'"result"', b'"rate_limit_event"', b'"api_retry"')

    def __init__(self) -> None:
        self.result: dict | None = None
        self.resets_at: float | None = None
        self.rejected = False
        self.last_retry_error = ""

    def feed(self, line: bytes) -> None:
        head = line[:80].replace(b" ", b"")
        if not any(key in head for key in _INTERESTING):
            return
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "result":
            self.result = event
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info") or {}
            if info.get("status") == "rejected":
                self.rejected = True
                if isinstance(info.get("resetsAt"), (int, float)):
                    self.resets_at = float(info["resetsAt"])
        elif kind == "system" and event.get("subtype") == "api_retry":
            self.last_retry_error = str(event.get("error") or "")

    def finish(self, run: RunResult, stderr_tail: str) -> IterationRecord:
        usage = self._usage()
        if (stopped := ending_failure(run)) is not None:
            return IterationRecord(failure=stopped, message=f"child {run.ending.value}", **usage)
        result = self.result
        if result is None:
            refusal = next((r for r in _REFUSALS if r in stderr_tail), "")
            if refusal:
                return IterationRecord(failure=Failure.REFUSED, message=last_line(stderr_tail))
            if run.exit_code == 0:
                return IterationRecord(
                    failure=Failure.NO_RESULT, message="stream ended without a result event"
                )
            return IterationRecord(
                failure=Failure.EXIT, message=f"exit {run.exit_code}: {last_line(stderr_tail)}".strip()
            )
        text = result.get("result") if isinstance(result.get("result"), str) else ""
        errors = result.get("errors")
        if not text and isinstance(errors, list):
            text = "; ".join(str(e) for e in errors)
        status = result.get("api_error_status")
        status = status if isinstance(status, int) else None
        failure = None
        if result.get("is_error") or run.exit_code not in (0, None):
            failure = _classify(result, status, self.rejected, self.last_retry_error)
        return IterationRecord(
            failure=failure,
            message=truncate(text),
            resets_at=self.resets_at or (_reset_from_text(text) if failure is Failure.USAGE_LIMIT else None),
            api_status=status,
            **usage,
        )

    def _usage(self) -> dict:
        result = self.result or {}
        usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
        cost = result.get("total_cost_usd")
        cached = as_int(usage.get("cache_read_input_tokens"))
        return {
            "turns": as_int(result.get("num_turns")),
            "tokens_in": as_int(usage.get("input_tokens")),
            "tokens_out": as_int(usage.get("output_tokens")),
            "tokens_cached": cached,
            "cost_usd": float(cost) if isinstance(cost, (int, float)) else None,
        }


def _classify(result: dict, status: int | None, rejected: bool, retry_error: str) -> Failure:
    if result.get("subtype") == "error_max_turns":
        return Failure.MAX_TURNS
    if rejected:
        return Failure.USAGE_LIMIT
    if status == 429:
        # The CLI has already retried the 429 itself (minutes of backoff), so with an API key this
        # is a usage limit without a reset time; only its own "not your usage limit" says otherwise.
        text = str(result.get("result") or "")
        return Failure.OVERLOADED if "not your usage limit" in text else Failure.USAGE_LIMIT
    if status in (401, 403) or retry_error == "authentication_failed":
        return Failure.AUTH
    if status is not None and (status >= 500 or status == 529):
        return Failure.OVERLOADED
    return Failure.API_ERROR


def _reset_from_text(text: str) -> float | None:
    """'You've hit your session limit · resets 5:24pm (UTC)' -> when that is over, epoch seconds."""
    from worker.clock import reset_time

    return reset_time(text)
