"""Issue 24: the schema registry as a configuration choice.

`bus.schema_registry_url` set (kafka transport): every producer registers its schema under the
full record name and writes the Confluent wire format; every consumer reads both wire formats.
Checked against a real registry (Apicurio Registry from Maven Central, started by the session:
tests/conftest.py), with confluent-kafka's own Avro deserializer reading what the services
wrote, and the registry refusing a change that breaks the project's FULL compatibility rule.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import ORDERS_PENDING, signals
from kstrade.config import BusSettings, ConfigError, load, redacted
from kstrade.schemas import MODELS, Candle, Codec, Message, Prediction
from kstrade.schemas.codec import HOT_TYPES, full_name, schema_json, use_registry
from kstrade.schemas.registry import CONTENT_TYPE, RegistryError, SchemaRegistry

from .pipeline_services import (
    SERVICES,
    TopicReader,
    data_topics,
    missing,
    prepare,
    wait_until,
)
from .test_codec import signal, vectors


class MemoryRegistry(SchemaRegistry):
    """The client's two calls, answered in memory (the unit tests need no server)."""

    def __init__(self) -> None:
        super().__init__("http://registry.invalid")
        self.subjects: dict[str, list[int]] = {}
        self.texts: dict[int, str] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        text = json.dumps(schema, sort_keys=True)
        sid = next((i for i, t in self.texts.items() if t == text), len(self.texts) + 1)
        self.texts[sid] = text
        self.subjects.setdefault(subject, []).append(sid)
        return sid

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self.texts:
            raise LookupError(f"no schema with id {schema_id}")
        result: dict[str, Any] = json.loads(self.texts[schema_id])
        return result


@pytest.fixture
def process_registry() -> Any:
    """Restores the process's codec default after a test that sets it."""
    before = use_registry(None)
    yield
    use_registry(before)


class _Record:
    def __init__(self, value: bytes, headers: list[tuple[str, bytes]], topic: str = "t", offset: int = 0) -> None:
        self.value, self.headers, self.topic, self.offset = value, headers, topic, offset


# --- settings -------------------------------------------------------------------------------------


def test_the_registry_is_off_by_default_and_its_password_never_comes_from_the_file(tmp_path: Path) -> None:
    assert BusSettings().schema_registry() is None
    toml = tmp_path / "kstrade.toml"
    toml.write_text('[bus]\nschema_registry_url = "http://r:8080/apis/ccompat/v7"\nschema_registry_password = "pw"\n')
    with pytest.raises(ConfigError, match=r"bus\.schema_registry_password: secrets are not read from config files"):
        load(toml)
    for url in ("r:8080", "ftp://r/x", "http://alice:pw@r:8080/apis/ccompat/v7"):
        with pytest.raises(ConfigError, match="schema_registry_url"):
            load(bus={"schema_registry_url": url})


def test_registry_credentials_come_from_the_environment_or_a_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "https://registry.example:8081/apis/ccompat/v7"
    toml = tmp_path / "kstrade.toml"
    toml.write_text(f'[bus]\nschema_registry_url = "{url}"\nschema_registry_username = "alice"\n')
    with pytest.raises(ConfigError, match="KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD"):
        load(toml).bus.schema_registry()
    monkeypatch.setenv("KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD", "s3cret-from-env")
    settings = load(toml)
    client = settings.bus.schema_registry()
    assert client is not None and client.url == url and client._auth == ("alice", "s3cret-from-env")
    shown = json.dumps(redacted(settings)) + repr(settings) + repr(client)
    assert "s3cret-from-env" not in shown and "alice" in shown
    monkeypatch.delenv("KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD")
    secret = tmp_path / "registry-password"
    secret.write_text("s3cret-from-file\n")
    from_file = load(toml, bus={"schema_registry_password_file": str(secret)}).bus.schema_registry()
    assert from_file is not None and from_file._auth == ("alice", "s3cret-from-file")


def test_the_kafka_bus_from_settings_chooses_the_wire_of_every_codec_made_after(
    process_registry: None, schema_registry_url: str
) -> None:
    url = schema_registry_url
    Bus.from_settings(BusSettings(transport="kafka", schema_registry_url=url))  # registers every schema first
    codec = Codec(Candle)
    assert codec.wire == "confluent" and codec.encoding == "avro-confluent" and codec.registry is not None
    assert codec.registry.url == url
    with urllib.request.urlopen(url + "/subjects", timeout=10) as reply:  # before any codec wrote
        subjects = set(json.loads(reply.read()))
    assert {full_name(schema_json(name)) for name in MODELS} <= subjects
    assert Codec(Candle, "json").wire == "bare"  # JSON has no wire format
    assert Codec(Candle, wire="bare").wire == "bare"  # an explicit choice stands
    # An in-process run (memory bus) never writes through a registry.
    Bus.from_settings(BusSettings(transport="memory", schema_registry_url=url))
    assert Codec(Candle).wire == "bare"
    Bus.from_settings(BusSettings(transport="kafka"))
    assert Codec(Candle).wire == "bare" and Codec(Candle).registry is None


# --- both wire formats, whatever a codec writes --------------------------------------------------


def example(name: str) -> Message:
    """A valid message of a hot type (from the shared test vectors), or a signal."""
    if name == "signal":
        return signal()
    codec = Codec(name, engine="fastavro")
    return codec.decode(codec.encode_value(vectors(name)["valid"][0]["record"]))


EXAMPLES = [*HOT_TYPES, "signal"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_codec_reads_both_wire_formats(name: str) -> None:
    registry = MemoryRegistry()
    message = example(name)
    bare, framed = Codec(name), Codec(name, registry=registry)
    assert (bare.wire, framed.wire) == ("bare", "confluent")
    records = [
        _Record(bare.encode(message), bare.headers(1, "test")),
        _Record(framed.encode(message), framed.headers(1, "test")),
    ]
    assert records[1].value[5:] == records[0].value and records[1].value[0] == 0
    # A producer registers once, under the full record name (RecordNameStrategy).
    assert registry.subjects == {bare.schema_name: [1]}
    for reader in (Codec(name), Codec(name, registry=registry), Codec(name, wire="bare", registry=registry)):
        for record in records:
            assert reader.decode_record(record) == message, (reader, record.headers)


@pytest.mark.parametrize("name", HOT_TYPES)
def test_batches_of_the_hot_types_stay_native_with_the_confluent_wire(name: str) -> None:
    registry = MemoryRegistry()
    message = example(name)
    bare, framed = Codec(name), Codec(name, registry=registry)
    assert framed.encode_batch([message, message]) == [framed.encode(message)] * 2
    if framed.native:
        assert framed.encode_values([bare.decode_value(bare.encode(message))]) == [framed.encode(message)]
    good = framed.encode(message)
    want = bare.decode_batch([bare.encode(message)] * 2)
    reader = Codec(name, registry=registry)
    got = reader.decode_batch([good, good])
    if not bare.native:
        assert got == want
        return
    assert isinstance(got, dict) and got["count"] == 2 and got["rows"].tolist() == [0, 1]
    assert got["timestamp"].tolist() == want["timestamp"].tolist()
    # A value that is not framed with the current id fails alone in a skipping batch (its
    # record takes the one-by-one path); a raising batch decodes value by value.
    skipped = reader.decode_batch([good, b"\x00\x00\x00\x00\x63" + good[5:], good], errors="skip")
    assert skipped["rows"].tolist() == [0, 2]
    assert [(i, e.code) for i, e in skipped["failed"]] == [(1, "UNKNOWN_SCHEMA_ID")]
    with pytest.raises(Exception) as info:
        reader.decode_batch([good, b"\x00\x00\x00\x00\x63" + good[5:]])
    assert getattr(info.value, "code", None) == "UNKNOWN_SCHEMA_ID"


# --- a real registry ------------------------------------------------------------------------------


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": CONTENT_TYPE})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def test_an_incompatible_schema_change_is_refused_by_the_registry(schema_registry_url: str, unique: str) -> None:
    """The project's rule (schemas/README.md, Evolution): FULL compatible with the previous
    version. The session's registry has it as its global rule (deploy/docker-compose.yml too);
    here it is also set on the subjects, as an operator would on a registry shared with others."""
    client = SchemaRegistry(schema_registry_url)
    current = schema_json("candle")
    subject = "kstrade.Candle"
    first = client.register(subject, current)
    assert client.register(subject, current) == first  # registering again is idempotent
    _http("PUT", f"{schema_registry_url}/config/{subject}", {"compatibility": "FULL"})
    # Removing a field that has no default: new data has no `close` for a reader of the old schema.
    broken = {**current, "fields": [f for f in current["fields"] if f["name"] != "close"]}
    with pytest.raises(RegistryError) as info:
        client.register(subject, broken)
    assert info.value.status == 409, info.value
    # The same subject did not move: the producer's schema is still the latest.
    latest = _http("GET", f"{schema_registry_url}/subjects/{subject}/versions/latest")
    assert latest["id"] == first
    # A change the rule allows (an optional field with a default) is accepted, on a subject of its own.
    mine = f"kstrade.Candle.{unique}"
    _http("PUT", f"{schema_registry_url}/config/{mine}", {"compatibility": "FULL"})
    client.register(mine, current)
    added = {**current, "fields": [*current["fields"], {"name": "note", "type": ["null", "string"], "default": None}]}
    assert client.register(mine, added) != first
    with pytest.raises(RegistryError) as again:
        client.register(mine, broken)
    assert again.value.status == 409


def test_the_codec_against_the_real_registry_keeps_the_native_batch_path(schema_registry_url: str) -> None:
    message = example("prediction")
    producer = Codec(Prediction, registry=SchemaRegistry(schema_registry_url))
    values = producer.encode_batch([message, message])
    consumer = Codec(Prediction, registry=SchemaRegistry(schema_registry_url))
    cols = consumer.decode_batch(values)
    # The registry hands the schema back equal to ours: the ids resolve to the current schema,
    # so the batch decodes natively to columns instead of one model at a time.
    assert isinstance(cols, dict) and cols["count"] == 2, cols
    assert consumer.decode(values[0]) == message


@pytest.mark.kafka
def test_a_pipeline_with_the_registry_on_is_read_by_confluent_kafka_and_its_own_deserializer(
    kafka_bootstrap: str, schema_registry_url: str, unique: str, tmp_path: Path
) -> None:
    """The six stages as services and `ingest replay`, configured only by
    KSTRADE_BUS__SCHEMA_REGISTRY_URL. A confluent-kafka consumer with confluent-kafka's
    AvroDeserializer and the registry decodes every record they wrote, on every topic, to what
    kstrade's codec reads; every record is in the Confluent wire format with the id of a schema
    registered under the documented subject (the full record name)."""
    from confluent_kafka import Consumer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    aliases = {f"B{unique}": "BTC-USD", f"E{unique}": "ETH-USD"}
    setup = prepare(aliases, tmp_path, 60, source="replay")
    symbols, stream, want = setup.symbols, setup.stream, setup.want
    tail = stream.write_tail(tmp_path / "tail.parquet")
    bus_env = {"transport": "kafka", "bootstrap": kafka_bootstrap, "schema_registry_url": schema_registry_url}
    services, bus = setup.services(bus_env)
    reader: TopicReader | None = None
    try:
        for name in SERVICES:
            services.start(name)
        services.wait_ready(timeout=120)
        services.start_ingest(tail, "max")
        # kstrade's own reader (no registry in this process: it reads the framed records by
        # their headers) says when everything an uninterrupted run writes has arrived.
        reader = TopicReader(bus, data_topics(symbols), symbols, unique)
        assert wait_until(lambda: not missing(reader, want), 180, reader.poll), f"missing {missing(reader, want)}"
        if want[signals("final")]:
            orders = TopicReader(bus, [ORDERS_PENDING], symbols, f"{unique}-orders")
            assert wait_until(lambda: bool(orders.counts(ORDERS_PENDING)), 60, orders.poll)
            orders.close()
    finally:
        if reader is not None:
            reader.close()
        services.close()
    assert not services.errors(), "\n".join(services.errors())

    # Every topic the run wrote to: its own (symbol-named) ones, and the shared ones, where only
    # what this run wrote is framed (the other tests on the session's broker write bare Avro).
    ours = "|".join(symbols)
    pattern = (
        rf"^(market\.candles\.({ours})\..*|features\..*({ours}).*|predictions\..*|signals\..*|trades\..*|metrics\..*)$"
    )
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"confluent-{unique}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([pattern])
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": schema_registry_url}))
    per_topic: dict[str, int] = {}
    ids: dict[str, set[int]] = {}
    bare_on_our_topics: list[str] = []
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 8:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            idle_since = time.monotonic()
            headers = dict(msg.headers() or [])
            topic = msg.topic()
            if headers.get("encoding") != b"avro-confluent":
                if re.search(ours, topic):
                    bare_on_our_topics.append(topic)
                continue
            schema = headers["schema"].decode()
            value = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE))
            model = _model_named(schema)
            theirs = model.model_validate(value)
            record = _Record(msg.value(), [(k, v) for k, v in msg.headers() or []], topic, msg.offset())
            assert theirs == Codec(model).decode_record(record), topic
            per_topic[topic] = per_topic.get(topic, 0) + 1
            ids.setdefault(schema, set()).add(int.from_bytes(msg.value()[1:5], "big"))
    finally:
        consumer.close()
    print(f"\ndecoded by confluent-kafka's AvroDeserializer: {per_topic}")
    assert not bare_on_our_topics, f"bare Avro on this run's topics: {sorted(set(bare_on_our_topics))}"
    # Every topic an uninterrupted run writes holds framed records, all decoded.
    for topic, entries in want.items():
        if entries:
            assert per_topic.get(topic, 0) >= len(entries), (topic, per_topic.get(topic), len(entries))
    for s in symbols:
        for interval in ("5m", "15m"):
            assert per_topic.get(f"market.candles.{s}.{interval}"), f"no {interval} candles of {s}"
    if want[signals("final")]:
        assert per_topic.get(ORDERS_PENDING)
    # The subjects are the full record names, and hold exactly the ids the records carry.
    subjects = set(_http("GET", f"{schema_registry_url}/subjects"))
    for schema, seen in ids.items():
        assert schema in subjects, (schema, sorted(subjects))
        versions = _http("GET", f"{schema_registry_url}/subjects/{schema}/versions")
        registered = {_http("GET", f"{schema_registry_url}/subjects/{schema}/versions/{v}")["id"] for v in versions}
        assert seen <= registered, (schema, seen, registered)
    assert {"kstrade.Candle", "kstrade.FeatureVector", "kstrade.Prediction", "kstrade.Signal"} <= set(ids)


def _model_named(schema: str) -> type[Message]:
    """The message type whose full Avro name is `schema` (the `schema` header)."""
    for name, model in MODELS.items():
        if Codec(name, wire="bare").schema_name == schema:
            return model
    raise AssertionError(f"no message type is {schema}")
