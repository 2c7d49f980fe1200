"""Helpers for tests that run the real worker: its session files, and the processes it leaves."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from worker.overview import Overview, parse

# The phases of the decisions of a session that stops at both gates and then runs to done: the Q&A
# gate makes requirements decide twice (waiting, then on to planning).
GATED_PATH = [
    "investigation",
    "requirements",
    "requirements",
    "planning",
    "implementation",
    "testing",
    "quality",
    "done",
]


def history(session: Path) -> list[dict]:
    """Every history line, parsed strictly: a torn or invalid line fails the test."""
    path = session / "_signal_history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def overview(session: Path) -> Overview:
    return parse((session / "_overview.md").read_text())


def decisions(session: Path) -> list[dict]:
    return [r for r in history(session) if r.get("decision")]


def find_session(sessions: Path, name: str) -> Path | None:
    """The session folder once the worker has made it, else None."""
    if not sessions.is_dir():
        return None
    found = sorted(p for p in sessions.iterdir() if p.name == name or p.name.endswith(f"-{name}"))
    return found[-1] if found else None


def text(path: Path) -> str:
    """The file's text, or '' while it does not exist yet."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def processes_with(needle: str, cmd_part: bytes = b"") -> list[int]:
    """Live (not zombie) processes whose environment mentions `needle` (e.g. the test's tmp path)
    and whose command line contains `cmd_part`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and needle.encode() in env and cmd_part in cmd:
            found.append(int(entry))
    return found


def sleepers(root: Path) -> list[int]:
    """`sleep 300` grandchildren the fake CLI started for this test."""
    return processes_with(str(root), b"sleep\x00300")


def fakes(root: Path) -> list[int]:
    """Fake CLI processes of this test still running."""
    return processes_with(str(root), b"fake_claude.py")


def wait_for(check: Callable[[], object], timeout: float = 15.0, step: float = 0.05) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {check}")


def ignores(pid: int, signum: int) -> bool:
    """Whether the process ignores the signal now (its SigIgn mask); False when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False


# A clock time as the worker shows it (worker/limits.py `clock`): HH:MM when it is today, MM-DD HH:MM
# when it is not, as a reset an hour away is from 23:00 on.
CLOCK = r"(?:\d\d-\d\d )?\d\d:\d\d"


def put_into(line: str, piece: str, where: str | int, sep: str) -> str:
    """`line` with `piece` put at its start, where its value starts (after `sep`), its end, or at an
    offset drawn from `where` (property tests of the plain readers: envfile, plain_frontmatter)."""
    at = {"start": 0, "value": line.find(sep) + len(sep), "end": len(line)}.get(
        str(where), hash(where) % (len(line) + 1)
    )
    return line[:at] + piece + line[at:]
