"""What `status` shows about the CLI's streams, from the history alone: the last reported state of
each rate-limit window, and what the newest attempt's stream lacked (its `stream_problem`)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

MAX_WINDOWS = 4  # five_hour, seven_day, and the per-model weekly ones: the report stays under 1 KB


def last_limits(history: Sequence[dict]) -> dict[str, Any] | None:
    """The `limits` of the newest history record that has them: a few windows, only their numbers."""
    for record in reversed(history):
        limits = record.get("limits")
        if isinstance(limits, dict) and limits:
            windows = [(str(k)[:24], v) for k, v in limits.items() if isinstance(v, dict)][:MAX_WINDOWS]
            return {
                name: {
                    "utilization": _number(w.get("utilization")),
                    "resets_at": _number(w.get("resets_at")),
                    "status": str(w.get("status") or "")[:24] or None,
                }
                for name, w in windows
            } or None
    return None


def last_stream_problem(history: Sequence[dict]) -> str | None:
    """The newest attempt's stream problem; None when that attempt's stream was understood.

    An attempt's record is one carrying the provider's facts (`cost_usd`, present even when null)."""
    for record in reversed(history):
        if "cost_usd" in record:
            problem = record.get("stream_problem")
            return problem if isinstance(problem, str) and problem else None
    return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _clock(epoch: float, now: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch)
    same_day = moment.date() == dt.datetime.fromtimestamp(now).date()
    return moment.strftime("%H:%M" if same_day else "%m-%d %H:%M")


def limits_text(limits: dict[str, Any], now: float | None = None) -> str:
    """'five_hour 96% until 17:24 · seven_day 42% until 12-02 16:41' (a past reset: 'reset 17:24')."""
    now = time.time() if now is None else now
    parts = []
    for name, window in limits.items():
        if not isinstance(window, dict):
            continue
        used = _number(window.get("utilization"))
        words = [str(name), f"{used * 100:.0f}%" if used is not None else "?%"]
        status = window.get("status")
        if isinstance(status, str) and status not in ("", "allowed"):
            words.append(status)
        reset = _number(window.get("resets_at"))
        if reset is not None:
            words.append(("until " if reset > now else "reset ") + _clock(reset, now))
        parts.append(" ".join(words))
    return " · ".join(parts)


def fallback_text(history: Sequence[dict], now: float | None = None) -> str | None:
    """'codex (fallback for claude until 18:10)' while the session runs on the fallback provider
    (its last switch went to it); None otherwise."""
    for record in reversed(history):
        if record.get("event") != "provider_switched":
            continue
        until = _number(record.get("until_epoch"))
        if until is None:
            return None  # the last switch went back to the primary
        now = time.time() if now is None else now
        to, primary = str(record.get("to"))[:16], str(record.get("from"))[:16]
        return f"{to} (fallback for {primary} until {_clock(until, now)})"
    return None
