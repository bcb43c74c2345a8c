"""Local Apache Kafka clusters for development and tests (no Docker)."""

from kstrade.broker.local import KAFKA_VERSION, BrokerError, Cluster, cluster, fetch_jars, reset

__all__ = ["KAFKA_VERSION", "BrokerError", "Cluster", "cluster", "fetch_jars", "reset"]
