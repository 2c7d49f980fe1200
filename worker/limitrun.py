"""The loop's side of `limits.py`: which provider runs the next attempt, the rate-limit windows last
reported, and what a pause or a switch writes (history line, Status fields, Flow Log line).

One per worker run. It starts from the history (the windows last reported, a fallback a previous
run left in force), so a restarted worker pauses and falls back as the one before it would have.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from worker import limits
from worker.changes import Change
from worker.config import Settings
from worker.errors import ConfigError
from worker.flowlog import flow_line
from worker.history import stamp
from worker.phases import SessionState
from worker.providers import IterationRecord, Provider
from worker.providers.registry import get_provider
from worker.signals import WaitFor
from worker.streamview import last_limits


def test_skew() -> float:
    """A test hook: SAMOCODE_TEST_CLOCK_FILE names a file holding seconds to add to the clock when
    deciding whether the primary's reset has passed, so a real-CLI test can pass a reset an hour
    away without waiting an hour (its scripted child writes the file). 0 when unset or unreadable."""
    name = os.environ.get("SAMOCODE_TEST_CLOCK_FILE")
    if not name:
        return 0.0
    try:
        return float(Path(name).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0.0


class LimitRun:
    def __init__(
        self,
        settings: Settings,
        primary: Provider,
        history: Sequence[dict],
        now: float,
        make: Callable[[str, Settings], Provider] = get_provider,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.settings = settings
        self.primary = primary
        self.windows: dict[str, dict] = dict(last_limits(history) or {})
        self.fallback = limits.resumed(history, primary.name, now) if settings.fallback_provider else None
        self._make = make
        self._log = log
        self._other: Provider | None = None

    # -- which provider ------------------------------------------------------------------------------

    @property
    def provider(self) -> Provider:
        """The provider the next attempt runs on."""
        if self.fallback is None:
            return self.primary
        if self._other is None:
            self._other = self._make(self.fallback.provider, self.settings)
        return self._other

    def seen(self, record: IterationRecord) -> None:
        """An attempt's report of the rate-limit windows (only the primary's CLI reports them)."""
        if record.limits and self.fallback is None:
            self.windows = limits.merge(self.windows, {w.name: w.as_dict() for w in record.limits})

    def pause(self, now: float) -> limits.Pause | None:
        """A window to wait for before the next iteration (never while on the fallback: its windows
        are the primary's)."""
        if self.fallback is not None:
            return None
        return limits.pause_for(self.windows, self.settings.pause_at, now)

    def switch_for(self, reset: float, now: dt.datetime, total: int, reason: str) -> Switched | None:
        """A usage limit on the primary resetting at `reset`: the switch to the fallback, when the
        wait is long enough and the fallback's CLI can be found; None means: wait as usual."""
        if self.fallback is not None:
            return None
        chosen = limits.fall_back(
            self.primary.name,
            self.settings.fallback_provider,
            reset,
            now.timestamp(),
            self.settings.fallback_after,
        )
        if chosen is None:
            return None
        try:
            self._other = self._make(chosen.provider, self.settings)
        except ConfigError as exc:
            self._log(f"no fallback to {chosen.provider}: {'; '.join(exc.problems)}")
            return None
        self.fallback = chosen
        return _switched(chosen, False, now, total, reason)

    def back_if_due(self, now: dt.datetime, total: int) -> Switched | None:
        """The switch back to the primary once its reset has passed."""
        if self.fallback is None or now.timestamp() + test_skew() < self.fallback.until:
            return None
        return self.back(now, total)

    def back(self, now: dt.datetime, total: int) -> Switched:
        ended, self.fallback = self.fallback, None
        assert ended is not None
        return _switched(ended, True, now, total)

    def both_limited(
        self, fallback_reset: float | None, now: dt.datetime, total: int
    ) -> tuple[Switched | None, float]:
        """The fallback is limited too: the earlier reset wins (back to the primary when it is its)."""
        assert self.fallback is not None
        reset = fallback_reset if fallback_reset is not None else now.timestamp() + self.settings.usage_wait
        back, until = limits.both_limited(self.fallback, reset)
        return (self.back(now, total) if back else None), until


@dataclass(frozen=True)
class Switched:
    change: Change  # the history line and Flow Log line of the switch
    text: str  # 'switched to codex: claude's usage limit resets at 18:10', for notifications


def _switched(what: limits.Fallback, back: bool, now: dt.datetime, total: int, reason: str = "") -> Switched:
    facts, text = limits.switched(what, back, now.timestamp(), reason)
    record = {"time": stamp(now), "total": total, "event": limits.PROVIDER_SWITCHED, **facts}
    return Switched(Change(record, {}, [flow_line(total, now, text.capitalize())]), text)


def paused(state: SessionState, pause: limits.Pause, plan: limits.UsageWait, now: dt.datetime) -> Change:
    """The pause before an iteration, written like a usage wait (Waiting For usage_limit) with the
    window that caused it; `status` shows its Next line."""
    text = pause.text(now.timestamp())
    record = {
        "time": stamp(now),
        "iteration": state.iteration,
        "total": state.total + 1,
        "phase": state.phase.value,
        "event": "usage_wait",
        "until": dt.datetime.fromtimestamp(plan.until).isoformat(timespec="seconds"),
        "seconds": round(plan.seconds, 1),
        "source": "pause",
        "pause": {"window": pause.window, "utilization": pause.utilization},
    }
    fields: dict[str, str | None] = {"Waiting For": WaitFor.USAGE_LIMIT.value, "Next": text}
    return Change(record, fields, [flow_line(state.total + 1, now, text.capitalize())])
