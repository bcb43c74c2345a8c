"""Replay of candle files (CSV or Parquet) as a `Source`: at real-time speed, at xN, or as fast as
possible, always in the same order, so the same file gives the same messages byte for byte.

A file holds one row per candle: `timestamp` (UTC datetime) or `open_time_ms`, `open`, `high`,
`low`, `close`, `volume`, and `symbol` (or one symbol for the whole file). 1m files go through
`MultiTimeframeCandles` and fill all four timeframe topics; a file of another interval (the
bundled EURUSD 1h series) goes to its own topic only: finer bars cannot be made from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kstrade.bus import Output
from kstrade.bus.topics import INTERVALS
from kstrade.clock import Clock, EventClock, WallClock
from kstrade.data import eurusd_1h
from kstrade.features import Candle as NativeCandle
from kstrade.ingest.health import FeedHealth
from kstrade.ingest.resume import ResumePoint
from kstrade.ingest.rollup import INTERVAL_MS, MultiTimeframeCandles, close_time_ns
from kstrade.schemas import Candle, Codec
from kstrade.stage import Source

log = logging.getLogger("kstrade.ingest")

COLUMNS = ("open_time_ms", "symbol", "open", "high", "low", "close", "volume")
#: Rows `ReplaySource` turns into Python tuples at a time.
_ROWS_AT_ONCE = 20_000


def read_candles(path: Path | str, symbol: str | None = None) -> pl.DataFrame:
    """A candle file as `open_time_ms, symbol, open, high, low, close, volume`, sorted by time then
    symbol. Raises ValueError naming what is missing."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pl.read_csv(path, try_parse_dates=True)
    else:
        raise ValueError(f"{path}: replay reads .csv or .parquet candle files")
    return normalise(frame, symbol, str(path))


def normalise(frame: pl.DataFrame, symbol: str | None = None, what: str = "frame") -> pl.DataFrame:
    if "open_time_ms" not in frame.columns:
        if "timestamp" not in frame.columns:
            raise ValueError(f"{what}: needs a 'timestamp' or 'open_time_ms' column")
        ts = pl.col("timestamp")
        if frame.schema["timestamp"] == pl.String:
            ts = ts.str.to_datetime(time_zone="UTC")
        frame = frame.with_columns(ts.dt.epoch("ms").alias("open_time_ms"))
    if "symbol" not in frame.columns:
        if symbol is None:
            raise ValueError(f"{what}: has no 'symbol' column; say which symbol it holds")
        frame = frame.with_columns(pl.lit(symbol).alias("symbol"))
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")
    out = frame.select(
        pl.col("open_time_ms").cast(pl.Int64),
        pl.col("symbol").cast(pl.String),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")),
    )
    return out.sort(["open_time_ms", "symbol"], maintain_order=True)


def eurusd_1h_candles() -> pl.DataFrame:
    """The bundled real EURUSD 1h series (gym-anytrading, MIT) ready to replay as symbol EURUSD."""
    return normalise(eurusd_1h(), "EURUSD", "eurusd_1h_ask.csv")


@dataclass(frozen=True)
class Speed:
    """None: as fast as possible; 1.0: real time; N: N times real time."""

    factor: float | None = None

    def __post_init__(self) -> None:
        if self.factor is not None and not self.factor > 0:
            raise ValueError(f"replay speed must be > 0, not {self.factor}")

    @classmethod
    def parse(cls, text: str) -> Speed:
        """'max', 'realtime' or 'x60' / '60'."""
        t = text.strip().lower()
        if t in ("max", "fast", "asap"):
            return cls(None)
        if t in ("realtime", "real-time", "1", "x1"):
            return cls(1.0)
        return cls(float(t.removeprefix("x")))


class ReplaySource(Source):
    """Candles from a frame, one instant per batch (every symbol's candles that closed then).

    `interval` is the interval of the rows. `resume` (from `resume_points`) makes it skip what
    the topics already hold and rebuild the open higher bars first. `pacer` is the clock used to
    wait between instants (the wall clock; a test can pass an `EventClock`).
    """

    name = "ingest"

    def __init__(
        self,
        frame: pl.DataFrame,
        *,
        interval: str = "1m",
        speed: Speed | None = None,
        resume: Mapping[str, ResumePoint] | None = None,
        source: str = "replay",
        health: FeedHealth | None = None,
        pacer: Clock | None = None,
    ) -> None:
        super().__init__()
        if interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval!r}: use one of {', '.join(INTERVALS)}")
        self.clock = EventClock()
        self.interval = interval
        self.speed = speed or Speed()
        self.pacer = pacer or WallClock()
        self.health = health or FeedHealth()
        self.source = source
        self.source_name = source  # the key of its health on metrics.ingest_health
        resume = resume or {}
        frame = normalise(frame)
        self._rollups: dict[str, MultiTimeframeCandles] = {}
        self._codec = Codec(Candle)
        pending: list[Output] = []
        for symbol in frame.get_column("symbol").unique(maintain_order=True).to_list():
            point = resume.get(symbol)
            rollup = MultiTimeframeCandles(
                symbol,
                source,
                health=self.health,
                resume_after=dict(point.last_open_ms) if point else {},
                codec=self._codec,
            )
            self._rollups[symbol] = rollup
            if point is not None and interval == "1m":
                # Rebuild the open bars; emits only what a crash left unwritten.
                for c in point.recent_1m:
                    pending += rollup.push(c)
            last = point.last_open_ms.get(interval) if point else None
            if last is not None:
                skipped = frame.filter((pl.col("symbol") == symbol) & (pl.col("open_time_ms") <= last)).height
                frame = frame.filter((pl.col("symbol") != symbol) | (pl.col("open_time_ms") > last))
                log.info("replay %s: %d candle(s) already on the topics, skipped", symbol, skipped)
        self._pending = pending
        self.symbols = list(self._rollups)
        self._frame = frame
        self._times = frame.get_column("open_time_ms").to_numpy()
        # The frame's rows as Python tuples, a slice at a time: all of them at once would hold
        # ~300 bytes per candle for the whole replay (~470 MB for a year of 3 symbols).
        self._rows: list[tuple[Any, ...]] = []
        self._rows_from = 0  # the frame index of `_rows[0]`
        self._i = 0
        #: Instants per flush for `run_ingest`: every one when paced (latency), else 1000. Any
        #: number is safe: a restart rebuilds from the most lagging topic (`resume_points`).
        self.flush_every = 1 if self.speed.factor is not None else 1000
        self._first_event_ns: int | None = None
        self._first_pacer_ns = 0

    @property
    def remaining(self) -> int:
        return self._frame.height - self._i

    def _rows_between(self, i: int, j: int) -> list[tuple[Any, ...]]:
        """Rows `i` to `j` of the frame (i only grows from call to call)."""
        end = self._rows_from + len(self._rows)
        if j > end:
            kept = self._rows[i - self._rows_from :]
            self._rows = kept + self._frame.slice(end, max(_ROWS_AT_ONCE, j - end)).rows()
            self._rows_from = i
        return self._rows[i - self._rows_from : j - self._rows_from]

    def next_batch(self) -> list[Output] | None:
        if self._pending:
            out, self._pending = self._pending, []
            return out
        n = len(self._times)
        if self._i >= n:
            return None
        t = int(self._times[self._i])
        j = self._i
        while j < n and int(self._times[j]) == t:
            j += 1
        rows = self._rows_between(self._i, j)
        self._i = j
        close_ns = close_time_ns(t, self.interval)
        self._pace(close_ns)
        outputs: list[Output] = []
        for open_ms, symbol, o, h, lo, c, v in rows:
            try:
                candle = NativeCandle(open_ms, o, h, lo, c, v, self.interval)
            except ValueError as exc:
                self.health.rejected += 1
                log.error("replay %s: bad candle at %d skipped: %s", symbol, open_ms, exc)
                continue
            rollup = self._rollups[symbol]
            if self.interval == "1m":
                outputs += rollup.push(candle)
            elif rollup._fresh(self.interval, open_ms):
                outputs.append(rollup.output(self.interval, candle, self.source))
                self.health.candles_produced += 1
        # Event time moves to the close of this instant (Pipeline passes its own EventClock).
        advance = getattr(self.clock, "advance_to", None)
        if advance is not None:
            advance(close_ns)
        return outputs

    def _pace(self, close_ns: int) -> None:
        """Wait (on the pacer) until event time since the first instant, divided by the speed, has
        passed: measured from the start, so time spent producing does not accumulate as drift."""
        if self.speed.factor is None:
            return
        if self._first_event_ns is None:
            self._first_event_ns = close_ns
            self._first_pacer_ns = self.pacer.now_ns()
            return
        due = self._first_pacer_ns + (close_ns - self._first_event_ns) / self.speed.factor
        self.pacer.sleep((due - self.pacer.now_ns()) / 1e9)


def interval_of(frame: pl.DataFrame) -> str:
    """The interval of a candle frame: the smallest step between a symbol's rows."""
    steps = (
        normalise(frame)
        .with_columns(pl.col("open_time_ms").diff().over("symbol").alias("step"))
        .get_column("step")
        .drop_nulls()
    )
    if steps.is_empty():
        return "1m"
    positive = steps.filter(steps > 0)
    step = int(positive.to_numpy().min()) if not positive.is_empty() else INTERVAL_MS["1m"]
    for name, ms in INTERVAL_MS.items():
        if step == ms:
            return name
    raise ValueError(f"rows are {step} ms apart: not one of {', '.join(INTERVALS)}")
