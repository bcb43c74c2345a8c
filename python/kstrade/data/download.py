"""`python -m kstrade data download`: Coinbase's public 1m candles into the candle store
(`kstrade.data.store`), resumable, with a progress display and a gap report.

What is asked for: for each symbol and each UTC month that [from, to) touches, the spans that no
`kstrade.covered` span of the month's file holds, in pages of `PAGE_MINUTES` (the page of the
backfill client, under the endpoint's limit of 350 candles per request), oldest first, through
`CandlesRest`, the client the live feed backfills with: HTTP 429 (`Retry-After`,
`x-ratelimit-*`), 5xx and network errors are retried with the one backoff helper, and requests
are paced to `requests_per_s` (Coinbase's public endpoints allow 10 per second per IP).

After each page the month's file is rewritten (atomically) with the page's candles added and the
page's span added to its covered spans. A run killed at any point loses at most the page in
flight; the next run asks only for what no file covers, so a month once complete is never asked
for again. A minute without trades has no candle at Coinbase and none in the store: it shows in
the gap report, and inside a covered span it is not asked for again.

`to` is capped at `SETTLE_MS` before now: REST may publish a minute's candle a little after the
minute closes, and a span is only marked covered once its candles are final.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

import polars as pl

from kstrade.clock import Clock, WallClock
from kstrade.data.store import (
    COVERED,
    DATA,
    FETCHED_AT,
    INTERVAL,
    MINUTE_MS,
    SOURCE,
    CandleStore,
    Gap,
    Month,
    Span,
    StoreError,
    gaps,
    iso,
    merge,
    missing,
    months,
    read_metadata,
)
from kstrade.features import Candle as NativeCandle
from kstrade.ingest.coinbase.rest import PAGE_MINUTES

log = logging.getLogger("kstrade.data")

SETTLE_MS = 2 * MINUTE_MS
#: Coinbase's limit for public endpoints, per IP.
REQUESTS_PER_S = 10.0
CANDLES_PATH = "/api/v3/brokerage/market/products/{product}/candles"
NOTE = (
    "REAL market data: Coinbase Advanced Trade public REST candles, granularity ONE_MINUTE. A minute "
    "without trades has no row."
)


class CandleSource(Protocol):
    """What a download needs of `kstrade.ingest.coinbase.rest.CandlesRest`."""

    def candles(self, product: str, start_ms: int, end_ms: int) -> list[NativeCandle]: ...


@dataclass(frozen=True)
class Page:
    """One request: `symbol`'s candles with open time in [start_ms, end_ms), inside `month`."""

    symbol: str
    month: Month
    start_ms: int
    end_ms: int

    @property
    def minutes(self) -> int:
        return (self.end_ms - self.start_ms) // MINUTE_MS


def settled_end(end_ms: int, now_ms: int) -> int:
    """`end_ms`, or the last settled minute boundary before now when that is earlier."""
    return min(end_ms, (now_ms - SETTLE_MS) // MINUTE_MS * MINUTE_MS)


def plan(store: CandleStore, symbols: Sequence[str], start_ms: int, end_ms: int) -> list[Page]:
    """The pages that [start_ms, end_ms) needs beyond what the store covers, by symbol, then time.
    Raises StoreError when a month's file holds candles from another source or interval."""
    if start_ms % MINUTE_MS or end_ms % MINUTE_MS:
        raise ValueError("download range must start and end on a minute boundary")
    pages: list[Page] = []
    for symbol in symbols:
        for month in months(start_ms, end_ms):
            want = (max(start_ms, month.start_ms), min(end_ms, month.end_ms))
            covered = _covered(store, symbol, month)
            for a, b in missing(want, covered):
                for p in range(a, b, PAGE_MINUTES * MINUTE_MS):
                    pages.append(Page(symbol, month, p, min(b, p + PAGE_MINUTES * MINUTE_MS)))
    return pages


def _covered(store: CandleStore, symbol: str, month: Month) -> list[Span]:
    path = store.path(symbol, month)
    if not path.exists():
        return []
    meta = read_metadata(path)
    if meta.get(SOURCE) != "coinbase" or meta.get(INTERVAL) != "1m":
        raise StoreError(
            f"{path} holds {meta.get(INTERVAL, '?')} candles from {meta.get(SOURCE, 'an unknown source')}, "
            "not Coinbase 1m candles: download into another store"
        )
    return [(int(a), int(b)) for a, b in json.loads(meta.get(COVERED, "[]"))]


@dataclass
class Download:
    """Fetches pages into the store; `on_page(page, candles)` is told after each page is written."""

    store: CandleStore
    rest: CandleSource
    url: str
    clock: Clock = field(default_factory=WallClock)
    requests_per_s: float | None = REQUESTS_PER_S
    on_page: Callable[[Page, int], None] | None = None
    requests: int = 0
    pages: int = 0  # written
    candles: int = 0

    def run(self, pages: Iterable[Page]) -> int:
        """Fetch every page (in the order given) and return the candles written."""
        current: tuple[str, Month] | None = None
        frame = pl.DataFrame()
        covered: list[Span] = []
        last_request_ns: int | None = None
        for page in pages:
            if current != (page.symbol, page.month):
                current = (page.symbol, page.month)
                existing = self.store.read_month(page.symbol, page.month)
                frame = existing.frame if existing else _frame(page.symbol, [])
                covered = existing.covered if existing else []
            if self.requests_per_s and last_request_ns is not None:
                wait = 1.0 / self.requests_per_s - (self.clock.now_ns() - last_request_ns) / 1e9
                if wait > 0:
                    self.clock.sleep(wait)
            last_request_ns = self.clock.now_ns()
            self.requests += 1
            got = self.rest.candles(page.symbol, page.start_ms, page.end_ms)
            frame = pl.concat([frame, _frame(page.symbol, got)])
            covered = merge([*covered, (page.start_ms, page.end_ms)])
            self.store.write_month(page.symbol, page.month, frame, self._metadata(page.symbol, covered))
            self.pages += 1
            self.candles += len(got)
            if self.on_page is not None:
                self.on_page(page, len(got))
        return self.candles

    def _metadata(self, symbol: str, covered: list[Span]) -> dict[str, str]:
        fetched = datetime.fromtimestamp(self.clock.now_ns() / 1e9, tz=UTC)
        return {
            SOURCE: "coinbase",
            DATA: "REAL",
            "kstrade.synthetic": "false",
            FETCHED_AT: fetched.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            INTERVAL: "1m",
            "kstrade.url": self.url.rstrip("/") + CANDLES_PATH.format(product=symbol) + "?granularity=ONE_MINUTE",
            COVERED: json.dumps([list(s) for s in covered]),
            "kstrade.note": NOTE,
        }


def _frame(symbol: str, candles: list[NativeCandle]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "open_time_ms": [c.open_time_ms for c in candles],
            "symbol": [symbol] * len(candles),
            "open": [c.open for c in candles],
            "high": [c.high for c in candles],
            "low": [c.low for c in candles],
            "close": [c.close for c in candles],
            "volume": [c.volume for c in candles],
        },
        schema={"open_time_ms": pl.Int64, "symbol": pl.String, **{c: pl.Float64 for c in _PRICES}},
    )


_PRICES = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class SymbolGaps:
    """What the store holds of one symbol in a span: its candles and the gaps between them."""

    symbol: str
    span: Span
    candles: int
    gaps: list[Gap]

    @property
    def missing(self) -> int:
        return sum(g.candles for g in self.gaps)


def gap_report(store: CandleStore, symbols: Sequence[str], span: Span) -> list[SymbolGaps]:
    """Per symbol, the candles the store holds in `span` and the runs of minutes it has none for."""
    out = []
    for symbol in symbols:
        times: list[int] = []
        for month in months(*span):
            existing = store.read_month(symbol, month)
            if existing is not None:
                t = existing.frame.get_column("open_time_ms")
                times += t.filter((t >= span[0]) & (t < span[1])).to_list()
        out.append(SymbolGaps(symbol, span, len(times), gaps(times, span, MINUTE_MS, symbol)))
    return out


def format_gap_report(report: Sequence[SymbolGaps], longest: int = 5) -> str:
    """The report as text: a line per symbol, then its longest gaps (first and last missing
    minute, ISO UTC)."""
    lines = []
    for r in report:
        span = f"{iso(r.span[0])} to {iso(r.span[1])}"
        lines.append(f"{r.symbol}: {r.candles:,} candles, {len(r.gaps):,} gap(s), {r.missing:,} minute(s) without "
                     f"a candle, in {span} (end exclusive)")  # fmt: skip
        for g in sorted(r.gaps, key=lambda g: (-g.candles, g.start_ms))[:longest]:
            lines.append(f"  {g.candles:>6,} min  {g}")
    return "\n".join(lines)


class DownloadProgress:
    """One bar per symbol on stderr, in minutes of the range done (nothing where stderr is not a
    terminal: `kstrade.progress`)."""

    def __init__(self, pages: Sequence[Page], span: Span, symbols: Sequence[str]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        from kstrade.progress import ProgressBars

        self._bars = ProgressBars(
            TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TextColumn("min"),
            TextColumn("{task.fields[candles]:,} candles fetched"), TimeRemainingColumn(),
        )  # fmt: skip
        total = (span[1] - span[0]) // MINUTE_MS
        todo = {s: sum(p.minutes for p in pages if p.symbol == s) for s in symbols}
        self._tasks = {s: self._bars.add(s, total=total, completed=total - todo[s], candles=0) for s in symbols}
        self._candles = dict.fromkeys(symbols, 0)

    def __enter__(self) -> DownloadProgress:
        self._bars.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._bars.__exit__(kind, exc, tb)

    def __call__(self, page: Page, candles: int) -> None:
        self._candles[page.symbol] += candles
        self._bars.update(self._tasks[page.symbol], advance=page.minutes, candles=self._candles[page.symbol])


def parse_instant(text: str) -> int:
    """`YYYY-MM-DD` (midnight UTC) or an ISO 8601 date-time (UTC unless it has an offset), as ms."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    ms = int(t.timestamp() * 1000)
    if ms % MINUTE_MS:
        raise ValueError(f"{text!r} is not on a minute boundary")
    return ms
