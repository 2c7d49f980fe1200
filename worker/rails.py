"""The rails of an unattended run: small policies the loop consults, one per concern.

- `Spend`: cost per phase and per session from the provider records; the budget caps
  (SAMOCODE_MAX_COST_USD, SAMOCODE_MAX_PHASE_COST_USD) checked before an iteration starts, and what
  is left of them (passed to Claude as --max-budget-usd, which stops inside an iteration).
- `StallBreaker`: SAMOCODE_STALL_ITERATIONS same-phase iterations in a row that change nothing
  (no commit, no working-tree change, no session-file change) block the session, with evidence.
- `plan_usage_wait`: how long to wait for a usage-limit reset, and whether that is past
  SAMOCODE_MAX_WAIT; `retry_delay`: backoff per failure class.
- `crash_point`: a test hook that kills the worker with SIGKILL at a named step.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from worker.config import Settings
from worker.providers import Failure

MAX_BACKOFF = 600.0
RESET_MARGIN = 1.0  # seconds past a reported reset before trying again


# -- crash points (tests) ----------------------------------------------------------------------

_CRASH_AT = os.environ.get("SAMOCODE_TEST_CRASH_AT", "")
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SAMOCODE_TEST_CRASH_AT=name[@n]: die by SIGKILL the n-th time (default 1st) the worker passes
    `name`. Lets the tests put a `kill -9` exactly between two of the worker's writes."""
    if not _CRASH_AT:
        return
    point, _, nth = _CRASH_AT.partition("@")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# -- spend and budget --------------------------------------------------------------------------


@dataclass
class Spend:
    """Spend per phase in USD, counted from history lines (each attempt's cost appears once)."""

    by_phase: dict[str, float] = field(default_factory=dict)
    known: bool = False  # any cost reported at all

    def add(self, record: dict) -> None:
        cost = record.get("cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            phase = str(record.get("phase"))
            self.by_phase[phase] = self.by_phase.get(phase, 0.0) + float(cost)
            self.known = True

    @property
    def total(self) -> float:
        return sum(self.by_phase.values())

    def over_budget(self, phase: str, settings: Settings) -> str:
        """Why no further iteration may start, or ''."""
        cap = settings.max_cost_usd
        if cap and self.total >= cap:
            return f"session spend ${self.total:.2f} reached SAMOCODE_MAX_COST_USD ${cap:.2f}"
        phase_cap = settings.max_phase_cost_usd
        spent = self.by_phase.get(phase, 0.0)
        if phase_cap and spent >= phase_cap:
            return f"phase {phase} spend ${spent:.2f} reached SAMOCODE_MAX_PHASE_COST_USD ${phase_cap:.2f}"
        return ""

    def remaining(self, phase: str, settings: Settings) -> float | None:
        """What is left of the tighter of the two caps (None when neither is set); what Claude is
        given as --max-budget-usd, so a budget is also held inside an iteration."""
        left = []
        if settings.max_cost_usd:
            left.append(settings.max_cost_usd - self.total)
        if settings.max_phase_cost_usd:
            left.append(settings.max_phase_cost_usd - self.by_phase.get(phase, 0.0))
        return max(min(left), 0.0) if left else None

    def overview_text(self) -> str:
        """'$1.23 (implementation $0.80, testing $0.43)': the Total Cost field."""
        phases = ", ".join(f"{p} ${c:.2f}" for p, c in self.by_phase.items() if c)
        return f"${self.total:.2f}" + (f" ({phases})" if phases else "")


# -- stall breaker -------------------------------------------------------------------------------

# Session files the worker writes itself, or that say nothing about the agent's progress.
_NOT_PROGRESS = frozenset(
    {"_signal.json", "_signal_history.jsonl", "session.log", "_logs", "_worker.json", "_worker.out"}
)
_HEADING = re.compile(r"^#{1,6}[ \t]+\**[ \t]*(?P<title>[^\n]*?)[ \t]*\**[ \t]*#*[ \t]*$")
# Sections of the overview rewritten every iteration whatever happens: not progress by themselves.
_CHURN = frozenset({"status", "flow log"})
_GIT_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


@dataclass(frozen=True)
class TreeState:
    digest: str
    head: str  # abbreviated HEAD, '' outside git
    dirty: int  # changed or untracked files


def tree_state(work: Path) -> TreeState | None:
    """HEAD, the changed paths and their size/mtime, from one `git status`; None outside git."""
    try:
        done = subprocess.run(
            ["git", "-C", str(work), "status", "--porcelain=v2", "--branch", "-z", "-uall"],
            capture_output=True,
            timeout=60,
            env=_GIT_ENV,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    digest = hashlib.sha256(done.stdout)
    head, dirty = "", 0
    entries = done.stdout.split(b"\0")
    skip = False
    for entry in entries:
        if skip:  # the original path of a rename
            skip = False
            continue
        if entry.startswith(b"# branch.oid "):
            head = entry[13:20].decode("ascii", "replace")
            continue
        kind = entry[:2]
        fixed = {b"1 ": 8, b"2 ": 9, b"u ": 10, b"? ": 1}.get(kind)
        if fixed is None:
            continue
        dirty += 1
        skip = kind == b"2 "
        path = entry.split(b" ", fixed)[-1]
        try:
            st = os.lstat(os.path.join(work, os.fsdecode(path)))
            digest.update(b"%d:%d" % (st.st_size, st.st_mtime_ns))
        except OSError:
            digest.update(b"gone")
    return TreeState(digest.hexdigest(), head, dirty)


def _hash_line(data: bytes, start: int) -> int:
    """The start of the next line beginning with '#', at or after `start`; -1 when none."""
    at = data.find(b"#", start)
    while at > 0 and data[at - 1] != 0x0A:
        at = data.find(b"#", at + 1)
    return at


def _overview_content(data: bytes) -> bytes:
    """The overview minus its Status and Flow Log sections (the worker and every iteration touch those).

    Heading lines are found with a one-byte find (memchr), not a regex nor a two-byte search over the
    whole text: with a long Flow Log this runs every iteration."""
    keep, pos, skipping = [], 0, False
    line_start = _hash_line(data, 0)
    while line_start >= 0:
        line_end = data.find(b"\n", line_start)
        line = data[line_start : line_end if line_end >= 0 else len(data)].decode("utf-8", "replace")
        match = _HEADING.match(line.rstrip("\r"))
        if match:
            if not skipping:
                keep.append(data[pos:line_start])
            skipping = match.group("title").strip("*# ").lower() in _CHURN
            pos = line_start
        line_start = _hash_line(data, line_start + 1)
    if not skipping:
        keep.append(data[pos:])
    return b"".join(keep)


def session_state(folder: Path) -> tuple[str, int]:
    """A digest of the session's own files (name, size, mtime; the overview by content), and their count."""
    digest = hashlib.sha256()
    count = 0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or (current == folder and entry.name in _NOT_PROGRESS):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                rel = os.path.relpath(entry.path, folder).encode("utf-8", "surrogateescape")
                overview = current == folder and entry.name == "_overview.md"
                if overview and entry.is_file(follow_symlinks=False):
                    # Never a blocking open: a FIFO put there (by a child, say) must not hang the worker.
                    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                    with open(os.open(entry.path, flags), "rb") as handle:
                        digest.update(rel + b"\0" + _overview_content(handle.read()))
                else:
                    st = entry.stat(follow_symlinks=False)
                    digest.update(rel + b"\0%d:%d" % (st.st_size, st.st_mtime_ns))
            except OSError:
                continue
            count += 1
    return digest.hexdigest(), count


@dataclass(frozen=True)
class Stalled:
    reason: str
    evidence: dict


class StallBreaker:
    """Counts same-phase iterations in a row that changed nothing; `limit` 0 turns it off (and
    costs nothing: no git call, no file walk)."""

    def __init__(self, limit: int, working_dir: Path, session_dir: Path) -> None:
        self.limit = limit
        self.working_dir = working_dir
        self.session_dir = session_dir
        self.git = True  # stop asking git once it said this is no repository
        self.print = ""
        self.tree: TreeState | None = None
        self.files = 0
        self.quiet: list[tuple[int, str]] = []  # (total, summary) of the unchanged iterations

    def _measure(self) -> str:
        self.tree = tree_state(self.working_dir) if self.git else None
        if self.tree is None:
            self.git = False
        files, self.files = session_state(self.session_dir)
        return hashlib.sha256(f"{self.tree.digest if self.tree else ''}|{files}".encode()).hexdigest()[:24]

    def start(self, last_decision: dict | None, phase: str) -> None:
        """The baseline; a count carried in the last decision continues when nothing changed since."""
        if not self.limit:
            return
        self.print = self._measure()
        carried = (last_decision or {}).get("progress")
        if (
            isinstance(carried, dict)
            and carried.get("print") == self.print
            and (last_decision or {}).get("phase_after") == phase
            and isinstance(carried.get("unchanged"), int)
        ):
            self.quiet = [(0, "(an earlier run)")] * min(carried["unchanged"], self.limit)

    def after(self, same_phase: bool, total: int, summary: str) -> tuple[Stalled | None, dict | None]:
        """After an iteration that continues: a Stalled when the limit is reached, and the facts
        to keep in the decision's history line."""
        if not self.limit:
            return None, None
        current = self._measure()
        if same_phase and current == self.print:
            self.quiet.append((total, summary))
        else:
            self.quiet = []
        self.print = current
        progress = {"print": current, "unchanged": len(self.quiet)}
        if len(self.quiet) < self.limit:
            return None, progress
        totals = [t for t, _ in self.quiet if t]
        span = f"#{totals[0]}-#{totals[-1]}" if totals else f"the last {len(self.quiet)}"
        tree = self.tree
        where = (
            f"no commit (HEAD {tree.head or 'none'}), no working-tree change ({tree.dirty} changed files)"
            if tree
            else "no git repository to check"
        )
        reason = (
            f"stalled: {len(self.quiet)} iterations in a row ({span}) changed nothing: "
            f"{where}, no session-file change"
        )
        evidence = {
            "iterations": totals,
            "head": tree.head if tree else None,
            "dirty_files": tree.dirty if tree else None,
            "session_files": self.files,
            "summaries": [s[:200] for _, s in self.quiet],
        }
        return Stalled(reason, evidence), progress


# -- usage limits and retries --------------------------------------------------------------------


@dataclass(frozen=True)
class UsageWait:
    until: float  # epoch seconds
    seconds: float
    clock: str  # HH:MM, local time
    source: str  # where the time comes from, for the log and the Flow Log
    beyond: bool  # past SAMOCODE_MAX_WAIT (counting what this iteration already waited)


def plan_usage_wait(
    resets_at: float | None, now: float, settings: Settings, hits: int, waited: float
) -> UsageWait:
    """Until the reported reset; a reset already past is retried with backoff; with no reset time
    named, SAMOCODE_USAGE_WAIT."""
    if resets_at is not None and resets_at > now:
        until, source = resets_at + RESET_MARGIN, "reported reset"
    elif resets_at is not None:
        until = now + min(settings.retry_delay * 2 ** max(0, hits - 1), settings.usage_wait or MAX_BACKOFF)
        source = "reported reset already past"
    else:
        until, source = now + settings.usage_wait, "no reset time given: SAMOCODE_USAGE_WAIT"
    seconds = max(0.0, until - now)
    clock = dt.datetime.fromtimestamp(until).strftime("%H:%M")
    return UsageWait(until, seconds, clock, source, waited + seconds > settings.max_wait)


def retry_delay(failure: Failure | None, failures: int, settings: Settings) -> float:
    """Overload and 5xx back off exponentially; everything else waits SAMOCODE_RETRY_DELAY."""
    if failure is Failure.OVERLOADED:
        return min(settings.retry_delay * 2 ** max(0, failures - 1), MAX_BACKOFF)
    return settings.retry_delay
