"""The shipped observability stack, end to end with a real Prometheus: the metrics collector and
the execution service (built as `python -m kstrade service NAME` builds them) serve their
endpoints while a pipeline trades, refuses, halts and reads everything the collector watches; the
Debian `prometheus` binary scrapes them with deploy/prometheus/prometheus.yml (the same jobs,
targets moved to this test's ports, a 1 s interval); then every query of every panel of every
deploy/grafana/*.json dashboard must return data through Prometheus's HTTP API.

scripts/setup installs `prometheus` (Debian's package, dev only). The test starts it on a free
port with its TSDB in a temporary folder, and stops it whatever happens."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kstrade.bus import Bus
from kstrade.bus.topics import (
    CONTROL_EXECUTION,
    METRICS_ALERTS,
    PNL,
    candles,
    catalogue,
    create_all,
    dlq_topic,
    features_aggregated,
    predictions_lstm,
    signals,
)
from kstrade.config import load
from kstrade.execution import ExecutionStage
from kstrade.ingest.health import FeedHealth, HealthReport
from kstrade.metrics import MetricsCollector
from kstrade.schemas import Codec
from kstrade.schemas.models import (
    Alert,
    Candle,
    ControlAction,
    ControlCommand,
    FeatureVector,
    Message,
    ModelType,
    Prediction,
    PredictionOutput,
    Severity,
    Signal,
    SignalDirection,
    SignalStage,
    Tier,
)
from kstrade.services import build
from kstrade.stage import Pipeline

ROOT = Path(__file__).resolve().parents[1]
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
SYMBOL = "BTC-USD"
ACCOUNT = "deploy-test"
#: Bounds: Prometheus up, and every query answered (a 1 s scrape: a handful of seconds suffice).
START_TIMEOUT_S = 30
QUERY_TIMEOUT_S = 60
#: Grafana's built-in variables, as Grafana would fill them for the default "last 6 hours" view.
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ManualClock:
    """Time the test moves, as the live clock (not `EventClock`: the collector then behaves as a
    live service: counters exported per batch, storage written per tick, live intervals)."""

    def __init__(self, start_ns: int) -> None:
        self.now = start_ns

    def now_ns(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, rows' panels included."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    return [(p.get("title", "?"), t["expr"]) for p in panels(board["panels"]) for t in p.get("targets", [])
            if "expr" in t]  # fmt: skip


class Stack:
    """The two kstrade endpoints and a real Prometheus scraping them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.metrics_port, self.execution_port = free_port(), free_port()
        # What the compose services set, with this test's ports and files (metrics 0: not served
        # by `build`, served below, where the test keeps the server to stop it).
        self.settings = load(
            None,
            symbols=[SYMBOL],
            execution={
                "account": ACCOUNT, "journal_path": str(tmp_path / "orders.sqlite3"),
                "paper_state_path": str(tmp_path / "paper.json"), "paper_slippage_bps": 0.0,
                "prometheus_port": self.execution_port,
                "symbols": {SYMBOL: {"value_per_unit": 1.0, "volume_step": 0.001}},
                "guardrails": {"max_daily_loss_pct": 1.0, "max_open_positions": 5, "stop_slippage_bps": 0.0},
            },
            metrics={
                "prometheus_port": 0, "database_url": f"sqlite:///{tmp_path / 'metrics.db'}",
                "drift_reference": str(self._drift_reference()), "psi_min_samples": 10, "psi_window": 10,
                "emit_interval_s": 1.0, "lag_interval_s": 1.0, "lag_groups": ["kstrade.execution"],
            },
        )  # fmt: skip
        self.bus = Bus.memory()
        create_all(self.bus.admin(), catalogue([SYMBOL], replication_factor=1))
        execution = build("execution", self.settings, self.bus)
        collector = build("metrics", self.settings, self.bus)
        assert isinstance(execution, ExecutionStage) and isinstance(collector, MetricsCollector)
        self.execution, self.collector = execution, collector
        self.metrics_server = collector.exporter.serve(self.metrics_port)
        # A few minutes ago: the scripted market times below stay in the past; then the clock
        # follows the wall (the collector splits an event's stage times once it has settled).
        minute = 60_000_000_000
        self.t0 = (time.time_ns() // minute - 3) * minute
        self.clock = ManualClock(self.t0)
        self.pipeline = Pipeline(self.bus, [execution, collector], self.clock)
        self.producer = self.bus.producer()

    def _drift_reference(self) -> Path:
        path = self.tmp_path / "drift_reference.json"
        reference = {"model_type": "lstm", "model_version": "1",
                     "features": {"rsi_14": {"edges": [30.0, 70.0], "proportions": [0.2, 0.6, 0.2]}}}  # fmt: skip
        path.write_text(json.dumps(reference))
        return path

    def at(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(self.t0 / 1e9 + seconds, UTC)

    def send(self, topic: str, msg: Message, at_s: float, origin_s: float | None = None, stage: str = "test") -> None:
        self.clock.now = max(self.clock.now, self.t0 + int(at_s * 1e9))
        codec = Codec(type(msg))
        origin_ns = self.t0 + int((at_s if origin_s is None else origin_s) * 1e9)
        self.producer.send(topic, codec.encode(msg), key=SYMBOL.encode(), headers=codec.headers(origin_ns, stage))
        self.producer.flush()
        self.pipeline.drain()

    def candle(self, at_s: float, o: float, h: float, low: float, c: float) -> None:
        msg = Candle(timestamp=self.at(at_s), symbol=SYMBOL, interval="1m", open=o, high=h, low=low, close=c,
                     volume=1.0, source="test")  # fmt: skip
        self.send(candles(SYMBOL, "1m"), msg, at_s, stage="ingest")

    def signal(self, at_s: float, entry: float, sl: float, tp: float, p: float = 0.6) -> None:
        msg = Signal(timestamp=self.at(at_s), symbol=SYMBOL, signal_id=uuid.uuid4(), stage=SignalStage.FINAL,
                     direction=SignalDirection.LONG, confidence=p, tier=Tier.A, entry_price=entry, stop_loss=sl,
                     take_profit=tp, ttl_seconds=120)  # fmt: skip
        self.send(signals("final"), msg, at_s + 1, origin_s=at_s, stage="signals")

    def feed(self) -> None:
        """Something for every panel: a trade won, a refusal, an operator halt (an alert), feature
        vectors against the drift reference, predictions scored by later candles, ingest health, a
        dead letter and an unreadable record."""
        for i in range(20):  # PSI: all in one bin of the reference
            v = FeatureVector(timestamp=self.at(i), symbol=SYMBOL, version="1", names=["rsi_14"], values=[55.0])
            self.send(features_aggregated(SYMBOL), v, 0, stage="features")
        prediction = Prediction(timestamp=self.at(0), symbol=SYMBOL, model_type=ModelType.LSTM, model_version="1",
                                prediction=PredictionOutput(direction="UP", probability=0.7, confidence=0.4),
                                inference_time_ms=1.0)  # fmt: skip
        self.send(predictions_lstm(SYMBOL), prediction, 0, stage="inference")
        self.candle(0, 50_000, 50_000, 50_000, 50_000)
        self.signal(0, 50_000, 49_000, 52_000)  # filled: 1 BTC
        self.candle(60, 50_500, 52_500, 50_400, 52_100)  # the target: a winning trade
        self.signal(61, 52_100, 51_100, 54_100, p=0.3)  # no edge: refused by the sizer
        self.candle(120, 52_100, 52_200, 52_000, 52_150)
        command = ControlCommand(timestamp=self.at(130), command_id=uuid.uuid4(), account=ACCOUNT,
                                 action=ControlAction.HALT, issued_by="test", reason="deploy test")  # fmt: skip
        self.send(CONTROL_EXECUTION, command, 130)  # OPERATOR_HALT on metrics.alerts
        lost = Alert(timestamp=self.at(131), severity=Severity.CRITICAL, code="INGEST_MINUTE_LOST",
                     source="ingest.coinbase.feed", message="a lost minute")  # fmt: skip
        self.send(METRICS_ALERTS, lost, 131, stage="ingest")
        health = FeedHealth(last_message_ns=self.t0, reconnects=1, gaps_detected=1, gaps_backfilled=1,
                              candles_produced=8, missing_minutes=2, lost_minutes=1)  # fmt: skip
        report = HealthReport(health, "coinbase", [SYMBOL]).output()
        self.producer.send(report.topic, report.value, key=report.key, headers=report.headers)
        self.producer.send(dlq_topic(PNL), b"bad", key=None)  # a dead letter
        self.producer.send(PNL, b"not a pnl event", key=None)  # unreadable: counted and skipped
        self.producer.flush()
        self.tick()

    def tick(self) -> None:
        """A second on, or to now: the services look at the account, the collector emits, probes
        lag and settles the events older than its settle time."""
        self.clock.now = max(self.clock.now + 1_000_000_000, time.time_ns())
        self.pipeline.drain()

    def close(self) -> None:
        self.metrics_server.shutdown()
        self.metrics_server.server_close()
        self.collector.close()
        gauges = self.execution.gauges
        if gauges is not None and gauges.server is not None:
            gauges.server.shutdown()
            gauges.server.server_close()
        self.execution.journal.close()


def scrape_config(ports: dict[str, int]) -> dict[str, Any]:
    """The shipped scrape config with each compose target (`service:port`) moved to this test's
    port for that service, a 1 s interval, and nothing else changed (job names included)."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s", "scrape_timeout": "1s",
                        "evaluation_interval": "1s"}  # fmt: skip
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        for static in job["static_configs"]:
            hosts = [target.split(":")[0] for target in static["targets"]]
            assert set(hosts) <= set(ports), f"job {job['job_name']}: a target this test does not serve: {hosts}"
            static["targets"] = [f"127.0.0.1:{ports[h]}" for h in hosts]
    return config


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """Starts the real `prometheus` with a given config; yields (start, url), stops it at the end."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is missing: scripts/setup installs it (Debian package prometheus)")
    procs: list[subprocess.Popen[bytes]] = []
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"

    def start(config: dict[str, Any]) -> str:
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        with log.open("wb") as out:
            procs.append(subprocess.Popen(
                [binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                stdout=out, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert procs[-1].poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert reply["status"] == "success", f"{expr}: {reply}"
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variables, filled in explicitly: `$name` and `${name}` (longest name first)."""
    for name in sorted(variables, key=len, reverse=True):
        bare = name.removeprefix("$")
        expr = expr.replace("${" + bare + "}", variables[name]).replace(name, variables[name])
    return expr


def dashboard_variables(url: str, board: dict[str, Any]) -> dict[str, str]:
    """Each query variable (`label_values(metric, label)`) as Grafana's "All" would select it: the
    values Prometheus has, as a regex alternation; a variable with no values fails here."""
    variables = dict(BUILTINS)
    for var in board.get("templating", {}).get("list", []):
        if var["type"] == "datasource":
            continue
        assert var["type"] == "query", f"variable {var['name']}: type {var['type']} not handled by this test"
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"])
        assert m, f"variable {var['name']}: query {var['query']!r} not handled by this test"
        metric, label = m.groups()
        reply = httpx.get(f"{url}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=5).json()
        values = reply["data"]
        assert values, f"variable {var['name']}: no {label} values on {metric}"
        # As Grafana does: regex metacharacters escaped for a PromQL string (a backslash doubled).
        variables["$" + var["name"]] = "|".join(re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in values)
    return variables


def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path: Path, prometheus: Any) -> None:
    assert len(DASHBOARDS) >= 2, DASHBOARDS
    stack = Stack(tmp_path)
    try:
        stack.feed()
        config = scrape_config({"metrics": stack.metrics_port, "execution": stack.execution_port})
        url = prometheus(config)
        jobs = {job["job_name"] for job in config["scrape_configs"]}
        # Every query of every dashboard, once the scrapes have what it needs (a rate needs two).
        pending: dict[tuple[str, str, str], str] = {}
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        boards = [(path.name, json.loads(path.read_text())) for path in DASHBOARDS]
        while True:
            stack.tick()
            up = query(url, "up == 1")
            if {r["metric"]["job"] for r in up} == jobs:
                break
            assert time.monotonic() < deadline, f"targets not up: {httpx.get(f'{url}/api/v1/targets').text}"
            time.sleep(0.5)
        variables = {}
        for name, board in boards:
            variables[name] = dashboard_variables(url, board)
            for title, expr in panel_queries(board):
                pending[(name, title, expr)] = substitute(expr, variables[name])
        assert len(pending) >= 40, len(pending)  # both dashboards, every target
        while pending:
            for key, expr in list(pending.items()):
                assert "$" not in expr, f"{key}: a Grafana variable left unfilled: {expr}"
                if query(url, expr):
                    del pending[key]
            if not pending or time.monotonic() > deadline:
                break
            stack.tick()
            time.sleep(0.5)
        assert not pending, "queries with no data:\n" + "\n".join(f"  {n} / {t}: {e}" for (n, t, _), e in
                                                                   pending.items())  # fmt: skip
    finally:
        stack.close()


def test_the_shipped_scrape_config_is_valid_for_prometheus() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/setup installs it (Debian package prometheus)")
    done = subprocess.run([promtool, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
