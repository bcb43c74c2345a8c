"""`Bus`: one transport (memory or kafka) and the producers, consumers and admin clients on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import kstrade._native as _native
from kstrade._native import Admin, BusError, Producer, Record
from kstrade.redaction import scrub

if TYPE_CHECKING:
    from kstrade.config import BusSettings

__all__ = ["Admin", "Bus", "BusError", "Consumer", "Producer", "RebalanceListener", "Record"]

Transport = Literal["memory", "kafka"]
ConfigValue = str | int | float | bool
Partitions = list[tuple[str, int]]
RebalanceListener = Callable[[Partitions], None]


def _props(*layers: Mapping[str, ConfigValue] | None) -> dict[str, str]:
    """librdkafka wants every property as a string; booleans as true/false."""
    out: dict[str, str] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


@contextmanager
def _secrets_scrubbed(props: Mapping[str, str]) -> Iterator[None]:
    """librdkafka's config errors quote property values (ssl.key.pem included): mask them
    before the error reaches a log or a terminal. The same exception goes on, code and all."""
    try:
        yield
    except BusError as exc:
        exc.args = (scrub(str(exc), props),)
        raise


class Bus:
    """A transport and its settings. Stages ask it for clients and never know which it is."""

    def __init__(
        self,
        transport: Transport,
        *,
        properties: Mapping[str, ConfigValue] | None = None,
        broker: _native.MemoryBroker | None = None,
    ) -> None:
        if transport not in ("memory", "kafka"):
            raise ValueError(f"unknown bus transport {transport!r}: use 'memory' or 'kafka'")
        if transport == "kafka" and not (properties or {}).get("bootstrap.servers"):
            raise ValueError("the kafka bus needs bootstrap.servers (e.g. 127.0.0.1:9092)")
        self.transport: Transport = transport
        self.properties = _props(properties)
        self._broker = broker if broker is not None else (_native.MemoryBroker() if transport == "memory" else None)

    @classmethod
    def memory(cls) -> Bus:
        """A fresh in-process cluster: topics, groups and offsets live as long as this object."""
        return cls("memory")

    @classmethod
    def kafka(cls, bootstrap: str, properties: Mapping[str, ConfigValue] | None = None) -> Bus:
        """A real Kafka cluster. `properties` are librdkafka properties applied to every
        client, e.g. `{"security.protocol": "SASL_SSL"}`."""
        return cls("kafka", properties={**(properties or {}), "bootstrap.servers": bootstrap})

    @classmethod
    def from_settings(cls, settings: BusSettings) -> Bus:
        """The bus a config describes (`[bus]` section). It also chooses how this process's
        codecs write: on the kafka transport through `bus.schema_registry_url` when set (the
        Confluent wire format), else bare Avro; an in-process run never needs a registry."""
        from kstrade.schemas.codec import register_schemas, use_registry

        if settings.transport == "memory":
            use_registry(None)
            return cls.memory()
        bus = cls("kafka", properties=settings.client_properties())
        registry = settings.schema_registry()
        if registry is not None:
            # Every schema registered now (waiting while the registry is away): a registry
            # outage later must not turn this process's records into dead letters.
            register_schemas(registry)
        use_registry(registry)
        return bus

    @property
    def bootstrap(self) -> str | None:
        return self.properties.get("bootstrap.servers")

    def producer(self, config: Mapping[str, ConfigValue] | None = None) -> Producer:
        props = _props(self.properties, config)
        if self._broker is not None:
            return Producer.memory(self._broker, props)
        with _secrets_scrubbed(props):
            return Producer.kafka(props)

    def consumer(
        self,
        group_id: str,
        config: Mapping[str, ConfigValue] | None = None,
        *,
        on_assign: RebalanceListener | None = None,
        on_revoke: RebalanceListener | None = None,
    ) -> Consumer:
        props = _props(self.properties, {"auto.offset.reset": "earliest"}, config, {"group.id": group_id})
        with _secrets_scrubbed(props):
            native = (
                _native.Consumer.memory(self._broker, props)
                if self._broker is not None
                else _native.Consumer.kafka(props)
            )
        return Consumer(native, on_assign=on_assign, on_revoke=on_revoke)

    def admin(self) -> Admin:
        if self._broker is not None:
            return Admin.memory(self._broker)
        props = _props(self.properties)
        with _secrets_scrubbed(props):
            return Admin.kafka(props)

    def probe(self, timeout: float = 10.0) -> list[str]:
        """The cluster's topic names, asked once within `timeout` s. A failed request raises
        `BusError` whose message ends with what the client heard meanwhile (`the client said:
        ...`: a refused TLS handshake or credentials), which an admin client never reports."""
        if self._broker is not None:
            return self.admin().list_topics(timeout)
        props = _props(self.properties)
        with _secrets_scrubbed(props):
            return _native.probe_kafka(props, timeout)

    def __repr__(self) -> str:
        where = f" {self.bootstrap}" if self.bootstrap else ""
        return f"Bus({self.transport}{where})"


class Consumer:
    """A group member. Rebalance listeners run in the polling thread after `poll` returns,
    with the GIL held: librdkafka never calls into Python from its own threads."""

    def __init__(
        self,
        native: _native.Consumer,
        *,
        on_assign: RebalanceListener | None = None,
        on_revoke: RebalanceListener | None = None,
    ) -> None:
        self._native = native
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    @property
    def transport(self) -> str:
        return self._native.transport

    def subscribe(self, topics: list[str]) -> None:
        self._native.subscribe(topics)

    def subscribe_pattern(self, pattern: str) -> None:
        """Follow every topic matching a regular expression, e.g. `^market\\.candles\\..*`."""
        self._native.subscribe_pattern(pattern)

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        records = self._native.poll(max_records, timeout)
        self._dispatch_rebalance()
        return records

    def _dispatch_rebalance(self) -> None:
        """Takes the rebalance events, to the listeners if there are any. Taken either way: a
        memory consumer with events waiting answers every poll at once, so one nobody listened
        to would turn every later `poll(timeout)` into a busy loop."""
        events = self._native.rebalance_events()
        if self._on_assign is None and self._on_revoke is None:
            return
        for kind, partitions in events:
            if kind == "assigned" and self._on_assign is not None:
                self._on_assign(partitions)
            elif kind in ("revoked", "lost") and self._on_revoke is not None:
                self._on_revoke(partitions)

    def commit(self, offsets: list[tuple[str, int, int]] | None = None) -> None:
        """Commit next-offsets, or everything polled so far. Call after processing."""
        self._native.commit(offsets)

    def committed(self, partitions: Partitions, timeout: float = 10.0) -> list[tuple[str, int, int | None]]:
        return self._native.committed(partitions, timeout)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._native.seek(topic, partition, offset)

    def pause(self, partitions: Partitions) -> None:
        self._native.pause(partitions)

    def resume(self, partitions: Partitions) -> None:
        self._native.resume(partitions)

    def assignment(self) -> Partitions:
        return self._native.assignment()

    def position(self) -> list[tuple[str, int, int]]:
        return self._native.position()

    def lag(self, timeout: float = 10.0) -> dict[tuple[str, int], int]:
        return self._native.lag(timeout)

    def has_pending(self) -> bool:
        """Whether a `poll` now would return a record (or rebalance events), taking none (memory
        bus only): a replay asks it instead of polling every stage again to end an instant."""
        return self._native.has_pending()

    def set_read_until(self, until_ms: int | None) -> None:
        """Event-time fence (memory bus only): `poll` stops on each partition before the first
        record stamped later than `until_ms`. A replay reads its later stages instant by
        instant with it while earlier stages have already run ahead; None lifts it."""
        self._native.set_read_until(until_ms)

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
