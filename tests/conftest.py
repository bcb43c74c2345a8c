"""Fixtures for the bus contract (the same tests run on the memory and the kafka transport), and
the three-broker cluster of the fault tests."""

from __future__ import annotations

import os
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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/test runs two workers, `--dist loadgroup`) a module runs in
    one worker, so its module-scoped brokers start once; the fault modules that share the
    session's three-node cluster (`three`) run together in one worker, so it starts once too.
    First among the hooks: xdist reads the `xdist_group` marks in its own hook of this name.
    (pytest 9.2's node ids ignore how xdist 3.8 tags a test with its group, which split every
    module: pyproject.toml keeps pytest below 9.2 until xdist follows.)"""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        group = "three" if "three" in fixtures else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


def three_brokers(directory: Path) -> Iterator[Cluster]:
    """A three-node KRaft cluster on 127.0.0.1 (a fault test that takes nodes down brings all
    three back before it ends)."""
    local = cluster(directory, nodes=3, base_port=free_port_block(3))
    local.start(timeout=180)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def three_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from three_brokers(tmp_path_factory.mktemp("three"))


@pytest.fixture
def three(three_session: Cluster) -> Cluster:
    """The three-node cluster of the fault modules (test_reliability_cluster, _pipeline,
    _outage), started once for the session: each start costs half a minute of CI. Every test
    gets it with all three nodes up and ready (topics and groups are per test: `unique`)."""
    if not all(alive for _, alive in three_session.status()):
        three_session.start(timeout=180)
    three_session.wait_ready(60)
    return three_session


def proc_status(pid: int) -> tuple[int, float]:
    """(resident memory in KiB, CPU seconds used so far) of a live process, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
