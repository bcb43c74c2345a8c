"""The features stage: closed 1m candles in, one model input vector per candle out.

On a 1h base interval (`base_interval = "1h"`) read "1h" for "1m" below, and 4h/8h/1d for the
higher timeframes: the stage reads `market.candles.{symbol}.1h` and its engines build the rest.

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

Incomplete higher-timeframe bars (the rule): a 5m/15m/1h bar the engine builds from fewer 1m
candles than its interval (minutes without a candle: no trade in them, or lost, which ingest
alerts) updates the indicators as built, its OHLC and volume those of the minutes that came: never
dropped, never padded with made-up minutes. A minute without trades is the market's truth (the
exchange builds its own bars the same way); dropping the bar would stretch every N-bar indicator
over a longer span and leave the timeframe stale; and a completeness feature would change the
feature list the shipped models were trained on. The models already see missing minutes through
`gap_minutes`. Such bars are counted per timeframe in `stats.incomplete_bars` (warm-up included),
as ingest counts those it publishes (`incomplete_bars` in its health, `minutes` on each candle).

Time sanity: live, a candle that closes more than the allowed skew after the wall clock
(`Stage.future_limit_ns`, bus.max_future_skew_s) is dead-lettered FUTURE_TIMESTAMP before it
reaches the engine, whatever its headers say. Without this one candle a year ahead became the
symbol's newest minute, and every real candle after it was LATE_CANDLE, across restarts too.
A checkpoint that holds such a minute (written before this check existed) is discarded for
that symbol at start, with a warning: the symbol warms up again instead of staying poisoned.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

import kstrade._native as _native
from kstrade._native import Candle as NativeCandle
from kstrade.bus import Batch, Bus, MessageError, Output, Record
from kstrade.bus.runner import FUTURE_TIMESTAMP, future_message
from kstrade.bus.topics import candles, features_aggregated
from kstrade.codes import DeadLetter
from kstrade.features.engine import BASE_INTERVAL_MS, FeatureEngine
from kstrade.schemas import Candle, Codec, FeatureVector
from kstrade.stage import Stage, save_state

if TYPE_CHECKING:
    from kstrade.config import Settings

#: Fewer candles of one symbol than this in a poll go the record-at-a-time way (live, a poll is
#: usually one candle: nothing to gain from columns).
_BATCH_FROM = 8
#: A 1m candle closes a minute after it opens: the time it can first exist.
_MINUTE_MS = 60_000


@dataclass
class FeatureStats:
    candles: int = 0
    emitted: int = 0
    warming: int = 0
    #: Candles of the history replayed before a replay's period (`warm_up`), and those refused.
    warmup: int = 0
    warmup_rejected: int = 0
    duplicates: int = 0
    replayed: int = 0  # redelivered candles already in the restored state
    per_symbol: dict[str, int] = field(default_factory=dict)
    #: Per timeframe, all symbols: higher bars fed to the indicators with fewer 1m candles than
    #: their interval, used as built (the rule in the module doc). Since start, warm-up included.
    incomplete_bars: dict[str, int] = field(default_factory=lambda: {"5m": 0, "15m": 0, "1h": 0})


class FeatureStage(Stage):
    name = "features"

    STATE_VERSION = 1

    def __init__(self, symbols: Sequence[str], state_dir: Path | None = None, *, base_interval: str = "1m") -> None:
        super().__init__()
        if not symbols:
            raise ValueError("the features stage needs at least one symbol")
        if base_interval not in BASE_INTERVAL_MS:
            raise ValueError(f"base interval {base_interval!r}: features are built on {' or '.join(BASE_INTERVAL_MS)}")
        self.symbols = list(symbols)
        self.base_interval = base_interval
        self._bar_ms = BASE_INTERVAL_MS[base_interval]
        self._topic_symbol = {candles(s, base_interval): s for s in self.symbols}
        self.engines: dict[str, FeatureEngine] = {s: FeatureEngine(base_interval) for s in self.symbols}
        self._names = list(self.engines[self.symbols[0]].names)
        self.stats = FeatureStats()
        higher = self.engines[self.symbols[0]].timeframes[1:]
        self.stats.incomplete_bars = dict.fromkeys(higher, 0)
        #: Per symbol, the open time (ms) of the newest candle the engine has consumed.
        self._through_ms: dict[str, int] = {}
        self._restored_ms: dict[str, int] = {}
        self._dirty = False
        self.state_file = None if state_dir is None else Path(state_dir).expanduser() / "features-state.json"
        if self.state_file is not None and self.state_file.exists():
            self._restore(self.state_file)

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus | None = None) -> Self:
        """The stage as configured: the settings' symbols, base interval and `features.state_dir`."""
        return cls(settings.symbols, settings.features.state_dir, base_interval=settings.base_interval)

    # -- state ---------------------------------------------------------------------------------
    def _restore(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text())
            if state.get("version") != self.STATE_VERSION or state.get("features") != FeatureEngine.version:
                raise ValueError(f"state version {state.get('version')}/{state.get('features')} is not this build's")
            if state.get("base_interval", "1m") != self.base_interval:
                raise ValueError(
                    f"its engines run on {state.get('base_interval', '1m')} candles, this stage on "
                    f"{self.base_interval} (base_interval): give it another features.state_dir"
                )
            limit = self.future_limit_ns()
            for symbol, entry in state["symbols"].items():
                if symbol in self.engines:
                    through_ms = int(entry["through_ms"])
                    if limit is not None and (through_ms + self._bar_ms) * 1_000_000 > limit:
                        print(
                            f"features: the checkpoint in {path} has {symbol} at a minute ahead of the clock "
                            f"({future_message('its newest candle', (through_ms + self._bar_ms) * 1_000_000, limit)}): "
                            "discarded, the symbol warms up again",
                            file=sys.stderr,
                            flush=True,
                        )
                        self._dirty = True  # the next checkpoint no longer holds it
                        continue
                    self.engines[symbol].restore(base64.b64decode(entry["engine"]))
                    self._through_ms[symbol] = self._restored_ms[symbol] = through_ms
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot restore the features state from {path}: {exc}") from exc

    def checkpoint(self) -> None:
        if self.state_file is None or not self._dirty:
            return
        state: dict[str, Any] = {
            "version": self.STATE_VERSION,
            "features": FeatureEngine.version,
            "symbols": {
                s: {"through_ms": ms, "engine": base64.b64encode(self.engines[s].snapshot()).decode("ascii")}
                for s, ms in self._through_ms.items()
            },
        }
        if self.base_interval != "1m":  # a 1m checkpoint reads as it always has
            state["base_interval"] = self.base_interval
        save_state(self.state_file, state)
        self._dirty = False

    def inputs(self) -> list[str]:
        return self.inputs_for(self.symbols, self.base_interval)

    @classmethod
    def inputs_for(cls, symbols: Sequence[str], base_interval: str = "1m") -> list[str]:
        return [candles(s, base_interval) for s in symbols]

    @classmethod
    def outputs_for(cls, symbols: Sequence[str]) -> list[str]:
        """Topics it emits to (dead letters aside): what its principal may write (`kstrade.bus.acl`)."""
        return [features_aggregated(s) for s in symbols]

    def _count_incomplete_bars(self) -> None:
        totals = dict.fromkeys(self.stats.incomplete_bars, 0)
        for engine in self.engines.values():
            for interval, n in engine.incomplete_bars.items():
                totals[interval] = totals.get(interval, 0) + n
        self.stats.incomplete_bars = totals

    def handle(self, record: Record) -> Iterable[Output]:
        out = self._handle(record)
        self._count_incomplete_bars()
        return out

    def _handle(self, record: Record) -> Iterable[Output]:
        symbol = self._topic_symbol.get(record.topic)
        if symbol is None:
            raise MessageError(
                DeadLetter.UNKNOWN_TOPIC, f"{record.topic} is not a {self.base_interval} candle topic of {self.symbols}"
            )
        candle = self.decode(record, Candle)
        if candle.symbol != symbol:
            raise MessageError(DeadLetter.SYMBOL_TOPIC_MISMATCH, f"a {candle.symbol} candle on {record.topic}")
        if candle.interval != self.base_interval:
            raise MessageError(DeadLetter.WRONG_INTERVAL, f"a {candle.interval} candle on {record.topic}")
        open_time_ms = int(candle.timestamp.timestamp() * 1000)
        limit = self.future_limit_ns()
        if limit is not None and (open_time_ms + self._bar_ms) * 1_000_000 > limit:
            # Before the engine: a future minute would become the symbol's clock (LATE_CANDLE after).
            close_ns = (open_time_ms + self._bar_ms) * 1_000_000
            raise MessageError(FUTURE_TIMESTAMP, f"{symbol}: {future_message('candle close', close_ns, limit)}")
        if open_time_ms <= self._restored_ms.get(symbol, -1):
            self.stats.replayed += 1  # handled before the restart (checkpointed, not yet committed)
            return ()
        self.stats.candles += 1
        native = NativeCandle(
            open_time_ms, candle.open, candle.high, candle.low, candle.close, candle.volume, self.base_interval
        )
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
            raise MessageError(
                DeadLetter.NON_FINITE_FEATURE, f"{symbol} at {candle.timestamp}: a ready vector with NaN/inf"
            )
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

    # -- many candles at once ------------------------------------------------------------------------
    def warm_up(self, symbol: str, times_ms: np.ndarray, prices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """History before a replay's period, straight into the symbol's engine (open times in ms,
        then open, high, low, close and volume columns, in time order): nothing is emitted, so
        the period starts with warm indicators. Returns the open times and the rows (time, feature)
        of the ready vectors, for the models' windows. A candle the engine refuses is skipped and
        counted (`stats.warmup_rejected`): it only makes the warm-up shorter."""
        engine = self.engines[symbol]
        raw, open_times, ready, rejected = engine.update_batch(
            np.ascontiguousarray(times_ms, dtype=np.int64), *(np.ascontiguousarray(p, dtype=np.float64) for p in prices)
        )
        self.stats.warmup += len(times_ms)
        self.stats.warmup_rejected += len(rejected)
        self._count_incomplete_bars()
        if open_times:
            self._through_ms[symbol] = max(self._through_ms.get(symbol, -1), int(open_times[-1]))
        rows = np.frombuffer(raw, dtype=np.float64).reshape(len(self._names), len(open_times)).T
        keep = np.asarray(ready, dtype=bool) & np.isfinite(rows).all(axis=1)
        return np.asarray(open_times, dtype=np.int64)[keep], rows[keep]

    def handle_batch(self, batch: Batch) -> Iterable[Output]:
        """`handle` for a whole poll: each symbol's candles decoded natively in one call and fed
        to its engine in one call, vectors encoded in one call. A candle that is anything but
        plainly valid (headers, decoding, the model's checks, the topic's symbol) takes the
        record-at-a-time path in its place, so bad input is dead-lettered exactly as `handle`
        does it, and the engine sees the candles in the same order."""
        by_topic: dict[str, list[Record]] = {}
        for record in batch.records:
            by_topic.setdefault(record.topic, []).append(record)
        out: list[Output] = []
        for topic, records in by_topic.items():
            symbol = self._topic_symbol.get(topic)
            if symbol is None or len(records) < _BATCH_FROM:
                out += batch.each(self._handle, records)
            else:
                out += self._symbol_batch(batch, symbol, records)
        self._count_incomplete_bars()
        return out

    def _symbol_batch(self, batch: Batch, symbol: str, records: list[Record]) -> list[Output]:
        codec = self.codec(Candle)
        plain = [codec.plain_headers(r) for r in records]
        values = [r.value or b"" for r in records]
        cols = codec.decode_batch(values, topic=records[0].topic, errors="skip")
        ok = np.zeros(len(records), dtype=bool)
        rows = cols["rows"]
        o, h, lo, c, v = (cols[k] for k in ("open", "high", "low", "close", "volume"))
        with np.errstate(invalid="ignore"):
            # The Candle model's checks, as columns: what fails any goes the record way.
            valid = (
                np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
                & (v >= 0) & (lo <= np.minimum(o, c)) & (np.maximum(o, c) <= h)
            )  # fmt: skip
        # A 1m candle is built from one minute, or does not say (the model refuses anything else);
        # a 1h one from at most 60.
        minutes, most = cols["minutes"], self._bar_ms // _MINUTE_MS
        valid &= (minutes == -1) | ((minutes >= 1) & (minutes <= most))
        base = self.base_interval
        for i, row in enumerate(rows.tolist()):
            ok[row] = bool(valid[i]) and cols["symbol"][i] == symbol and cols["interval"][i] == base and plain[row]
        micros = cols["timestamp"].astype(np.int64)
        ok[rows[micros % 1000 != 0]] = False  # not on a millisecond: left to `handle`'s rounding
        limit = self.future_limit_ns()
        if limit is not None:  # from the future: `handle` dead-letters it (one comparison per poll)
            ok[rows[micros // 1000 + self._bar_ms > limit // 1_000_000]] = False  # in ms: no int64 overflow
        times = np.full(len(records), -1, dtype=np.int64)
        times[rows] = micros // 1000
        where = np.full(len(records), -1, dtype=np.int64)
        where[rows] = np.arange(len(rows))
        out: list[Output] = []
        start = 0
        for i in range(len(records) + 1):
            if i < len(records) and ok[i]:
                continue
            if start < i:  # a run of plain candles
                picked = where[start:i]
                out += self._engine_run(
                    batch, symbol, records[start:i], times[start:i], [col[picked] for col in (o, h, lo, c, v)]
                )
            if i < len(records):
                out += batch.each(self._handle, records[i : i + 1])
            start = i + 1
        return out

    def _engine_run(
        self, batch: Batch, symbol: str, records: list[Record], times: np.ndarray, prices: list[np.ndarray]
    ) -> list[Output]:
        restored = self._restored_ms.get(symbol, -1)
        fresh = times > restored
        self.stats.replayed += int((~fresh).sum())  # handled before the restart
        if not fresh.all():
            records = [r for r, f in zip(records, fresh.tolist(), strict=True) if f]
            times = times[fresh]
            prices = [p[fresh] for p in prices]
        if not records:
            return []
        self.stats.candles += len(records)
        engine = self.engines[symbol]
        raw, open_times, ready, rejected = engine.update_batch(
            np.ascontiguousarray(times), *(np.ascontiguousarray(p) for p in prices)
        )
        failed = {index: (code, message) for index, code, message in rejected}
        matrix = np.frombuffer(raw, dtype=np.float64).reshape(len(self._names), len(open_times))
        finite = np.all(np.isfinite(matrix), axis=0, keepdims=True)[0]  # per column
        pending: list[tuple[Record, int, int]] = []  # (record, its matrix column, open time ms)
        j = 0
        for k, record in enumerate(records):
            bad = failed.get(k)
            if bad is not None:
                batch.reject(record, bad[0], bad[1])  # MarketError from the engine, as `handle`
                continue
            open_ms = int(times[k])
            if open_ms > self._through_ms.get(symbol, -1):
                self._through_ms[symbol] = open_ms
            self._dirty = True
            if j >= len(open_times) or open_times[j] != open_ms:
                self.stats.duplicates += 1
                continue
            column, is_ready = j, ready[j]
            j += 1
            if not is_ready:
                self.stats.warming += 1
                continue
            if not bool(finite[column]):
                at = datetime.fromtimestamp(open_ms / 1000, UTC)
                batch.reject(record, DeadLetter.NON_FINITE_FEATURE, f"{symbol} at {at}: a ready vector with NaN/inf")
                continue
            pending.append((record, column, open_ms))
        if not pending:
            return []
        self.stats.emitted += len(pending)
        self.stats.per_symbol[symbol] = self.stats.per_symbol.get(symbol, 0) + len(pending)
        topic = features_aggregated(symbol)
        codec = self.codec(FeatureVector)
        outs = []
        for (record, _, _), data in zip(pending, self._encode(codec, symbol, raw, matrix, pending), strict=True):
            origin = self.origin_ns(record)
            outs.append(Output(topic, data, key=record.key, headers=codec.headers(origin, self.name), origin_ns=origin))
        return outs

    def _encode(
        self, codec: Codec, symbol: str, raw: bytes, matrix: np.ndarray, pending: list[tuple[Record, int, int]]
    ) -> list[bytes]:
        """The feature vectors' bodies: straight from the engine's matrix in one native call
        when the codec writes the native Avro layout, else through the codec's values."""
        if codec.native and codec.format == "avro":
            columns = [column for _, column, _ in pending]
            times_us = [open_ms * 1000 for _, _, open_ms in pending]
            bodies = _native.encode_feature_columns(symbol, FeatureEngine.version, self._names, raw, columns, times_us)
            return bodies if codec.wire == "bare" else [codec.frame(body) for body in bodies]
        values = [{"timestamp": open_ms * 1000, "symbol": symbol, "version": FeatureEngine.version,
                   "names": self._names, "values": matrix[:, column].tolist()}
                  for _, column, open_ms in pending]  # fmt: skip
        return codec.encode_values(values)
