"""The Prometheus view of the collector: one registry holding every metric the Grafana dashboard
in deploy/grafana/ plots, served over HTTP for scraping."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from kstrade.metrics.drift import FeatureDrift
from kstrade.metrics.latency import LatencySummary
from kstrade.metrics.performance import PerformanceSnapshot, TierRecord
from kstrade.schemas.models import IngestHealth

_QUANTILES = (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms"), ("1", "max_ms"))

#: The ingest health counters exported as `kstrade_ingest_{name}_total`, per source.
INGEST_COUNTERS = {
    "messages": "Messages received from the exchange (any channel)",
    "reconnects": "Reconnections of the live feed",
    "gaps_detected": "Incidents (sequence gap, disconnect, stall, start-up window) that left minutes to backfill",
    "gaps_backfilled": "Incident windows filled over REST",
    "backfilled_candles": "1m candles filled over REST",
    "candles_produced": "Candle messages produced, all timeframes",
    "missing_minutes": "Quiet minutes: no candle, and no trade seen in them (the exchange's truth)",
    "lost_minutes": "Lost minutes: trades seen, no candle from REST (each alerted INGEST_MINUTE_LOST)",
    "incomplete_bars": "Higher-timeframe bars closed with minutes missing",
    "duplicates": "Duplicate 1m candles dropped",
    "rejected": "Late or conflicting candles and trades refused",
    "malformed_messages": "Feed messages that could not be parsed",
    "unknown_channels": "Feed messages on channels the client does not know",
    "rate_limited": "REST answers with HTTP 429",
    "cross_checked": "5m bars built from 1m that matched the exchange's candles channel",
    "cross_check_mismatches": "5m bars built from 1m that differed from the exchange's candles channel",
}


_M = TypeVar("_M", Counter, Gauge)


class Children(Generic[_M]):
    """The children of a labelled metric, looked up once per label tuple: `metric.labels(...)`
    validates and locks on every call, a dict lookup does not. Children are never removed from
    the metrics the collector exports, so a cached child stays the one a scrape reads."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: _M) -> None:
        self.metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *labels: str) -> _M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(*labels)
        return child


class IngestCounters(Collector):
    """The counters of the latest health report of each ingest source, exported as they are:
    they count since that process started, and Prometheus treats a drop (a restarted ingest)
    as a counter reset, as it should."""

    def __init__(self) -> None:
        self.reports: dict[str, IngestHealth] = {}

    def collect(self) -> Iterator[Metric]:
        reports = dict(self.reports)  # a scrape runs on the endpoint's thread
        for name, description in INGEST_COUNTERS.items():
            family = CounterMetricFamily(f"kstrade_ingest_{name}", description, labels=["source"])
            for source, report in sorted(reports.items()):
                family.add_metric([source], getattr(report, name))
            yield family


class MetricsExporter:
    """Gauges set from the collector's window summaries; counters bumped once per batch of
    messages (the collector counts in a dict and adds the counts in `on_time`), each through a
    cached child (`Children`), never a per-call `labels()` lookup."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.messages = Counter("kstrade_messages", "Messages seen on each topic", ["topic"], registry=r)
        self.messages_per_second = Gauge(
            "kstrade_messages_per_second", "Messages per second over the last window", ["topic"], registry=r
        )
        self.latency = Gauge(
            "kstrade_latency_ms",
            "Market event (origin_ns) to stage output, per stage and topic, last window",
            ["stage", "topic", "quantile"],
            registry=r,
        )
        self.stage_latency = Gauge(
            "kstrade_stage_latency_ms",
            "Time a stage adds: previous stage's output to this stage's output of the same event",
            ["stage", "quantile"],
            registry=r,
        )
        self.lag = Gauge("kstrade_consumer_lag", "Messages behind, per group, topic and partition",
                         ["group", "topic", "partition"], registry=r)  # fmt: skip
        self.group_lag = Gauge("kstrade_consumer_group_lag", "Messages behind, summed per group", ["group"], registry=r)
        self.trades = Gauge("kstrade_trades", "Closed trades in the performance window", ["window"], registry=r)
        self.win_rate = Gauge("kstrade_win_rate", "Share of winning trades in the window", ["window"], registry=r)
        self.profit_factor = Gauge(
            "kstrade_profit_factor", "Gross profit / gross loss in the window", ["window"], registry=r
        )
        self.sharpe = Gauge(
            "kstrade_sharpe", "Annualized Sharpe ratio of per-bar returns in the window", ["window"], registry=r
        )
        self.max_drawdown = Gauge(
            "kstrade_max_drawdown", "Largest peak-to-trough fall in the window", ["window"], registry=r
        )
        self.realized_pnl = Gauge("kstrade_realized_pnl", "Net realized P&L in the window", ["window"], registry=r)
        self.balance = Gauge("kstrade_balance", "Account balance after the latest closed trade", registry=r)
        self.tier_hit_rate = Gauge("kstrade_tier_hit_rate", "Realized hit rate per signal tier", ["tier"], registry=r)
        self.tier_confidence = Gauge(
            "kstrade_tier_confidence", "Mean predicted confidence per signal tier", ["tier"], registry=r
        )
        self.tier_trades = Gauge("kstrade_tier_trades", "Trades scored per signal tier", ["tier"], registry=r)
        self.feature_psi = Gauge(
            "kstrade_feature_psi", "PSI of a live feature against its training reference", ["symbol", "feature"],
            registry=r,
        )  # fmt: skip
        self.model_accuracy = Gauge(
            "kstrade_model_accuracy", "Rolling directional accuracy against realized moves",
            ["model_type", "symbol"], registry=r,
        )  # fmt: skip
        self.error_drift = Gauge(
            "kstrade_model_error_drift_statistic", "Page-Hinkley statistic of the error stream",
            ["model_type", "symbol"], registry=r,
        )  # fmt: skip
        self.alerts = Counter("kstrade_alerts", "Alerts raised or relayed", ["code", "severity"], registry=r)
        self.dead_letters = Counter("kstrade_dead_letters", "Records seen on dead-letter topics", registry=r)
        self.unreadable = Counter(
            "kstrade_unreadable_records", "Records the collector could not read (skipped)", ["topic"], registry=r
        )
        self.stored_rows = Counter("kstrade_stored_rows", "Rows written to the metrics database", ["table"], registry=r)
        self.telegram_dropped = Counter(
            "kstrade_telegram_dropped", "Telegram alerts dropped (queue full or refused)", registry=r
        )
        self.ingest_last_message_age = Gauge(
            "kstrade_ingest_last_message_age_seconds",
            "Seconds since the ingest feed last heard from the exchange, aged since its last health report",
            ["source"], registry=r,
        )  # fmt: skip
        self.ingest_report_age = Gauge(
            "kstrade_ingest_report_age_seconds", "Seconds since the ingest process last reported its health",
            ["source"], registry=r,
        )  # fmt: skip
        self.ingest = IngestCounters()
        r.register(self.ingest)
        # Cached children of the metrics set on every tick or every record.
        self.messages_of = Children(self.messages)
        self.messages_per_second_of = Children(self.messages_per_second)
        self.unreadable_of = Children(self.unreadable)
        self.alerts_of = Children(self.alerts)
        self.stored_rows_of = Children(self.stored_rows)
        self.model_accuracy_of = Children(self.model_accuracy)
        self.error_drift_of = Children(self.error_drift)
        self.ingest_last_message_age_of = Children(self.ingest_last_message_age)
        self.ingest_report_age_of = Children(self.ingest_report_age)
        self._latency_of = Children(self.latency)
        self._stage_latency_of = Children(self.stage_latency)
        self._lag_of = Children(self.lag)
        self._group_lag_of = Children(self.group_lag)
        self._feature_psi_of = Children(self.feature_psi)
        self._tier_of = {g: Children(g) for g in (self.tier_hit_rate, self.tier_confidence, self.tier_trades)}
        self._window_of = {
            g: Children(g)
            for g in (self.trades, self.win_rate, self.profit_factor, self.sharpe, self.max_drawdown, self.realized_pnl)
        }

    def set_latency(self, outputs: dict[tuple[str, str], LatencySummary], stages: dict[str, LatencySummary]) -> None:
        latency, stage_latency = self._latency_of, self._stage_latency_of
        for (stage, topic), s in outputs.items():
            for label, attr in _QUANTILES:
                latency(stage, topic, label).set(getattr(s, attr))
        for stage, s in stages.items():
            for label, attr in _QUANTILES:
                stage_latency(stage, label).set(getattr(s, attr))

    def set_performance(self, p: PerformanceSnapshot) -> None:
        window = str(p.window_seconds)
        of = self._window_of
        of[self.trades](window).set(p.trades)
        of[self.win_rate](window).set(p.win_rate)
        # Prometheus can carry +Inf, but a dashboard stat reads better capped at a large value.
        of[self.profit_factor](window).set(p.profit_factor if math.isfinite(p.profit_factor) else 1e9)
        of[self.sharpe](window).set(p.sharpe)
        of[self.max_drawdown](window).set(p.max_drawdown)
        of[self.realized_pnl](window).set(p.realized_pnl)
        if p.balance is not None:
            self.balance.set(p.balance)

    def set_tiers(self, tiers: dict[str, TierRecord]) -> None:
        of = self._tier_of
        for tier, t in tiers.items():
            of[self.tier_hit_rate](tier).set(t.hit_rate)
            of[self.tier_confidence](tier).set(t.mean_confidence)
            of[self.tier_trades](tier).set(t.trades)

    def set_drift(self, features: list[FeatureDrift]) -> None:
        for f in features:
            self._feature_psi_of(f.symbol, f.feature).set(f.psi)

    def set_lag(self, lag: dict[tuple[str, str, int], int]) -> dict[str, int]:
        per_group: dict[str, int] = {}
        lag_of = self._lag_of
        for (group, topic, partition), behind in lag.items():
            lag_of(group, topic, str(partition)).set(behind)
            per_group[group] = per_group.get(group, 0) + behind
        group_lag_of = self._group_lag_of
        for group, behind in per_group.items():
            group_lag_of(group).set(behind)
        return per_group

    def exposition(self) -> bytes:
        """The text format a scrape returns."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Starts the scrape endpoint in a daemon thread; port 0 picks a free one."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
