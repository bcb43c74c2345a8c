"""The topic catalogue: names, validation, and idempotent creation with the design's settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import (
    RETENTION_MS,
    candles,
    catalogue,
    create_all,
    dlq_topic,
    pipeline_topics,
    signals,
)


def test_every_family_of_the_design_is_named() -> None:
    names = set(pipeline_topics(["BTC-USD"]))
    for interval in ("1m", "5m", "15m", "1h"):
        assert f"market.candles.BTC-USD.{interval}" in names
    for name in (
        "features.technical.BTC-USD",
        "features.multi_tf.BTC-USD",
        "features.aggregated.BTC-USD",
        "predictions.lstm.BTC-USD",
        "predictions.transformer",
        "signals.raw",
        "signals.calibrated",
        "signals.filtered",
        "signals.final",
        "trades.orders.pending",
        "trades.orders.confirmed",
        "trades.executions",
        "trades.pnl",
        "metrics.performance.realtime",
        "metrics.model.drift",
        "metrics.latency",
        "metrics.alerts",
    ):
        assert name in names
    specs = {s.name for s in catalogue(["BTC-USD"])}
    assert all(dlq_topic(n) in specs for n in names)


def test_bad_names_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="EUR/USD"):
        candles("EUR/USD", "1m")
    with pytest.raises(ValueError, match="2m"):
        candles("BTC-USD", "2m")
    with pytest.raises(ValueError, match="final2"):
        signals("final2")
    with pytest.raises(ValueError, match="min_insync_replicas"):
        catalogue(["BTC-USD"], replication_factor=1, min_insync_replicas=2)


def _check_described(bus: Bus, names: list[str], partitions: int, rf: int) -> None:
    for d in bus.admin().describe_topics(names, 30.0):
        assert d["partitions"] == partitions, d["name"]
        assert d["replication_factor"] == rf, d["name"]
        assert d["configs"]["retention.ms"] == str(RETENTION_MS)
        assert d["configs"]["compression.type"] == "lz4"
        assert d["configs"]["cleanup.policy"] == "delete"


def test_creating_the_catalogue_is_idempotent_and_configs_are_what_the_broker_reports(bus: Bus, unique: str) -> None:
    symbol = f"T{unique}"
    specs = catalogue([symbol])
    first = dict(create_all(bus.admin(), specs))
    assert all(first[s.name] for s in specs if symbol in s.name)
    again = create_all(bus.admin(), specs)
    assert [created for _, created in again] == [False] * len(specs)
    mine = [s.name for s in specs if symbol in s.name]
    _check_described(bus, mine, partitions=3, rf=1)


@pytest.mark.kafka
def test_topics_cli_creates_and_describes(kafka_bootstrap: str, unique: str) -> None:
    symbol = f"C{unique}"
    cmd = [sys.executable, "-m", "kstrade", "topics"]
    made = subprocess.run(
        [*cmd, "create", "--bootstrap", kafka_bootstrap, "--symbols", symbol], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert "created" in made.stdout
    shown = subprocess.run(
        [*cmd, "describe", "--bootstrap", kafka_bootstrap, candles(symbol, "1h")], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "partitions=3" in shown.stdout and "compression.type=lz4" in shown.stdout
    missing = subprocess.run(
        [*cmd, "describe", "--bootstrap", kafka_bootstrap, f"nope-{unique}"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and f"nope-{unique}" in missing.stderr
