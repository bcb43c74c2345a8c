"""An example of your own stage, which joins `run`, `backtest` and `service wide_bars` through the
config alone (README, "Your own stage"):

    [pipeline]
    extra_stages = ["kstrade.examples.wide_bars:WideBars"]

It reads the pipeline's candles and raises an INFO alert (`WIDE_BAR`) on `metrics.alerts` for
each bar whose range (high - low) is more than `max_range` of its close: the collector stores it
with the others, and Telegram sends it where `metrics.telegram.min_severity` is INFO. A stage of
your own is written the same way: a `Stage` subclass with a `name` (its consumer group is
`kstrade.{name}`), the topics it reads, `handle`, and the `from_settings(settings, bus)`
classmethod by which kstrade builds it. (kstrade registers this example's code in
`kstrade.codes` like its own; your stage names its codes as it likes.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from kstrade.bus import Bus, Output, Record
from kstrade.bus.topics import METRICS_ALERTS, candles
from kstrade.codes import AlertCode
from kstrade.config import Settings
from kstrade.schemas import Alert, Candle
from kstrade.schemas.models import Severity
from kstrade.stage import Stage


class WideBars(Stage):
    """An INFO alert for every bar wider than `max_range` of its close."""

    name = "wide_bars"
    #: The share of its close a bar's range may reach before it is reported.
    max_range = 0.004

    def __init__(self, symbols: Sequence[str], base_interval: str = "1m") -> None:
        super().__init__()
        self.topics = [candles(symbol, base_interval) for symbol in symbols]

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus) -> WideBars:
        """The configured symbols' candles, at the pipeline's base interval."""
        return cls(settings.symbols, settings.base_interval)

    def inputs(self) -> list[str]:
        return self.topics

    def handle(self, record: Record) -> Iterator[Output]:
        bar = self.decode(record, Candle)  # a bad record goes to the dead-letter topic
        if bar.high - bar.low > self.max_range * bar.close:
            alert = Alert(
                timestamp=bar.timestamp,
                severity=Severity.INFO,
                source=self.name,
                code=AlertCode.WIDE_BAR,
                message=f"{bar.symbol} {bar.interval} bar at {bar.timestamp:%Y-%m-%d %H:%M}: range "
                f"{(bar.high - bar.low) / bar.close:.2%} of its close",
            )
            yield self.emit(METRICS_ALERTS, alert, key=record.key, origin_ns=self.origin_ns(record))
