"""Local Apache Kafka clusters for development and tests (no Docker)."""

from kstrade.broker import secure as secure  # a saved secure cluster loads as one (Cluster.load)
from kstrade.broker.local import KAFKA_VERSION, BrokerError, Cluster, cluster, fetch_jars, reset

__all__ = ["KAFKA_VERSION", "BrokerError", "Cluster", "cluster", "fetch_jars", "reset"]
