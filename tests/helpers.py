"""Set-ups the test modules share, written once: a memory bus that holds the catalogue's topics,
`kstrade.app.run`'s stages in a `Pipeline` on it, SYNTHETIC minutes sent as one symbol's
candles (with the origin header a live feed gives them), outputs as the records a stage
consumes, and records cut into polls."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import polars as pl

from kstrade.bus import Bus, Output, Producer, Record
from kstrade.bus.topics import candles
from kstrade.config import Settings
from kstrade.schemas import Candle, Codec
from kstrade.services import ensure_topics
from kstrade.stage import Pipeline, Stage
from kstrade.stages import pipeline_stages


def memory_bus(settings: Settings) -> Bus:
    """A memory bus holding every catalogue topic of `settings`, as `run` starts one."""
    bus = Bus.memory()
    ensure_topics(bus, settings)
    return bus


def embedded_pipeline(settings: Settings, **options: Any) -> tuple[Bus, list[Stage], Pipeline]:
    """`run`'s stages (`kstrade.stages.pipeline_stages`) in a `Pipeline` (`options`: its keyword
    arguments) on a fresh memory bus (`memory_bus`)."""
    bus = memory_bus(settings)
    stages = pipeline_stages(settings, bus)
    return bus, stages, Pipeline(bus, stages, **options)


def send_minute(producer: Producer, codec: Codec, symbol: str, row: dict[str, Any]) -> None:
    """One SYNTHETIC minute (a row of `kstrade.ingest.synthetic.generate`) as `symbol`'s 1m candle,
    with the headers a feed gives it (its close as origin); not flushed."""
    c = Candle(
        timestamp=row["timestamp"], symbol=symbol, interval="1m", open=row["open"], high=row["high"],
        low=row["low"], close=row["close"], volume=row["volume"], source="synthetic",
    )  # fmt: skip
    close_ns = int((row["timestamp"] + timedelta(minutes=1)).timestamp() * 1e9)
    producer.send(candles(symbol, "1m"), codec.encode(c), key=symbol.encode(), headers=codec.headers(close_ns, "t"))


def send_minutes(producer: Producer, minutes: pl.DataFrame, symbol: str) -> None:
    """Every minute of `minutes` (`send_minute`), then flushed."""
    codec = Codec(Candle)
    for row in minutes.iter_rows(named=True):
        send_minute(producer, codec, symbol, row)
    producer.flush()


T = TypeVar("T")


def polls_of(records: Sequence[T], sizes: Sequence[int]) -> list[list[T]]:
    """`records` cut into polls of `sizes`, in order; the last poll takes the rest (maybe none)."""
    polls, start = [], 0
    for size in sizes:
        polls.append(list(records[start : start + size]))
        start += size
    polls.append(list(records[start:]))
    return polls


def consumed(outs: Sequence[Output], symbols: Sequence[str]) -> list[Record]:
    """`outs` as a stage would consume them, in their order: sent on a memory bus holding the
    catalogue of `symbols` (each with a `seq` header: its index) and polled back."""
    bus = memory_bus(Settings(symbols=list(symbols)))
    producer = bus.producer()
    for i, out in enumerate(outs):
        producer.send(out.topic, out.value, key=out.key, headers=[*out.headers, ("seq", str(i).encode())])
    producer.flush()
    consumer = bus.consumer("consumed")
    consumer.subscribe(sorted({out.topic for out in outs}))
    got = consumer.poll(max_records=100_000, timeout=0.0)
    assert len(got) == len(outs)
    return sorted(got, key=lambda r: int(r.header("seq") or b""))
