"""The status report built from the session's files alone: overview, history, last signal, lease,
run record, git log. No model call, and nothing heavier than the overview parser is imported, so the
parent can ask for it every minute; git is asked only where there is a repository to ask.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worker import flowlog, gatelease, overview, plans, runrecord
from worker import history as hist
from worker.config import Project, Settings, load_settings
from worker.errors import ConfigError, InvalidSignal, OverviewError
from worker.session import SessionPaths, holder
from worker.signals import read_signal
from worker.status import LastRun, Report
from worker.streamview import fallback_text, last_limits, last_stream_problem

HISTORY_TAIL = 200  # lines read for the last decision, wait, limits and stream problem
_WORKING_DIR = re.compile(r"^Working Dir:[ \t]*(?P<dir>.+?)[ \t]*$", re.MULTILINE)
_NONE = ("", "-")
_BULLET = re.compile(r"^[-*+][ \t]+")


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
    data = b""
    ov: overview.Overview | None = None
    problem = ""
    try:  # the bytes; only the head is decoded and parsed, whatever the Flow Log's length
        data, _ = overview.read_bytes(paths.overview)
        ov = overview.parse(data)
    except OverviewError as exc:
        problem = exc.reason
    try:  # the newest lines and the running totals: nothing that grows with the session
        history = hist.read(paths.history, limit=HISTORY_TAIL)
        sums = hist.totals(paths.history)
    except OSError:  # a directory there, say: the report shows what it can
        history, sums = [], hist.add(None, {})
    waiting = waiting_for(ov, history, paths)
    spend, tokens_in, tokens_out = _spend(sums)
    # Without a parse, the first 8192 characters (at most 4 bytes each) stand in for the head.
    text = ov.text if ov else data[: 4 * 8192].decode("utf-8", "replace")
    workdir = _working_dir(text, ov.status.start if ov else min(len(text), 8192), workdir_fallback)
    flow: list[str] = []
    if data:
        try:
            entries = flowlog.last_entries(data, 3, flowlog.heading(ov) if ov else None)
            flow = [_BULLET.sub("", line) for line in entries]
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
        commits=_commits(workdir),
        plan=newest_plan(paths.dir, history),
        qa=str(paths.qa) if paths.qa.is_file() else None,
        last_run=last_run(paths, waiting),
        limits=last_limits(history),
        stream_problem=last_stream_problem(history),
        provider=fallback_text(history),
        gate_wait=gatelease.describe(*waited) if (waited := gatelease.waiting(paths)) else None,
    )


def _commits(workdir: Path | None) -> tuple[str, ...]:
    """The last three commits in the working directory. git is spawned only where it could find a
    repository (a `.git` in the folder or above it, a bare repository, or GIT_DIR set): a `status`
    that needs no git answers without the cost of starting it."""
    if workdir is None or not ("GIT_DIR" in os.environ or _repository_above(workdir)):
        return ()
    from worker import gitops  # imported here: subprocess is not needed without a repository

    return tuple(gitops.recent_commits(workdir, 3))


def _repository_above(folder: Path) -> bool:
    for place in (folder, *folder.parents):
        if (place / ".git").exists():
            return True
        if (place / "HEAD").is_file() and (place / "objects").is_dir() and (place / "refs").is_dir():
            return True
    return False


def report(project: Project, paths: SessionPaths, environ: Mapping[str, str]) -> Report:
    """The report of a session of `project`, with the rails a worker started now would run with
    (a settings problem is shown in place of the rails). Its working directory, when the overview
    names none: the session's worktree if there is one, else MAIN_REPO."""
    try:
        settings, problem = load_settings(environ), ""
    except ConfigError as exc:
        settings, problem = None, "; ".join(exc.problems)
    fallback = project.worktrees / paths.dir.name
    return build(paths, rails_of(settings, problem), fallback if fallback.is_dir() else project.main_repo)
