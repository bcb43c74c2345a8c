"""SASL/SCRAM-SHA-512 over TLS and per-service ACLs on a real broker (`kstrade.broker.secure`).

One KRaft node with a SASL_SSL listener, a throwaway CA, SCRAM users created at format time and
the StandardAuthorizer (no ACL, no access). The services connect through the project's own
client path (`BusSettings` -> `Bus.from_settings`), the password only in a SecretStr.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType
from confluent_kafka.admin._resource import ResourceType as KafkaResource
from pydantic import SecretStr

from kstrade.broker.local import free_port_block
from kstrade.broker.secure import MECHANISM, SecureCluster, secure_cluster
from kstrade.bus import Bus, BusError
from kstrade.bus.topics import ORDERS_PENDING, candles, features_aggregated
from kstrade.config import BusSettings

pytestmark = [pytest.mark.cluster, pytest.mark.kafka]

SYMBOL = "BTC-USD"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    users = {"admin": secrets.token_hex(12), "features": secrets.token_hex(12), "execution": secrets.token_hex(12)}
    local = secure_cluster(tmp_path_factory.mktemp("secure"), free_port_block(2), users)
    local.start(timeout=180)
    try:
        yield local
    finally:
        local.stop()


def _bus(cluster: SecureCluster, user: str, *, bootstrap: str | None = None, password: str | None = None) -> Bus:
    settings = BusSettings(
        transport="kafka",
        bootstrap=bootstrap or cluster.secure_bootstrap,
        properties={
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": MECHANISM,
            "ssl.ca.location": str(cluster.ca_file),
        },
        sasl_username=user,
        sasl_password=SecretStr(password if password is not None else cluster.users[user]),
    )
    return Bus.from_settings(settings)


def _grant(cluster: SecureCluster, user: str, topic: str, *operations: AclOperation) -> None:
    config: dict[str, str | int | float | bool] = {**cluster.client_properties("admin")}
    admin = AdminClient(config)
    bindings = [
        AclBinding(
            KafkaResource.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{user}", "*", op, AclPermissionType.ALLOW
        )
        for op in operations
    ]
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result(timeout=30)


def _send(bus: Bus, topic: str) -> None:
    producer = bus.producer({"message.timeout.ms": "10000"})
    producer.send(topic, b"x", key=b"k")
    producer.flush(20.0)


def test_a_service_writes_its_own_topic_and_cannot_write_one_it_does_not_own(secure: SecureCluster) -> None:
    admin = _bus(secure, "admin")
    own, other, source = features_aggregated(SYMBOL), ORDERS_PENDING, candles(SYMBOL, "1m")
    admin.admin().create_topics([(t, 1, 1, {}) for t in (own, other, source)], 30.0)
    _grant(secure, "features", own, AclOperation.WRITE, AclOperation.DESCRIBE)
    _grant(secure, "features", source, AclOperation.READ, AclOperation.DESCRIBE)
    features = _bus(secure, "features")
    deadline = time.monotonic() + 30  # ACLs reach the authorizer through the metadata log
    while True:
        try:
            _send(features, own)
            break
        except BusError:
            assert time.monotonic() < deadline, "the features principal never got to write its own topic"
            time.sleep(0.5)
    with pytest.raises(BusError) as denied:
        _send(features, other)  # trades.orders.pending belongs to execution
    assert "authoriz" in str(denied.value).lower(), denied.value
    with pytest.raises(BusError):
        _send(_bus(secure, "execution"), own)  # and execution has no grant on features' topic


def test_the_listener_needs_tls_and_the_right_scram_password(secure: SecureCluster) -> None:
    ok = _bus(secure, "features").admin().list_topics(10.0)
    assert isinstance(ok, list)
    with pytest.raises(BusError):  # TLS + SASL against the PLAINTEXT listener: no handshake
        _bus(secure, "features", bootstrap=secure.bootstrap).admin().list_topics(5.0)
    with pytest.raises(BusError):  # the right listener, the wrong password
        _bus(secure, "features", password="not-the-password").admin().list_topics(5.0)
    with pytest.raises(BusError):  # a plaintext client against the SASL_SSL listener
        Bus.kafka(secure.secure_bootstrap).admin().list_topics(5.0)
