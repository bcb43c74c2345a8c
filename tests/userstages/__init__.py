"""A user's own stages, as a package outside kstrade would hold them: the tests add them to
`run` and `service` through the config alone (tests/test_user_stages.py), and the bad ones show
what the config's check says."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from kstrade.bus import Bus, Output, Record
from kstrade.bus.topics import METRICS_ALERTS, candles
from kstrade.config import Settings
from kstrade.schemas import Alert, Candle
from kstrade.schemas.models import Severity
from kstrade.stage import Stage

#: The code of this package's alerts: a user's stage names its own.
HOUR_MARK = "HOUR_MARK"


class HourMarks(Stage):
    """An INFO alert for every bar that closes a UTC hour, per symbol."""

    name = "hour_marks"

    def __init__(self, symbols: Sequence[str], base_interval: str) -> None:
        super().__init__()
        self.topics = [candles(s, base_interval) for s in symbols]

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus) -> HourMarks:
        return cls(settings.symbols, settings.base_interval)

    def inputs(self) -> list[str]:
        return self.topics

    def handle(self, record: Record) -> Iterator[Output]:
        bar = self.decode(record, Candle)
        if bar.interval == "1m" and bar.timestamp.minute == 59:
            alert = Alert(
                timestamp=bar.timestamp, severity=Severity.INFO, source=self.name, code=HOUR_MARK,
                message=f"{bar.symbol} closed the hour at {bar.close}",
            )  # fmt: skip
            yield self.emit(METRICS_ALERTS, alert, key=record.key, origin_ns=self.origin_ns(record))


class NotAStage:
    """A class, but no Stage."""


class NoConstructor(Stage):
    """A Stage that only a test builds by hand: no from_settings."""

    name = "no_constructor"

    def inputs(self) -> list[str]:
        return []

    def handle(self, record: Record) -> Iterator[Output]:
        return iter(())


class TakenName(HourMarks):
    """A stage that would share the signals stage's consumer group."""

    name = "signals"


class Twin(HourMarks):
    """Another class under HourMarks's name (it inherits it)."""
