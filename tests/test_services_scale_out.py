"""Scale out: two processes of the signals stage and two of the LSTM inference stage in their
groups, over the broker, write exactly what one process of each writes.

Signals joins, per symbol and candle, the LSTM and Transformer predictions with the candle and
the features; the inputs come from nine topics. Two members can only decide a candle if one of
them holds every input of its symbol: the stage consumes with the `range` assignor (same
partition numbers of every topic to the same member) and every topic is keyed by symbol with the
same partition count. The symbols are chosen so that they land on different members.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from kstrade import _native
from kstrade.bus.topics import METRICS_ALERTS, ORDERS_PENDING, PREDICTIONS_TRANSFORMER, candles, signals

from .pipeline_services import (
    SERVICES,
    TRADE_TOPICS,
    TopicReader,
    data_topics,
    feed,
    judge,
    missing,
    prepare,
    undecided_finals,
    wait_until,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 3
#: Scaled stages and how many processes of each.
SCALED = {"signals": 2, "inference.lstm": 2}


def _split_symbols(unique: str) -> dict[str, str]:
    """Two test symbols whose partitions the range assignor gives to different members of two
    (partitions 0-1 to the first member, 2 to the second)."""
    for n in range(1000):
        btc, eth = f"B{unique}{n}", f"E{unique}{n}"
        spots = {_native.partition_for_key(s.encode(), PARTITIONS) for s in (btc, eth)}
        if len(spots) == 2 and 2 in spots:
            return {btc: "BTC-USD", eth: "ETH-USD"}
    raise AssertionError("no split pair of symbols found")


def _members(admin: AdminClient, group: str) -> list[set[tuple[str, int]]]:
    """The partitions each member of a stable group holds (empty while it rebalances)."""
    try:
        [description] = [f.result(30) for f in admin.describe_consumer_groups([group]).values()]
    except (KafkaException, TimeoutError):  # the coordinator is still being found or loaded
        return []
    if description.state != ConsumerGroupState.STABLE:
        return []
    return [{(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} for m in description.members]


def test_two_signals_and_two_lstm_workers_write_what_one_of_each_does(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    aliases = _split_symbols(unique)
    setup = prepare(aliases, tmp_path, 90)
    symbols, stream, want = setup.symbols, setup.stream, setup.want
    assert want[signals("final")]
    services, bus = setup.services({"transport": "kafka", "bootstrap": kafka_bootstrap})
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    reader: TopicReader | None = None
    try:
        for name in SERVICES:
            services.start(name)
        for name, count in SCALED.items():
            for replica in range(1, count):
                services.start(name, replica=replica)
        services.wait_ready()
        # Every member in before the first candle: the split is the one the stream meets.
        groups = {f"kstrade.{name}": count for name, count in SCALED.items()}
        deadline = time.monotonic() + 90
        while any(len(_members(admin, g)) != n or not all(_members(admin, g)) for g, n in groups.items()):
            assert time.monotonic() < deadline, {g: _members(admin, g) for g in groups}
            time.sleep(0.5)
        split = _members(admin, "kstrade.signals")
        for symbol in symbols:
            spot = _native.partition_for_key(symbol.encode(), PARTITIONS)
            [holder] = [m for m in split if (PREDICTIONS_TRANSFORMER, spot) in m]
            assert (candles(symbol, "1m"), spot) in holder  # one member holds the symbol's join inputs
        spots = {_native.partition_for_key(s.encode(), PARTITIONS) for s in symbols}
        assert all(any((PREDICTIONS_TRANSFORMER, p) in m for p in spots) for m in split)  # both members join

        fed = feed(bus, stream, per_second=3.0, on_minute=lambda minute: None)
        reader = TopicReader(bus, [*data_topics(symbols), *TRADE_TOPICS, METRICS_ALERTS], symbols, unique)
        finals = list(want[signals("final")])

        def drained() -> bool:
            return not missing(reader, want) and not undecided_finals(reader, finals)

        assert wait_until(drained, 120, reader.poll), f"not drained: missing {missing(reader, want)}"
        reader.poll(3.0)
        for key in list(services.procs):
            services.stop(key)
        verdict = judge(reader, want)
        print(f"\nfed {len(stream.tail)} minutes in {fed:.1f}s to 2 signals and 2 LSTM workers")
        print(verdict.table())
        assert not verdict.problems, "\n".join(verdict.problems)
        assert not any(verdict.repeats.values()), verdict.repeats
        assert verdict.counts[ORDERS_PENDING][1] > 0
        assert not services.errors(), "\n".join(services.errors())
    finally:
        if reader is not None:
            reader.close()
        services.close()
