"""The one clock abstraction: wall time live, event time in replay and backtests.

Stages never call `time.time()` for market logic: they ask their `Clock`. Live, that is the wall
clock; in a replay it is the time of the last market event, so a backtest of a month runs in
seconds yet every time-based rule (TTLs, grace periods, daily resets) sees the month pass.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

#: The Unix epoch, for datetime <-> epoch-unit conversions (one definition for the package).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_micros(t: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (the messages' timestamps)."""
    return (t - EPOCH) // _US


def from_micros(us: int) -> datetime:
    """The UTC datetime `us` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=us)


class Clock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since the Unix epoch (UTC)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class WallClock:
    """Real time."""

    def now_ns(self) -> int:
        return time.time_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class EventClock:
    """Time as the event stream says it is. Never goes backwards; `sleep` advances it."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance_to(self, event_ns: int) -> None:
        """Move to an event's time; an older event (late data) does not move time back."""
        if event_ns > self._now:
            self._now = event_ns

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._now += int(seconds * 1e9)
