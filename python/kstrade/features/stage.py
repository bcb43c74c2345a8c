"""The features stage: closed 1m candles in, one model input vector per candle out.

Reads `market.candles.{symbol}.1m`, feeds each symbol's native `FeatureEngine` (which builds
the 5m/15m/1h bars itself from the same minutes, so higher timeframes only ever contribute
closed bars), and emits a `FeatureVector` on `features.aggregated.{symbol}` once every
timeframe is warm. Vectors still warming up are counted, never emitted: a model never sees a
NaN. Candles the engine rejects (late, conflicting duplicate, invalid) go to the dead-letter
topic with the engine's stable code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kstrade._native import Candle as NativeCandle
from kstrade.bus import MessageError, Output, Record
from kstrade.bus.topics import candles, features_aggregated
from kstrade.features.engine import FEATURE_NAMES, FeatureEngine
from kstrade.schemas import Candle, FeatureVector
from kstrade.stage import Stage


@dataclass
class FeatureStats:
    candles: int = 0
    emitted: int = 0
    warming: int = 0
    duplicates: int = 0
    per_symbol: dict[str, int] = field(default_factory=dict)


class FeatureStage(Stage):
    name = "features"

    def __init__(self, symbols: Sequence[str]) -> None:
        super().__init__()
        if not symbols:
            raise ValueError("the features stage needs at least one symbol")
        self.symbols = list(symbols)
        self._topic_symbol = {candles(s, "1m"): s for s in self.symbols}
        self.engines: dict[str, FeatureEngine] = {s: FeatureEngine() for s in self.symbols}
        self._names = list(FEATURE_NAMES)
        self.stats = FeatureStats()

    def inputs(self) -> list[str]:
        return list(self._topic_symbol)

    def handle(self, record: Record) -> Iterable[Output]:
        symbol = self._topic_symbol.get(record.topic)
        if symbol is None:
            raise MessageError("UNKNOWN_TOPIC", f"{record.topic} is not a 1m candle topic of {self.symbols}")
        candle = self.decode(record, Candle)
        if candle.symbol != symbol:
            raise MessageError("SYMBOL_TOPIC_MISMATCH", f"a {candle.symbol} candle on {record.topic}")
        if candle.interval != "1m":
            raise MessageError("WRONG_INTERVAL", f"a {candle.interval} candle on {record.topic}")
        self.stats.candles += 1
        open_time_ms = int(candle.timestamp.timestamp() * 1000)
        native = NativeCandle(open_time_ms, candle.open, candle.high, candle.low, candle.close, candle.volume)
        vector = self.engines[symbol].update(native)  # MarketError (with .code) -> dead letter
        if vector is None:
            self.stats.duplicates += 1
            return ()
        if not vector.ready:
            self.stats.warming += 1
            return ()
        values = vector.values
        if not all(math.isfinite(v) for v in values):  # the engine promises this when ready
            raise MessageError("NON_FINITE_FEATURE", f"{symbol} at {candle.timestamp}: a ready vector with NaN/inf")
        message = FeatureVector(
            timestamp=datetime.fromtimestamp(vector.open_time_ms / 1000, UTC),
            symbol=symbol,
            version=FeatureEngine.version,
            names=self._names,
            values=values,
        )
        self.stats.emitted += 1
        self.stats.per_symbol[symbol] = self.stats.per_symbol.get(symbol, 0) + 1
        return [self.emit(features_aggregated(symbol), message, key=record.key, origin_ns=self.origin_ns(record))]
