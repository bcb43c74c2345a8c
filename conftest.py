"""Shared pytest set-up for tests/ and bench/: a real Kafka broker started by the test session.

The broker is a local KRaft node from `kstrade.broker` (jars from Maven Central, no Docker) on
free ports in a temporary directory, stopped when the session ends. Set KSTRADE_TEST_BOOTSTRAP
to run against a cluster you already have instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from kstrade.broker import Cluster, cluster
from kstrade.broker.local import free_port_block

# Property tests: no per-example deadline (CI machines are shared and noisy); in CI the examples
# are derandomized so a red run can be replayed exactly.
hypothesis_settings.register_profile("kstrade", deadline=None)
hypothesis_settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "kstrade")

# The execution service serves its account gauges on 9465 by default: tests (and the services
# they start, which inherit this environment) do not, or two of them (two test workers, or two
# test runs on one machine) would collide on the port. A test of the endpoint asks for one (port 0: a free one).
os.environ.setdefault("KSTRADE_EXECUTION__PROMETHEUS_PORT", "0")
os.environ.setdefault("KSTRADE_METRICS__PROMETHEUS_PORT", "0")  # the collector's 9464, likewise


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KSTRADE_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    directory: Path = tmp_path_factory.mktemp("kafka")
    local: Cluster = cluster(directory, nodes=1, base_port=free_port_block(1))
    local.start(timeout=120)
    try:
        yield local.bootstrap
    finally:
        local.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix, so tests never share topics or groups on the broker."""
    return uuid.uuid4().hex[:10]
