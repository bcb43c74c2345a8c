"""`data download` against a local server speaking Coinbase's public REST candles protocol
(../shared/reference/coinbase.md) for two products: every minute the server has is fetched exactly
once (requests counted per window), a run killed half-way (in process, and a CLI process killed
with SIGKILL) completes on the next run without asking again for what it wrote, a minute without
trades stays absent and is reported as a gap, and HTTP 429 and 500 are survived. The server's
candles are those the ingest tests' fake Coinbase computes from its trades."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest

from kstrade.data.download import Download, Page, format_gap_report, gap_report, plan
from kstrade.data.store import CandleStore, Month, read_candles, read_metadata
from kstrade.ingest.coinbase.rest import CandlesRest
from kstrade.retry import Backoff

from .fake_coinbase import FakeCoinbase, FakeTrade, ScaledClock, make_trades

ROOT = Path(__file__).resolve().parent.parent
MIN = 60_000
START = int(datetime(2025, 12, 31, tzinfo=UTC).timestamp() * 1000)  # 3 days over a month's end
END = START + 3 * 1440 * MIN
#: No trades at all in these three hours of BTC-USD: the longest gap.
HOLE = (START + 30 * 60 * MIN, START + 33 * 60 * MIN)
PRODUCTS = ("BTC-USD", "ETH-USD")


def trades(product: str) -> list[FakeTrade]:
    out = list(make_trades(START, 3 * 1440, seed=1 if product == "BTC-USD" else 2))
    return [t for t in out if product != "BTC-USD" or not HOLE[0] <= t.time_ms < HOLE[1]]


@dataclass
class Request:
    product: str
    start_s: int
    end_s: int
    status: int  # -1: held, never answered


@dataclass
class CandlesServer:
    """GET /api/v3/brokerage/market/products/{product_id}/candles?start=&end=&granularity=&limit=
    on loopback for several products: UNIX-second strings, ONE_MINUTE only, at most 350 candles,
    newest first, `{"candles": [...]}` with string numbers, the documented error body, and
    `x-ratelimit-*` headers. `failures` answers the n-th request (from 1) with that status (429
    with `Retry-After`, or 500); `hold` keeps the n-th request unanswered until `release`."""

    end: Literal["inclusive", "exclusive"] = "inclusive"
    failures: dict[int, int] = field(default_factory=dict)
    hold: int | None = None
    log: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        clock = ScaledClock(END * 1_000_000 + 10**12, 1.0, paused=True)  # every minute closed
        self.candles: dict[str, list[dict[str, str]]] = {}
        for product in PRODUCTS:
            fake = FakeCoinbase(product, trades(product), clock)
            self.candles[product] = fake.rest_candles(START // 1000, END // 1000)  # the fake's REST truth
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self._http.shutdown()
        self._http.server_close()

    def truth(self, product: str) -> pl.DataFrame:
        rows = sorted(self.candles[product], key=lambda c: int(c["start"]))
        return pl.DataFrame(
            {
                "open_time_ms": [int(c["start"]) * 1000 for c in rows],
                "symbol": [product] * len(rows),
                **{k: [float(c[k]) for c in rows] for k in ("open", "high", "low", "close", "volume")},
            },
            schema={"open_time_ms": pl.Int64, "symbol": pl.String, **dict.fromkeys(("open", "high", "low", "close",
                    "volume"), pl.Float64)},
        )  # fmt: skip

    def answered(self) -> Counter[tuple[str, int, int]]:
        """How often each window was answered with candles (HTTP 200)."""
        return Counter((r.product, r.start_s, r.end_s) for r in self.log if r.status == 200)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, error: str, code: int, message: str, headers: dict[str, str]) -> None:
                self._send(status, {"error": error, "code": code, "message": message, "details": [{}]}, headers)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = url.path.split("/")
                if parts[:6] != ["", "api", "v3", "brokerage", "market", "products"] or parts[7:] != ["candles"]:
                    self._error(404, "NOT_FOUND", 5, "not found", {})
                    return
                product = parts[6]
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                try:
                    start, end, granularity, limit = int(q["start"]), int(q["end"]), q["granularity"], int(q["limit"])
                except (KeyError, ValueError):
                    self._error(400, "INVALID_ARGUMENT", 3, "bad query", {})
                    return
                if product not in server.candles:
                    self._error(404, "NOT_FOUND", 5, f"product {product} not found", {})
                    return
                if granularity != "ONE_MINUTE" or (end - start) // 60 + 1 > 350 or limit > 350 or end < start:
                    self._error(400, "INVALID_ARGUMENT", 3, "number of candles requested should be less than 350", {})
                    return
                with server._lock:
                    n = len(server.log) + 1
                    status = server.failures.get(n, 200)
                    held = n == server.hold
                    server.log.append(Request(product, start, end, -1 if held else status))
                limits = {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "9", "x-ratelimit-reset": "1"}
                if held:
                    server.held.set()
                    server.release.wait(30)
                    return  # the client is gone: never answered
                if status == 429:
                    limits.update({"x-ratelimit-remaining": "0", "retry-after": "2"})
                    self._error(429, "RATE_LIMIT_EXCEEDED", 8, "Too many requests", limits)
                    return
                if status >= 500:
                    self._error(status, "INTERNAL", 13, "internal error", limits)
                    return
                last = end if server.end == "inclusive" else end - 60
                rows = [c for c in server.candles[product] if start <= int(c["start"]) <= last]  # newest first
                self._send(200, {"candles": rows[:limit]}, limits)

        return Handler


class RecordingClock:
    """The wall clock's time; sleeps are recorded, not slept (the test need not wait out backoff)."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now_ns(self) -> int:
        return time.time_ns()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def server() -> Any:
    s = CandlesServer()
    yield s
    s.close()


def download(store: CandleStore, server: CandlesServer, clock: RecordingClock | None = None, **kw: Any) -> Download:
    clock = clock or RecordingClock()
    rest = CandlesRest(server.url, backoff=Backoff(initial=0.01, max_delay=0.05, attempts=5), clock=clock)
    d = Download(store, rest, server.url, clock=clock, requests_per_s=None, **kw)
    try:
        d.run(plan(store, PRODUCTS, START, END))
    finally:
        rest.close()
    return d


def expected_windows() -> set[tuple[str, int, int]]:
    return {(p.symbol, p.start_ms // 1000, p.end_ms // 1000) for p in plan(CandleStore("/nonexistent"), PRODUCTS,
                                                                             START, END)}  # fmt: skip


def assert_store_is_the_truth(store: CandleStore, server: CandlesServer) -> None:
    got = store.read()
    for product in PRODUCTS:
        assert got.filter(pl.col("symbol") == product).equals(server.truth(product)), product


@pytest.mark.parametrize("end", ["inclusive", "exclusive"])
def test_three_days_two_symbols_fetch_every_minute_once(tmp_path: Path, end: Literal["inclusive", "exclusive"]) -> None:
    server = CandlesServer(end=end)
    try:
        store = CandleStore(tmp_path / "store")
        d = download(store, server)
        assert_store_is_the_truth(store, server)
        answered = server.answered()
        assert set(answered) == expected_windows() and set(answered.values()) == {1}  # every window, once
        assert len(server.log) == 30 == d.requests  # 1440 + 2880 minutes per symbol, pages of 290
        assert all((r.end_s - r.start_s) // 60 < 300 for r in server.log)
        assert d.candles == sum(len(server.candles[p]) for p in PRODUCTS)

        again = download(store, server)  # a complete store: nothing to ask
        assert again.requests == 0 and len(server.log) == 30
        assert_store_is_the_truth(store, server)
    finally:
        server.close()


def test_the_store_is_partitioned_by_symbol_and_month_with_provenance(tmp_path: Path, server: CandlesServer) -> None:
    store = CandleStore(tmp_path / "store")
    download(store, server)
    names = sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert names == [f"symbol={s}/{m}.parquet" for s in PRODUCTS for m in ("2025-12", "2026-01")]
    meta = read_metadata(store.root / "symbol=ETH-USD" / "2026-01.parquet")
    assert meta["kstrade.source"] == "coinbase" and meta["kstrade.data"] == "REAL"
    assert meta["kstrade.interval"] == "1m" and meta["kstrade.symbol"] == "ETH-USD"
    assert datetime.fromisoformat(meta["kstrade.fetched_at"].replace("Z", "+00:00")).year >= 2026
    assert meta["kstrade.url"].startswith(server.url + "/api/v3/brokerage/market/products/ETH-USD/candles")
    jan = Month.of(END - MIN)
    assert json.loads(meta["kstrade.covered"]) == [[jan.start_ms, END]]
    frame = pl.read_parquet(store.root / "symbol=ETH-USD" / "2026-01.parquet")
    assert frame.schema == pl.Schema({"open_time_ms": pl.Int64, "symbol": pl.String, "open": pl.Float64,
                                      "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
                                      "volume": pl.Float64})  # fmt: skip
    # What `run --data STORE` reads: the package's candle frame, all symbols, by time then symbol.
    both = read_candles(store.root)
    assert both.height == sum(len(server.candles[p]) for p in PRODUCTS)
    assert both.equals(pl.concat([server.truth(p) for p in PRODUCTS]).sort(["open_time_ms", "symbol"]))


def test_a_gap_stays_a_gap_and_is_reported(tmp_path: Path, server: CandlesServer) -> None:
    store = CandleStore(tmp_path / "store")
    download(store, server)
    download(store, server)  # asks nothing again, the missing minutes included
    assert len(server.log) == 30
    btc = store.read(["BTC-USD"]).get_column("open_time_ms")
    assert not btc.is_between(HOLE[0], HOLE[1], closed="left").any()  # nothing invented
    report = {r.symbol: r for r in gap_report(store, PRODUCTS, (START, END))}
    for product in PRODUCTS:
        have = {int(c["start"]) * 1000 for c in server.candles[product]}
        absent = [t for t in range(START, END, MIN) if t not in have]
        r = report[product]
        assert r.candles == len(have) and r.missing == len(absent) > 0
        assert sum(g.candles for g in r.gaps) == len(absent)
        assert [t for g in r.gaps for t in range(g.start_ms, g.end_ms, MIN)] == absent
    longest = max(report["BTC-USD"].gaps, key=lambda g: g.candles)
    assert (longest.start_ms, longest.end_ms) == HOLE
    text = format_gap_report(list(report.values()))
    assert " 180 min  2026-01-01T06:00:00Z .. 2026-01-01T08:59:00Z" in text.splitlines()[1]
    assert text.startswith(f"BTC-USD: {report['BTC-USD'].candles:,} candles, {len(report['BTC-USD'].gaps):,} gap(s)")


class Killed(Exception):
    pass


def test_a_run_killed_half_way_completes_without_asking_again(tmp_path: Path, server: CandlesServer) -> None:
    store = CandleStore(tmp_path / "store")
    pages: list[Page] = []

    def kill_after_seven(page: Page, candles: int) -> None:
        pages.append(page)
        if len(pages) == 7:  # BTC-USD: December done, two pages of January written
            raise Killed

    with pytest.raises(Killed):
        download(store, server, on_page=kill_after_seven)
    assert len(server.log) == 7
    assert len(plan(store, PRODUCTS, START, END)) == 30 - 7  # the store says what it holds
    download(store, server)
    answered = server.answered()
    assert set(answered) == expected_windows() and set(answered.values()) == {1}
    assert_store_is_the_truth(store, server)


def test_429_and_500_are_survived(tmp_path: Path) -> None:
    server = CandlesServer(failures={3: 429, 5: 500, 6: 503, 20: 429})
    try:
        clock = RecordingClock()
        store = CandleStore(tmp_path / "store")
        d = download(store, server, clock)
        assert [r.status for r in server.log].count(200) == 30 and len(server.log) == 34
        answered = server.answered()
        assert set(answered) == expected_windows() and set(answered.values()) == {1}
        assert clock.slept.count(2.0) == 2  # Retry-After honoured, both times
        assert d.requests == 30
        assert_store_is_the_truth(store, server)
    finally:
        server.close()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CandleStore(tmp_path / "store")
    month = Month.of(START)
    frame = pl.DataFrame({"open_time_ms": [START], "symbol": ["BTC-USD"], "open": [1.0], "high": [2.0],
                          "low": [0.5], "close": [1.5], "volume": [3.0]})  # fmt: skip
    path = store.write_month("BTC-USD", month, frame, {"kstrade.source": "coinbase"})
    before = path.read_bytes()

    def half_then_die(self: pl.DataFrame, file: Any, **kw: Any) -> None:
        file.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_then_die)
    with pytest.raises(OSError, match="disk full"):
        store.write_month("BTC-USD", month, frame.with_columns(pl.lit(9.0).alias("volume")), {})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def kstrade(args: list[str], cwd: Path, url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSTRADE_")}
    env["KSTRADE_COINBASE_REST_URL"] = url
    command = [sys.executable, "-m", "kstrade", "data", "download", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_command_killed_with_sigkill_resumes_and_reports_gaps(tmp_path: Path) -> None:
    """The CLI reads the URL from the environment; SIGKILLed while its 9th request is in flight
    (8 pages written), it is run again and asks only for the rest: every window answered once."""
    server = CandlesServer(hold=9)
    args = ["--symbols", ",".join(PRODUCTS), "--from", "2025-12-31", "--to", "2026-01-03", "--store", "store",
            "--rate", "1000"]  # fmt: skip
    try:
        first = kstrade(args, tmp_path, server.url)
        assert server.held.wait(60), first.communicate(timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        server.release.set()
        assert len(plan(CandleStore(tmp_path / "store"), PRODUCTS, START, END)) == 30 - 8
        second = kstrade(args, tmp_path, server.url)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        answered = server.answered()
        assert set(answered) == expected_windows() and set(answered.values()) == {1}
        assert [r.status for r in server.log].count(-1) == 1 and len(server.log) == 31
        assert_store_is_the_truth(CandleStore(tmp_path / "store"), server)
        assert not [p for p in (tmp_path / "store").rglob(".*")]  # no temporary file left behind
        assert "22 page(s) to fetch" in out
        assert "BTC-USD: " in out and " 180 min  2026-01-01T06:00:00Z .. 2026-01-01T08:59:00Z" in out
    finally:
        server.close()


def test_a_downloaded_store_is_backtested_through_every_stage(tmp_path: Path, server: CandlesServer) -> None:
    """`backtest --data STORE` (here `kstrade.backtest`): the store's minutes after `since` are
    the period, the ones before it warm the indicators up."""
    import kstrade

    store = CandleStore(tmp_path / "store")
    download(store, server)
    since = datetime.fromtimestamp((START + 1440 * MIN) / 1000, UTC)
    result = kstrade.backtest(store.root, since=since, out=tmp_path / "run")
    held = read_candles(store.root)
    period = held.filter(pl.col("open_time_ms") >= START + 1440 * MIN)
    assert result.summary["candles"] == period.height > 0
    assert result.summary["stages"]["features"]["records"] == period.height
    assert result.summary["warmup_candles"] == held.height - period.height
    assert result.summary["data"] == str(store.root)
