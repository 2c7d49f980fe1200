"""Claude Code as a provider: `claude -p --output-format stream-json`, the prompt (workflow.md and the
session context) on stdin, the phase agent in `--append-system-prompt-file`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker import signalcopy
from worker.prompt import compose, write_agent_file
from worker.providers import IterationRequest, Prepared, child_env, find_executable
from worker.providers.claude_stream import ClaudeStream

if TYPE_CHECKING:
    from worker.config import Settings

__all__ = ["ClaudeProvider", "ClaudeStream"]


@dataclass(frozen=True)
class ClaudeProvider:
    path: str
    model: str
    max_turns: int
    timeout: float
    signal_copy: bool = True
    name: str = "claude"

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaudeProvider:
        return cls(
            path=find_executable("CLAUDE_PATH", settings.claude_path),
            model=settings.claude_model,
            max_turns=settings.claude_max_turns,
            timeout=settings.timeout_override or settings.claude_timeout,
            signal_copy=bool(settings.signal_copy),
        )

    def prepare(self, request: IterationRequest) -> Prepared:
        """The phase agent goes in as an appended system prompt, not as `--agent`: an agent replaces
        Claude Code's own system prompt (its tool guidance) and we want both."""
        agent = request.agent
        agent_file = request.scratch / f"{agent.name}.agent.md"
        write_agent_file(agent_file, agent.body)
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
        if self.signal_copy:  # the signal's second copy: a StructuredOutput tool, its input in the result
            argv += ["--json-schema", json.dumps(signalcopy.schema(), separators=(",", ":"))]
        if request.budget_usd is not None:
            # The CLI checks it after each model call: a run may overshoot by one call's cost.
            argv += ["--max-budget-usd", budget_flag(request.budget_usd)]
        return Prepared(
            argv=tuple(argv), env=child_env(os.environ), prompt=compose(request.workflow, request.context)
        )

    def parser(self) -> ClaudeStream:
        return ClaudeStream()


def budget_flag(remaining: float) -> str:
    """The remaining budget as the flag's value, rounded down to 1/100 cent (never zero: a session
    with nothing left is stopped before the iteration starts)."""
    return f"{max(int(remaining * 10_000) / 10_000, 0.0001):.4f}"
