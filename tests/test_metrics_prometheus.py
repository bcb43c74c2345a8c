"""The Prometheus endpoint: it parses with prometheus_client's text parser and carries every
metric the Grafana dashboard in deploy/grafana/ queries."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kstrade.bus import Bus
from kstrade.bus.topics import (
    METRICS_INGEST_HEALTH,
    PNL,
    candles,
    dlq_topic,
    features_aggregated,
    predictions_lstm,
    signals,
)
from kstrade.config import MetricsSettings
from kstrade.ingest.health import FeedHealth, HealthReport
from kstrade.metrics import DriftReference, FeatureReference, MetricsCollector
from kstrade.metrics.storage import MetricsStore
from kstrade.schemas import Candle, Codec, FeatureVector, PnlEvent, Prediction, Signal
from kstrade.schemas.models import ModelType, PredictionOutput, Side, SignalDirection, SignalStage, Tier

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "kstrade.json"
NS = 1_000_000_000


def dashboard_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    return {name for e in exprs for name in re.findall(r"\bkstrade_[a-z0-9_]+", e)}


def _feed(bus: Bus) -> None:
    """One of everything the collector reads, stamped now."""
    now = datetime.now(UTC)
    origin = time.time_ns()
    producer = bus.producer()
    cc, fc, pc, sc, nc = Codec(Candle), Codec(FeatureVector), Codec(Prediction), Codec(Signal), Codec(PnlEvent)
    for minute in range(2):
        c = Candle(timestamp=now, symbol="BTC-USD", interval="1m", open=1.0, high=2.0, low=1.0,
                   close=1.0 + minute, volume=1.0, source="test")  # fmt: skip
        producer.send(candles("BTC-USD", "1m"), cc.encode(c), key=b"BTC-USD",
                      headers=cc.headers(origin + minute * 60 * NS, "ingest"))  # fmt: skip
    v = FeatureVector(timestamp=now, symbol="BTC-USD", version="1", names=["rsi_14"], values=[55.0])
    for _ in range(20):
        producer.send(
            features_aggregated("BTC-USD"), fc.encode(v), key=b"BTC-USD", headers=fc.headers(origin, "features")
        )
    p = Prediction(timestamp=now, symbol="BTC-USD", model_type=ModelType.LSTM, model_version="1",
                   prediction=PredictionOutput(direction="UP", probability=0.7, confidence=0.4),
                   inference_time_ms=1.0)  # fmt: skip
    producer.send(predictions_lstm("BTC-USD"), pc.encode(p), key=b"BTC-USD", headers=pc.headers(origin, "inference"))
    signal_id = uuid4()
    s = Signal(timestamp=now, symbol="BTC-USD", signal_id=signal_id, stage=SignalStage.FINAL,
               direction=SignalDirection.LONG, confidence=0.7, tier=Tier.A, entry_price=100.0, stop_loss=99.0,
               take_profit=102.0, ttl_seconds=60)  # fmt: skip
    producer.send(signals("final"), sc.encode(s), key=b"BTC-USD", headers=sc.headers(origin, "signals"))
    e = PnlEvent(timestamp=now, signal_id=signal_id, order_id="o1", symbol="BTC-USD", side=Side.BUY, quantity=1.0,
                 entry_price=100.0, exit_price=101.0, realized_pnl=1.0, commission=0.0, currency="USD",
                 balance=10_001.0)  # fmt: skip
    producer.send(PNL, nc.encode(e), key=b"BTC-USD", headers=nc.headers(origin, "execution"))
    producer.send(dlq_topic(PNL), b"bad", key=None)
    producer.send(PNL, b"not a pnl event", key=None)  # unreadable: counted and skipped
    health = FeedHealth(last_message_ns=origin, reconnects=1, gaps_detected=1, gaps_backfilled=1, candles_produced=8)
    report = HealthReport(health, "coinbase", ["BTC-USD"]).output()
    producer.send(report.topic, report.value, key=report.key, headers=report.headers)
    producer.flush()


def test_endpoint_parses_and_carries_every_metric_the_dashboard_uses(tmp_path: Path) -> None:
    wanted = dashboard_metrics()
    assert len(wanted) >= 15  # the dashboard really is built on the exporter
    bus = Bus.memory()
    topics = [candles("BTC-USD", "1m"), features_aggregated("BTC-USD"), predictions_lstm("BTC-USD"),
              signals("final"), PNL, dlq_topic(PNL), METRICS_INGEST_HEALTH]  # fmt: skip
    bus.admin().create_topics([(t, 1, 1, {}) for t in topics])
    _feed(bus)
    # a downstream group that is 1 candle behind
    execution = bus.consumer("kstrade.execution")
    execution.subscribe([candles("BTC-USD", "1m")])
    execution.poll(10, 1.0)
    execution.commit([(candles("BTC-USD", "1m"), 0, 1)])

    ref = DriftReference(features={"rsi_14": FeatureReference(edges=[30.0, 70.0], proportions=[0.2, 0.6, 0.2])})
    settings = MetricsSettings(psi_min_samples=10, psi_window=10, lag_groups=["kstrade.execution"])
    store = MetricsStore(f"sqlite:///{tmp_path / 'm.db'}")
    collector = MetricsCollector(settings, reference=ref, bus=bus, store=store)
    consumer = bus.consumer(collector.group)
    consumer.subscribe_pattern(collector.inputs())
    records = consumer.poll(100, 1.0)
    assert len(records) == 28
    for r in records:
        collector.handle(r)
    now = time.time_ns()
    collector.on_time(now)
    collector.on_time(now + 10 * NS)
    assert collector.command("/balance") == "balance: 10001.00"  # the bot's answers follow the windows
    assert "last 86400 s: 1 trades, P&L 1.00, win rate 100.0%" in collector.command("/profit")
    server = collector.exporter.serve(0)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        collector.close()
    samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    missing = sorted(wanted - set(samples))
    assert missing == [], f"dashboard metrics not exported: {missing}"
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip
    assert values[("kstrade_consumer_group_lag", (("group", "kstrade.execution"),))] == 1.0
    assert values[("kstrade_trades", (("window", "3600"),))] == values[("kstrade_trades", (("window", "86400"),))] == 1
    assert values[("kstrade_tier_hit_rate", (("tier", "A"),))] == 1.0
    assert values[("kstrade_messages_total", (("topic", features_aggregated("BTC-USD")),))] == 20.0
    assert values[("kstrade_dead_letters_total", ())] == 1.0
    assert values[("kstrade_unreadable_records_total", (("topic", PNL),))] == 1.0
    assert values[("kstrade_feature_psi", (("feature", "rsi_14"), ("symbol", "BTC-USD")))] > 0.2  # all in one bin
