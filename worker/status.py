"""The status report of a session: one small object, rendered as text or JSON under 1 KB.

Built from the files alone (overview, history, last signal, lease, git log): no model call, and
nothing heavier than the overview parser is imported, so the parent can ask for it every minute.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from worker import flowlog, gatelease, gitops, overview, plans, runrecord
from worker import history as hist
from worker.config import Settings
from worker.errors import InvalidSignal, OverviewError
from worker.session import SessionPaths, holder
from worker.signals import read_signal
from worker.streamview import fallback_text, last_limits, last_stream_problem, limits_text

MAX_BYTES = 1000  # the parent reads the report every minute; keep it well under 1 KiB
_COMPACT = (",", ":")  # JSON without the spaces: some 80 bytes of the budget for the content
HISTORY_TAIL = 200  # lines read for the last decision, wait, limits and stream problem
POLL = 1.0  # seconds between watch's looks at the overview and the lease
START_GRACE = 10.0  # how long watch waits for a worker (or a new session's folder) to appear
_WORKING_DIR = re.compile(r"^Working Dir:[ \t]*(?P<dir>.+?)[ \t]*$", re.MULTILINE)
_NONE = ("", "-")
_BULLET = re.compile(r"^[-*+][ \t]+")


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


def rails_of(settings: Settings | None, problem: str = "") -> dict[str, Any]:
    """The limits a worker started now would run with (from the environment and `.env`)."""
    if settings is None:
        return {"error": problem or "settings unknown"}
    timeout = settings.timeout_override or (
        settings.codex_timeout if settings.provider == "codex" else settings.claude_timeout
    )
    return {
        "provider": settings.provider,
        "timeout_s": timeout,
        "idle_s": settings.idle_timeout,
        "retries": settings.max_retries,
        "budget_usd": settings.max_cost_usd or None,
        "stall": settings.stall_iterations or None,
    }


def _number(text: str) -> int | None:
    match = re.match(r"\d+", text)
    return int(match.group()) if match else None


def _value(text: str) -> str | None:
    return None if text.strip() in _NONE else text.strip()


def waiting_for(ov: overview.Overview | None, history: list[dict], paths: SessionPaths) -> str | None:
    """The overview's `Waiting For` when the field is there ('-' means nothing), else the last
    decision's `waiting_for` (unless a parent command came after it), else the last signal's `for`."""
    if ov is not None and "waiting for" in ov.fields:
        return _value(ov.get("waiting for"))
    if hist.human_acted_last(history):
        return None
    if wait := hist.last_wait(history):
        return wait
    try:
        signal, _ = read_signal(paths.signal)
    except InvalidSignal:
        return None
    return signal.waiting_for.value if signal.waiting_for else None


def newest_summary(session_dir: Path) -> str | None:
    found = [p for p in session_dir.glob("*-summary*.md") if p.is_file()]
    return str(max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))) if found else None


def last_run(paths: SessionPaths, waiting: str | None) -> LastRun | None:
    """The run-end record with the reason for the Worker line: for 0 the summary's path, for 3
    what it waited for, for 130/143 "stopped", otherwise the run's own message."""
    record = runrecord.read(paths.worker_record)
    if record is None:
        return None
    why = record.message or record.outcome
    if record.code == 0:
        why = newest_summary(paths.dir) or "done"
    elif record.code == 3:
        said = re.match(r"waiting for ([a-z_]+)", record.message)
        why = f"waiting for {said.group(1) if said else waiting}" if said or waiting else why
    elif record.code in (130, 143):
        why = "stopped"
    return LastRun(record.code, record.outcome, record.message, record.ended_at, why)


def _spend(sums: dict[str, Any]) -> tuple[float | None, int | None, int | None]:
    """The session's spend and tokens from the history's running totals (see `history.add`)."""
    costs = sums["cost_usd"]
    return (sum(costs.values()) if costs else None), sums["tokens_in"], sums["tokens_out"]


def newest_plan(session_dir: Path, history: list[dict] | None = None) -> str | None:
    plan = plans.current(session_dir, history or [])
    return None if plan is None else str(plan)


def _working_dir(text: str, end: int, fallback: Path | None) -> Path | None:
    """The overview's `Working Dir:` line (above the Status section), else `fallback`."""
    match = _WORKING_DIR.search(text, 0, end)
    if match and Path(match.group("dir")).is_dir():
        return Path(match.group("dir"))
    return fallback if fallback is not None and fallback.is_dir() else None


def build(paths: SessionPaths, rails: dict[str, Any], workdir_fallback: Path | None = None) -> Report:
    """The report; an unusable overview is shown in it instead of failing."""
    text = ""
    ov: overview.Overview | None = None
    problem = ""
    try:
        text = overview.read_text(paths.overview)
        ov = overview.parse(text)
    except OverviewError as exc:
        problem = exc.reason
    try:  # the newest lines and the running totals: nothing that grows with the session
        history = hist.read(paths.history, limit=HISTORY_TAIL)
        sums = hist.totals(paths.history)
    except OSError:  # a directory there, say: the report shows what it can
        history, sums = [], hist.add(None, {})
    waiting = waiting_for(ov, history, paths)
    spend, tokens_in, tokens_out = _spend(sums)
    workdir = _working_dir(text, ov.status.start if ov else min(len(text), 8192), workdir_fallback)
    flow: list[str] = []
    if text:
        try:
            flow = [_BULLET.sub("", line) for line in flowlog.flow_entries(text, 3, ov.flow if ov else None)]
        except OverviewError:
            flow = []
    get = ov.get if ov is not None else (lambda _key, default="": default)
    return Report(
        session=paths.dir.name,
        session_dir=str(paths.dir),
        phase=get("phase") or "unknown",
        iteration=_number(get("iteration")),
        total_iterations=_number(get("total iterations")),
        blocked=get("blocked") or ("unknown" if ov is None else "no"),
        waiting_for=waiting,
        last_action=get("last action") or (f"_overview.md unusable: {problem}" if problem else "-"),
        next=get("next") or "-",
        worker_pid=holder(paths),
        spend_usd=None if spend is None else round(spend, 6),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        rails=rails,
        flow=tuple(flow),
        commits=tuple(gitops.recent_commits(workdir, 3)) if workdir else (),
        plan=newest_plan(paths.dir, history),
        qa=str(paths.qa) if paths.qa.is_file() else None,
        last_run=last_run(paths, waiting),
        limits=last_limits(history),
        stream_problem=last_stream_problem(history),
        provider=fallback_text(history),
        gate_wait=gatelease.describe(*waited) if (waited := gatelease.waiting(paths)) else None,
    )


# -- watch -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchResult:
    reason: str  # "status changed" | "worker exited" | "no worker running" | "timeout"
    waited: float


def _look(paths: SessionPaths) -> tuple[tuple[int, int, int] | None, tuple | None]:
    """(stat key, Status fields) of the overview."""
    try:
        st = os.stat(paths.overview)
    except OSError:
        return None, None
    return (st.st_mtime_ns, st.st_size, st.st_ino), _fields(paths)


def _fields(paths: SessionPaths) -> tuple | None:
    try:
        ov = overview.parse(overview.read_text(paths.overview))
    except OverviewError:
        return None
    return tuple(sorted((k, f.value) for k, f in ov.fields.items()))


def watch(
    paths: SessionPaths,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchResult:
    """Block until the Status fields change, the worker exits, or `timeout` passes.

    Each poll is a stat of the overview and a look at the lease; the overview is parsed only when
    its stat changes. With no worker at the start, a worker gets START_GRACE seconds to appear."""
    start = clock()
    deadline = start + timeout
    key, first = _look(paths)
    seen = holder(paths)
    grace_end = start + START_GRACE
    while True:
        now = clock()
        if now >= deadline:
            return WatchResult("timeout", now - start)
        sleep(min(POLL, deadline - now))
        pid = holder(paths)
        new_key = None
        with contextlib.suppress(OSError):
            st = os.stat(paths.overview)
            new_key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if new_key != key:
            key = new_key
            if _fields(paths) != first:
                return WatchResult("status changed", clock() - start)
        if seen is not None and pid is None:
            return WatchResult("worker exited", clock() - start)
        seen = pid if pid is not None else seen
        if seen is None and clock() >= grace_end:
            return WatchResult("no worker running", clock() - start)


# -- rendering -------------------------------------------------------------------------------------


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
    # Only absurdly long paths get here: shorten them too.
    tight = replace(
        _clipped(report, 24),
        session=_clip(report.session, 40),
        session_dir=_clip(report.session_dir, 80),
        plan=_clip(report.plan, 80) if report.plan else None,
        qa=_clip(report.qa, 80) if report.qa else None,
    )
    return render(tight)


def render_text(report: Report, budget: int = MAX_BYTES) -> str:
    return _fit(report, _text, budget)


def render_json(report: Report, budget: int = MAX_BYTES, extra: dict[str, Any] | None = None) -> str:
    if not extra:
        return _fit(report, _json, budget)

    def with_extra(r: Report) -> str:
        return json.dumps({**extra, **json.loads(_json(r))}, ensure_ascii=False, separators=_COMPACT)

    return _fit(report, with_extra, budget)
