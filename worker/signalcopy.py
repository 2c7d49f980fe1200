"""The signal's second copy: the verdict a CLI returns as its final answer, beside `_signal.json`.

`_signal.json` stays the contract the agent texts teach. The copy only saves an iteration whose child
did the work but left no usable file:
- Claude Code gets `--json-schema` (the signal's schema): the CLI offers a `StructuredOutput` tool and
  puts the validated object in its result event (`structured_output`). Calling the tool ends the run,
  so the texts say to call it only as the very last act, after writing the file.
- Codex gets `--output-schema` (a strict schema: what the OpenAI API asks for) and `-o FILE`: the
  last agent message lands in that file. Codex does not check it against the schema, so the worker
  parses and validates it like the file.
The file wins whenever it is valid; a copy that disagrees with it on the decision (status, phase,
needs, for) is recorded, not used. Where the signal came from is recorded as `signal_source`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from worker.errors import InvalidSignal
from worker.phases import Phase
from worker.signals import (
    CHILD_NEEDS,
    CHILD_WAIT_FOR,
    MAX_SIGNAL_BYTES,
    Signal,
    Status,
    parse_signal,
)

FILE = "file"
STRUCTURED = "structured_output"
FINAL = "final_message"


def schema(strict: bool = False) -> dict:
    """The signal as a JSON schema. Strict (Codex, OpenAI's structured outputs): every key required,
    the unused ones null, nothing else allowed; otherwise only `status` is required."""

    def choice(values: list[str]) -> dict:
        return (
            {"type": ["string", "null"], "enum": [*values, None]}
            if strict
            else {"type": "string", "enum": values}
        )

    text = {"type": ["string", "null"]} if strict else {"type": "string"}
    properties = {
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "phase": choice([p.value for p in Phase]),
        "summary": text,
        "reason": text,
        "needs": choice(sorted(n.value for n in CHILD_NEEDS)),
        "for": choice(sorted(w.value for w in CHILD_WAIT_FOR)),
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if strict else ["status"],
        "additionalProperties": False,
    }


def from_text(text: str) -> object:
    """A final message read as JSON (a fenced ```json block too); None when it is not JSON."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    if not body.startswith("{") or len(body) > MAX_SIGNAL_BYTES:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def read_answer(path: Path) -> object:
    """The final message a CLI left in `path` (Codex's -o), as JSON; None when absent or not JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_SIGNAL_BYTES + 1)
    return from_text(raw.decode("utf-8", "replace")) if len(raw) <= MAX_SIGNAL_BYTES else None


@dataclass(frozen=True)
class Chosen:
    """The signal the iteration goes on with, and what the history says about where it came from."""

    signal: Signal | None
    raw: dict | None
    invalid: str  # why no signal can be used; '' when one can
    source: str = ""  # file | structured_output | final_message
    facts: dict | None = None  # for the history: the file's problem, a disagreement


def _decision(signal: Signal) -> tuple:
    return (signal.status, signal.phase, signal.needs, signal.waiting_for)


def choose(
    file_signal: Signal | None, file_raw: dict | None, file_invalid: str, copy: object, copy_source: str
) -> Chosen:
    """The file when valid (a copy that decides otherwise is recorded); else a valid copy; else none."""
    copy_signal, copy_invalid = None, ""
    if copy is not None:
        try:
            copy_signal = parse_signal(copy)
        except InvalidSignal as exc:
            copy_invalid = exc.reason
    if file_signal is not None:
        facts = None
        if copy_signal is not None and _decision(copy_signal) != _decision(file_signal):
            facts = {"signal_disagreement": {"source": copy_source, "copy": copy}}
        return Chosen(file_signal, file_raw, "", FILE, facts)
    if copy_signal is not None and isinstance(copy, dict):
        return Chosen(copy_signal, copy, "", copy_source, {"signal_file_problem": file_invalid})
    if copy_invalid:
        return Chosen(None, None, f"{file_invalid}; its {copy_source.replace('_', ' ')}: {copy_invalid}")
    return Chosen(None, None, file_invalid)
