"""The local Kafka cluster tool: three nodes give replication factor 3 with min ISR 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kstrade.broker.local import free_port_block, metadata_broker_count
from kstrade.bus import Bus
from kstrade.bus.topics import catalogue, create_all

from .conftest import drain


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kstrade", "broker", *args], capture_output=True, text=True)


def test_status_of_a_cluster_that_was_never_started(tmp_path: Path) -> None:
    done = _cli("status", "--dir", str(tmp_path / "none"))
    assert done.returncode == 3
    assert "stopped" in done.stdout


@pytest.mark.kafka
def test_three_node_cluster_replicates_with_min_isr_two(tmp_path: Path) -> None:
    port = free_port_block(3)
    directory = str(tmp_path / "c3")
    started = _cli("start", "--nodes", "3", "--port", str(port), "--dir", directory)
    try:
        assert started.returncode == 0, started.stderr
        bootstrap = ",".join(f"127.0.0.1:{port + 2 * i}" for i in range(3))
        assert all(metadata_broker_count("127.0.0.1", port + 2 * i) == 3 for i in range(3))
        status = _cli("status", "--nodes", "3", "--port", str(port), "--dir", directory)
        assert status.returncode == 0 and status.stdout.count("running") == 3
        bus = Bus.kafka(bootstrap)
        specs = [s for s in catalogue(["BTC-USD"], replication_factor=3, min_insync_replicas=2) if "1h" in s.name]
        create_all(bus.admin(), specs)
        for d in bus.admin().describe_topics([s.name for s in specs], 30.0):
            assert d["replication_factor"] == 3
            assert d["configs"].get("min.insync.replicas") == "2", d
        topic = specs[0].name
        producer = bus.producer()
        producer.send(topic, b"replicated", key=b"BTC-USD")
        producer.flush()
        consumer = bus.consumer("c3")
        consumer.subscribe([topic])
        assert drain(consumer, 1)[0].value == b"replicated"
        consumer.close()
    finally:
        stopped = _cli("stop", "--nodes", "3", "--port", str(port), "--dir", directory)
    assert stopped.returncode == 0
    assert _cli("status", "--nodes", "3", "--port", str(port), "--dir", directory).returncode == 3


def test_cluster_ids_never_look_like_an_option() -> None:
    from kstrade.broker.local import _random_cluster_id

    ids = [_random_cluster_id() for _ in range(2000)]  # about 31 would start with '-' otherwise
    assert not any(i.startswith("-") for i in ids) and all(len(i) == 22 for i in ids)
