"""Produce and consume throughput of 100-byte messages: kstrade's native bus vs
confluent-kafka-python, on the same local broker, in the same run, with the same settings.

    python -m pytest bench/bench_bus.py            # KSTRADE_BENCH_MESSAGES=200000 for more
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from figures import record
from kstrade.bus import Bus

confluent_kafka = pytest.importorskip("confluent_kafka")

MESSAGES = int(os.environ.get("KSTRADE_BENCH_MESSAGES", "100000"))
PAYLOAD = bytes(range(100))
#: Identical client settings on both sides: the pipeline's hot-path producer profile.
PRODUCER = {"acks": "all", "enable.idempotence": "true", "linger.ms": "0", "compression.type": "lz4"}
CONSUMER = {"enable.auto.commit": "false", "auto.offset.reset": "earliest", "fetch.wait.max.ms": "5"}
KEYS = [f"sym-{i}".encode() for i in range(16)]


def _fresh_topic(bootstrap: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    Bus.kafka(bootstrap).admin().create_topics([(name, 3, 1, {})], 30.0)
    return name


def _kstrade(bootstrap: str, topic: str) -> tuple[float, float]:
    bus = Bus.kafka(bootstrap)
    producer = bus.producer(PRODUCER)
    start = time.perf_counter()
    send = producer.send
    for i in range(MESSAGES):
        send(topic, PAYLOAD, KEYS[i & 15])
    producer.flush()
    produced = time.perf_counter() - start
    consumer = bus.consumer(f"bench-{uuid.uuid4().hex[:8]}", CONSUMER)
    consumer.subscribe([topic])
    got = 0
    size = 0
    start = 0.0
    while got < MESSAGES:
        batch = consumer.poll(1000, 1.0)
        if batch and not start:  # the clock starts at the first record: joining the group is not consuming
            start = time.perf_counter()
        for r in batch:
            size += len(r.value or b"")
        got += len(batch)
    consumed = time.perf_counter() - start
    consumer.close()
    assert size == MESSAGES * len(PAYLOAD)
    return produced, consumed


def _confluent(bootstrap: str, topic: str) -> tuple[float, float]:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", **PRODUCER})
    start = time.perf_counter()
    produce = producer.produce
    for i in range(MESSAGES):
        while True:
            try:
                produce(topic, PAYLOAD, KEYS[i & 15])
                break
            except BufferError:
                producer.poll(0.001)
        if i & 1023 == 0:
            producer.poll(0)  # serve delivery reports, as a real producer loop must
    assert producer.flush(60) == 0
    produced = time.perf_counter() - start
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}", **CONSUMER}
    )
    consumer.subscribe([topic])
    got = 0
    size = 0
    start = 0.0
    while got < MESSAGES:
        batch = consumer.consume(1000, 1.0)
        if batch and not start:
            start = time.perf_counter()
        for m in batch:
            if m.error() is None:
                size += len(m.value() or b"")
                got += 1
    consumed = time.perf_counter() - start
    consumer.close()
    assert size == MESSAGES * len(PAYLOAD)
    return produced, consumed


CONTENDERS: dict[str, Callable[[str, str], tuple[float, float]]] = {
    "kstrade": _kstrade,
    "confluent-kafka": _confluent,
}


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_produce_consume_100_byte_messages(benchmark, kafka_bootstrap: str, contender: str) -> None:  # type: ignore[no-untyped-def]
    run = CONTENDERS[contender]
    times: list[tuple[float, float]] = []

    def once(topic: str) -> None:
        times.append(run(kafka_bootstrap, topic))

    benchmark.pedantic(once, setup=lambda: ((_fresh_topic(kafka_bootstrap),), {}), rounds=3, iterations=1)
    for produced, consumed in times:
        record("produce 100 B (msg/s)", contender, MESSAGES / produced, "msg/s")
        record("consume 100 B (msg/s)", contender, MESSAGES / consumed, "msg/s")


# ------------------------------------------------------------------- candles: consume + decode

CANDLES = MESSAGES // 2
CANDLE_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "candle.avsc"


def _candle_topic(bootstrap: str) -> str:
    """A fresh topic holding CANDLES Avro candles (the native encoding: plain Avro, which
    fastavro reads as is), produced once and read by both contenders."""
    from kstrade import _native

    topic = _fresh_topic(bootstrap)
    producer = Bus.kafka(bootstrap).producer(PRODUCER)
    base = {"symbol": "BTC-USD", "interval": "1m", "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
            "volume": 3.0, "source": "bench-synthetic"}  # fmt: skip
    for i in range(CANDLES):
        value = _native.encode_candle({**base, "timestamp": 1_700_000_000_000_000 + i * 60_000_000})
        producer.send(topic, value, KEYS[i & 15])
    producer.flush()
    return topic


def _kstrade_decode(bootstrap: str, topic: str) -> float:
    from kstrade.schemas import Codec

    codec = Codec("candle")
    consumer = Bus.kafka(bootstrap).consumer(f"bench-{uuid.uuid4().hex[:8]}", CONSUMER)
    consumer.subscribe([topic])
    got = 0
    start = 0.0
    while got < CANDLES:
        batch = consumer.poll(1000, 1.0)
        if batch and not start:
            start = time.perf_counter()
        if batch:
            got += codec.decode_batch([r.value for r in batch])["count"]  # columns (numpy)
    seconds = time.perf_counter() - start
    consumer.close()
    return seconds


def _confluent_decode(bootstrap: str, topic: str) -> float:
    import io

    import fastavro

    schema = fastavro.parse_schema(json.loads(CANDLE_SCHEMA.read_text()))
    reader = fastavro.schemaless_reader
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}", **CONSUMER}
    )
    consumer.subscribe([topic])
    got = 0
    start = 0.0
    while got < CANDLES:
        batch = consumer.consume(1000, 1.0)
        if batch and not start:
            start = time.perf_counter()
        for m in batch:
            if m.error() is None:
                reader(io.BytesIO(m.value()), schema, None)
                got += 1
    seconds = time.perf_counter() - start
    consumer.close()
    return seconds


def test_consume_and_decode_candles(kafka_bootstrap: str) -> None:
    """Same topic, same candles, alternating rounds: the native bus + batch decode into columns
    vs confluent-kafka-python + fastavro per message (what a user would otherwise write)."""
    topic = _candle_topic(kafka_bootstrap)
    for _ in range(3):
        for name, run in (("kstrade", _kstrade_decode), ("confluent-kafka + fastavro", _confluent_decode)):
            record("consume + decode Avro candles (msg/s)", name, CANDLES / run(kafka_bootstrap, topic), "msg/s")
