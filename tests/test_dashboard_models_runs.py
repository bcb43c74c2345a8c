"""The dashboard's models panel, run pages, bounds and principal: on a one-day SYNTHETIC run whose
metrics collector has a drift reference (so it publishes PSI per feature), the models API shows
the collector's accuracy and drift figures and the naive baselines over the same minutes; a run
directory's page shows report.html's figures from the same code; a view with small bounds keeps
no more than they allow and still gives the same account; the dashboard's ACLs are what it reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from kstrade.app import BAR
from kstrade.bus import Bus, Record, acl
from kstrade.bus.topics import CONTROL_EXECUTION, METRICS_DRIFT, signals
from kstrade.config import Settings, load
from kstrade.dashboard.view import FOLLOWED_RE, REASONS_KEPT, DashboardView
from kstrade.dashboard.web import DashboardServer, create_app
from kstrade.report import headroom, write_run_directory
from kstrade.schemas import Candle, Codec, ModelDrift, Signal
from kstrade.signals.decision import epoch_ns

from .helpers import memory_bus
from .test_dashboard import CHROMIUM, _all, _Browser, _embedded_run

REFERENCE = Path(__file__).resolve().parents[1] / "models" / "transformer" / "drift_reference.json"


@dataclass
class DriftRun:
    bus: Bus
    settings: Settings
    runs: Path
    name: str


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory: pytest.TempPathFactory) -> DriftRun:
    """`kstrade.app.run`'s pipeline on a bus this test holds, its collector with the transformer's
    drift reference, and the run directory written as `run` writes it."""
    runs = tmp_path_factory.mktemp("runs")
    out = runs / "run-drift"
    base = load(None)
    settings = base.model_copy(update={"metrics": base.metrics.model_copy(update={"drift_reference": REFERENCE})})
    run = _embedded_run(out, settings)
    bus, settings, candles = run.bus, run.settings, run.candles
    times: list[int] = candles.period["open_time_ms"].to_list()
    start = datetime.fromtimestamp(min(times) / 1000, UTC)
    end = datetime.fromtimestamp(max(times) / 1000, UTC)
    meta = {"data": candles.label, "symbols": settings.symbols, "start": start.isoformat(), "end": end.isoformat(),
            "candles": candles.period.height, "bus": "memory", "wall_seconds": 1.0}  # fmt: skip
    write_run_directory(out, bus, run.stats, meta, rules=settings.execution.guardrails, period=(start, end + BAR))
    return DriftRun(bus, settings, runs, out.name)


@pytest.fixture(scope="module")
def client(drift_run: DriftRun) -> Iterator[TestClient]:
    app = create_app(drift_run.bus, drift_run.settings, runs=drift_run.runs)
    with TestClient(app) as c:
        assert app.state.follower.wait_caught_up(60.0)
        yield c


def _drift(bus: Bus) -> list[ModelDrift]:
    codec = Codec(ModelDrift)
    return [codec.decode_record(r) for r in _all(bus, METRICS_DRIFT)]  # type: ignore[misc]


# -- the models panel -----------------------------------------------------------------------------


def test_accuracy_is_the_collectors_and_the_baselines_are_scored_over_the_same_minutes(
    drift_run: DriftRun, client: TestClient
) -> None:
    published = [d for d in _drift(drift_run.bus) if d.metric == "accuracy" and d.symbol == "BTC-USD"]
    assert len(published) >= 40  # two models, hourly summaries over a day
    history = client.get("/api/models/accuracy", params={"symbol": "BTC-USD", "limit": 5000}).json()
    got = {s["name"]: [(p["time"], p["value"]) for p in s["points"]] for s in history["models"]}
    expected: dict[str, list[tuple[int, float]]] = {}
    for d in sorted(published, key=lambda d: d.timestamp):
        expected.setdefault(d.model_type.value, []).append((int(d.timestamp.timestamp()), d.value))
    assert got == expected

    # The baselines, computed here another way: polars over the candle topic.
    m = drift_run.settings.metrics
    codec = Codec(Candle)
    rows = [codec.decode_record(r) for r in _all(drift_run.bus, "market.candles.BTC-USD.1m")]
    frame = pl.DataFrame(
        {"time": [int(c.timestamp.timestamp()) for c in rows], "close": [c.close for c in rows]}  # type: ignore[attr-defined]
    ).sort("time")
    assert frame["time"].diff().drop_nulls().unique().to_list() == [60]  # no gap: shifts are minutes
    h, band = m.horizon_bars, m.flat_band_bps / 10_000

    def direction(move: pl.Expr) -> pl.Expr:
        return pl.when(move.abs() <= band).then(0).when(move > 0).then(1).when(move < 0).then(-1)  # else null

    scored = frame.with_columns(
        direction(pl.col("close").shift(-h) / pl.col("close") - 1).alias("realized"),
        direction(pl.col("close") / pl.col("close").shift(h) - 1).alias("previous"),
        (pl.col("time") + 60 * (h + 1)).alias("known"),
    ).drop_nulls()
    baselines = {s["name"]: dict((p["time"], p["value"]) for p in s["points"]) for s in history["baselines"]}
    assert set(baselines) == {"last_direction", "always_flat"}
    instants = sorted({t for series in expected.values() for t, _ in series})
    assert sorted(baselines["last_direction"]) == instants
    for t in instants:
        window = scored.filter(pl.col("known") <= t).tail(m.accuracy_window)
        assert baselines["last_direction"][t] == pytest.approx((window["realized"] == window["previous"]).mean())
        assert baselines["always_flat"][t] == pytest.approx((window["realized"] == 0).mean())
    health = {(r["model_type"], r["symbol"]): r for r in client.get("/api/models").json()["health"]}
    lstm = health[("lstm", "BTC-USD")]
    assert lstm["accuracy"] == expected["lstm"][-1][1]
    assert lstm["last_direction"] == pytest.approx(baselines["last_direction"][expected["lstm"][-1][0]])
    assert lstm["page_hinkley_threshold"] == m.page_hinkley_threshold


def test_feature_drift_is_the_latest_psi_and_the_movers_its_change(drift_run: DriftRun, client: TestClient) -> None:
    readings: dict[tuple[str, str], list[ModelDrift]] = {}
    for d in sorted(_drift(drift_run.bus), key=lambda d: d.timestamp):
        if d.metric.startswith("psi:"):
            readings.setdefault((d.symbol or "-", d.metric[4:]), []).append(d)
    assert len(readings) == 3 * 90, "every feature of the reference, per symbol"
    models = client.get("/api/models").json()
    assert models["features_watched"] == len(readings)
    assert models["drifted_features"] == sum(r[-1].drifted for r in readings.values())
    top = models["drift"][0]
    highest = max(readings.items(), key=lambda kv: kv[1][-1].value)
    assert (top["symbol"], top["feature"], top["psi"]) == (*highest[0], highest[1][-1].value)
    assert [r["psi"] for r in models["drift"]] == sorted((r[-1].value for r in readings.values()), reverse=True)[:100]
    changes = sorted((abs(r[-1].value - r[-2].value) for r in readings.values() if len(r) > 1), reverse=True)
    assert [abs(r["change"]) for r in models["movers"]] == pytest.approx(changes[:10])
    for row in models["movers"]:
        series = readings[(row["symbol"], row["feature"])]
        assert (row["psi"], row["previous_psi"]) == (series[-1].value, series[-2].value)
        assert row["ks"] is not None and row["ks_critical"] > 0
    versions = {(v["model_type"], v["version"]) for v in models["versions"]}
    assert versions == {("transformer", json.loads(REFERENCE.read_text())["model_version"])}


# -- run pages ------------------------------------------------------------------------------------


def test_a_run_page_shows_the_run_directory_as_report_html_does(drift_run: DriftRun, client: TestClient) -> None:
    out = drift_run.runs / drift_run.name
    listing = client.get("/api/runs").json()
    assert [r["name"] for r in listing["runs"]] == [drift_run.name]
    summary = json.loads((out / "summary.json").read_text())
    assert listing["runs"][0]["final_balance"] == summary["final_balance"]
    run = client.get(f"/api/runs/{drift_run.name}").json()
    assert run["summary"]["statistics"] == summary["statistics"]
    equity = pl.read_parquet(out / "equity.parquet")
    assert [p["balance"] for p in run["equity"]] == equity["balance"].to_list()
    assert run["equity"][0]["time"] == int(equity["timestamp"][0].timestamp())
    assert min(p["drawdown_pct"] for p in run["equity"]) == pytest.approx(100 * summary["statistics"]["max_drawdown"])
    trades = pl.read_parquet(out / "trades.parquet")
    assert len(run["trades"]) == trades.height and [t["realized_pnl"] for t in run["trades"]] == pytest.approx(
        trades["realized_pnl"].to_list(), nan_ok=True
    )
    room = headroom(pl.read_parquet(out / "pnl.parquet"), drift_run.settings.execution.guardrails)
    assert [p["daily_loss_pct"] for p in run["headroom"]] == pytest.approx(room["daily_loss_pct"])
    assert len(run["daily_returns"]) == 1 and run["daily_returns"][0]["value"] == pytest.approx(
        100 * summary["statistics"]["total_return"]
    )
    paths = client.get("/api/openapi.json").json()["paths"]
    assert {"/api/runs", "/api/runs/{name}", "/api/models/accuracy"} <= set(paths)
    report = client.get(f"/runs/{drift_run.name}/report.html")
    assert report.status_code == 200 and "kstrade run report" in report.text

    # A run directory from before trades.parquet and equity.parquet: the same, from the other files.
    older = drift_run.runs / "run-older"
    shutil.copytree(out, older)
    (older / "trades.parquet").unlink()
    (older / "equity.parquet").unlink()
    again = client.get("/api/runs/run-older").json()
    assert again["equity"] == run["equity"] and again["trades"] == run["trades"]
    shutil.rmtree(older)


@pytest.mark.parametrize(
    ("name", "names"), [("nothing-here", "no run directory"), (".env", "not a run directory's name")]
)
def test_an_unknown_run_is_a_404_naming_it(client: TestClient, name: str, names: str) -> None:
    answer = client.get(f"/api/runs/{name}")
    assert answer.status_code == 404 and names in answer.json()["error"]
    assert client.get("/runs/%2E%2E%2Fetc/report.html").status_code == 404


def test_the_command_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "kstrade", "dashboard", "--run", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "is not a run directory (no summary.json)" in done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_the_models_panel_and_a_run_page_in_a_browser(drift_run: DriftRun, tmp_path: Path) -> None:
    server = DashboardServer(create_app(drift_run.bus, drift_run.settings, runs=drift_run.runs)).start()
    browser = _Browser(tmp_path / "profile")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        browser.call("Page.navigate", url=server.url)
        browser.until("window.kstrade && window.kstrade.modelRows === 6 && window.kstrade.driftRows === 100", 30)
        browser.until(
            "(window.kstrade.accuracyPoints.lstm || 0) > 20 && window.kstrade.accuracyPoints.last_direction > 20"
        )
        shown = browser.js("document.getElementById('model-health').innerText")
        assert "transformer\tBTC-USD" in shown and "pts" in shown
        assert browser.js("document.getElementById('movers').innerText").count("\n") == 10
        assert not browser.js("window.kstrade.errors.length")
        browser.call("Emulation.setDeviceMetricsOverride", width=1500, height=3800, deviceScaleFactor=1, mobile=False)
        time.sleep(0.5)
        browser.screenshot(shots / "models.png")

        browser.call("Page.navigate", url=server.url + "runs/")
        browser.until("window.kstradeRun && window.kstradeRun.ready && window.kstradeRun.runs === 1")
        browser.js("document.querySelector('#runs a').click()")
        browser.until(f"location.pathname === '/runs/{drift_run.name}' && window.kstradeRun && window.kstradeRun.ready")
        out = drift_run.runs / drift_run.name
        state = browser.js("window.kstradeRun")
        assert state["errors"] == []
        assert state["equityPoints"] == pl.read_parquet(out / "equity.parquet").height
        assert state["trades"] == state["shownTrades"] == pl.read_parquet(out / "trades.parquet").height
        browser.js("const s = document.getElementById('trade-symbol'); s.value = 'ETH-USD'; "
                   "s.dispatchEvent(new Event('change'))")  # fmt: skip
        eth = pl.read_parquet(out / "trades.parquet").filter(pl.col("symbol") == "ETH-USD").height
        assert browser.js("window.kstradeRun.shownTrades") == eth
        assert browser.js("document.getElementById('trades').rows.length") == eth + 1
        browser.screenshot(shots / "run-page.png")
    finally:
        browser.close()
        server.stop()


# -- bounds ---------------------------------------------------------------------------------------


def _in_time_order(bus: Bus) -> list[Record]:
    """Every followed record, interleaved by time as a reader polling all topics sees them."""
    topics = [t for t in bus.admin().list_topics(5.0) if FOLLOWED_RE.match(t)]
    records = [r for t in topics for r in _all(bus, t)]
    return sorted(records, key=lambda r: (r.timestamp_ms, r.topic, r.partition, r.offset))


def test_every_series_the_view_keeps_is_bounded_and_the_account_stays_exact(drift_run: DriftRun) -> None:
    records = _in_time_order(drift_run.bus)
    whole = DashboardView(drift_run.settings)
    small = DashboardView(drift_run.settings, candles_kept=100, rows_kept=5, trades_kept=10, closes_kept=8,
                          points_kept=3, series_kept=20)  # fmt: skip
    for i in range(0, len(records), 500):
        whole.apply(records[i : i + 500])
        small.apply(records[i : i + 500])
    assert not small.unreadable and not whole.unreadable
    assert whole.folded.closes == 0 and len(whole.closes) > 40
    assert small.folded.closes > 0 and 8 <= len(small.closes) < 8 + 2
    assert {len(rows) for rows in small.candles.values()} == {100}
    assert all(len(rows) <= 5 for rows in [*small.finals.values(), *small.rejections.values()])
    assert len(small.final_by_id) <= 10 and len(small.orders) <= 100 and len(small.fills) <= 10
    for held in (small.closed_by_order, small.closed_by_signal, small.realized_by_signal):
        assert len(held) <= 2 * 10 + 10 // 4
    assert all(len(points) <= 3 for points in small.accuracy.values())
    assert len(small.feature_drift) == 20 and len(small.accuracy) <= 20 and len(small.page_hinkley) <= 20

    a, b = whole.account(), small.account()
    exact = ["balance", "trades_closed", "wins", "realized_pnl_total", "realized_pnl_today", "max_drawdown_pct",
             "drawdown_pct", "daily_floor", "max_loss_floor", "trading_day"]  # fmt: skip
    assert {k: getattr(b, k) for k in exact} == pytest.approx({k: getattr(a, k) for k in exact})
    assert b.curve == a.curve[-len(b.curve) :]
    assert small.positions().positions == whole.positions().positions  # an open position stays


def _through_a_bus(settings: Settings, topic: str, messages: list[tuple[bytes, bytes, list[Any]]]) -> list[Record]:
    """`messages` (value, key, headers) as records of `topic`, in the order sent."""
    bus = memory_bus(settings)
    producer = bus.producer()
    for value, key, headers in messages:
        producer.send(topic, value, key, headers)
    producer.flush()
    return sorted(_all(bus, topic), key=lambda r: (r.partition, r.offset))


def test_free_text_reasons_and_late_candles_stay_bounded(drift_run: DriftRun) -> None:
    view = DashboardView(drift_run.settings, candles_kept=3)
    signal_codec, candle_codec = Codec(Signal), Codec(Candle)
    one: Any = signal_codec.decode_record(_all(drift_run.bus, signals("final"))[0])
    rejected = [
        (signal_codec.encode(one), one.symbol.encode(),
         [*signal_codec.headers(epoch_ns(one.timestamp), "signals"), ("reject_reason", f"REASON_{i}".encode())])
        for i in range(REASONS_KEPT + 50)
    ]  # fmt: skip
    view.apply(_through_a_bus(drift_run.settings, signals("filtered"), rejected))
    assert len(view.rejection_counts) == REASONS_KEPT + 1 and view.rejection_counts["OTHER"] == 50
    candles: list[Any] = [candle_codec.decode_record(r) for r in _all(drift_run.bus, "market.candles.SOL-USD.1m")[:6]]
    # Into a window of three: 1, 2, 3, 5; then 4, late, into the full window (the oldest goes);
    # then 0, older than the whole window (dropped).
    order = [1, 2, 3, 5, 4, 0]
    sent = [(candle_codec.encode(c), b"SOL-USD", candle_codec.headers(epoch_ns(c.timestamp), "ingest"))
            for c in (candles[i] for i in order)]  # fmt: skip
    for record in _through_a_bus(drift_run.settings, "market.candles.SOL-USD.1m", sent):
        view.apply([record])
    times = [r.time for r in view.candles["SOL-USD"]]
    assert times == [int(c.timestamp.timestamp()) for c in candles[3:6]]
    assert not view.unreadable


# -- the dashboard's principal on a secure cluster ------------------------------------------------


def test_the_dashboards_principal_reads_what_it_follows_and_describes_the_rest() -> None:
    symbols = ["BTC-USD", "ETH-USD"]
    acls = acl.dashboard_acls(symbols)
    assert {a.principal for a in acls} == {"User:kstrade-dashboard"}
    reads = {a.name for a in acls if a.resource is acl.Resource.TOPIC and a.operation is acl.Operation.READ}
    catalogue = set(acl.catalogue_topics(symbols))
    assert reads == {t for t in catalogue if FOLLOWED_RE.match(t)}
    assert {"market.candles.BTC-USD.1m", METRICS_DRIFT, "trades.pnl", "dlq.signals.final"} <= reads
    described = {a.name for a in acls if a.operation is acl.Operation.DESCRIBE}
    assert described == catalogue - reads and "predictions.transformer" in described  # counted, not read
    groups = [a for a in acls if a.resource is acl.Resource.GROUP]
    assert groups == [acl.Acl("User:kstrade-dashboard", acl.Resource.GROUP, "kstrade.dashboard.", acl.Operation.READ,
                              acl.Pattern.PREFIXED)]  # fmt: skip
    writes = [a.name for a in acls if a.operation is acl.Operation.WRITE]
    assert writes == [CONTROL_EXECUTION]  # the operator controls, and nothing else
    assert not [a for a in acl.dashboard_acls(symbols, controls=False) if a.operation is acl.Operation.WRITE]
    assert acl.pipeline_acls(symbols)["dashboard"] == acls  # `acl show`/`apply` and the secure cluster's users
