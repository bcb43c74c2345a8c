"""Outputs a stage cannot deliver are never committed past (issue 11, the cluster-down case).

The runner's consumer reads from the session's broker; its producer points at a port where no
broker listens, as every producer sees the cluster while all brokers are down. The runner waits
through flush timeouts (the outputs stay queued) and only raises once the producer gives up on
them (`message.timeout.ms`); nothing of the batch is committed, and a runner whose outputs do get
through receives the whole batch again.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from kstrade.broker import cluster
from kstrade.broker.local import free_port_block
from kstrade.bus import Bus, BusError, Output, Record, StageRunner
from kstrade.bus.runner import deliver

from .conftest import FAST_GROUP

pytestmark = pytest.mark.kafka


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens there


def test_a_batch_whose_outputs_never_arrive_is_not_committed_and_comes_again(
    kafka_bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bus = Bus.kafka(kafka_bootstrap)
    source, sink = f"outage-in-{unique}", f"outage-out-{unique}"
    bus.admin().create_topics([(source, 1, 1, {}), (sink, 1, 1, {})], 30.0)
    producer = bus.producer()
    for i in range(20):
        producer.send(source, str(i).encode(), key=b"k")
    producer.flush()

    def handle(record: Record) -> list[Output]:
        return [Output(sink, record.value, key=record.key)]

    group = f"outage-{unique}"
    unreachable = Bus.kafka(f"127.0.0.1:{_closed_port()}").producer({"message.timeout.ms": 3000})
    consumer = bus.consumer(group, FAST_GROUP)
    consumer.subscribe([source])
    runner = StageRunner(consumer, unreachable, handle, stage="outage", flush_timeout=0.5, resend_limit=1)
    started = time.monotonic()
    with pytest.raises(BusError) as failed:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the first polls may come back empty while joining
            runner.run_once(timeout=0.5)
    waited = time.monotonic() - started
    assert failed.value.code == "DELIVERY_FAILED"
    [(_, _, polled_to)] = consumer.position()
    assert polled_to > 0  # raised inside a batch, before its commit
    err = capsys.readouterr().err
    waits = err.count("not acknowledged")
    assert waits >= 2  # flush timeouts (0.5 s) were waited through, not raised
    assert err.count("sent again on a new connection (1 of 1 times)") == 1  # given up on: sent again, once
    assert consumer.committed([(source, 0)]) == [(source, 0, None)]  # nothing committed
    consumer.close()

    again = bus.consumer(group, FAST_GROUP)
    again.subscribe([source])
    second = StageRunner(again, bus.producer(), handle, stage="outage")
    handled = 0
    deadline = time.monotonic() + 60
    while handled < 20 and time.monotonic() < deadline:
        handled += second.run_once(timeout=0.5).processed
    assert handled == 20  # the whole batch again, from offset 0
    assert again.committed([(source, 0)]) == [(source, 0, 20)]
    again.close()
    assert bus.admin().end_offsets(sink) == [20]
    print(f"\nunreachable cluster: the runner waited {waited:.1f}s ({waits} flush timeouts) and raised DELIVERY_FAILED")


def test_a_refused_commit_does_not_stop_the_stage_and_the_batch_comes_again(
    kafka_bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The group forgets a member that went silent (here: a batch that outlasts
    `max.poll.interval.ms`; after a full cluster restart: the coordinator that lost it), and its
    commit is refused. `run_once` goes on; the member rejoins and gets the batch again, which it
    skips (handled and delivered already: no second output, no dead letter) and commits."""
    bus = Bus.kafka(kafka_bootstrap)
    source, sink = f"fenced-in-{unique}", f"fenced-out-{unique}"
    bus.admin().create_topics([(source, 1, 1, {}), (sink, 1, 1, {})], 30.0)
    producer = bus.producer()
    for i in range(10):
        producer.send(source, str(i).encode(), key=b"k")
    producer.flush()
    seen: list[int] = []

    def slow_first_time(record: Record) -> list[Output]:
        if not seen:
            time.sleep(7.5)  # longer than max.poll.interval.ms: the consumer leaves the group
        seen.append(record.offset)
        return [Output(sink, record.value, key=record.key)]

    consumer = bus.consumer(f"fenced-{unique}", {**FAST_GROUP, "max.poll.interval.ms": 6000})
    consumer.subscribe([source])
    runner = StageRunner(consumer, bus.producer(), slow_first_time, stage="fenced")
    deadline = time.monotonic() + 90
    committed: int | None = None
    redelivered = 0
    while committed != 10 and time.monotonic() < deadline:
        redelivered += runner.run_once(timeout=0.5).redelivered  # never raises for the refused commit
        [(_, _, committed)] = consumer.committed([(source, 0)])
    consumer.close()
    assert committed == 10
    assert "left uncommitted" in capsys.readouterr().err  # the first commit was refused
    assert redelivered == 10  # the batch came again, whole ...
    assert seen == list(range(10))  # ... and was not handled twice
    assert bus.admin().end_offsets(sink) == [10]


def test_what_the_producer_gave_up_on_is_sent_again_and_a_commit_without_coordinator_is_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stuck-client case of a whole-cluster outage (issue 18: ingest once exited 2 with one
    candle never acknowledged after the cluster was back): `deliver` takes the records the
    producer gave up on (`message.timeout.ms`), renews the client and sends them again, as often
    as it takes, until the cluster acknowledges them. Here no broker listens at first; the
    producer gives up twice or more; then a broker starts on that port with the topic."""
    port = free_port_block(1)
    producer = Bus.kafka(f"127.0.0.1:{port}").producer({"message.timeout.ms": 1500})
    topic = "given-up"
    for i in range(10):
        producer.send(topic, str(i).encode(), key=f"k{i % 3}".encode(), headers=[("id", str(i).encode())])
    errors: list[BaseException] = []

    def wait_it_out() -> None:
        try:
            deliver(producer, flush_timeout=0.5, resend_limit=100)
        except BaseException as exc:
            errors.append(exc)

    waiting = threading.Thread(target=wait_it_out, daemon=True)
    waiting.start()
    time.sleep(4.0)  # two give-ups or more
    assert waiting.is_alive() and not errors, errors  # was: DELIVERY_FAILED raised at the first
    local = cluster(tmp_path / "late", nodes=1, base_port=port)
    local.start(timeout=120)
    try:
        bus = Bus.kafka(local.bootstrap)
        bus.admin().create_topics([(topic, 3, 1, {})], 30.0)
        waiting.join(90)
        assert not waiting.is_alive() and not errors, errors
        err = capsys.readouterr().err
        assert err.count("sent again on a new connection") >= 2
        consumer = bus.consumer("given-up-check", {**FAST_GROUP, "kstrade.commit.timeout.ms": 3000})
        consumer.subscribe([topic])
        got: list[Record] = []
        deadline = time.monotonic() + 30
        while len({r.value for r in got}) < 10 and time.monotonic() < deadline:
            got += consumer.poll(max_records=100, timeout=0.2)
        assert sorted({int(r.value or b"-1") for r in got}) == list(range(10))
        for r in got:  # as sent: key (and so partition) and headers
            i = int(r.value or b"-1")
            assert r.key == f"k{i % 3}".encode() and r.header("id") == str(i).encode()
        print(f"\n{err.count('sent again')} give-ups sent again; {len(got)} records read for 10 sent")

        # A commit with no coordinator to answer it is bounded: it fails (the runner leaves the
        # batch uncommitted and goes on), where librdkafka's synchronous commit waits for good.
        local.stop()
        started = time.monotonic()
        with pytest.raises(BusError) as refused:
            consumer.commit()
        took = time.monotonic() - started
        print(f"commit with the cluster away: {refused.value} after {took:.1f} s")
        assert refused.value.code == "COMMIT_FAILED" and took < 10.0
        consumer.close()
    finally:
        local.stop()
