"""The CLI versions the real-CLI test matrix ran against: the one place that says what is tested.

`low` is the pinned set the e2e suite always installs; `high` is the newest published version the
suite last ran green. The e2e suite fails when a version it ran falls outside these ranges, so a newer
release cannot slip in untested: run the matrix, then move `high` here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestedRange:
    """Inclusive range of versions of one CLI, e.g. 2.1.197..2.1.332."""

    cli: str
    low: str
    high: str

    def contains(self, version: str) -> bool:
        key, low, high = version_key(version), version_key(self.low), version_key(self.high)
        return key is not None and low is not None and high is not None and low <= key <= high

    @property
    def text(self) -> str:
        return f"{self.low}..{self.high}"


CLAUDE = TestedRange("claude", "2.1.197", "2.1.332")
CODEX = TestedRange("codex", "0.169.0", "0.171.0")
RANGES = {r.cli: r for r in (CLAUDE, CODEX)}


def version_key(version: str) -> tuple[int, ...] | None:
    """(2, 1, 197) for "2.1.197"; None for anything that is not dotted whole numbers."""
    parts = version.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)
