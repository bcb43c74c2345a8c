"""The dashboard tells what the pipeline did: on a bus fed by a one-day SYNTHETIC run (the
planted-edge market trades), its API's balance is the last trades.pnl balance and the paper
account's, its positions are the fills without a close, its calibration counts the final signals
per tier, and the FTMO headroom is the report's. Operator actions need the token and then send
exactly one command; bad input is a 4xx naming the problem. A real (headless) Chromium loads the
page while records arrive in steps and sees the equity, a position, a marker and the pipeline's
numbers; the page is small and loads fast; the server idles quietly."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from kstrade.app import RUN_AHEAD, Candles, RunOptions, _isolated, load_candles, warm_up
from kstrade.bus import Bus, Record
from kstrade.bus.topics import CONTROL_EXECUTION, EXECUTIONS, ORDERS_CONFIRMED, ORDERS_PENDING, PNL
from kstrade.config import Settings, load
from kstrade.dashboard.view import FOLLOWED_RE, DashboardView, _Close, account_order
from kstrade.dashboard.web import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    DashboardServer,
    TokenError,
    create_app,
    operator_token,
)
from kstrade.execution.trading_day import trading_day
from kstrade.ingest.replay import ReplaySource
from kstrade.report import collect, headroom
from kstrade.schemas import Candle, Codec, ControlCommand, Execution
from kstrade.services import ensure_topics
from kstrade.signals.decision import epoch_ns
from kstrade.stage import PipelineStats

from .helpers import embedded_pipeline, memory_bus

TOKEN = "a-test-operator-token-0123456789"
STATIC = Path(__file__).resolve().parents[1] / "python" / "kstrade" / "dashboard" / "static"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Run:
    bus: Bus
    settings: Settings
    out: Path
    stats: PipelineStats
    candles: Candles


def _embedded_run(out: Path, settings: Settings | None = None) -> Run:
    """`kstrade.app.run`'s pipeline on a bus this test holds: one SYNTHETIC day on the default
    (planted-edge) market, state isolated in `out` as `run` isolates it (default settings, or
    `settings`)."""
    settings = settings or load(None)
    candles = load_candles(settings, RunOptions(out=out, days=1, live_view=False))
    settings = _isolated(settings, out)
    bus, stages, pipeline = embedded_pipeline(settings, ahead=list(RUN_AHEAD), chunk=1024, batched=True)
    warm_up(stages, candles.history)
    pipeline.run(ReplaySource(candles.period))
    for stage in stages:
        stage.close()
    return Run(bus, settings, out, pipeline.stats, candles)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    started = time.perf_counter()
    result = _embedded_run(tmp_path_factory.mktemp("dashboard") / "run")
    print(f"embedded one-day run: {time.perf_counter() - started:.1f} s")
    return result


@pytest.fixture(scope="module")
def client(run: Run) -> Iterator[TestClient]:
    app = create_app(run.bus, run.settings, token=TOKEN)
    with TestClient(app) as c:
        assert app.state.follower.wait_caught_up(60.0), "the dashboard did not catch up with the run"
        yield c


def _all(bus: Bus, topic: str) -> list[Record]:
    """Every record of a topic, read in a throwaway group."""
    total = sum(bus.admin().end_offsets(topic, 5.0))
    consumer = bus.consumer(f"test.read.{topic}.{time.monotonic_ns()}")
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + 30
    while len(records) < total and time.monotonic() < deadline:
        records += consumer.poll(5000, 0.2)
    consumer.close()
    assert len(records) == total
    return records


# -- 1. what the API says agrees with the run ---------------------------------------------------


def test_the_balance_is_the_last_pnl_balance_and_the_paper_accounts(run: Run, client: TestClient) -> None:
    account = client.get("/api/account").json()
    pnl = collect(run.bus).pnl
    assert pnl.height > 5, "the planted-edge day closes trades"
    paper = json.loads((run.out / "state" / "paper-account.json").read_text())
    last_instant = pnl.filter(pl.col("timestamp") == pnl["timestamp"].max())
    assert account["balance"] in last_instant["balance"].to_list()  # the last close (of its instant)
    assert account["balance"] == paper["balance"]
    assert account["trades_closed"] == pnl.height == len(account["curve"])
    assert account["realized_pnl_total"] == pytest.approx(float(pnl["realized_pnl"].sum()))
    assert account["wins"] == int((pnl["realized_pnl"] > 0).sum())
    # Today: the Prague day of the last event read (the run's last minute is past Prague midnight).
    today = trading_day(epoch_ns(datetime.fromisoformat(account["at"])))
    assert account["trading_day"] == today.isoformat() == "2026-01-06"
    closed_today = [r for t, r in zip(pnl["timestamp"].to_list(), pnl["realized_pnl"].to_list(), strict=True)
                    if trading_day(epoch_ns(t)) == today]  # fmt: skip
    assert account["realized_pnl_today"] == pytest.approx(sum(closed_today)) and closed_today
    # The floors are the execution stage's guards, as the report computes them, point by point.
    curve = account["curve"]
    frame = pl.DataFrame(
        {
            "timestamp": [datetime.fromtimestamp(p["time"], UTC) for p in curve],
            "balance": [p["balance"] for p in curve],
        }
    )
    rules = run.settings.execution.guardrails
    expected = headroom(frame, rules)
    got_daily = [100 * (p["balance"] - p["daily_floor"]) / rules.initial_balance for p in curve]
    got_max = [100 * (p["balance"] - p["max_loss_floor"]) / rules.initial_balance for p in curve]
    assert got_daily == pytest.approx(expected["daily_loss_pct"])
    assert got_max == pytest.approx(expected["max_loss_pct"])
    assert account["max_loss_floor"] == rules.initial_balance * (1 - rules.max_loss_pct / 100)
    assert account["daily_headroom"] == pytest.approx(account["balance"] - account["daily_floor"])
    assert account["max_drawdown_pct"] <= account["drawdown_pct"] <= 0


def test_closes_at_one_instant_follow_the_balance_chain() -> None:
    """Two closes in the same minute (two symbols, two partitions) read in either order: the
    account's order is the one whose balances chain."""
    a = _Close(60, balance=101.0, realized=1.0, quantity=1, order_id="z", signal_id="s1", symbol="SOL-USD")
    b = _Close(60, balance=99.0, realized=-2.0, quantity=1, order_id="a", signal_id="s2", symbol="BTC-USD")
    for closes in ([a, b], [b, a]):
        assert account_order(closes, 100.0) == [a, b]


def test_open_positions_are_the_fills_without_a_close(run: Run, client: TestClient) -> None:
    out = collect(run.bus)
    closed = set(out.pnl["order_id"].to_list())
    expected = {o for o in out.executions["order_id"].to_list() if o not in closed}
    positions = client.get("/api/positions").json()["positions"]
    assert {p["order_id"] for p in positions} == expected
    paper = json.loads((run.out / "state" / "paper-account.json").read_text())
    assert {p["position"]["ticket"] for p in paper["positions"]} == expected
    by_ticket = {p["position"]["ticket"]: p["position"] for p in paper["positions"]}
    for p in positions:
        held = by_ticket[p["order_id"]]
        assert (p["entry_price"], p["stop_loss"], p["take_profit"], p["quantity"]) == (
            held["entry_price"], held["stop_loss"], held["take_profit"], held["quantity"],
        )  # fmt: skip


def test_calibration_counts_the_final_signals_of_each_tier(run: Run, client: TestClient) -> None:
    out = collect(run.bus)
    tiers = {t["tier"]: t for t in client.get("/api/models").json()["tiers"]}
    per_tier = Counter(out.signals["tier"].to_list())
    assert {k: t["signals"] for k, t in tiers.items()} == dict(per_tier)
    assert set(per_tier) >= {"A", "B", "C"}
    tier_of = dict(zip(out.signals["signal_id"].to_list(), out.signals["tier"].to_list(), strict=True))
    closed = Counter(tier_of[s] for s in set(out.pnl["signal_id"].to_list()))
    assert {k: t["closed"] for k, t in tiers.items()} == {k: closed.get(k, 0) for k in tiers}
    for t in tiers.values():
        confidences = out.signals.filter(pl.col("tier") == t["tier"])["confidence"]
        assert t["mean_confidence"] == pytest.approx(float(confidences.mean() or 0))
        if t["closed"]:
            assert t["hit_rate_low"] <= t["hit_rate"] <= t["hit_rate_high"]


def test_orders_signals_candles_and_pipeline_agree_with_the_topics(run: Run, client: TestClient) -> None:
    admin = run.bus.admin()
    counts = {t: sum(admin.end_offsets(t, 5.0)) for t in admin.list_topics(5.0)}
    orders = client.get("/api/orders", params={"limit": 1000}).json()
    assert orders["total"] == counts[ORDERS_PENDING]
    assert {o["status"] for o in orders["orders"]} <= {"CONFIRMED", "REJECTED"}  # none left pending
    signals = client.get("/api/signals", params={"limit": 1000}).json()
    assert signals["final_total"] == len(signals["final"]) == counts["signals.final"]
    assert signals["rejected_total"] == sum(signals["rejection_counts"].values()) == counts["signals.filtered"]
    btc = client.get("/api/signals", params={"symbol": "BTC-USD", "limit": 5}).json()
    assert len(btc["rejected"]) == 5 and {s["symbol"] for s in btc["final"] + btc["rejected"]} == {"BTC-USD"}
    candles = client.get("/api/candles", params={"symbol": "ETH-USD", "limit": 5000}).json()["candles"]
    assert len(candles) == counts["market.candles.ETH-USD.1m"] == 1440
    assert [c["time"] for c in candles] == sorted({c["time"] for c in candles})
    last = client.get("/api/candles", params={"symbol": "ETH-USD", "limit": 3}).json()["candles"]
    assert last == candles[-3:]
    pipeline = client.get("/api/pipeline").json()
    assert pipeline["topics"] == {t: n for t, n in sorted(counts.items()) if n and not t.startswith("dlq.")}
    assert pipeline["dead_letters"] == {t: n for t, n in counts.items() if n and t.startswith("dlq.")}
    assert pipeline["latency"] and pipeline["dashboard"]["behind"] == 0
    followed = sum(n for t, n in counts.items() if FOLLOWED_RE.match(t))
    assert pipeline["dashboard"]["records_read"] == followed and not pipeline["dashboard"]["unreadable"]


def test_the_api_is_documented(client: TestClient) -> None:
    doc = client.get("/api/openapi.json").json()
    endpoints = ["account", "positions", "orders", "signals", "candles", "pipeline", "models", "events", "control",
                 "control/halt", "control/resume", "control/flatten"]  # fmt: skip
    for endpoint in endpoints:
        assert f"/api/{endpoint}" in doc["paths"], endpoint
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert "reason" in json.dumps(doc["paths"]["/api/control/halt"]["post"]["requestBody"])


def test_the_dashboard_commits_nothing(run: Run) -> None:
    """Its own group never commits, and no stage's group moves while it reads."""
    admin = run.bus.admin()
    partitions = [(t, p) for t in admin.list_topics(5.0) for p in range(len(admin.end_offsets(t, 5.0)))]
    stage_groups = [f"kstrade.{name}" for name in ("features", "signals", "execution", "metrics")]

    def committed(group: str) -> list[Any]:
        consumer = run.bus.consumer(group)
        try:
            return consumer.committed(partitions, 5.0)
        finally:
            consumer.close()

    before = {g: committed(g) for g in stage_groups}
    view = DashboardView(run.settings, group="kstrade.dashboard.committest")
    app = create_app(run.bus, run.settings, view=view)
    with TestClient(app):
        assert app.state.follower.wait_caught_up(60.0)
    assert all(offset is None for _, _, offset in committed("kstrade.dashboard.committest"))
    assert {g: committed(g) for g in stage_groups} == before


@pytest.mark.kafka
def test_on_kafka_it_follows_the_topics_from_their_start_and_commits_nothing(
    run: Run, kafka_bootstrap: str, unique: str
) -> None:
    """The pattern subscription and the end-offset counts on a real broker (shared with other
    tests: only this test's symbol and order are asserted on)."""
    symbol = f"DASH{unique}"
    settings = run.settings.model_copy(update={"symbols": [symbol]})
    bus = Bus.kafka(kafka_bootstrap)
    ensure_topics(bus, settings)
    candle_codec, fill_codec = Codec(Candle), Codec(Execution)
    candles = [candle_codec.decode_record(r) for r in _all(run.bus, "market.candles.BTC-USD.1m")[:30]]
    fill = fill_codec.decode_record(_all(run.bus, EXECUTIONS)[0])
    order_id = f"dash-{unique}"
    producer = bus.producer()
    topic = f"market.candles.{symbol}.1m"
    for c in candles:
        moved = candle_codec.encode(c.model_copy(update={"symbol": symbol}))
        producer.send(topic, moved, symbol.encode(), candle_codec.headers(epoch_ns(c.timestamp), "test"))
    moved_fill = fill.model_copy(update={"symbol": symbol, "order_id": order_id})
    producer.send(EXECUTIONS, fill_codec.encode(moved_fill), symbol.encode(), fill_codec.headers(0, "test"))
    producer.flush()
    view = DashboardView(settings, group=f"kstrade.dashboard.test{unique}")
    with TestClient(create_app(bus, settings, view=view)) as c:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = c.get("/api/candles", params={"symbol": symbol, "limit": 100}).json()["candles"]
            held = [p for p in c.get("/api/positions").json()["positions"] if p["order_id"] == order_id]
            if len(got) == len(candles) and held:
                break
            time.sleep(0.2)
        assert len(got) == len(candles) and held and held[0]["symbol"] == symbol
        deadline = time.monotonic() + 30
        while c.get("/api/pipeline").json()["topics"].get(topic) != len(candles) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/api/pipeline").json()["topics"][topic] == len(candles)
    consumer = bus.consumer(view.group)
    try:
        committed = consumer.committed([(topic, p) for p in range(3)] + [(EXECUTIONS, p) for p in range(3)], 10.0)
    finally:
        consumer.close()
    assert all(offset is None for _, _, offset in committed)


# -- 2. operator actions --------------------------------------------------------------------------


def _commands(bus: Bus) -> list[ControlCommand]:
    codec = Codec(ControlCommand)
    return [codec.decode_record(r) for r in _all(bus, CONTROL_EXECUTION)]  # type: ignore[misc]


@pytest.fixture
def control_bus() -> Iterator[tuple[Bus, TestClient]]:
    settings = load(None)
    bus = memory_bus(settings)
    with TestClient(create_app(bus, settings, token=TOKEN, follow=False)) as c:
        yield bus, c


def test_without_the_token_an_action_is_refused_and_sends_nothing(control_bus: tuple[Bus, TestClient]) -> None:
    bus, c = control_bus
    for action in ("halt", "resume", "flatten"):
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):  # fmt: skip
            answer = c.post(f"/api/control/{action}", json={"reason": "test", "confirm": True}, headers=headers)
            assert answer.status_code == 401, (action, headers)
            assert "token" in answer.json()["error"] and answer.headers["www-authenticate"] == "Bearer"
        assert c.post(f"/api/control/{action}", content=b"{not json").status_code == 401  # the token comes first
    assert _commands(bus) == []


def test_with_the_token_an_action_sends_exactly_one_command(control_bus: tuple[Bus, TestClient]) -> None:
    bus, c = control_bus
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = c.post("/api/control/halt", json={"reason": "news at 14:30"}, headers=auth)
    assert answer.status_code == 202, answer.text
    (command,) = _commands(bus)
    assert (command.action.value, command.reason, command.account) == ("HALT", "news at 14:30", "default")
    assert str(command.command_id) == answer.json()["command_id"] and command.issued_by.startswith("dashboard:")
    # Flatten needs its confirmation; a bad body is refused, naming the problem; nothing is sent for either.
    refused = c.post("/api/control/flatten", json={"reason": "end of week"}, headers=auth)
    assert refused.status_code == 400 and "confirm" in refused.json()["error"]
    bad = c.post("/api/control/resume", content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    empty = c.post("/api/control/resume", json={"reason": ""}, headers=auth)
    assert empty.status_code == 400 and "body.reason" in empty.json()["error"]
    unknown = c.post("/api/control/resume", json={"reason": "x", "who": "me"}, headers=auth)
    assert unknown.status_code == 400 and "body.who" in unknown.json()["error"]
    assert len(_commands(bus)) == 1
    flatten = c.post("/api/control/flatten", json={"reason": "end of week", "confirm": True}, headers=auth)
    assert flatten.status_code == 202
    assert [x.action.value for x in _commands(bus)] == ["HALT", "FLATTEN"]


def test_without_a_configured_token_the_controls_are_disabled_and_say_why() -> None:
    settings = load(None)
    bus = memory_bus(settings)
    with TestClient(create_app(bus, settings, token=None, follow=False)) as c:
        control = c.get("/api/control").json()
        assert control["enabled"] is False and TOKEN_ENV in control["reason"]
        answer = c.post("/api/control/halt", json={"reason": "x"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 403 and TOKEN_ENV in answer.json()["error"]
    assert _commands(bus) == []


def test_the_token_comes_from_the_environment_or_a_secret_file(tmp_path: Path) -> None:
    assert operator_token({}) is None
    assert operator_token({TOKEN_ENV: f" {TOKEN}\n"}) == TOKEN
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    assert operator_token({TOKEN_FILE_ENV: str(secret)}) == TOKEN
    with pytest.raises(TokenError, match="at least 16"):
        operator_token({TOKEN_ENV: "short"})
    with pytest.raises(TokenError, match="not both"):
        operator_token({TOKEN_ENV: TOKEN, TOKEN_FILE_ENV: str(secret)})
    with pytest.raises(TokenError, match="cannot read"):
        operator_token({TOKEN_FILE_ENV: str(tmp_path / "missing")})


# -- 3. bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status", "names"),
    [
        ("/api/candles", {}, 400, "query parameter symbol"),
        ("/api/candles", {"symbol": "DOGE-USD"}, 404, "DOGE-USD"),
        ("/api/candles", {"symbol": "BTC-USD", "limit": 0}, 400, "query parameter limit"),
        ("/api/candles", {"symbol": "BTC-USD", "limit": 5001}, 400, "query parameter limit"),
        ("/api/signals", {"limit": "many"}, 400, "query parameter limit"),
        ("/api/signals", {"symbol": "<script>"}, 404, "unknown symbol"),
        ("/api/orders", {"limit": -1}, 400, "query parameter limit"),
        ("/api/nothing", {}, 404, "/api/nothing"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem(
    client: TestClient, path: str, params: dict[str, Any], status: int, names: str
) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert names in error and "Traceback" not in answer.text
    if "DOGE" in names:
        assert "BTC-USD" in error  # and what would do
    assert client.delete("/api/account").status_code == 405


# -- 4 and 5. the page in a real browser, its weight, its load time, the server's idle CPU --------


class _Browser:
    """Headless Chromium driven over the DevTools protocol (a websocket per page)."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1500,2400", "--no-first-run", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stderr is not None
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(found.group(1)) if found else None
            assert line or self.process.poll() is None, "chromium exited"
        assert port is not None, "chromium did not open its DevTools port"
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self._closing = ExitStack()
        self.ws = self._closing.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self._id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> Any:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self._id:
                assert "error" not in message, message
                return message["result"]

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def until(self, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        page = self.js("JSON.stringify(window.kstrade)")
        raise AssertionError(f"not within {timeout:g} s: {expression} (page: {page})")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        self._closing.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _copy(bus: Bus, records: list[Record]) -> None:
    producer = bus.producer()
    for r in records:
        producer.send(r.topic, r.value, r.key, r.headers, partition=r.partition, timestamp_ms=r.timestamp_ms)
    producer.flush()


def _page_bytes(base: str) -> int:
    """`/` and every static file it names, as served (bytes on the wire: no compression)."""
    page = httpx.get(base)
    total = len(page.content)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        answer = httpx.get(base.rstrip("/") + asset)
        assert answer.status_code == 200, asset
        total += len(answer.content)
    return total


def _cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_the_page_in_a_browser_follows_the_records_as_they_come(run: Run, tmp_path: Path) -> None:
    source = run.bus
    pnl_codec, closes = Codec("pnl_event"), _all(source, PNL)
    first_close = min(closes, key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    trade = pnl_codec.decode(first_close.value or b"")
    sid, symbol = str(trade.signal_id), trade.symbol  # type: ignore[attr-defined]

    followed = [t for t in source.admin().list_topics(5.0) if FOLLOWED_RE.match(t)]
    everything = {t: _all(source, t) for t in followed}
    final = [r for r in everything["signals.final"] if _signal_of(r) == sid]
    opened = final + [r for t in (ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS) for r in everything[t]
                      if _signal_of(r) == sid]  # fmt: skip
    assert len(opened) == 4, "a signal, its pending and confirmed order, its fill"
    signal_ms = final[0].timestamp_ms
    candles_until = {
        t: [r for r in rs if r.timestamp_ms <= signal_ms] for t, rs in everything.items() if t.startswith("market.")
    }

    target = Bus.memory()
    ensure_topics(target, run.settings)
    server = DashboardServer(create_app(target, run.settings, token=TOKEN)).start()
    browser = _Browser(tmp_path / "profile")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    copied: set[tuple[str, int, int]] = set()

    def copy(records: list[Record]) -> None:
        fresh = [r for r in records if (r.topic, r.partition, r.offset) not in copied]
        copied.update((r.topic, r.partition, r.offset) for r in fresh)
        _copy(target, fresh)

    try:
        started = time.perf_counter()
        browser.call("Page.navigate", url=server.url)
        browser.until("document.readyState === 'complete' && window.kstrade && window.kstrade.ready")
        load_ms = browser.js("performance.getEntriesByType('navigation')[0].loadEventEnd")
        ready = time.perf_counter() - started
        print(f"page load: {load_ms:.0f} ms (navigation to load event); data drawn after {ready:.2f} s")
        assert load_ms < 1000
        weight = _page_bytes(server.url)
        print(f"page weight: {weight:,} bytes (/ and its static files)")
        assert weight < 2_000_000
        transferred = browser.js(
            "performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))"
            ".filter(e => !e.name.includes('/api/')).reduce((n, e) => n + e.transferSize, 0)"
        )
        assert 0 < transferred < 2_000_000
        assert browser.js("window.kstrade.equityPoints") == 0 and browser.js("window.kstrade.positions") == 0

        # Step 1: the market up to the signal, then the signal, its orders and its fill.
        copy([r for rs in candles_until.values() for r in rs])
        minutes = len(candles_until[f"market.candles.{symbol}.1m"])
        browser.until(f"window.kstrade.candles['{symbol}'] === {minutes}")
        copy(opened)
        browser.until("window.kstrade.positions === 1")
        browser.until(f"window.kstrade.markers['{symbol}'] === 1")
        assert browser.js("window.kstrade.equityPoints") == 0
        browser.screenshot(shots / "1-position-open.png")

        # Step 2: the minutes until the close, and the close: the position goes, the equity gains a point.
        copy([r for t, rs in everything.items() if t.startswith("market.") for r in rs
              if r.timestamp_ms <= first_close.timestamp_ms])  # fmt: skip
        copy([first_close])
        browser.until("window.kstrade.positions === 0 && window.kstrade.equityPoints === 1")
        assert browser.js("window.kstrade.balance") == trade.balance  # type: ignore[attr-defined]

        # Step 3: the rest of the day.
        copy([r for rs in everything.values() for r in rs])
        browser.until(f"window.kstrade.equityPoints === {len(closes)}", timeout=30)
        expected = {t: len(rs) for t, rs in sorted(everything.items()) if rs and not t.startswith("dlq.")}
        wanted = json.dumps(expected, separators=(",", ":"))
        browser.until(f"JSON.stringify(window.kstrade.topics) === '{wanted}'")  # counted every few seconds
        browser.until("window.kstrade.latencyRows > 0")
        topics = browser.js("window.kstrade.topics")
        assert topics[f"market.candles.{symbol}.1m"] == 1440
        shown = browser.js("document.getElementById('topics').innerText")
        assert f"signals.final\t{topics['signals.final']}" in shown
        assert shown.count("\n") == sum(1 for t, rs in everything.items() if rs and not t.startswith("dlq."))
        assert browser.js("document.getElementById('tiers').innerText").count("\n") >= 3
        assert browser.js("Object.values(window.kstrade.markers).reduce((a, b) => a + b, 0)") > 3
        assert not browser.js("window.kstrade.errors.length")
        assert browser.js("document.getElementById('halt').disabled") is False
        browser.screenshot(shots / "2-day-done.png")
        browser.call("Emulation.setDeviceMetricsOverride", width=1500, height=3400, deviceScaleFactor=1, mobile=False)
        time.sleep(0.5)
        browser.screenshot(shots / "3-full-page.png")

        # The operator's halt from the page: token and reason typed, the button pressed, the command seen.
        browser.js(f"document.getElementById('token').value = '{TOKEN}'; "
                   "document.getElementById('reason').value = 'from the browser test'; "
                   "document.getElementById('halt').click()")  # fmt: skip
        browser.until("document.getElementById('commands').innerText.includes('from the browser test')")
        (command,) = _commands(target)
        assert (command.action.value, command.reason) == ("HALT", "from the browser test")
        assert "halt sent" in browser.js("document.getElementById('control-note').innerText")

        # Idle: the page open, the bus quiet.
        cpu, wall = _cpu_seconds(), time.perf_counter()
        time.sleep(10)
        share = (_cpu_seconds() - cpu) / (time.perf_counter() - wall)
        print(f"idle CPU of the dashboard's process (page connected, bus idle): {100 * share:.2f}% of one core")
        assert share < 0.10
    finally:
        browser.close()
        server.stop()
    artefacts = os.environ.get("KSTRADE_TEST_ARTIFACTS")
    if artefacts:
        shutil.copytree(shots, Path(artefacts) / "dashboard", dirs_exist_ok=True)


def _signal_of(record: Record) -> str | None:
    """The signal_id of a signal, order or execution record."""
    schema = (record.header("schema") or b"").decode()
    names = {"kstrade.Signal": "signal", "kstrade.Order": "order", "kstrade.Execution": "execution"}
    if schema not in names:
        return None
    return str(Codec(names[schema]).decode(record.value or b"").signal_id)  # type: ignore[attr-defined]


def test_the_vendored_chart_library_is_the_release_with_its_license() -> None:
    vendor = STATIC / "vendor" / "lightweight-charts"
    script = (vendor / "lightweight-charts.standalone.production.js").read_text()
    assert "TradingView Lightweight Charts™ v5.3.0" in script[:300]
    assert "Apache License" in (vendor / "LICENSE").read_text()
    assert "TradingView" in (vendor / "NOTICE").read_text()
    page = (STATIC / "index.html").read_text()
    assert "https://www.tradingview.com/" in page and "//cdn" not in page and "http" not in page.split("<footer>")[0]


def test_run_serves_the_dashboard_on_its_own_bus_while_it_replays(tmp_path: Path) -> None:
    """`python -m kstrade run --dashboard`: the embedded run serves the page on its own memory
    bus; once the run directory is written, the page's account is the run's."""
    import urllib.request

    from kstrade import app

    seen: dict[str, Any] = {}

    def hold(url: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url + "api/account", timeout=10) as reply:
                seen["account"] = json.loads(reply.read())
            if seen["account"]["trades_closed"] == pl.read_parquet(tmp_path / "run" / "pnl.parquet").height:
                break
            time.sleep(0.2)
        with urllib.request.urlopen(url, timeout=10) as page:
            seen["page"] = page.status

    options = RunOptions(out=tmp_path / "run", days=1, live_view=False, dashboard_port=0, dashboard_hold=hold)
    summary = app.run(load(None), options, log=lambda _: None)
    assert seen["page"] == 200
    assert seen["account"]["trades_closed"] == summary["trades_closed"] > 0
    assert seen["account"]["balance"] == pytest.approx(summary["final_balance"])
