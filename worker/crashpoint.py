"""A test hook: SAMOCODE_TEST_CRASH_AT kills the worker with SIGKILL at a named step.

Imports nothing from the worker, so the storage layer (journal.py) can carry crash points."""

from __future__ import annotations

import os
import signal

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
