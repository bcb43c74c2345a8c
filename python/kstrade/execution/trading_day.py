"""The FTMO trading day: it starts at midnight Europe/Prague, never at the broker's server time.

All times are nanoseconds since the epoch from the stage clock, so a replay crosses midnights
(and daylight-saving switches) exactly as live trading does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

PRAGUE = ZoneInfo("Europe/Prague")
_NS = 1_000_000_000


def to_datetime(now_ns: int, tz: ZoneInfo = PRAGUE) -> datetime:
    seconds, rest = divmod(now_ns, _NS)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000).astimezone(tz)


def to_ns(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


def trading_day(now_ns: int) -> date:
    """The Prague calendar date of `now_ns` (FTMO: the day runs from Prague midnight)."""
    return to_datetime(now_ns).date()


def prague_midnight_ns(day: date) -> int:
    """Start of `day` in Prague. Midnight always exists there: the DST switches happen at 02:00/03:00."""
    return to_ns(datetime.combine(day, time(0), PRAGUE))


def next_midnight_ns(now_ns: int) -> int:
    """The next Prague midnight strictly after `now_ns`."""
    return prague_midnight_ns(trading_day(now_ns) + timedelta(days=1))


def trading_session(now_ns: int) -> str:
    """The FX session by UTC hour, for reports: asia 22-07, london 07-13, ny 13-22 (overlaps go to
    the later session)."""
    hour = to_datetime(now_ns, ZoneInfo("UTC")).hour
    if 7 <= hour < 13:
        return "london"
    if 13 <= hour < 22:
        return "ny"
    return "asia"
