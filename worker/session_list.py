"""`samocode sessions`: one line per session of a project, the most recently active first.

For a parent that is told "continue the samocode session" with no name. Cheap on purpose: per session it
reads the head of `_overview.md` (the Status section is at the top), the last lines of
`_signal_history.jsonl`, `_worker.json`, the lease, and a few mtimes; never a whole log or history.
Spend is the overview's `Total Cost` field, which the worker keeps.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker import history as hist
from worker import overview, runrecord
from worker.errors import OverviewError
from worker.session import SessionPaths, holder
from worker.statusbuild import waiting_for

HEAD_BYTES = 16 * 1024
HISTORY_TAIL = 20  # enough to see the last decision and any parent command after it
_REASON_WIDTH = 80


@dataclass(frozen=True)
class Entry:
    session: str  # the folder name, which `--session` accepts as is
    phase: str
    state: str  # "blocked", "waiting", "done", "active" (in progress), or "unreadable"
    detail: str  # what it is blocked on / waiting for; "" when nothing
    worker_pid: int | None  # the running worker (-1: running, pid unknown), else None
    last_run: dict[str, Any] | None  # {code, outcome, at} of the last recorded run
    spend: str  # "$1.23", or "" when the overview records none
    last_activity: str  # ISO-8601 local time of the newest write to the session's files


def _head(path: Path) -> str:
    """The overview's first HEAD_BYTES, or all of it when the Status section runs past them (the
    one overview reader: a FIFO there is an OverviewError, never a hang)."""
    return overview.read_text(path, head=HEAD_BYTES)


def _clip(text: str, width: int = _REASON_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _last_activity(paths: SessionPaths) -> float:
    times = []
    for path in (paths.overview, paths.history, paths.worker_record, paths.session_log, paths.signal):
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


def entry(paths: SessionPaths) -> Entry:
    """One session's line; an unreadable overview is shown as such, never raised."""
    ov: overview.Overview | None = None
    problem = ""
    try:
        ov = overview.parse(_head(paths.overview))
    except (OSError, OverviewError) as exc:
        problem = (
            exc.reason if isinstance(exc, OverviewError) else f"_overview.md unreadable ({exc.strerror})"
        )
    try:
        history = hist.read(paths.history, limit=HISTORY_TAIL)
    except OSError:
        history = []
    record = runrecord.read(paths.worker_record)
    pid = holder(paths)
    get = ov.get if ov is not None else (lambda _key, default="": default)
    phase = get("phase") or "unknown"
    blocked = get("blocked").lower()
    wait = waiting_for(ov, history, paths) if ov is not None else None
    if ov is None:
        state, detail = "unreadable", problem
    elif blocked == "yes":
        reason = get("last action")  # the worker writes it as "Blocked: <reason>"
        state, detail = (
            "blocked",
            _clip(reason[len("blocked:") :].strip() if reason.lower().startswith("blocked:") else reason),
        )
    elif blocked.startswith("waiting") or (wait and pid is None):
        state, detail = "waiting", f"waiting for {wait or 'a human'}"
    elif phase == "done" and record is not None and record.code == 0 and pid is None:
        state, detail = "done", ""
    else:
        state, detail = "active", ""
    last_run = (
        None if record is None else {"code": record.code, "outcome": record.outcome, "at": record.ended_at}
    )
    spend = get("total cost").split(" (")[0].strip()
    when = _last_activity(paths)
    return Entry(
        session=paths.dir.name,
        phase=phase,
        state=state,
        detail=detail,
        worker_pid=pid,
        last_run=last_run,
        spend=spend if spend.startswith("$") else "",
        last_activity=dt.datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")
        if when
        else "",
    )


def list_sessions(sessions_dir: Path) -> list[Entry]:
    """Every session folder (one holding `_overview.md`), the most recently active first."""
    try:
        folders = [p for p in sessions_dir.iterdir() if not p.name.startswith(".") and p.is_dir()]
    except OSError:
        return []
    found = [SessionPaths(p) for p in folders if os.path.lexists(p / "_overview.md")]
    entries = [entry(p) for p in found]
    return sorted(entries, key=lambda e: (e.last_activity, e.session), reverse=True)


def _short(at: str) -> str:
    try:
        return dt.datetime.fromisoformat(at).strftime("%m-%d %H:%M")
    except ValueError:
        return at[:16] or "-"


def line(e: Entry) -> str:
    if e.worker_pid is not None:
        worker = "worker running" + (f" (pid {e.worker_pid})" if e.worker_pid > 0 else "")
    elif e.last_run is not None:
        run = e.last_run
        worker = f"not running, last run exited {run['code']} ({run['outcome']}) at {_short(run['at'])}"
    else:
        worker = "not running, never run"
    state = {"blocked": f"blocked: {e.detail}", "waiting": e.detail, "unreadable": e.detail}.get(
        e.state, e.state
    )
    return " · ".join(
        (e.session, e.phase, state, worker, e.spend or "$-", f"last activity {_short(e.last_activity)}")
    )


def render_text(sessions_dir: Path, entries: list[Entry]) -> str:
    if not entries:
        return f"no sessions in {sessions_dir}"
    return "\n".join(line(e) for e in entries)


def as_json(entries: list[Entry]) -> list[dict[str, Any]]:
    return [asdict(e) for e in entries]
