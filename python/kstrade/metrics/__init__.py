"""The metrics stage: latency from origin headers, trading performance, model drift, consumer
lag, alerts, Prometheus, storage and Telegram. `MetricsCollector` is the stage."""

from kstrade.metrics.collector import INPUTS, MetricsCollector, build_collector, load_reference
from kstrade.metrics.drift import DriftReference, FeatureReference

__all__ = ["INPUTS", "DriftReference", "FeatureReference", "MetricsCollector", "build_collector", "load_reference"]
