"""Policies on usage limits and retries, pure: how long to wait for a usage-limit reset, the pause
before a rate-limit window closes, the fallback to the other provider while one is limited, and the
backoff per failure class. The loop applies them with its usage-wait machinery.

- Usage wait: until the reported reset (plus a margin); a reset already past is retried with
  backoff; with no reset named, SAMOCODE_USAGE_WAIT. Past SAMOCODE_MAX_WAIT the session stops as
  waiting for the usage limit instead.

- Pause (SAMOCODE_PAUSE_AT, percent): Claude Code reports each window's utilization in its
  `rate_limit_event` lines (subscription logins only; 2.1.197 only past the server's early-warning
  threshold, 2.1.332 on every call). Before an iteration starts, a window whose last reported
  utilization is at or above the threshold, and whose reset is still ahead, is waited out first.
- Fallback (SAMOCODE_FALLBACK_PROVIDER, SAMOCODE_FALLBACK_AFTER): a usage limit that resets further
  away than SAMOCODE_FALLBACK_AFTER moves the next attempts to the other CLI until that reset; then
  the session goes back. A limit on both waits for the earlier reset.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.providers import Failure

if TYPE_CHECKING:
    from worker.config import Settings

MAX_BACKOFF = 600.0
RESET_MARGIN = 1.0  # seconds past a reported reset before trying again
PROVIDER_SWITCHED = "provider_switched"  # the history event of a switch (either way)
_LABELS = {"five_hour": "5-hour", "seven_day": "7-day", "seven_day_opus": "7-day Opus"}


def window_label(name: str) -> str:
    return _LABELS.get(name, name.replace("_", " "))


def clock(epoch: float, now: float) -> str:
    """HH:MM local time, with the date when it is not today."""
    moment = dt.datetime.fromtimestamp(epoch)
    same_day = moment.date() == dt.datetime.fromtimestamp(now).date()
    return moment.strftime("%H:%M" if same_day else "%m-%d %H:%M")


# -- the pause before a window closes ------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    window: str  # five_hour, seven_day, ...
    utilization: float  # 0..1
    until: float  # the window's reset, epoch seconds

    def text(self, now: float) -> str:
        """'paused at 96% of the 5-hour window until 17:24'."""
        used = f"{self.utilization * 100:.0f}%"
        return f"paused at {used} of the {window_label(self.window)} window until {clock(self.until, now)}"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def pause_for(windows: Mapping[str, Mapping], pause_at: float, now: float) -> Pause | None:
    """The window to wait for before the next iteration: of those at or above `pause_at` percent
    whose reset is still ahead, the one that resets last (all of them must reopen). None when
    `pause_at` is 0 (off) or no window is that full."""
    if pause_at <= 0:
        return None
    full = []
    for name, window in windows.items():
        used, reset = _number(window.get("utilization")), _number(window.get("resets_at"))
        if used is not None and reset is not None and reset > now and used * 100 >= pause_at:
            full.append(Pause(str(name), used, reset))
    return max(full, key=lambda p: p.until, default=None)


def merge(windows: dict[str, dict], reported: Mapping[str, Mapping]) -> dict[str, dict]:
    """The last reported state per window: newer reports replace older ones window by window."""
    return {**windows, **{str(k): dict(v) for k, v in reported.items() if isinstance(v, Mapping)}}


# -- the fallback provider -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fallback:
    """The session runs on `provider` instead of `primary` until `until` (epoch seconds)."""

    primary: str
    provider: str
    until: float


def fall_back(primary: str, fallback: str, reset: float, now: float, after: float) -> Fallback | None:
    """A usage limit on the primary that resets `reset` (the planned end of the wait): use the
    fallback when one is set, differs from the primary, and the wait is longer than `after` s."""
    if not fallback or fallback == primary or reset - now <= after:
        return None
    return Fallback(primary, fallback, reset)


def both_limited(current: Fallback, fallback_reset: float) -> tuple[bool, float]:
    """The fallback hit a usage limit too: (go back to the primary now?, wait until). The earlier
    reset wins; when it is the primary's, the session waits on the primary."""
    if current.until <= fallback_reset:
        return True, current.until
    return False, fallback_reset


def resumed(history: Sequence[dict], primary: str, now: float) -> Fallback | None:
    """A fallback a previous worker run left in force (its last switch, still before its reset)."""
    for record in reversed(history):
        if record.get("event") != PROVIDER_SWITCHED:
            continue
        until = _number(record.get("until_epoch"))
        to = record.get("to")
        if record.get("from") == primary and isinstance(to, str) and until is not None and until > now:
            return Fallback(primary, to, until)
        return None
    return None


def switched(what: Fallback, back: bool, now: float, reason: str = "") -> tuple[dict, str]:
    """The history facts of a switch and its one-line text (Flow Log, notification, console)."""
    when = clock(what.until, now)
    if back:
        text = f"switched back to {what.primary}: its usage limit reset at {when}"
        return {"from": what.provider, "to": what.primary, "until_epoch": None}, text
    text = f"switched to {what.provider}: {what.primary}'s usage limit resets at {when}"
    if reason:
        text += f" ({reason})"
    return {"from": what.primary, "to": what.provider, "until_epoch": round(what.until, 3)}, text


# -- usage waits and retries -----------------------------------------------------------------------


@dataclass(frozen=True)
class UsageWait:
    until: float  # epoch seconds
    seconds: float
    clock: str  # HH:MM local time, with the date when it is not today (a weekly reset, past midnight)
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
    return UsageWait(until, seconds, clock(until, now), source, waited + seconds > settings.max_wait)


def retry_delay(failure: Failure | None, failures: int, settings: Settings) -> float:
    """Overload and 5xx back off exponentially; everything else waits SAMOCODE_RETRY_DELAY."""
    if failure is Failure.OVERLOADED:
        return min(settings.retry_delay * 2 ** max(0, failures - 1), MAX_BACKOFF)
    return settings.retry_delay
