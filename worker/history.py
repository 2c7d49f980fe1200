"""`_signal_history.jsonl`: one JSON line per signal, decision and human act, and what they mean.

The worker and every parent command append through `append`, which survives a torn last line; the
questions asked of the history (the last decision, what it waits for, whether a human acted since,
whether the plan waits for approval) are answered here and nowhere else.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Events the parent commands write: they end whatever the last decision waited for.
HUMAN_EVENTS = frozenset({"approved", "resumed", "answered", "unblocked"})
PLAN_APPROVAL = "plan_approval"
_PLAN_WORDS = re.compile(r"plan[\s_-]*approv|approv\w*\s+(?:of\s+)?(?:the\s+|this\s+)?plan", re.IGNORECASE)
_TAIL_CHUNK = 64 * 1024


def append(path: Path, record: Mapping[str, object]) -> None:
    """Append one JSON line. A torn last line (a crash mid-write) is closed first, so it stays one
    unreadable line instead of swallowing this one. OSError on failure. No fsync: see `journal`."""
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Records, oldest first; torn or junk lines are skipped. With `limit`, only the last `limit`
    lines are read, from the end of the file. OSError when the file cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        data = _tail(fd, limit) if limit else b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
    finally:
        os.close(fd)
    records = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _tail(fd: int, limit: int) -> bytes:
    """The last `limit` lines of the file (fewer when it has fewer)."""
    end = os.fstat(fd).st_size
    size = _TAIL_CHUNK
    while True:
        start = max(0, end - size)
        data = os.pread(fd, end - start, start)
        lines = data.split(b"\n")
        if start > 0:
            lines = lines[1:]  # a partial first line
        if len(lines) > limit or start == 0:
            return b"\n".join(lines[-limit - 1 :])  # the last element may be the empty tail
        size *= 4


def last_decision(history: list[dict]) -> dict | None:
    """The worker's last decision, whatever came after it."""
    return next((r for r in reversed(history) if r.get("decision")), None)


def pending_decision(history: list[dict]) -> dict:
    """The worker's last decision, unless a parent command acted after it ({} then, or when none)."""
    for record in reversed(history):
        if record.get("event") in HUMAN_EVENTS:
            return {}
        if record.get("decision"):
            return record
    return {}


def human_acted_last(history: list[dict]) -> bool:
    """Whether a parent command acted after the worker's last decision."""
    for record in reversed(history):
        if record.get("event") in HUMAN_EVENTS:
            return True
        if record.get("decision"):
            return False
    return False


def last_wait(history: list[dict]) -> str:
    """What the last decision waited for ('' when nothing, or when a parent command acted since)."""
    return str(pending_decision(history).get("waiting_for") or "")


def waits_for_plan_approval(
    blocked: str, waiting_for: str, next_text: str, history: list[dict], signal_wait: str = ""
) -> bool:
    """Whether a session in planning waits for its plan to be approved.

    Waiting (`Blocked: waiting...`): when it waits for the plan or names nothing (the overview's
    `Waiting For`, else the last decision's). Otherwise: when anything says so (`Next` asks for
    plan approval, `Waiting For`, the last decision or the last signal names plan_approval)."""
    wait = _value(waiting_for).lower() or last_wait(history)
    if blocked.lower().startswith("waiting"):
        return wait in ("", PLAN_APPROVAL)
    return bool(_PLAN_WORDS.search(next_text)) or PLAN_APPROVAL in (wait, signal_wait)


def _value(text: str) -> str:
    return "" if text.strip() in ("", "-") else text.strip()
