"""The stall breaker: SAMOCODE_STALL_ITERATIONS same-phase iterations in a row that change nothing
(no commit, no working-tree change, no session-file change) block the session, with evidence.

What changed is told by a digest of the working tree (`gitops.tree_state`) and one of the session's
own files (`session_state`, the overview without the sections every iteration rewrites)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from worker.gitops import TreeState, tree_state

# Session files the worker writes itself, or that say nothing about the agent's progress.
_NOT_PROGRESS = frozenset(
    {"_signal.json", "_signal_history.jsonl", "session.log", "_logs", "_worker.json", "_worker.out"}
)
_HEADING = re.compile(r"^#{1,6}[ \t]+\**[ \t]*(?P<title>[^\n]*?)[ \t]*\**[ \t]*#*[ \t]*$")
# Sections of the overview rewritten every iteration whatever happens: not progress by themselves.
_CHURN = frozenset({"status", "flow log"})


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


def session_state(folder: Path, known: bytes | None = None) -> tuple[str, int]:
    """A digest of the session's own files (name, size, mtime; the overview by content), and their count.
    `known`: the overview's bytes, when the caller has just checked that the file holds them."""
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
                    data = known if known is not None else _read(entry.path)
                    digest.update(rel + b"\0" + _overview_content(data))
                else:
                    st = entry.stat(follow_symlinks=False)
                    digest.update(rel + b"\0%d:%d" % (st.st_size, st.st_mtime_ns))
            except OSError:
                continue
            count += 1
    return digest.hexdigest(), count


def _read(path: str) -> bytes:
    # Never a blocking open: a FIFO put there (by a child, say) must not hang the worker.
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW), "rb") as handle:
        return handle.read()


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

    def _measure(self, overview: bytes | None = None) -> str:
        self.tree = tree_state(self.working_dir) if self.git else None
        if self.tree is None:
            self.git = False
        files, self.files = session_state(self.session_dir, overview)
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

    def after(
        self, same_phase: bool, total: int, summary: str, overview: bytes | None = None
    ) -> tuple[Stalled | None, dict | None]:
        """After an iteration that continues: a Stalled when the limit is reached, and the facts
        to keep in the decision's history line. `overview`: its bytes, when the caller knows them."""
        if not self.limit:
            return None, None
        current = self._measure(overview)
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
