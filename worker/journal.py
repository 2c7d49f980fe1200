"""The session's journal: how the worker writes so that `kill -9` at any moment loses nothing.

The order of the worker's writes in one iteration:
1. `.samocode.iteration.json`, the in-flight marker, before the child starts. It names the iteration
   and the tag every process of the iteration carries in its environment;
2. a line in `_signal_history.jsonl` holding the decision *and* the overview change it implies
   (`"overview": {"fields": ..., "flow": [...]}`);
3. `_overview.md`, rewritten in one atomic rename;
4. the marker removed.

A worker that finds a marker at start-up sweeps the dead run's processes, then either replays the
iteration's last journaled change (fields are set, Flow Log lines appended only when missing, so a
replay of a change that did land is a no-op), or, when the iteration never reached a decision,
records it as interrupted so it runs again. A `_signal.json` left by the dead run is kept in that
record as evidence and removed, never acted upon.

The parent commands (approve, answer, unblock, resume) write through `commit` too, so a command's
record survives a torn line and its Flow Log line is appended once.

The journal guards against a dead process (`kill -9` at any point), as the marker does, not against
a dead machine: the writes land in the page cache, which outlives the process, and are not fsynced.
That is a choice, kept after measuring: an fsync of the history line and one of the overview each cost
1 to 6 ms on a 2-core VM (more on a real disk), above the ~4 ms the worker spends between two
children, and the overview's grows with its size, which is what `splice` keeps flat. What a power cut
can lose is the last seconds of writes: the next start then finds the marker (or not) and re-runs or
records the iteration as this docstring says, and the child's own edits and commits, never fsynced
either, are lost alike. The overview itself is always a fresh file renamed over the old one
(`splice`), which ext4 writes out before the rename: a power cut leaves its old or its new text.
The session's first overview (`workspace`) is fsynced: it is written once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker import flowlog, history, overview, splice
from worker.crashpoint import crash_point
from worker.errors import OverviewError, SessionFileError
from worker.session import SessionPaths, pid_alive
from worker.signals import MAX_SIGNAL_BYTES, WaitFor, clear_signal
from worker.spend import Spend

# History lines a start reads (the last decision, wait and phase); spend comes from the totals.
RECENT = 500
# Journaled events after which the iteration is over: replaying one completes the iteration.
FINAL_EVENTS = frozenset({"interrupted", "provider_failed"})
# Temp files of a writer that died: a new text not yet renamed in, or an old overview kept for freeing.
_TMP = re.compile(r"^\.(?:_overview\.md|\.samocode\.iteration\.json)\.(?P<pid>\d+)(?:\.old)?\.tmp$")


# -- history lines -------------------------------------------------------------------------------


def append(path: Path, record: Mapping[str, object]) -> None:
    """One history line, safe after a torn last line (`history.append`)."""
    try:
        history.append(path, record)
    except OSError as exc:
        raise SessionFileError(f"cannot write {path.name}: {exc.strerror}") from None


def load_history(paths: SessionPaths, limit: int | None = None) -> list[dict]:
    """History records (torn or junk lines skipped); SessionFileError when the file cannot be read."""
    try:
        return history.read(paths.history, limit)
    except OSError as exc:
        raise SessionFileError(f"cannot read {paths.history.name}: {exc.strerror}") from None


def load_spend(paths: SessionPaths) -> Spend:
    """The session's spend so far, from the history's running totals (not a sum over every line)."""
    try:
        costs = history.totals(paths.history)["cost_usd"]
    except OSError as exc:
        raise SessionFileError(f"cannot read {paths.history.name}: {exc.strerror}") from None
    return Spend(dict(costs), bool(costs))


def check_lock(paths: SessionPaths) -> None:
    """OverviewError now, before a child runs, when the overview's lock cannot be taken."""
    try:
        with overview.locked(paths.dir):
            pass
    except OSError as exc:
        raise OverviewError(f"cannot lock _overview.md (.samocode.lock: {exc.strerror})") from None


def apply_change(
    path: Path, fields: Mapping[str, str | None], flow: Sequence[str], known: splice.Doc | None = None
) -> None:
    """Set the fields and append the Flow Log lines not yet there; a no-op when it all landed.
    `known`: the overview as last read, whose head is not parsed again if the file still holds it."""
    if not fields and not flow:
        return
    try:
        with overview.locked(path.parent):
            doc = splice.load(path, known)
            pieces = splice.edit(doc.data, doc.ov, fields, flow)
            if pieces is not None:
                splice.save(path, pieces)
    except OSError as exc:  # the lock file or the new file cannot be made
        name = Path(exc.filename).name if exc.filename else path.name
        raise OverviewError(f"cannot write {name}: {exc.strerror}") from None


def commit(
    paths: SessionPaths,
    record: dict,
    fields: Mapping[str, str | None] | None = None,
    flow: Sequence[str] = (),
    known: splice.Doc | None = None,
) -> dict:
    """History line first (with the change it implies), then the overview. Returns the line written.

    OverviewError when the overview cannot take the change; the history line is written anyway.
    `known` as for `apply_change`."""
    fields = fields or {}
    if fields or flow:
        record = {**record, "overview": {"fields": dict(fields), "flow": list(flow)}}
    append(paths.history, record)
    crash_point("history")
    apply_change(paths.overview, fields, flow, known)
    crash_point("overview")
    return record


# -- the in-flight marker ------------------------------------------------------------------------


def write_marker(paths: SessionPaths, data: Mapping[str, object]) -> None:
    """Atomic replace, no fsync: the marker guards against a dead process, not a dead machine."""
    tmp = paths.in_flight.with_name(f".{paths.in_flight.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, paths.in_flight)
    except OSError as exc:
        raise SessionFileError(f"cannot write {paths.in_flight.name}: {exc.strerror}") from None


def read_marker(paths: SessionPaths) -> dict | None:
    """The marker's content; {} when it is there but unreadable, None when there is none."""
    try:
        data = json.loads(paths.in_flight.read_bytes()[:65536].decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def clear_marker(paths: SessionPaths) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        paths.in_flight.unlink()


# -- recovery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    action: str  # "replayed" | "interrupted" | "superseded"
    detail: str
    swept: int = 0


def _remove_stale_temps(folder: Path) -> None:
    """Half-written temp files of a dead writer (the renames never happened)."""
    for entry in os.scandir(folder):
        match = _TMP.match(entry.name)
        if match and not pid_alive(int(match.group("pid"))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _stale_signal(path: Path) -> str | None:
    """What a dead run's `_signal.json` said (as evidence), read without following links."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None if not path.is_symlink() else "(a symlink)"
    try:
        return os.read(fd, MAX_SIGNAL_BYTES).decode("utf-8", "replace")[:2000]
    except OSError:
        return "(unreadable)"
    finally:
        os.close(fd)


def recover(
    paths: SessionPaths, now: dt.datetime, sweep: Callable[[str], int], log: Callable[[str], None]
) -> Recovery | None:
    """Repair what a worker killed mid-iteration left behind; None when it left nothing."""
    _remove_stale_temps(paths.dir)
    marker = read_marker(paths)
    if marker is None:
        return None
    tag = str(marker.get("tag") or "")
    swept = sweep(tag) if tag else 0
    iteration_id = marker.get("id")
    history = load_history(paths, limit=400)
    own = [i for i, r in enumerate(history) if iteration_id and r.get("id") == iteration_id]
    last = history[own[-1]] if own else None
    result: Recovery
    if last is not None and (last.get("decision") or last.get("event") in FINAL_EVENTS):
        change = last.get("overview") or {}
        if own[-1] != len(history) - 1:
            # A parent command (approve, unblock...) acted after it and its change wins; only the
            # count and the Flow Log lines that never landed are carried over.
            fields = change.get("fields") or {}
            counters = {k: v for k, v in fields.items() if k in ("Total Iterations", "Total Cost")}
            with contextlib.suppress(OverviewError):
                if _total_in_overview(paths) < _int(last.get("total")):
                    apply_change(paths.overview, counters, change.get("flow") or [])
            result = Recovery("superseded", "a later history record supersedes the iteration's last change")
        else:
            with contextlib.suppress(OverviewError):
                apply_change(paths.overview, change.get("fields") or {}, change.get("flow") or [])
            result = Recovery("replayed", f"completed the journaled {last.get('decision') or last['event']}")
    else:
        result = _record_interrupted(paths, marker, now, swept)
    clear_marker(paths)
    log(f"recovery after a dead worker: {result.action} ({result.detail}); {swept} processes swept")
    return Recovery(result.action, result.detail, swept)


def _total_in_overview(paths: SessionPaths) -> int:
    return splice.load(paths.overview).ov.state().total


def _record_interrupted(paths: SessionPaths, marker: dict, now: dt.datetime, swept: int) -> Recovery:
    total = _int(marker.get("total"))
    fields: dict[str, str | None] = {}
    with contextlib.suppress(OverviewError):
        ov = splice.load(paths.overview).ov
        if "total" not in marker:  # an unreadable marker: the overview knows the count
            total = ov.state().total
        if ov.get("waiting for").lower() == WaitFor.USAGE_LIMIT.value and ov.get("blocked").lower() == "no":
            fields = {"Waiting For": None, "Next": "Re-run the interrupted iteration"}
    total += 1
    stale = _stale_signal(paths.signal)
    with contextlib.suppress(OSError, ValueError):
        clear_signal(paths.signal)
    record = {
        "id": marker.get("id"),
        "time": history.stamp(now),
        "iteration": marker.get("iteration"),
        "total": total,
        "phase": marker.get("phase"),
        "event": "interrupted",
        "detail": "the worker died during this iteration; it runs again",
        "stale_signal": stale,
        "swept": swept or None,
    }
    flow = [flowlog.flow_line(total, now, f"Iteration {total} interrupted (worker died); re-running")]
    crash_point("recovery")
    with contextlib.suppress(OverviewError):
        commit(paths, record, fields, flow)
    return Recovery("interrupted", f"iteration {total} recorded as interrupted")


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
