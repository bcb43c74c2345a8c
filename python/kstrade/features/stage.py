"""The features stage: closed 1m candles in, one model input vector per candle out.

Reads `market.candles.{symbol}.1m`, feeds each symbol's native `FeatureEngine` (which builds
the 5m/15m/1h bars itself from the same minutes, so higher timeframes only ever contribute
closed bars), and emits a `FeatureVector` on `features.aggregated.{symbol}` once every
timeframe is warm. Vectors still warming up are counted, never emitted: a model never sees a
NaN. Candles the engine rejects (late, conflicting duplicate, invalid) go to the dead-letter
topic with the engine's stable code.

With a `state_dir`, the engines are checkpointed before every commit (one JSON file, written
atomically) and restored at start, so a restarted service continues warm instead of spending
a day and a half of candles warming the 1h timeframe again. Candles at or before a symbol's
checkpointed minute (redelivered after a crash between checkpoint and commit) were already
handled and emitted: they are skipped, not dead-lettered as late.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kstrade._native import Candle as NativeCandle
from kstrade.bus import MessageError, Output, Record
from kstrade.bus.topics import candles, features_aggregated
from kstrade.features.engine import FEATURE_NAMES, FeatureEngine
from kstrade.schemas import Candle, FeatureVector
from kstrade.stage import Stage, save_state


@dataclass
class FeatureStats:
    candles: int = 0
    emitted: int = 0
    warming: int = 0
    duplicates: int = 0
    replayed: int = 0  # redelivered candles already in the restored state
    per_symbol: dict[str, int] = field(default_factory=dict)


class FeatureStage(Stage):
    name = "features"

    STATE_VERSION = 1

    def __init__(self, symbols: Sequence[str], state_dir: Path | None = None) -> None:
        super().__init__()
        if not symbols:
            raise ValueError("the features stage needs at least one symbol")
        self.symbols = list(symbols)
        self._topic_symbol = {candles(s, "1m"): s for s in self.symbols}
        self.engines: dict[str, FeatureEngine] = {s: FeatureEngine() for s in self.symbols}
        self._names = list(FEATURE_NAMES)
        self.stats = FeatureStats()
        #: Per symbol, the open time (ms) of the newest candle the engine has consumed.
        self._through_ms: dict[str, int] = {}
        self._restored_ms: dict[str, int] = {}
        self._dirty = False
        self.state_file = None if state_dir is None else Path(state_dir).expanduser() / "features-state.json"
        if self.state_file is not None and self.state_file.exists():
            self._restore(self.state_file)

    # -- state ---------------------------------------------------------------------------------
    def _restore(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text())
            if state.get("version") != self.STATE_VERSION or state.get("features") != FeatureEngine.version:
                raise ValueError(f"state version {state.get('version')}/{state.get('features')} is not this build's")
            for symbol, entry in state["symbols"].items():
                if symbol in self.engines:
                    self.engines[symbol].restore(base64.b64decode(entry["engine"]))
                    self._through_ms[symbol] = self._restored_ms[symbol] = int(entry["through_ms"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot restore the features state from {path}: {exc}") from exc

    def checkpoint(self) -> None:
        if self.state_file is None or not self._dirty:
            return
        state = {
            "version": self.STATE_VERSION,
            "features": FeatureEngine.version,
            "symbols": {
                s: {"through_ms": ms, "engine": base64.b64encode(self.engines[s].snapshot()).decode("ascii")}
                for s, ms in self._through_ms.items()
            },
        }
        save_state(self.state_file, state)
        self._dirty = False

    def inputs(self) -> list[str]:
        return self.inputs_for(self.symbols)

    @classmethod
    def inputs_for(cls, symbols: Sequence[str]) -> list[str]:
        return [candles(s, "1m") for s in symbols]

    @classmethod
    def outputs_for(cls, symbols: Sequence[str]) -> list[str]:
        """Topics it emits to (dead letters aside): what its principal may write (`kstrade.bus.acl`)."""
        return [features_aggregated(s) for s in symbols]

    def handle(self, record: Record) -> Iterable[Output]:
        symbol = self._topic_symbol.get(record.topic)
        if symbol is None:
            raise MessageError("UNKNOWN_TOPIC", f"{record.topic} is not a 1m candle topic of {self.symbols}")
        candle = self.decode(record, Candle)
        if candle.symbol != symbol:
            raise MessageError("SYMBOL_TOPIC_MISMATCH", f"a {candle.symbol} candle on {record.topic}")
        if candle.interval != "1m":
            raise MessageError("WRONG_INTERVAL", f"a {candle.interval} candle on {record.topic}")
        open_time_ms = int(candle.timestamp.timestamp() * 1000)
        if open_time_ms <= self._restored_ms.get(symbol, -1):
            self.stats.replayed += 1  # handled before the restart (checkpointed, not yet committed)
            return ()
        self.stats.candles += 1
        native = NativeCandle(open_time_ms, candle.open, candle.high, candle.low, candle.close, candle.volume)
        vector = self.engines[symbol].update(native)  # MarketError (with .code) -> dead letter
        if open_time_ms > self._through_ms.get(symbol, -1):
            self._through_ms[symbol] = open_time_ms
        self._dirty = True
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
