"""The status report of a session: one small object, rendered as text or JSON under 1 KB.

What it holds is read from the session's files by `statusbuild`; `watch` waits for it to change.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from worker.streamview import limits_text

MAX_BYTES = 1000  # the parent reads the report every minute; keep it well under 1 KiB
_COMPACT = (",", ":")  # JSON without the spaces: some 80 bytes of the budget for the content


@dataclass(frozen=True)
class LastRun:
    """How the last worker run ended (`_worker.json`), for a parent that looks after the fact."""

    code: int
    outcome: str
    message: str
    at: str  # when it ended, ISO-8601 with offset
    why: str  # the short reason shown in the Worker line (not in the JSON)


@dataclass(frozen=True)
class Report:
    session: str
    session_dir: str
    phase: str
    iteration: int | None
    total_iterations: int | None
    blocked: str
    waiting_for: str | None
    last_action: str
    next: str
    worker_pid: int | None  # -1: a worker holds the session but its pid is not known
    spend_usd: float | None
    tokens_in: int | None
    tokens_out: int | None
    rails: dict[str, Any]
    flow: tuple[str, ...]
    commits: tuple[str, ...]
    plan: str | None
    qa: str | None
    last_run: LastRun | None = None
    limits: dict[str, Any] | None = None  # the last reported rate-limit windows
    stream_problem: str | None = None  # what the newest attempt's stream lacked
    provider: str | None = None  # while on the fallback provider: "codex (fallback for claude until 18:10)"
    gate_wait: str | None = None  # "waiting for X (worker waits for a reply until 18:00)"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


def _clipped(report: Report, width: int) -> Report:
    """Long free-text fields cut to `width` characters (flow lines and commits a little shorter)."""
    short = max(20, width * 3 // 4)
    return replace(
        report,
        last_action=_clip(report.last_action, width),
        next=_clip(report.next, width),
        waiting_for=_clip(report.waiting_for, 40) if report.waiting_for else None,
        phase=_clip(report.phase, 40),
        blocked=_clip(report.blocked, 40),
        flow=tuple(_clip(line, short) for line in report.flow),
        commits=tuple(_clip(line, short) for line in report.commits),
        rails={k: _clip(v, width) if isinstance(v, str) else v for k, v in report.rails.items()},
        last_run=_clip_run(report.last_run, width),
        stream_problem=_clip(report.stream_problem, width) if report.stream_problem else None,
    )


def _clip_run(run: LastRun | None, width: int) -> LastRun | None:
    return run and replace(run, message=_clip(run.message, width), why=_clip(run.why, width))


def _rails_text(rails: dict[str, Any]) -> str:
    if "error" in rails:
        return f"unknown ({rails['error']})"
    budget = f"${rails['budget_usd']:g}" if rails.get("budget_usd") else "none"
    stall = str(rails["stall"]) if rails.get("stall") else "off"
    return (
        f"timeout {rails['timeout_s']:g}s · idle {rails['idle_s']:g}s · retries {rails['retries']} · "
        f"budget {budget} · stall {stall}"
    )


def _spend_text(r: Report) -> str:
    if r.spend_usd is None and r.tokens_in is None and r.tokens_out is None:
        return "unknown"
    cost = f"${r.spend_usd:.2f}" if r.spend_usd is not None else "$?"
    return f"{cost} ({r.tokens_in or 0} in / {r.tokens_out or 0} out)"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _ended_at(at: str) -> str:
    try:
        return dt.datetime.fromisoformat(at).strftime("%m-%d %H:%M")
    except ValueError:
        return at[:16]


def _text(r: Report) -> str:
    if r.worker_pid is None:
        worker = "not running"
        if (run := r.last_run) is not None:
            worker = f"not running · last run exited {run.code} ({run.why}) at {_ended_at(run.at)}"
    else:
        worker = f"running (pid {r.worker_pid})" if r.worker_pid > 0 else "running (pid unknown)"
        worker += f" · {r.gate_wait}" if r.gate_wait else ""
    lines = [
        f"Session: {r.session} ({r.session_dir})",
        f"Phase: {r.phase} (Iteration {_count(r.iteration)} / Total {_count(r.total_iterations)})",
        f"Blocked: {r.blocked}   Waiting for: {r.waiting_for or '-'}",
        f"Last Action: {r.last_action}",
        f"Next: {r.next}",
        f"Worker: {worker}",
        f"Spend: {_spend_text(r)}",
        *([f"Limits: {limits_text(r.limits)}"] if r.limits else []),
        *([f"Stream: {r.stream_problem}"] if r.stream_problem else []),
        *([f"Provider: {r.provider}"] if r.provider else []),
        f"Rails: {_rails_text(r.rails)}",
        "Flow:",
        *(f"- {line}" for line in r.flow),
        "Commits:",
        *(f"- {line}" for line in r.commits),
    ]
    return "\n".join(lines)


def _json(r: Report) -> str:
    data = asdict(r)
    data["flow"], data["commits"] = list(r.flow), list(r.commits)
    if r.gate_wait is None:  # only while a worker waits at a gate for a reply (the 1 KB budget)
        del data["gate_wait"]
    if r.provider is None:  # only while on the fallback provider (the 1 KB budget)
        del data["provider"]
    if r.last_run is not None:
        data["last_run"] = {k: data["last_run"][k] for k in ("code", "outcome", "message", "at")}
    return json.dumps(data, ensure_ascii=False, separators=_COMPACT)


def _fit(report: Report, render, budget: int) -> str:
    """The widest rendering that fits in `budget` bytes."""
    out = ""
    for width in (160, 120, 90, 60, 40, 24):
        out = render(_clipped(report, width))
        if len(out.encode("utf-8")) <= budget:
            return out
    # Only absurdly long paths get here: shorten them too, the plan's last (the parent shows the user
    # that path at the plan gate).
    tight = replace(
        _clipped(report, 24), session=_clip(report.session, 40), session_dir=_clip(report.session_dir, 80)
    )
    shorter = (
        lambda r: replace(r, qa=_clip(r.qa, 80) if r.qa else None),
        lambda r: replace(r, plan=_clip(r.plan, 80) if r.plan else None),
    )
    for shorten in shorter:
        out = render(tight)
        if len(out.encode("utf-8")) <= budget:
            return out
        tight = shorten(tight)
    return render(tight)


def render_text(report: Report, budget: int = MAX_BYTES) -> str:
    return _fit(report, _text, budget)


def render_json(report: Report, budget: int = MAX_BYTES, extra: dict[str, Any] | None = None) -> str:
    if not extra:
        return _fit(report, _json, budget)

    def with_extra(r: Report) -> str:
        return json.dumps({**extra, **json.loads(_json(r))}, ensure_ascii=False, separators=_COMPACT)

    return _fit(report, with_extra, budget)
