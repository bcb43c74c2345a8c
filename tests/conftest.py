"""Fixtures for the bus contract (the same tests run on the memory and the kafka transport), the
three-broker cluster of the fault tests, and a real schema registry (Apicurio)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kstrade.broker import Cluster, cluster
from kstrade.broker.local import cache_dir, free_port_block
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


#: Apicurio Registry, whose Confluent-compatible API is /apis/ccompat/v7: Maven Central serves
#: its Quarkus distribution (`apicurio-registry-app:VERSION:tar.gz:all`, ~110 MB), which runs
#: on Java 17 with in-memory storage (3.1 and later need Java 21). deploy/docker-compose.yml
#: runs the same version.
APICURIO_VERSION = "3.0.9"


def apicurio_runner(version: str = APICURIO_VERSION) -> Path:
    """The registry's runner jar, fetched through Maven and unpacked once (per version) into the
    kstrade cache, beside the broker jars; two test workers wait for each other's fetch."""
    home = cache_dir() / f"apicurio-registry-{version}"
    runner = home / f"apicurio-registry-app-{version}-runner.jar"
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / f".apicurio-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if runner.exists():
            return runner
        download = home.parent / f".apicurio-{version}-download"
        shutil.rmtree(download, ignore_errors=True)
        artifact = f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
        cmd = ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={download}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mvn could not fetch {artifact}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        unpacked = home.with_name(home.name + ".tmp")
        shutil.rmtree(unpacked, ignore_errors=True)
        with tarfile.open(next(download.glob("*.tar.gz"))) as archive:
            archive.extractall(unpacked, filter="data")
        shutil.rmtree(download)
        unpacked.rename(home)
    return runner


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Confluent-compatible schema registry for the session: Apicurio Registry on a free
    port of 127.0.0.1, in memory, with FULL compatibility as its global rule (the project's
    rule, schemas/README.md). KSTRADE_TEST_SCHEMA_REGISTRY names one you already run instead."""
    external = os.environ.get("KSTRADE_TEST_SCHEMA_REGISTRY")
    if external:
        yield external
        return
    runner = apicurio_runner()
    port = free_port_block(1)
    log_path = tmp_path_factory.mktemp("apicurio") / "registry.log"
    url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["java", "-Xmx512m", f"-Dquarkus.http.port={port}", "-Dquarkus.http.host=127.0.0.1",
             "-Dapicurio.rules.global.compatibility=FULL", "-jar", str(runner)],
            cwd=log_path.parent, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/subjects", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the registry did not start:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
