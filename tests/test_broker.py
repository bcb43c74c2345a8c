"""The local Kafka cluster tool: three nodes give replication factor 3 with min ISR 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kstrade.broker import BrokerError, cluster
from kstrade.broker.local import free_port_block, metadata_broker_count
from kstrade.bus import Bus, BusError
from kstrade.bus.topics import catalogue, create_all
from kstrade.cli import main

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


def _stopped_three_node_dir(root: Path, pid: int | None = None) -> Path:
    """A directory laid out as `broker start --nodes 3` then `broker stop` leave it (no Java)."""
    directory = root / "three"
    local = cluster(directory, nodes=3, base_port=29092)
    for node in local.nodes:
        data = directory / f"node-{node.node_id}" / "data"
        data.mkdir(parents=True)
        (data / "meta.properties").write_text(f"node.id={node.node_id}\n")
        node.pid = pid
    (directory / "cluster.id").write_text("AAAAAAAAAAAAAAAAAAAAAA")
    local.save()
    return directory


def _tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_status_and_stop_read_the_node_count_from_the_directory_and_delete_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _stopped_three_node_dir(tmp_path)
    before = _tree(directory)
    assert main(["broker", "status", "--dir", str(directory)]) == 3  # was: deleted the directory
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == ["node 1", "node 2", "node 3"]
    assert "127.0.0.1:29096 stopped" in out
    assert main(["broker", "status", "--nodes", "1", "--dir", str(directory)]) == 3  # a wrong --nodes too
    assert main(["broker", "stop", "--dir", str(directory)]) == 0
    assert "3 node(s)" in capsys.readouterr().out
    # start with another node count refuses and names reset, instead of formatting afresh.
    assert main(["broker", "start", "--nodes", "1", "--dir", str(directory)]) == 1
    assert "broker reset --dir" in capsys.readouterr().err
    assert _tree(directory) == before
    with pytest.raises(BrokerError, match="3-node"):
        cluster(directory, nodes=1)
    assert len(cluster(directory).nodes) == 3 and _tree(directory) == before


def test_reset_deletes_only_when_told_and_only_a_stopped_cluster_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _stopped_three_node_dir(tmp_path)
    assert main(["broker", "reset", "--dir", str(directory)]) == 2  # no --yes, no terminal to ask on
    assert "--yes" in capsys.readouterr().err and directory.exists()
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["broker", "reset", "--dir", str(directory)]) == 1 and directory.exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["broker", "reset", "--dir", str(directory)]) == 0 and not directory.exists()

    running = _stopped_three_node_dir(tmp_path, pid=os.getpid())  # a pid that is alive: "running"
    assert main(["broker", "reset", "--yes", "--dir", str(running)]) == 1
    assert "stop it first" in capsys.readouterr().err and running.exists()

    home_like = tmp_path / "home"
    (home_like / "notes").mkdir(parents=True)
    (home_like / "cluster.json").write_text('{"version": "4.1.0", "nodes": []}')
    assert main(["broker", "reset", "--yes", "--dir", str(home_like)]) == 1  # more than a cluster in it
    assert (home_like / "notes").exists()
    assert main(["broker", "reset", "--yes", "--dir", str(tmp_path / "nothing")]) == 1


@pytest.mark.kafka
def test_broker_start_secure_gives_each_service_a_user_and_its_printed_steps_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`broker start --secure` as a user follows it: the printed administrator steps create the
    topics and apply the ACLs over SASL_SSL; a service's user then reads only its own topics; a
    plaintext client on the SASL_SSL listener and a wrong password are refused; a restart from
    the directory (without --secure) is the same secure cluster; the passwords are 0600 files,
    never in cluster.json or the output."""
    port = free_port_block(2)
    directory = tmp_path / "secure"
    started = _cli("start", "--secure", "--port", str(port), "--dir", str(directory))
    try:
        assert started.returncode == 0, started.stderr
        secure = f"127.0.0.1:{port + 2}"
        exports = dict(
            line.removeprefix("  export ").split("=", 1)
            for line in started.stdout.splitlines()
            if line.startswith("  export KSTRADE_BUS__PROPERTIES=")
        )
        properties = exports["KSTRADE_BUS__PROPERTIES"].strip("'")
        admin_file = directory / "secrets" / "admin.password"
        assert f"KSTRADE_BUS__SASL_PASSWORD_FILE={admin_file}" in started.stdout and secure in started.stdout
        tls = directory / "tls"
        for path in [*(directory / "secrets").iterdir(), tls / "server.pem", tls / "ca.key", tls / "server.key"]:
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
        passwords = [p.read_text().strip() for p in (directory / "secrets").iterdir()]
        # admin, ingest, the six stages, the operator and the dashboard
        assert len(passwords) == 10 and all(len(p) >= 20 for p in passwords)
        assert not any(p in started.stdout + (directory / "cluster.json").read_text() for p in passwords)

        # The administrator's steps, in this process (a subprocess each costs seconds of imports).
        monkeypatch.setenv("KSTRADE_BUS__PROPERTIES", properties)
        monkeypatch.setenv("KSTRADE_BUS__SASL_USERNAME", "admin")
        monkeypatch.setenv("KSTRADE_BUS__SASL_PASSWORD_FILE", str(admin_file))
        monkeypatch.setenv("KSTRADE_SYMBOLS", '["BTC-USD"]')
        for step in (["topics", "create"], ["acl", "apply"]):
            assert main([*step, "--bootstrap", secure]) == 0, f"{step}: {capsys.readouterr()}"

        def service_bus(password: str | None = None) -> Bus:
            user = "kstrade-features"
            pw = password or (directory / "secrets" / f"{user}.password").read_text().strip()
            return Bus.kafka(secure, {**json.loads(properties), "sasl.username": user, "sasl.password": pw})

        deadline = time.monotonic() + 15  # the broker applies new ACLs once its metadata has them
        while "features.aggregated.BTC-USD" not in (seen := service_bus().probe(10.0)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "features.aggregated.BTC-USD" in seen and "signals.final" not in seen  # its ACLs, no more
        with pytest.raises(BusError, match="invalid credentials"):
            service_bus("not-the-password").probe(10.0)
        with pytest.raises(BusError):
            Bus.kafka(secure).probe(3.0)
        _brokers_own_listener_refuses_a_local_client(port, tls / "ca.crt")

        assert _cli("stop", "--dir", str(directory)).returncode == 0
        again = _cli("start", "--dir", str(directory))  # no --secure: the directory says it is secure
        assert again.returncode == 0, again.stderr
        assert "SASL_SSL" in again.stdout
        assert "features.aggregated.BTC-USD" in service_bus().probe(10.0)
        capsys.readouterr()
        assert main(["broker", "status", "--dir", str(directory)]) == 0
        assert f"SASL_SSL {secure} running" in capsys.readouterr().out
        _brokers_own_listener_refuses_a_local_client(port, tls / "ca.crt")  # still, after the restart
    finally:
        _cli("stop", "--dir", str(directory))


def _brokers_own_listener_refuses_a_local_client(port: int, ca: Path) -> None:
    """The brokers' listener (replication, readiness) serves no local process without the
    brokers' key: not a plaintext client (it was a super user there), not a raw Metadata
    request, not a TLS client that trusts the CA but has no certificate of its own."""
    with pytest.raises(BusError):
        Bus.kafka(f"127.0.0.1:{port}").probe(3.0)
    with pytest.raises(OSError):
        metadata_broker_count("127.0.0.1", port)
    with pytest.raises(BusError):
        Bus.kafka(f"127.0.0.1:{port}", {"security.protocol": "SSL", "ssl.ca.location": str(ca)}).probe(3.0)


def test_a_plaintext_cluster_is_never_made_secure_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = _stopped_three_node_dir(tmp_path)
    before = _tree(directory)
    assert main(["broker", "start", "--secure", "--dir", str(directory)]) == 1
    err = capsys.readouterr().err
    assert "holds a plaintext cluster" in err and "broker reset --dir" in err
    assert _tree(directory) == before
