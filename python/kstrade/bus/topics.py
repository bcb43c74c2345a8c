"""The topic catalogue: every topic name of the pipeline comes from a function here.

Families, as in the design document:

    market.candles.{symbol}.{1m,5m,15m,1h}     closed candles
    features.technical.{symbol}                indicator values
    features.multi_tf.{symbol}                 multi-timeframe alignment
    features.aggregated.{symbol}               the model input vector
    predictions.lstm.{symbol}                  per-symbol LSTM
    predictions.transformer                    multi-symbol Transformer
    signals.{raw,calibrated,filtered,final}
    trades.orders.{pending,confirmed}, trades.executions, trades.pnl
    metrics.{performance.realtime,model.drift,latency,alerts}
    metrics.ingest_health                      ingest feed health, keyed by source
    control.execution                          operator commands (halt, resume, flatten), keyed by account
    dlq.{source topic}                         dead letters of each topic a stage consumes

Every topic gets the design's settings: 3 partitions, 7-day retention, LZ4, delete cleanup, and
the replication factor the caller gives (1 on a laptop, 3 in production with min ISR 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kstrade.bus.core import Admin
from kstrade.symbols import DEFAULT_SYMBOLS
from kstrade.symbols import check_symbol as _symbol

INTERVALS = ("1m", "5m", "15m", "1h")
SIGNAL_STAGES = ("raw", "calibrated", "filtered", "final")
DEFAULT_PARTITIONS = 3
RETENTION_MS = 7 * 24 * 3600 * 1000


def candles(symbol: str, interval: str) -> str:
    if interval not in INTERVALS:
        raise ValueError(f"unknown candle interval {interval!r}: use one of {', '.join(INTERVALS)}")
    return f"market.candles.{_symbol(symbol)}.{interval}"


def features_technical(symbol: str) -> str:
    return f"features.technical.{_symbol(symbol)}"


def features_multi_tf(symbol: str) -> str:
    return f"features.multi_tf.{_symbol(symbol)}"


def features_aggregated(symbol: str) -> str:
    return f"features.aggregated.{_symbol(symbol)}"


def predictions_lstm(symbol: str) -> str:
    return f"predictions.lstm.{_symbol(symbol)}"


PREDICTIONS_TRANSFORMER = "predictions.transformer"


def signals(stage: str) -> str:
    if stage not in SIGNAL_STAGES:
        raise ValueError(f"unknown signal stage {stage!r}: use one of {', '.join(SIGNAL_STAGES)}")
    return f"signals.{stage}"


ORDERS_PENDING = "trades.orders.pending"
ORDERS_CONFIRMED = "trades.orders.confirmed"
EXECUTIONS = "trades.executions"
PNL = "trades.pnl"
METRICS_PERFORMANCE = "metrics.performance.realtime"
METRICS_DRIFT = "metrics.model.drift"
METRICS_LATENCY = "metrics.latency"
METRICS_ALERTS = "metrics.alerts"
#: Health snapshots of the ingest processes (keyed by source), read by the metrics collector.
METRICS_INGEST_HEALTH = "metrics.ingest_health"
#: Operator commands to the execution stage (halt, resume, flatten), keyed by account. Written by
#: the Telegram bot (metrics collector) and `python -m kstrade control`; read by execution.
CONTROL_EXECUTION = "control.execution"

#: Consumer groups made afresh each time, under a prefix (what the ACLs grant): ingest reads the
#: candle topics back to resume, and the operator's command line waits for acknowledgements.
INGEST_RESUME_GROUPS = "kstrade.ingest.resume."
OPERATOR_GROUPS = "kstrade.operator."


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of a source topic."""
    if topic.startswith("dlq."):
        return topic  # a dead letter that fails again stays where it is
    return f"dlq.{topic}"


def topic_configs() -> dict[str, str]:
    """The design's per-topic settings."""
    return {
        "retention.ms": str(RETENTION_MS),
        "compression.type": "lz4",
        "cleanup.policy": "delete",
    }


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=topic_configs)

    def as_tuple(self) -> tuple[str, int, int, dict[str, str]]:
        return (self.name, self.partitions, self.replication_factor, dict(self.configs))


def pipeline_topics(symbols: tuple[str, ...] | list[str] = DEFAULT_SYMBOLS) -> list[str]:
    """Every data topic of the pipeline for these symbols, dead-letter topics excluded."""
    names: list[str] = []
    for s in symbols:
        names += [candles(s, i) for i in INTERVALS]
        names += [features_technical(s), features_multi_tf(s), features_aggregated(s), predictions_lstm(s)]
    names.append(PREDICTIONS_TRANSFORMER)
    names += [signals(stage) for stage in SIGNAL_STAGES]
    names += [ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS, PNL]
    names += [METRICS_PERFORMANCE, METRICS_DRIFT, METRICS_LATENCY, METRICS_ALERTS, METRICS_INGEST_HEALTH]
    names.append(CONTROL_EXECUTION)
    return names


def catalogue(
    symbols: tuple[str, ...] | list[str] = DEFAULT_SYMBOLS,
    *,
    replication_factor: int = 1,
    min_insync_replicas: int | None = None,
    partitions: int = DEFAULT_PARTITIONS,
) -> list[TopicSpec]:
    """Specs of every topic, each data topic followed by its dead-letter topic."""
    if replication_factor < 1:
        raise ValueError("replication_factor must be >= 1")
    configs = topic_configs()
    if min_insync_replicas is not None:
        if not 1 <= min_insync_replicas <= replication_factor:
            raise ValueError("min_insync_replicas must be between 1 and the replication factor")
        configs["min.insync.replicas"] = str(min_insync_replicas)
    specs = []
    for name in pipeline_topics(symbols):
        # One partition for operator commands: a halt and the resume after it stay in order
        # whichever account key they carry (there are only a handful, and they must never race).
        count = 1 if name == CONTROL_EXECUTION else partitions
        for topic in (name, dlq_topic(name)):
            specs.append(TopicSpec(topic, count, replication_factor, dict(configs)))
    return specs


def create_all(admin: Admin, specs: list[TopicSpec], timeout: float = 60.0) -> list[tuple[str, bool]]:
    """Create the topics; existing ones are left as they are. Returns (name, created)."""
    return admin.create_topics([s.as_tuple() for s in specs], timeout)
