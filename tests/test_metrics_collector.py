"""The collector as a stage: an observer that never dead-letters, relays the alerts other stages
raise, announces conditions once (and their end), and takes its settings from the one config."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import METRICS_ALERTS, METRICS_LATENCY, PNL, candles, dlq_topic, signals
from kstrade.config import ConfigError, load, redacted
from kstrade.metrics import INPUTS, MetricsCollector, build_collector
from kstrade.metrics.alerts import AlertRules
from kstrade.metrics.storage import MetricsStore
from kstrade.schemas import Alert, Candle, Codec
from kstrade.schemas.models import Severity
from kstrade.stage import Pipeline

from .conftest import drain

NS = 1_000_000_000


def test_inputs_cover_the_pipeline_and_not_the_collectors_own_outputs() -> None:
    import re

    pattern = re.compile(INPUTS)
    for topic in (candles("BTC-USD", "1m"), "features.aggregated.BTC-USD", "predictions.transformer",
                  signals("final"), PNL, dlq_topic(PNL), METRICS_ALERTS):  # fmt: skip
        assert pattern.match(topic), topic
    for topic in (METRICS_LATENCY, "metrics.performance.realtime", "metrics.model.drift", "marketing"):
        assert not pattern.match(topic), topic


def test_rules_announce_a_condition_once_repeat_it_slowly_and_say_when_it_clears() -> None:
    rules = AlertRules(repeat_after_s=60)
    check = rules.check
    first = check(0, "CONSUMER_LAG_OVER_THRESHOLD", "kstrade.signals", True, Severity.WARNING, "behind")
    assert first is not None and first.severity is Severity.WARNING
    assert check(10 * NS, "CONSUMER_LAG_OVER_THRESHOLD", "kstrade.signals", True, Severity.WARNING, "behind") is None
    assert check(61 * NS, "CONSUMER_LAG_OVER_THRESHOLD", "kstrade.signals", True, Severity.WARNING, "behind")
    assert rules.firing == [("CONSUMER_LAG_OVER_THRESHOLD", "kstrade.signals")]
    cleared = check(70 * NS, "CONSUMER_LAG_OVER_THRESHOLD", "kstrade.signals", False, Severity.WARNING, "")
    assert cleared is not None and (cleared.code, cleared.severity) == ("CONSUMER_LAG_OVER_THRESHOLD_RESOLVED",
                                                                         Severity.INFO)  # fmt: skip
    assert check(80 * NS, "CONSUMER_LAG_OVER_THRESHOLD", "kstrade.signals", False, Severity.WARNING, "") is None


class Notes:
    """Stands in for the Telegram notifier (it cannot run here): keeps what would be sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, text: str, chat_id: str | None = None) -> bool:
        self.sent.append(text)
        return True

    def close(self) -> None:
        pass


def test_unreadable_records_are_counted_never_dead_lettered_and_other_stages_alerts_are_relayed(
    tmp_path: Path,
) -> None:
    bus = Bus.memory()
    topics = [signals("final"), dlq_topic(signals("final")), METRICS_ALERTS, METRICS_LATENCY]
    bus.admin().create_topics([(t, 1, 1, {}) for t in topics])
    producer = bus.producer()
    ac = Codec(Alert)
    producer.send(signals("final"), b"\x00garbage", headers=ac.headers(time.time_ns(), "signals"))
    producer.send(signals("final"), b"no headers at all")
    breaker = Alert(timestamp=datetime.now(UTC), severity=Severity.CRITICAL, source="execution",
                    code="CIRCUIT_BREAKER_OPEN", message="3 losing trades in a row: trading paused")  # fmt: skip
    producer.send(METRICS_ALERTS, ac.encode(breaker), headers=ac.headers(time.time_ns(), "execution"))
    producer.flush()
    store = MetricsStore(f"sqlite:///{tmp_path / 'm.db'}")
    collector = MetricsCollector(store=store)
    notes = Notes()
    collector.notifier = notes  # type: ignore[assignment]
    sent = notes.sent
    pipeline = Pipeline(bus, [collector])
    pipeline.drain()
    assert pipeline.stats.dead_lettered["metrics"] == 0 and collector.unreadable == 2
    # its own alerts on metrics.alerts are not read back as someone else's
    ours = collector.emit(METRICS_ALERTS, breaker.model_copy(update={"source": "metrics"}), key=None, origin_ns=1)
    producer.send(ours.topic, ours.value, headers=ours.headers)
    producer.flush()
    pipeline.drain()
    collector.close()
    assert sent == ["[CRITICAL] CIRCUIT_BREAKER_OPEN\n3 losing trades in a row: trading paused"]
    assert [(a["code"], a["source"]) for a in store.rows("alerts")] == [("CIRCUIT_BREAKER_OPEN", "execution")]
    scrape = collector.exporter.registry.get_sample_value
    assert scrape("kstrade_alerts_total", {"code": "CIRCUIT_BREAKER_OPEN", "severity": "CRITICAL"}) == 1.0
    check = bus.consumer("check")
    check.subscribe([dlq_topic(signals("final"))])
    assert check.poll(10, 0.2) == []


def test_its_own_liveness_alarm_is_relayed_like_any_other_services(tmp_path: Path) -> None:
    """The collector's liveness alarm writes NO_PROGRESS with the collector's own stage header
    (kstrade.liveness): it is relayed to Telegram, stored and counted like another service's."""
    bus = Bus.memory()
    bus.admin().create_topics([(METRICS_ALERTS, 1, 1, {})])
    codec, producer = Codec(Alert), bus.producer()
    for source in ("signals", "metrics"):
        alert = Alert(timestamp=datetime.now(UTC), severity=Severity.CRITICAL, source=source, code="NO_PROGRESS",
                      message=f"{source}: no progress for 61 s while 5 records wait")  # fmt: skip
        producer.send(METRICS_ALERTS, codec.encode(alert), key=b"NO_PROGRESS",
                      headers=codec.headers(time.time_ns(), source))  # fmt: skip
    producer.flush()
    store = MetricsStore(f"sqlite:///{tmp_path / 'm.db'}")
    collector = MetricsCollector(store=store)
    notes = Notes()
    collector.notifier = notes  # type: ignore[assignment]
    sent = notes.sent
    Pipeline(bus, [collector]).drain()
    collector.close()
    assert [t.splitlines()[1].split(":")[0] for t in sent] == ["signals", "metrics"]
    assert sorted(a["source"] for a in store.rows("alerts")) == ["metrics", "signals"]
    scrape = collector.exporter.registry.get_sample_value
    assert scrape("kstrade_alerts_total", {"code": "NO_PROGRESS", "severity": "CRITICAL"}) == 2.0


def test_a_replay_on_the_event_clock_does_not_pollute_latency() -> None:
    # origin times from 2026-01 against wall-clock create times: implausible, counted, not recorded
    bus = Bus.memory()
    bus.admin().create_topics([(candles("BTC-USD", "1m"), 1, 1, {})])
    codec = Codec(Candle)
    c = Candle(timestamp=datetime(2020, 1, 1, tzinfo=UTC), symbol="BTC-USD", interval="1m", open=1.0, high=1.0,
               low=1.0, close=1.0, volume=1.0, source="replay")  # fmt: skip
    producer = bus.producer()
    producer.send(candles("BTC-USD", "1m"), codec.encode(c), headers=codec.headers(1_577_836_860 * NS, "ingest"))
    producer.flush()
    collector = MetricsCollector()
    consumer = bus.consumer("m")
    consumer.subscribe([candles("BTC-USD", "1m")])
    for r in drain(consumer, 1):
        collector.handle(r)
    assert collector.latency.implausible == 1 and collector.latency.take_window(0) == ({}, {})


def test_settings_come_from_the_one_config_and_the_bot_token_only_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "kstrade.toml"
    toml.write_text('[metrics]\nlatency_p99_target_ms = 25\n[metrics.telegram]\nenabled = true\nchat_id = "42"\n')
    monkeypatch.setenv("KSTRADE_METRICS__TELEGRAM__BOT_TOKEN", "999:very-secret")
    settings = load(toml)
    assert settings.metrics.latency_p99_target_ms == 25
    assert settings.metrics.telegram.token() == "999:very-secret"
    assert "very-secret" not in str(redacted(settings))
    toml.write_text('[metrics.telegram]\nbot_token = "999:very-secret"\n')
    with pytest.raises(ConfigError, match="bot_token"):
        load(toml)
    with pytest.raises(ConfigError, match="chat_id"):
        load(None, metrics={"telegram": {"enabled": True}})
    with pytest.raises(ConfigError, match="lag_threshold"):
        load(None, metrics={"lag_threshold": 0})
    with pytest.raises(ConfigError, match="candle interval"):
        load(None, metrics={"bar_seconds": 30})
    with pytest.raises(ConfigError, match="whole number of 60 s bars"):
        load(None, metrics={"performance_windows_s": [90]})


def test_build_collector_wires_storage_and_exporter_from_settings(tmp_path: Path) -> None:
    settings = load(None, metrics={"database_url": f"sqlite:///{tmp_path / 'x.db'}", "prometheus_port": 0})
    collector = build_collector(settings.metrics, Bus.memory())
    assert collector.store is not None and collector.lag_probe is not None and collector.notifier is None
    collector.close()


@pytest.mark.kafka
def test_the_service_runs_over_kafka_serves_prometheus_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KSTRADE_BUS__TRANSPORT": "kafka", "KSTRADE_BUS__BOOTSTRAP": kafka_bootstrap,
           "KSTRADE_METRICS__PROMETHEUS_PORT": str(port),
           "KSTRADE_METRICS__DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}"}  # fmt: skip
    service = subprocess.Popen([sys.executable, "-m", "kstrade.metrics"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        body = ""
        while time.monotonic() < deadline and "kstrade_messages" not in body:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                time.sleep(0.2)
        assert "kstrade_dead_letters_total" in body
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
    assert service.returncode == 0, err
    assert "collector running on kafka" in err
    assert (tmp_path / "service.db").exists()


def test_a_failing_database_raises_an_alert_keeps_the_rows_and_recovers(tmp_path: Path) -> None:
    from sqlalchemy import text

    from kstrade.metrics.storage import schema

    store = MetricsStore(f"sqlite:///{tmp_path / 'm.db'}")
    collector = MetricsCollector(store=store)
    collector.on_time(0)
    store.metric("sharpe", {}, datetime(2026, 1, 1, tzinfo=UTC), 1.0)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE metric_samples"))
    collector.on_time(10 * NS)  # the write fails: announced on the next tick
    assert store.pending == 1
    codes = [Codec(Alert).decode(o.value).code for o in collector.on_time(11 * NS)]  # type: ignore[attr-defined]
    assert codes == ["STORAGE_FAILED"]
    schema.create_all(store.engine)
    collector.on_time(20 * NS)
    assert store.pending == 0 and [r["name"] for r in store.rows("metric_samples")][:1] == ["sharpe"]
    codes = [Codec(Alert).decode(o.value).code for o in collector.on_time(21 * NS)]  # type: ignore[attr-defined]
    assert codes == ["STORAGE_FAILED_RESOLVED"]
    collector.close()
