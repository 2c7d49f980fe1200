"""`_signal_history.jsonl`: one JSON line per signal, decision and human act, and what they mean.

The worker and every parent command append through `append`, which survives a torn last line; the
questions asked of the history (the last decision, what it waits for, whether a human acted since) are
answered here and nowhere else; whether a plan waits for approval is `plans`'s question.

Every line carries the session's running totals (`sums`: spend per phase, tokens in and out), so
that the spend is read from the newest line instead of summed over a history that grows with the
session. A history written before them is summed once, by the first append that finds none.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

# Events the parent commands write: they end whatever the last decision waited for.
HUMAN_EVENTS = frozenset({"approved", "resumed", "answered", "unblocked", "changes_requested"})
_TAIL_CHUNK = 64 * 1024
SUMS = "sums"
_TOKENS = ("tokens_in", "tokens_out")


def stamp(now: dt.datetime) -> str:
    """A record's `time` (and the overview's `Started:`): local time to the minute."""
    return now.strftime("%Y-%m-%d %H:%M")


def append(path: Path, record: Mapping[str, object]) -> None:
    """Append one JSON line. A torn last line (a crash mid-write) is closed first, so it stays one
    unreadable line instead of swallowing this one. OSError on failure. No fsync: see `journal`."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        newest = _newest(fd, size)
        base = newest.get(SUMS) if newest is not None else None
        if newest is not None and not isinstance(base, dict):  # written before the totals
            base = sums_of(_records(_all(fd)))
        record = {**record, SUMS: add(base, record)}
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
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
        data = _tail(fd, limit) if limit else _all(fd)
    finally:
        os.close(fd)
    return _records(data)


def totals(path: Path) -> dict[str, Any]:
    """The session's running totals (see `add`) from the newest line, or summed over the whole
    history when that line has none (a history from before them). OSError when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return add(None, {})
    try:
        newest = _newest(fd, os.fstat(fd).st_size)
        if newest is not None and isinstance(newest.get(SUMS), dict):
            return add(newest[SUMS], {})
        return sums_of(_records(_all(fd)))
    finally:
        os.close(fd)


def add(sums: Mapping[str, Any] | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """The running totals after `record`: its cost under its phase, its tokens (each attempt's
    cost appears in one line only, so every line counts). None where nothing was ever reported."""
    sums = sums or {}
    cost = {str(k): float(v) for k, v in (sums.get("cost_usd") or {}).items() if _number(v)}
    out: dict[str, Any] = {"cost_usd": cost}
    for key in _TOKENS:
        out[key] = int(total) if _number(total := sums.get(key)) else None
    if _number(value := record.get("cost_usd")):
        phase = str(record.get("phase"))
        cost[phase] = cost.get(phase, 0.0) + float(value)
    for key in _TOKENS:
        if _number(value := record.get(key)):
            out[key] = (out[key] or 0) + int(value)
    return out


def sums_of(records: list[dict]) -> dict[str, Any]:
    sums = add(None, {})
    for record in records:
        sums = add(sums, record)
    return sums


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _records(data: bytes) -> list[dict[str, Any]]:
    records = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return b"".join(iter(lambda: os.read(fd, 1 << 20), b""))


def _newest(fd: int, end: int) -> dict | None:
    """The newest readable record, read backwards from `end` (torn or junk lines skipped)."""
    size = _TAIL_CHUNK
    while end:
        start = max(0, end - size)
        lines = os.pread(fd, end - start, start).split(b"\n")
        for line in reversed(lines[1:] if start else lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                return record
        if not start:
            return None
        size *= 4
    return None


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


def waits_for(field: str, history: list[dict]) -> str:
    """What the session waits for: the overview's `Waiting For` field (lower case; '-' or empty
    names nothing), else the last decision's wait (see `last_wait`)."""
    named = "" if field.strip() in ("", "-") else field.strip()
    return named.lower() or last_wait(history)
