"""Replay ingest throughput: 1m candles of 3 symbols to closed 1m/5m/15m/1h candle messages
(encoded, with headers) on the memory bus. kstrade's replay source vs what a user would
otherwise write: polars `group_by_dynamic` resampling plus fastavro per message, same data.

    python -m pytest bench/bench_ingest.py          # KSTRADE_BENCH_DAYS=7 for more
"""

from __future__ import annotations

import io
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import polars as pl

from figures import record
from kstrade.bus import Bus
from kstrade.ingest.replay import ReplaySource
from kstrade.ingest.service import ensure_candle_topics, run_ingest
from kstrade.ingest.synthetic import generate

DAYS = int(os.environ.get("KSTRADE_BENCH_DAYS", "2"))
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
SCHEMA = fastavro.parse_schema(
    json.loads((Path(__file__).resolve().parents[1] / "schemas" / "candle.avsc").read_text())
)


def _frame() -> pl.DataFrame:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    return pl.concat([generate(s, start, DAYS, 1).drop("regime") for s in SYMBOLS])


def _kstrade(frame: pl.DataFrame) -> tuple[int, float]:
    bus = Bus.memory()
    ensure_candle_topics(bus, SYMBOLS)
    t = time.perf_counter()
    source = ReplaySource(frame)
    run_ingest(bus, source)
    return source.health.candles_produced, time.perf_counter() - t


def _polars_fastavro(frame: pl.DataFrame) -> tuple[int, float]:
    bus = Bus.memory()
    ensure_candle_topics(bus, SYMBOLS)
    producer = bus.producer()
    t = time.perf_counter()
    n = 0
    for every in ("1m", "5m", "15m", "1h"):
        bars = (
            frame.sort("timestamp")
            .group_by_dynamic("timestamp", every=every, group_by="symbol")
            .agg(
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").sum(),
            )
        )
        for row in bars.iter_rows(named=True):
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, SCHEMA, {**row, "interval": every, "source": "replay"})
            producer.send(f"market.candles.{row['symbol']}.{every}", buf.getvalue(), key=row["symbol"].encode())
            n += 1
    producer.flush()
    return n, time.perf_counter() - t


def test_replay_throughput() -> None:
    frame = _frame()
    for _ in range(3):
        n, seconds = _kstrade(frame)
        record("replay 1m -> 4 timeframes (candles/s)", "kstrade", n / seconds, "candles/s")
        m, seconds = _polars_fastavro(frame)
        record("replay 1m -> 4 timeframes (candles/s)", "polars+fastavro", m / seconds, "candles/s")
    assert n == m  # the same candles come out (complete data: no gaps)
