"""Plan approval: whether a planning session waits for it, and which plan file it asks about.

The plan is the `*-plan-*.md` file the planning iteration wrote: the worker notes which one when it
records the wait for plan approval, so `approve` and `status` name it whatever the clock did since
(a clock stepped back gives a newer plan an older time). Sessions from before that note fall back to
the newest file by modification time.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from worker import history as hist
from worker.signals import WaitFor

PATTERN = "*-plan-*.md"
PLAN_APPROVAL = WaitFor.PLAN_APPROVAL.value
_PLAN_WORDS = re.compile(r"plan[\s_-]*approv|approv\w*\s+(?:of\s+)?(?:the\s+|this\s+)?plan", re.IGNORECASE)
Snapshot = Mapping[str, tuple[int, int, int]]


def snapshot(session_dir: Path) -> dict[str, tuple[int, int, int]]:
    """Each plan file's identity (inode, size, modification time) before an iteration."""
    found = {}
    for path in session_dir.glob(PATTERN):
        with contextlib.suppress(OSError):
            st = path.stat()
            found[path.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def written(session_dir: Path, before: Snapshot) -> str | None:
    """The plan file created or changed since `before` (the last by name when several were)."""
    after = snapshot(session_dir)
    changed = sorted(name for name, ident in after.items() if before.get(name) != ident)
    return changed[-1] if changed else None


def current(session_dir: Path, history: Sequence[Mapping[str, object]] = ()) -> Path | None:
    """The plan named by the newest record that names one, if it is still there; else the newest
    plan file by modification time; None when there is no plan."""
    for record in reversed(history):
        name = record.get("plan")
        if isinstance(name, str) and name and os.sep not in name and (session_dir / name).is_file():
            return session_dir / name
    plans = [p for p in session_dir.glob(PATTERN) if p.is_file()]
    return max(plans, key=lambda p: (p.stat().st_mtime_ns, p.name)) if plans else None


def waits_for_approval(
    blocked: str, waiting_for: str, next_text: str, history: list[dict], signal_wait: str = ""
) -> bool:
    """Whether a session in planning waits for its plan to be approved.

    Waiting (`Blocked: waiting...`): when it waits for the plan or names nothing (the overview's
    `Waiting For`, else the last decision's). Otherwise: when anything says so (`Next` asks for
    plan approval, `Waiting For`, the last decision or the last signal names plan_approval)."""
    wait = hist.waits_for(waiting_for, history)
    if blocked.lower().startswith("waiting"):
        return wait in ("", PLAN_APPROVAL)
    return bool(_PLAN_WORDS.search(next_text)) or PLAN_APPROVAL in (wait, signal_wait)
