"""Wall-clock helpers shared by the providers (reset times printed as '5:24pm (UTC)')."""

from __future__ import annotations

import datetime as dt


def next_clock_time(
    hour: int, minute: int, meridiem: str | None, now: dt.datetime | None = None
) -> float | None:
    """The next UTC moment showing hour:minute (12-hour when `meridiem` is am/pm), epoch seconds."""
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem.lower() == "pm" else 0)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    moment = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if moment <= now:
        moment += dt.timedelta(days=1)
    return moment.timestamp()
