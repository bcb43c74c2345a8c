"""Fixtures for the bus contract (the same tests run on the memory and the kafka transport), and
the three-broker cluster of the fault tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kstrade.broker import Cluster, cluster
from kstrade.broker.local import free_port_block
from kstrade.bus import Bus, Consumer, Record

#: Kafka settings for tests: fast group take-over and fast discovery of new topics.
FAST_GROUP = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "topic.metadata.refresh.interval.ms": 1000,
}


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> Bus:
    if request.param == "memory":
        return Bus.memory()
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    return Bus.kafka(bootstrap)


def make_topic(bus: Bus, name: str, partitions: int = 3) -> str:
    bus.admin().create_topics([(name, partitions, 1, {})], 30.0)
    return name


def drain(consumer: Consumer, count: int, timeout: float = 30.0) -> list[Record]:
    """Poll until `count` records arrived (or fail after `timeout` seconds)."""
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        out += consumer.poll(max_records=count - len(out), timeout=0.2)
    assert len(out) == count, f"expected {count} records, got {len(out)} within {timeout}s"
    return out


def quiet(consumer: Consumer, seconds: float = 1.5) -> list[Record]:
    """Everything that arrives within `seconds` (expected: nothing)."""
    out: list[Record] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out += consumer.poll(max_records=100, timeout=0.1)
    return out


def until(predicate: Callable[[], bool], consumers: list[Consumer], timeout: float = 30.0) -> None:
    """Keep every consumer polling (rebalances progress only while members poll) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in consumers:
            c.poll(max_records=1, timeout=0.05)
        if predicate():
            return
    raise AssertionError(f"condition not reached within {timeout}s")


def three_brokers(directory: Path) -> Iterator[Cluster]:
    """A three-node KRaft cluster on 127.0.0.1 for one test module (a fault test that takes nodes
    down brings all three back before it ends)."""
    local = cluster(directory, nodes=3, base_port=free_port_block(3))
    local.start(timeout=180)
    try:
        yield local
    finally:
        local.stop()
