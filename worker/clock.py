"""Wall-clock helpers shared by the providers: reset times that CLIs print as text.

Both CLIs print the reset in the user's local time, at minute resolution (seconds are cut off):
Claude Code  'You've hit your session limit · resets 5:24pm (Europe/Berlin)' (2.1.197), 'your 5-hour
             limit · resets 5pm (UTC)' (2.1.332), 'your weekly limit · resets Dec 2, 4:41pm (UTC)',
             'resets Dec 2, 2027, 4pm (UTC)', '… It resets 5pm (UTC).', a monthly 'resets Dec 1'
             with no time (its own time zone name in parentheses; a date alone means its midnight);
Codex        'try again at 4:56 PM.', 'Try again at Nov 27th, 2026 12:05 AM.' (no zone: local time).
The worker runs beside the CLI, so "local" is the worker's local time unless a zone is named.
"""

from __future__ import annotations

import datetime as dt
import re
import time

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_RESET = re.compile(
    r"(?:\bresets?|\btry\s+again)\s+(?:at\s+)?"
    r"(?:(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+(?P<day>\d{1,2})"
    r"(?:st|nd|rd|th)?,?\s+(?:(?P<year>\d{4}),?\s+)?(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<meridiem>[ap]\.?m\b\.?)?"
    r"(?:\s*\((?P<zone>[^()\s]+)\))?",
    re.IGNORECASE,
)
_DATE_ONLY = re.compile(
    r"\bresets?\s+(?:on\s+)?(?P<month>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+"
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{4}))?\b(?!:)(?:\s*\((?P<zone>[^()\s]+)\))?",
    re.IGNORECASE,
)
MINUTE = 60.0


def _zone(name: str | None) -> dt.tzinfo | None:
    """The named time zone, or None (local time) when there is no name or it is unknown."""
    if not name:
        return None
    if name.upper() in ("UTC", "GMT", "Z"):
        return dt.timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # here: 2 ms of start-up, and rarely needed

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _wall(now: float, tz: dt.tzinfo | None) -> dt.datetime:
    """`now` on the wall clock of tz (naive local time when tz is None, so DST follows the system)."""
    return dt.datetime.fromtimestamp(now, tz) if tz is not None else dt.datetime.fromtimestamp(now)


def _hour24(hour: int, meridiem: str | None) -> int | None:
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        return hour % 12 + (12 if meridiem.lower().startswith("p") else 0)
    return hour if 0 <= hour <= 23 else None


def next_clock_time(
    hour: int,
    minute: int,
    meridiem: str | None,
    now: float | None = None,
    tz: dt.tzinfo | None = None,
) -> float | None:
    """The start of the next minute the clock in `tz` (default: local time) shows hour:minute,
    12-hour when `meridiem` is am/pm, as epoch seconds. The current minute still counts: a limit
    printed as '4:32 PM' at 4:32:11 PM ends within seconds, not tomorrow."""
    hour24 = _hour24(hour, meridiem)
    if hour24 is None or not 0 <= minute <= 59:
        return None
    now = time.time() if now is None else now
    wall = _wall(now, tz)
    moment = wall.replace(hour=hour24, minute=minute, second=0, microsecond=0)
    if moment.timestamp() + MINUTE <= now:
        moment += dt.timedelta(days=1)  # wall-clock arithmetic: right across DST changes
    return moment.timestamp()


def reset_time(text: str, now: float | None = None) -> float | None:
    """When a usage limit printed in `text` is over, epoch seconds, or None when no time is named.

    The printed minute is truncated, so the limit is over at the end of that minute."""
    now = time.time() if now is None else now
    match = _RESET.search(text or "")
    if not match or not (match.group("minute") or match.group("meridiem")):
        # A bare number ('try again at 5') is not a time; a date alone is that day's midnight.
        dated = _DATE_ONLY.search(text or "")
        midnight = _on_date(dated, 0, 0, now, _zone(dated.group("zone"))) if dated else None
        return None if midnight is None else midnight - MINUTE
    tz = _zone(match.group("zone"))
    hour, minute = int(match.group("hour")), int(match.group("minute") or 0)
    meridiem = match.group("meridiem")
    if not match.group("month"):
        start = next_clock_time(hour, minute, meridiem, now, tz)
        return None if start is None else start + MINUTE
    hour24 = _hour24(hour, meridiem)
    if hour24 is None or not 0 <= minute <= 59:
        return None
    return _on_date(match, hour24, minute, now, tz)


def _on_date(
    match: re.Match[str], hour24: int, minute: int, now: float, tz: dt.tzinfo | None
) -> float | None:
    """The end of the minute hour24:minute on the matched month/day (this year or the next)."""
    wall = _wall(now, tz)
    month = _MONTHS.index(match.group("month").lower()) + 1
    years = [int(match.group("year"))] if match.group("year") else [wall.year, wall.year + 1]
    for year in years:
        try:
            moment = wall.replace(year, month, int(match.group("day")), hour24, minute, 0, 0)
        except ValueError:
            return None
        if moment.timestamp() + MINUTE > now or year == years[-1]:
            return moment.timestamp() + MINUTE
    return None
