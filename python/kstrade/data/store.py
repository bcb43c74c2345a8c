"""The candle store: your own candles on disk, one Parquet file per symbol and month, readable by
`run --data STORE` / `backtest --data STORE` (through `read_candles`).

    STORE/symbol=BTC-USD/2026-01.parquet
    STORE/symbol=BTC-USD/2026-02.parquet
    STORE/symbol=ETH-USD/2026-01.parquet

Each file holds the package's candle frame (`kstrade.ingest.replay.COLUMNS`: `open_time_ms`
Int64, `symbol` String, `open high low close volume` Float64), sorted by time, one row per
candle the source has: a minute without trades has no row; nothing is invented to fill it.
Its Parquet key-value metadata says where the rows came from (`kstrade.source`, `kstrade.data`:
"REAL" for a download, "IMPORTED" for a file someone else made, `kstrade.fetched_at`,
`kstrade.interval`, `kstrade.symbol`, `kstrade.url` or `kstrade.file`) and which spans of the
month were asked for (`kstrade.covered`: JSON `[[start_ms, end_ms], ...]`, end exclusive). The
store so says itself what it holds: a download fetches only what no covered span holds, and a
missing minute inside a covered span is a gap of the market, not a hole to fill again.

Writes go to a hidden temporary file beside the target, fsynced, then renamed over it (atomic
on POSIX): a kill leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from kstrade.ingest.replay import COLUMNS, normalise
from kstrade.ingest.replay import read_candles as read_candle_file

MINUTE_MS = 60_000
#: Metadata keys (the `kstrade.` prefix as in the SYNTHETIC files of `kstrade.ingest.synthetic`).
SOURCE, DATA, FETCHED_AT, INTERVAL, SYMBOL, COVERED = (
    "kstrade.source", "kstrade.data", "kstrade.fetched_at", "kstrade.interval", "kstrade.symbol", "kstrade.covered",
)  # fmt: skip

Span = tuple[int, int]  # [start_ms, end_ms)


class StoreError(ValueError):
    """The store cannot do what was asked without mixing or losing data (says which file)."""


@dataclass(frozen=True)
class Month:
    """A calendar month in UTC: `label` YYYY-MM, open times in [start_ms, end_ms)."""

    label: str
    start_ms: int
    end_ms: int

    @classmethod
    def of(cls, ms: int) -> Month:
        t = datetime.fromtimestamp(ms / 1000, tz=UTC)
        start = datetime(t.year, t.month, 1, tzinfo=UTC)
        end = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
        return cls(f"{t.year:04d}-{t.month:02d}", _ms(start), _ms(end))


def months(start_ms: int, end_ms: int) -> list[Month]:
    """The months that [start_ms, end_ms) touches, in order."""
    out: list[Month] = []
    t = start_ms
    while t < end_ms:
        m = Month.of(t)
        out.append(m)
        t = m.end_ms
    return out


def merge(spans: Iterable[Span]) -> list[Span]:
    """Spans sorted, with overlapping and touching ones joined."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def missing(want: Span, covered: Iterable[Span]) -> list[Span]:
    """The parts of `want` that no span of `covered` holds."""
    out: list[Span] = []
    at, end = want
    for c0, c1 in merge(covered):
        if c1 <= at or c0 >= end:
            continue
        if c0 > at:
            out.append((at, c0))
        at = max(at, c1)
    if at < end:
        out.append((at, end))
    return out


@dataclass
class MonthFile:
    """One symbol's month in the store: its rows and its metadata."""

    path: Path
    frame: pl.DataFrame
    metadata: dict[str, str]

    @property
    def covered(self) -> list[Span]:
        return [(int(a), int(b)) for a, b in json.loads(self.metadata.get(COVERED, "[]"))]


class CandleStore:
    """A directory of month files (see the module docstring)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, symbol: str, month: Month) -> Path:
        return self.root / f"symbol={symbol}" / f"{month.label}.parquet"

    def files(self, symbols: Iterable[str] | None = None) -> list[Path]:
        """The month files, by symbol then month (temporary files of an interrupted write are not)."""
        wanted = None if symbols is None else {f"symbol={s}" for s in symbols}
        return sorted(
            p for p in self.root.glob("symbol=*/*.parquet") if not p.name.startswith(".") and
            (wanted is None or p.parent.name in wanted)
        )  # fmt: skip

    def read_month(self, symbol: str, month: Month) -> MonthFile | None:
        path = self.path(symbol, month)
        if not path.exists():
            return None
        return MonthFile(path, normalise(pl.read_parquet(path), symbol, str(path)), read_metadata(path))

    def write_month(self, symbol: str, month: Month, frame: pl.DataFrame, metadata: Mapping[str, str]) -> Path:
        """Replace the month's file with `frame` (its rows in this month only) and `metadata`."""
        outside = frame.filter((pl.col("open_time_ms") < month.start_ms) | (pl.col("open_time_ms") >= month.end_ms))
        if not outside.is_empty():
            raise StoreError(f"{self.path(symbol, month)}: {outside.height} row(s) outside {month.label}")
        frame = normalise(frame, symbol).unique("open_time_ms", keep="last").sort("open_time_ms")
        path = self.path(symbol, month)
        write_atomic(frame.select(COLUMNS), path, {**metadata, SYMBOL: symbol, "kstrade.month": month.label})
        return path

    def read(self, symbols: Iterable[str] | None = None) -> pl.DataFrame:
        """Every candle of the store (or of `symbols`) as the package's candle frame, sorted by
        time then symbol. Raises StoreError when the files hold different intervals."""
        paths = self.files(symbols)
        if not paths:
            raise StoreError(f"{self.root}: no candle files (expected {self.root}/symbol=SYMBOL/YYYY-MM.parquet)")
        intervals = {read_metadata(p).get(INTERVAL, "1m") for p in paths}
        if len(intervals) > 1:
            raise StoreError(f"{self.root}: files of different intervals ({', '.join(sorted(intervals))})")
        frames = [normalise(pl.read_parquet(p), p.parent.name.removeprefix("symbol="), str(p)) for p in paths]
        return pl.concat(frames).sort(["open_time_ms", "symbol"], maintain_order=True)


def read_candles(path: Path | str, symbol: str | None = None) -> pl.DataFrame:
    """`kstrade.ingest.replay.read_candles` that also reads a store directory (all its symbols,
    or `symbol`'s)."""
    path = Path(path)
    if path.is_dir():
        return CandleStore(path).read(None if symbol is None else [symbol])
    return read_candle_file(path, symbol)


def read_metadata(path: Path) -> dict[str, str]:
    """A Parquet file's key-value metadata (the `kstrade.*` keys and whatever else it has)."""
    return dict(pl.read_parquet_metadata(path))


def write_atomic(frame: pl.DataFrame, path: Path, metadata: Mapping[str, str]) -> None:
    """Write `frame` to `path` as Parquet with `metadata`: a temporary file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            frame.write_parquet(out, metadata=dict(metadata))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


@dataclass(frozen=True)
class Gap:
    """Missing candles of one symbol: open times in [start_ms, end_ms)."""

    symbol: str
    start_ms: int
    end_ms: int
    step_ms: int = MINUTE_MS

    @property
    def candles(self) -> int:
        return (self.end_ms - self.start_ms) // self.step_ms

    def __str__(self) -> str:
        first, last = iso(self.start_ms), iso(self.end_ms - self.step_ms)
        return f"{first} .. {last}" if first != last else first


def gaps(times: Iterable[int], span: Span, step_ms: int = MINUTE_MS, symbol: str = "") -> list[Gap]:
    """The runs of missing open times in `span` (times outside it are ignored)."""
    out: list[Gap] = []
    at = span[0]
    for t in sorted(set(times)):
        if t < span[0] or t >= span[1]:
            continue
        if t > at:
            out.append(Gap(symbol, at, t, step_ms))
        at = t + step_ms
    if at < span[1]:
        out.append(Gap(symbol, at, span[1], step_ms))
    return out


def iso(ms: int) -> str:
    """A UTC instant as ISO 8601, `2026-01-05T10:00:00Z`."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(t: datetime) -> int:
    return int(t.timestamp()) * 1000
