"""SASL/SCRAM-SHA-512 over TLS and the per-service ACLs on a real three-broker cluster.

One module-scoped `SecureCluster` (three KRaft nodes, a SASL_SSL client listener each, a throwaway
CA, one SCRAM user per service plus `admin`, the StandardAuthorizer: no ACL, no access). As the
administrator, the fixture creates the catalogue with the production profile
(deploy/production.toml: replication 3, min ISR 2) over SASL_SSL, applies the ACLs derived from
the stages with `python -m kstrade acl apply`, and writes one record to every topic. The services
connect through the project's own client path (`BusSettings` -> `Bus.from_settings`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclBindingFilter, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType
from confluent_kafka.admin._resource import ResourceType as KafkaResource
from pydantic import SecretStr

from kstrade.broker.local import free_port_block
from kstrade.broker.secure import MECHANISM, SecureCluster, make_ca_and_server_cert, secure_cluster
from kstrade.bus import Bus, BusError, acl
from kstrade.bus.acl import Acl, Operation
from kstrade.bus.topics import INGEST_RESUME_GROUPS, candles, features_aggregated, predictions_lstm
from kstrade.config import BusSettings, Settings, load
from kstrade.ingest.synthetic import generate
from kstrade.schemas import Candle, Codec
from kstrade.services import STAGES

pytestmark = [pytest.mark.cluster, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "deploy" / "production.toml"
SYMBOLS = ["BTC-USD"]
SERVICES = ["ingest", *STAGES]


@dataclass
class Secure:
    cluster: SecureCluster
    admin: Settings  # the production profile, as the administrator over SASL_SSL
    acls: dict[str, list[Acl]]
    applied: subprocess.CompletedProcess[str]  # `python -m kstrade acl apply`

    @property
    def tls(self) -> dict[str, str]:
        return {"security.protocol": "SASL_SSL", "sasl.mechanisms": MECHANISM, "ssl.ca.location": str(self.ca)}

    @property
    def ca(self) -> Path:
        return self.cluster.ca_file

    def password(self, service: str) -> str:
        return self.cluster.users[acl.username(service)]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    users = {"admin": secrets.token_hex(12), **{acl.username(s): secrets.token_hex(12) for s in SERVICES}}
    local = secure_cluster(tmp_path_factory.mktemp("secure"), free_port_block(5), users, nodes=3)
    started = time.monotonic()
    local.start(timeout=240)
    try:
        print(f"secure 3-node cluster up in {time.monotonic() - started:.1f}s")
        tls = {"security.protocol": "SASL_SSL", "sasl.mechanisms": MECHANISM, "ssl.ca.location": str(local.ca_file)}
        admin = load(
            PRODUCTION,
            symbols=SYMBOLS,
            bus={
                "bootstrap": local.secure_bootstrap,
                "properties": tls,
                "sasl_username": "admin",
                "sasl_password": users["admin"],
            },
        )
        bus = Bus.from_settings(admin.bus)
        env = {
            **os.environ,
            "KSTRADE_BUS__SASL_USERNAME": "admin",
            "KSTRADE_BUS__SASL_PASSWORD": users["admin"],
            "KSTRADE_BUS__PROPERTIES": json.dumps(tls),
            "KSTRADE_SYMBOLS": json.dumps(SYMBOLS),
        }
        # The catalogue, replication 3 and min ISR 2, over SASL_SSL: as an administrator does it.
        created = subprocess.run(
            [sys.executable, "-m", "kstrade", "topics", "create", "--config", str(PRODUCTION),
             "--bootstrap", local.secure_bootstrap],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert users["admin"] not in created.stdout + created.stderr
        applied = subprocess.run(
            [sys.executable, "-m", "kstrade", "acl", "apply", "--config", str(PRODUCTION),
             "--bootstrap", local.secure_bootstrap],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        producer = bus.producer()
        for topic in acl.catalogue_topics(SYMBOLS):  # something for every consumer to read
            producer.send(topic, b"not a message", key=b"k")
        producer.flush(30.0)
        yield Secure(local, admin, acl.pipeline_acls(SYMBOLS, lag_groups=admin.metrics.lag_groups), applied)
    finally:
        local.stop(timeout=15)  # all three at once: no controlled shutdown to wait for


def _bus(secure: Secure, service: str, *, bootstrap: str | None = None, password: str | None = None) -> Bus:
    settings = BusSettings(
        transport="kafka",
        bootstrap=bootstrap or secure.cluster.secure_bootstrap,
        properties=secure.tls,
        sasl_username=acl.username(service),
        sasl_password=SecretStr(password if password is not None else secure.password(service)),
    )
    return Bus.from_settings(settings)


def _admin_client(secure: Secure) -> AdminClient:
    return AdminClient({**secure.admin.bus.client_properties()})


def _send(bus: Bus, topics: list[str]) -> None:
    producer = bus.producer({"message.timeout.ms": "15000"})
    for topic in topics:
        producer.send(topic, b"x", key=b"k")
    producer.flush(30.0)


def _eventually(action: str, attempt: Callable[[], object], timeout: float = 60.0) -> float:
    """Retry `attempt()` until it stops raising BusError (ACL changes reach every broker through
    the metadata log, not at once). Returns the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            attempt()
            return time.monotonic() - started
        except BusError as exc:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{action}: still refused after {timeout:.0f}s: {exc}") from exc
            time.sleep(0.5)


def _refused(action: str, attempt: Callable[[], object], timeout: float = 60.0) -> BusError:
    """Retry `attempt()` until the broker refuses it with an authorization error."""
    started = time.monotonic()
    while True:
        try:
            attempt()
        except BusError as exc:
            if "authoriz" in str(exc).lower():
                return exc
            last: object = exc
        else:
            last = "allowed"
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{action}: not refused within {timeout:.0f}s ({last})")
        time.sleep(0.5)


def _group(service: str) -> str:
    return INGEST_RESUME_GROUPS + "test" if service == "ingest" else f"kstrade.{service}"


def _inputs(service: str) -> list[str] | str:
    if service == "ingest":
        return [candles(s, i) for s in SYMBOLS for i in ("1m", "5m", "15m", "1h")]
    return acl.declared_stages()[service].inputs_for(SYMBOLS)


def _consume_and_commit(bus: Bus, group: str, inputs: list[str] | str, timeout: float = 60.0) -> set[str]:
    """Join `group` on `inputs`, read until a record of every input topic arrived, commit."""
    expected = set(acl.topics_read(inputs, SYMBOLS))
    consumer = bus.consumer(group, {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    try:
        if isinstance(inputs, str):
            consumer.subscribe_pattern(inputs)
        else:
            consumer.subscribe(inputs)
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while seen != expected and time.monotonic() < deadline:
            seen |= {r.topic for r in consumer.poll(max_records=500, timeout=0.2)}
        consumer.commit()
        return seen
    finally:
        consumer.close()


def test_the_production_profile_and_the_derived_acls_are_in_place_over_sasl_ssl(secure: Secure) -> None:
    names = acl.catalogue_topics(SYMBOLS)
    described = Bus.from_settings(secure.admin.bus).admin().describe_topics(names, 30.0)
    assert sorted(d["name"] for d in described) == sorted(names)
    for d in described:
        assert d["replication_factor"] == 3 and d["configs"].get("min.insync.replicas") == "2", d
    applied = secure.applied
    expected = [a for acls in secure.acls.values() for a in acls]
    assert applied.returncode == 0, applied.stderr
    principals = len(SERVICES) + 2  # the services, the operator and the dashboard (control.execution)
    assert f"{len(expected)} ACL binding(s) in place for {principals} principal(s)" in applied.stdout
    assert secure.cluster.users["admin"] not in applied.stdout + applied.stderr
    everything = AclBindingFilter(
        KafkaResource.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    client = _admin_client(secure)  # held until the future resolves
    on_broker = client.describe_acls(everything, request_timeout=30).result(timeout=30)
    got = sorted(
        f"{b.principal} {b.permission_type.name} {b.operation.name} {b.restype.name} "
        f"{b.resource_pattern_type.name} {b.name}"
        for b in on_broker
    )
    assert got == sorted(str(a) for a in expected)  # exactly the derived ACLs, nothing else


def test_every_service_reads_its_inputs_in_its_group_and_writes_its_outputs_and_dead_letters(secure: Secure) -> None:
    for service in SERVICES:
        started = time.monotonic()
        bus = _bus(secure, service)
        writes = sorted(a.name for a in secure.acls[service] if a.operation is Operation.WRITE)
        _eventually(f"{service} writing {len(writes)} topics", partial(_send, bus, writes))
        inputs = _inputs(service)
        seen = _consume_and_commit(bus, _group(service), inputs)
        assert seen == set(acl.topics_read(inputs, SYMBOLS)), service
        print(f"{service}: wrote {len(writes)} topics, read {len(seen)} in {_group(service)}, "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip


def _someone_elses(service: str, acls: dict[str, list[Acl]]) -> tuple[str, str]:
    """A topic another service writes and this one may not, and another stage's group."""
    own = {a.name for a in acls[service] if a.operation is Operation.WRITE}
    others = [s for s in SERVICES if s != service]
    topic = next(
        a.name
        for other in others
        for a in sorted(acls[other])
        if a.operation is Operation.WRITE and a.name not in own and not a.name.startswith("dlq.")
    )
    group = f"kstrade.{next(s for s in others if s != 'ingest')}"
    return topic, group


def test_no_service_writes_a_topic_or_joins_a_group_it_does_not_own(secure: Secure) -> None:
    for service in SERVICES:
        bus = _bus(secure, service)
        topic, group = _someone_elses(service, secure.acls)
        written = _refused(f"{service} writing {topic}", partial(_send, bus, [topic]), timeout=20)
        assert "authoriz" in str(written).lower()
        inputs = _inputs(service)
        own_input = inputs if isinstance(inputs, str) else inputs[:1]
        joined = _refused(
            f"{service} joining {group}", partial(_consume_and_commit, bus, group, own_input, timeout=10), timeout=20
        )
        print(f"{service}: refused {topic} ({written.code}) and {group} ({joined.code})")
    # and a service cannot read a topic it does not consume
    features = _bus(secure, "features")
    _refused("features reading trades.pnl", lambda: _consume_and_commit(features, "kstrade.features", ["trades.pnl"]))


def test_the_grants_are_what_allows_it_removed_acls_refuse_the_same_writes(secure: Secure) -> None:
    admin = secure.admin.bus.client_properties()
    mine = secure.acls["features"]
    bus = _bus(secure, "features")
    own = [features_aggregated(s) for s in SYMBOLS]
    _eventually("features writing its own topic", lambda: _send(bus, own))
    assert acl.revoke(mine, admin) == len(mine)
    try:
        _refused("features writing its own topic without ACLs", lambda: _send(bus, own))
        _refused(
            "features joining its own group without ACLs", lambda: _consume_and_commit(bus, "kstrade.features", own)
        )
    finally:
        acl.apply(mine, admin)
    took = _eventually("features writing its own topic again", lambda: _send(bus, own))
    print(f"features allowed again {took:.1f}s after its ACLs were re-applied")


def test_the_listener_needs_tls_and_the_right_scram_password(secure: Secure, kafka_bootstrap: str) -> None:
    ok = _bus(secure, "features").admin().list_topics(10.0)
    assert features_aggregated("BTC-USD") in ok  # its ACLs let it see its own topics
    # (`probe`: one metadata request that ends at a refusal instead of retrying for 5 s)
    with pytest.raises(BusError, match="SSL handshake failed"):  # TLS + SASL against a PLAINTEXT listener
        _bus(secure, "features", bootstrap=kafka_bootstrap).probe(5.0)
    # The brokers' own listener wants the brokers' certificate: a user's TLS + SASL is refused there.
    with pytest.raises(BusError):
        _bus(secure, "features", bootstrap=secure.cluster.bootstrap).probe(5.0)
    with pytest.raises(BusError, match="invalid credentials"):  # the right listener, the wrong password
        _bus(secure, "features", password="not-the-password").probe(5.0)
    with pytest.raises(BusError):  # a plaintext client against the SASL_SSL listener
        Bus.kafka(secure.cluster.secure_bootstrap).probe(3.0)


@pytest.mark.parametrize(
    ("case", "cause", "check"),
    [
        ("wrong password", "refused the credentials of user 'kstrade-features'", "bus.sasl_password"),
        ("TLS and SASL against the PLAINTEXT listener", "answers in plain text, not TLS", '"security.protocol"'),
        ("SASL without TLS against the PLAINTEXT listener", "does not accept SASL SCRAM-SHA-512 on this listener",
         "that the listener's protocol is SASL_PLAINTEXT"),
        ("a CA that did not sign the brokers' certificates", "presents a certificate this client does not trust",
         '"ssl.ca.location"'),
    ],
)  # fmt: skip
def test_each_security_mismatch_is_one_line_naming_its_cause_within_seconds(
    secure: Secure, case: str, cause: str, check: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kafka_bootstrap: str,
) -> None:  # fmt: skip
    """What a service or command prints when the cluster refuses it: the cause and what to check,
    in one line, non-zero, within seconds (was: 60 s of silence, then OperationTimedOut). The
    refusal ends the wait: librdkafka says it once, after which it only retries."""
    from kstrade.cli import main

    properties, bootstrap, password = dict(secure.tls), secure.cluster.secure_bootstrap, secure.password("features")
    if case == "wrong password":
        password = "not-the-password"
    elif case.startswith("TLS and SASL"):  # the session's plaintext broker (the secure one has none)
        bootstrap = kafka_bootstrap
    elif case.startswith("SASL without TLS"):
        bootstrap = kafka_bootstrap
        properties["security.protocol"] = "SASL_PLAINTEXT"
    else:
        other = tmp_path / "other-ca"
        make_ca_and_server_cert(other)
        properties["ssl.ca.location"] = str(other / "ca.crt")
    monkeypatch.setenv("KSTRADE_BUS__PROPERTIES", json.dumps(properties))
    monkeypatch.setenv("KSTRADE_BUS__SASL_USERNAME", acl.username("features"))
    monkeypatch.setenv("KSTRADE_BUS__SASL_PASSWORD", password)
    started = time.monotonic()
    assert main(["topics", "list", "--bootstrap", bootstrap]) == 2
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    print(f"{case}: {elapsed:.1f} s: {err.strip()}")
    assert err.count("\n") == 1 and err.startswith(f"error: the Kafka cluster at {bootstrap} {cause}: check ")
    assert check in err and "librdkafka:" in err
    assert password not in err
    assert elapsed < 15.0


def test_acl_apply_with_a_services_credentials_is_one_line_naming_the_principal_and_the_fix(
    secure: Secure, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: `failed: ` and the broker's dump of the whole request."""
    from kstrade.cli import main

    monkeypatch.setenv("KSTRADE_BUS__PROPERTIES", json.dumps(secure.tls))
    monkeypatch.setenv("KSTRADE_BUS__SASL_USERNAME", acl.username("signals"))
    monkeypatch.setenv("KSTRADE_BUS__SASL_PASSWORD", secure.password("signals"))
    monkeypatch.setenv("KSTRADE_SYMBOLS", json.dumps(SYMBOLS))
    started = time.monotonic()
    code = main(["acl", "apply", "--service", "signals", "--bootstrap", secure.cluster.secure_bootstrap])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    print(f"{elapsed:.1f} s: {err.strip()}")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: the cluster refused to change ACLs for User:kstrade-signals (CLUSTER_AUTHORIZATION")
    assert "super.users" in err and secure.password("signals") not in err
    assert elapsed < 15.0


def _service(secure: Secure, name: str, tmp_path: Path) -> subprocess.Popen[str]:
    """`python -m kstrade service NAME` with the production profile, as its own principal: the
    password from a file for some services, from the environment for others."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "KSTRADE_SYMBOLS": json.dumps(SYMBOLS),
        "KSTRADE_BUS__PROPERTIES": json.dumps(secure.tls),
        "KSTRADE_BUS__SASL_USERNAME": acl.username(name),
        "KSTRADE_EXECUTION__JOURNAL_PATH": str(tmp_path / "orders.sqlite3"),
        "KSTRADE_EXECUTION__PAPER_STATE_PATH": str(tmp_path / "paper.json"),
        "KSTRADE_METRICS__PROMETHEUS_PORT": "0",
        "KSTRADE_METRICS__DATABASE_URL": "",
        "KSTRADE_METRICS__EMIT_INTERVAL_S": "2",
        # The profile's checkpoints live under /var/lib/kstrade: a run of its own, never an earlier one's.
        "KSTRADE_FEATURES__STATE_DIR": str(tmp_path / "features-state"),
        "KSTRADE_INFERENCE__STATE_DIR": str(tmp_path / "inference-state"),
    }
    if name in ("features", "signals", "metrics"):
        secret = tmp_path / f"{name}.password"
        secret.write_text(secure.password(name) + "\n")
        secret.chmod(0o600)
        env["KSTRADE_BUS__SASL_PASSWORD_FILE"] = str(secret)
    else:
        env["KSTRADE_BUS__SASL_PASSWORD"] = secure.password(name)
    log = open(tmp_path / f"{name}.log", "w")  # stdout and stderr, read back at the end
    return subprocess.Popen(
        [sys.executable, "-m", "kstrade", "service", name, "--config", str(PRODUCTION),
         "--bootstrap", secure.cluster.secure_bootstrap],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )  # fmt: skip


def _count(bus: Bus, topic: str, group: str, least: int, timeout: float) -> int:
    consumer = bus.consumer(group)
    try:
        consumer.subscribe([topic])
        got = 0
        deadline = time.monotonic() + timeout
        while got < least and time.monotonic() < deadline:
            got += len(consumer.poll(max_records=1000, timeout=0.2))
        return got
    finally:
        consumer.close()


def _send_candles(bus: Bus, minutes: int) -> None:
    codec = Codec(Candle)
    producer = bus.producer()
    frame = generate("BTC-USD", datetime(2026, 1, 5, tzinfo=UTC), 2, seed=9).head(minutes)  # SYNTHETIC
    for row in frame.iter_rows(named=True):
        c = Candle(
            timestamp=row["timestamp"], symbol="BTC-USD", interval="1m", open=row["open"], high=row["high"],
            low=row["low"], close=row["close"], volume=row["volume"], source="synthetic",
        )  # fmt: skip
        close_ns = int((row["timestamp"] + timedelta(minutes=1)).timestamp() * 1e9)
        producer.send(candles("BTC-USD", "1m"), codec.encode(c), key=b"BTC-USD", headers=codec.headers(close_ns, "t"))
    producer.flush(60.0)


def _members(admin: AdminClient, groups: list[str]) -> dict[str, int]:
    """Members per group; 0 while a coordinator is still moving (NOT_COORDINATOR and the like)."""
    out = {}
    for group, future in admin.describe_consumer_groups(groups, request_timeout=30).items():
        try:
            out[group.removeprefix("kstrade.")] = len(future.result(timeout=30).members)
        except KafkaException:
            out[group.removeprefix("kstrade.")] = 0
    return out


def test_the_six_services_run_end_to_end_as_their_own_principals(secure: Secure, tmp_path: Path) -> None:
    """Every stage as its own process over SASL_SSL with only its ACLs: candles in, feature
    vectors, predictions and signals out; the poison the fixture left on the candle topic goes
    to its DLQ; no password in anything a service prints."""
    started = time.monotonic()
    procs = {name: _service(secure, name, tmp_path) for name in STAGES}
    try:
        admin_bus = Bus.from_settings(secure.admin.bus)
        admin = _admin_client(secure)
        deadline = time.monotonic() + 120
        members: dict[str, int] = {}
        while time.monotonic() < deadline:
            for name, proc in procs.items():
                assert proc.poll() is None, (name, (tmp_path / f"{name}.log").read_text()[-3000:])
            members = _members(admin, [f"kstrade.{n}" for n in STAGES])
            if all(members.values()):
                break
            time.sleep(1.0)
        assert all(members.values()), members  # each joined its own group under its own ACLs
        print(f"six services in their groups after {time.monotonic() - started:.1f}s")
        _send_candles(admin_bus, 2300)  # ~34 h warm the features; then a vector a minute
        vectors = _count(admin_bus, features_aggregated("BTC-USD"), "check-features", 100, 180)
        lstm = _count(admin_bus, predictions_lstm("BTC-USD"), "check-lstm", 1, 120)
        raw = _count(admin_bus, "signals.raw", "check-signals", 1, 120)
        dead = _count(admin_bus, "dlq." + candles("BTC-USD", "1m"), "check-dlq", 3, 60)
        print(f"vectors {vectors}, lstm predictions {lstm}, raw signals {raw}, dead letters {dead}, "
              f"{time.monotonic() - started:.1f}s")  # fmt: skip
        assert vectors >= 100 and lstm >= 1 and raw >= 1
        assert dead >= 3  # the fixture's junk candle, dead-lettered by features, signals and execution
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(timeout=60) for name, proc in procs.items()}
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in STAGES}
    assert codes == dict.fromkeys(STAGES, 0), {n: logs[n][-2000:] for n, c in codes.items() if c}
    for name, text in logs.items():
        assert "stopped cleanly" in text, (name, text[-2000:])
        for service in SERVICES:
            assert secure.password(service) not in text, name
        assert secure.cluster.users["admin"] not in text
