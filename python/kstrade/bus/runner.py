"""`StageRunner`: the consume -> process -> produce -> commit loop every stage runs.

Per batch: poll, hand the batch to the stage's handler (a `Batch`: the records of the poll, in
order; a record-at-a-time stage handles them one by one through `Batch.each`), send its
outputs, send what failed to the dead-letter topic (each bad record alone: the rest of the
batch is processed), flush (every output and dead letter acknowledged), and only then commit.
A crash anywhere before the commit redelivers the batch (at-least-once); a bad record
never stops the loop.

While the cluster is unreachable the runner waits: a flush that times out is tried again, since
the producer keeps the outputs queued and resends them until `message.timeout.ms`. Outputs the
producer gave up on are sent again on a renewed client (`deliver`), up to `RESEND_LIMIT` times;
only then DELIVERY_FAILED is raised: the batch is not committed, the service exits non-zero,
and its restart gets the batch again. A commit the group refuses (a rebalance, or a
coordinator restarted with the whole cluster) is not fatal either: the batch comes again, and
what this runner already handled and delivered is skipped, not handled twice.

Time sanity at the door: given a `future_limit` (live services: the wall clock plus the allowed
skew), a record whose `origin_ns` (the market time behind it) lies beyond it is dead-lettered as
FUTURE_TIMESTAMP before the stage sees it, so one record from the future can never move a
stage's clock (a per-symbol "newest minute", a TTL, a daily reset) ahead of the real world.
Backwards, given `max_backwards_ns` too: a record whose origin lies further behind the newest
origin this runner handled from the same partition is dead-lettered as PAST_TIMESTAMP. The
default bound is the topics' retention (a week): nothing that far back can be a redelivery (a
rebalance or a restart goes back only to the last commit), and a fresh process, which has seen
nothing yet, takes whatever it is given (catching up after a long outage).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kstrade.bus.core import BusError, Consumer, Producer, Record
from kstrade.bus.dlq import DeadLetters
from kstrade.codes import BusCode, DeadLetter


class MessageError(Exception):
    """Bad input: raised by a handler with a stable code; the record goes to the DLQ."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


log = logging.getLogger(__name__)

#: Dead-letter code: the record's market time is further ahead of the stage's clock than allowed.
FUTURE_TIMESTAMP = DeadLetter.FUTURE_TIMESTAMP
#: Dead-letter code: the record's market time lies implausibly far behind its partition's newest.
PAST_TIMESTAMP = DeadLetter.PAST_TIMESTAMP

#: How many times `deliver` sends again what the producer gave up on (after librdkafka's
#: `message.timeout.ms`, 5 minutes by default) before it raises DELIVERY_FAILED: about an hour
#: of a cluster away, or of a client stuck after the cluster came back.
RESEND_LIMIT = 12

#: The standard header with the market event's time (kstrade.schemas.codec.HEADER_ORIGIN_NS).
_ORIGIN_NS = "origin_ns"
#: The latest market time (epoch ns) a record may carry now, or None: no check (a replay).
FutureLimit = Callable[[], int | None]


@dataclass(frozen=True, slots=True)
class Output:
    """One record a handler wants produced. `origin_ns` repeats the header of that name (set by
    `Stage.emit`): a replay stamps what a stage ran ahead on with the instant it belongs to."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = field(default_factory=list)
    origin_ns: int | None = None


class Batch:
    """The records of one poll, in poll order, that a stage handles at once. A stage that can
    work on many records together reads `records` and calls `reject` for each bad one (it goes
    to the dead-letter topic alone); a record-at-a-time stage passes its handler to `each`."""

    __slots__ = ("_dead_letters", "dead_lettered", "records")

    def __init__(self, records: list[Record], dead_letters: DeadLetters) -> None:
        self.records = records
        self._dead_letters = dead_letters
        self.dead_lettered = 0

    def __len__(self) -> int:
        return len(self.records)

    def reject(self, record: Record, code: str, message: str) -> None:
        """Send `record` to its dead-letter topic with a stable code and a message."""
        self._dead_letters.send(record, code, message)
        self.dead_lettered += 1

    def fail(self, record: Record, exc: Exception) -> None:
        """Dead-letter `record` for an exception its handler raised: bad input keeps its code
        (MessageError, CodecError, MarketError, ...); anything else is a HANDLER_ERROR."""
        if isinstance(exc, MessageError):
            self.reject(record, exc.code, exc.message)
            return
        code = getattr(exc, "code", None)
        if isinstance(code, str) and code:
            self.reject(record, code, str(exc))
        else:
            self.reject(record, DeadLetter.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")

    def each(
        self, handler: Callable[[Record], Iterable[Output]], records: Iterable[Record] | None = None
    ) -> Iterator[Output]:
        """The record-at-a-time path: `handler` per record (of the batch, or of `records`, some
        of them); a record whose handler raises goes to the dead-letter topic and the loop goes
        on (a handler bug must not stop the stage)."""
        for record in self.records if records is None else records:
            try:
                outputs = list(handler(record))
            except Exception as exc:
                self.fail(record, exc)
                continue
            yield from outputs


Handler = Callable[[Record], Iterable[Output]]
BatchHandler = Callable[[Batch], Iterable[Output]]
#: What a replay stamps on an output (its record timestamp, epoch ms); None: the producer's time.
Stamp = Callable[[Output], int | None]
#: Per (topic, partition), the lowest offset a stage still holds in memory (e.g. a join waiting
#: for its other half). The runner never commits past it, so a crash redelivers what was held.
Retained = Callable[[], Mapping[tuple[str, int], int]]


@dataclass(slots=True)
class BatchResult:
    polled: int = 0
    processed: int = 0
    dead_lettered: int = 0
    produced: int = 0
    #: Records this runner had already handled and delivered (redelivered after a refused commit).
    redelivered: int = 0


def _timestamp(record: Record) -> int:
    return record.timestamp_ms


def future_message(what: str, at_ns: int, limit_ns: int) -> str:
    """The FUTURE_TIMESTAMP dead letter's text: which time, when, and how far past the limit."""
    when = datetime.fromtimestamp(at_ns / 1e9, UTC).isoformat()
    return f"{what} {when} is {(at_ns - limit_ns) / 1e9:,.0f}s beyond the clock plus the allowed skew"


def past_message(at_ns: int, newest_ns: int) -> str:
    """The PAST_TIMESTAMP dead letter's text: which time, and how far behind the newest."""
    when = datetime.fromtimestamp(at_ns / 1e9, UTC).isoformat()
    newest = datetime.fromtimestamp(newest_ns / 1e9, UTC).isoformat()
    return f"origin_ns {when} is {(newest_ns - at_ns) / 86_400e9:,.1f} days behind this partition's newest ({newest})"


def _origin_ns(record: Record) -> int | None:
    raw = record.header(_ORIGIN_NS)
    return int(raw) if raw is not None and raw.isdigit() else None


class StageRunner:
    """Runs `handler` over the records of `consumer`, at least once, with dead letters.

    `handler` takes one record; `batch_handler`, when given, takes a whole `Batch` instead
    (`Stage.handle_batch`). `stamp` gives each output's record timestamp (a replay's event
    time); without it the producer stamps its own time, as live.

    After every batch its outputs are flushed (acknowledged). Then the stage checkpoints its
    state and the offsets are committed: after every batch, or with `commit_interval_s` at most
    that often and whenever a poll finds nothing (an fsync and a round trip to the group
    coordinator per batch made the records of the next instant wait: the features stage emitted
    a candle's vector 10.8 ms after it was produced, 5.2 ms with 0.1 s; bench/bench_e2e.py).
    What is handled but not yet committed comes again after a crash, and is skipped as a repeat.
    """

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        handler: Handler,
        *,
        stage: str,
        max_message_bytes: int = 256 * 1024,
        max_records: int = 500,
        poll_timeout: float = 0.1,
        retained: Retained | None = None,
        checkpoint: Callable[[], None] | None = None,
        flush_timeout: float = 30.0,
        batch_handler: BatchHandler | None = None,
        stamp: Stamp | None = None,
        dead_letter_timestamps: bool = False,
        time_ordered: bool = False,
        future_limit: FutureLimit | None = None,
        max_backwards_ns: int | None = None,
        resend_limit: int = RESEND_LIMIT,
        commit_interval_s: float = 0.0,
    ) -> None:
        self.consumer = consumer
        self.commit_interval_s = commit_interval_s
        #: Handled and delivered since the last commit (with a `commit_interval_s`).
        self.commit_pending = False
        #: Commit only when `commit_progress` is called from outside: a replay on the memory bus
        #: (`Pipeline.run`), where a commit per batch protects nothing (the bus lives in the
        #: process) and only the purge between chunks reads the committed offsets.
        self.commit_on_request = False
        self.future_limit = future_limit
        self.max_backwards_ns = max_backwards_ns
        #: Per (topic, partition), the newest origin_ns handled (with `future_limit`, live only).
        self._newest_origin: dict[tuple[str, int], int] = {}
        self.resend_limit = resend_limit
        self.retained = retained
        self.checkpoint = checkpoint
        self.producer = producer
        self.handler = handler
        self.batch_handler = batch_handler
        self.stamp = stamp
        #: Read everything there is in one batch, merged across partitions by record timestamp
        #: (a replay's event time; ties in partition order): how a stage that runs ahead of a
        #: replay sees, in one batch, the same sequence it would see instant by instant.
        self.time_ordered = time_ordered
        self.dead_letters = DeadLetters(producer, stage, keep_timestamps=dead_letter_timestamps)
        self.max_message_bytes = max_message_bytes
        self.max_records = max_records
        self.poll_timeout = poll_timeout
        self.flush_timeout = flush_timeout
        #: Per (topic, partition), the highest offset handled whose outputs are acknowledged, and
        #: the same for the batch in hand (merged once its outputs are).
        self._delivered: dict[tuple[str, int], int] = {}
        self._handled: dict[tuple[str, int], int] = {}
        #: `caught_up`: how long one lag probe may wait, and how often a "no" is asked again.
        self.lag_timeout, self.lag_every = 1.0, 1.0
        self._lag_not_before = 0.0
        #: Progress, for a watcher in another thread (`kstrade.liveness`), in monotonic seconds:
        #: the batch in hand (records polled and not yet committed, and since when), records
        #: handled, the last one (topic, partition, offset, timestamp_ms) and when, the last commit.
        self.in_hand = 0
        self.in_hand_since: float | None = None
        self.handled = 0
        self.last_record: tuple[str, int, int, int] | None = None
        self.last_handled_at: float | None = None
        self.committed_at: float | None = None
        #: Called each time a flush times out while the cluster is away: the loop is waiting, not stuck.
        self.on_wait: Callable[[], None] | None = None

    def run_once(self, timeout: float | None = None) -> BatchResult:
        records = self.consumer.poll(self.max_records, self.poll_timeout if timeout is None else timeout)
        if self.time_ordered and records:
            while more := self.consumer.poll(self.max_records, 0.0):
                records += more  # partition after partition, each in log order
            records.sort(key=_timestamp)  # stable: equal stamps keep the partition order
        result = BatchResult(polled=len(records))
        if not records:
            if self.commit_pending and not self.commit_on_request:
                self.commit_progress()  # quiet: the moment to commit costs nobody anything
            return result
        self.in_hand, self.in_hand_since = len(records), time.monotonic()
        fresh: list[Record] = []
        delivered, handled = self._delivered, self._handled
        limit = self.future_limit() if self.future_limit is not None else None
        for record in records:
            where = (record.topic, record.partition)
            if record.offset <= delivered.get(where, -1):
                result.redelivered += 1  # the stage's state and the bus already have it
                continue
            handled[where] = record.offset
            size = len(record.value or b"")
            if size > self.max_message_bytes:
                # Dead letters keep the order of their records: what came before goes first.
                self._handle_fresh(fresh, result)
                fresh = []
                self.dead_letters.send(
                    record,
                    DeadLetter.MESSAGE_TOO_LARGE,
                    f"{size} bytes exceeds this stage's limit of {self.max_message_bytes}",
                )
                result.dead_lettered += 1
                continue
            if limit is not None and (origin := _origin_ns(record)) is not None:
                refused: tuple[str, str] | None = None
                newest = self._newest_origin.get(where)
                back = self.max_backwards_ns
                if origin > limit:
                    refused = (FUTURE_TIMESTAMP, future_message("origin_ns", origin, limit))
                elif newest is not None and back is not None and origin < newest - back:
                    refused = (PAST_TIMESTAMP, past_message(origin, newest))
                elif newest is None or origin > newest:
                    self._newest_origin[where] = origin
                if refused is not None:
                    self._handle_fresh(fresh, result)
                    fresh = []
                    self.dead_letters.send(record, *refused)
                    result.dead_lettered += 1
                    continue
            fresh.append(record)
        self._handle_fresh(fresh, result)
        if not self.commit_on_request and (
            self.commit_interval_s <= 0
            or self.committed_at is None
            or time.monotonic() - self.committed_at >= self.commit_interval_s
        ):
            self.commit_progress()
        else:
            self._deliver_progress()  # acknowledged now; checkpoint and commit later
            self.commit_pending = True
        last = records[-1]
        self.last_record = (last.topic, last.partition, last.offset, last.timestamp_ms)
        self.handled += result.polled - result.redelivered
        self.last_handled_at, self.in_hand, self.in_hand_since = time.monotonic(), 0, None
        return result

    def _handle_fresh(self, fresh: list[Record], result: BatchResult) -> None:
        if not fresh:
            return
        batch = Batch(fresh, self.dead_letters)
        outputs = self._handle(batch)
        self.send(outputs)
        result.dead_lettered += batch.dead_lettered
        result.processed += len(fresh) - batch.dead_lettered
        result.produced += len(outputs)

    def _handle(self, batch: Batch) -> list[Output]:
        if self.batch_handler is None:
            return list(batch.each(self.handler))
        rejected = batch.dead_lettered
        try:
            return list(self.batch_handler(batch))
        except Exception:
            # A batch handler routes bad records through `batch.reject`; an exception escaping
            # it is a bug. The batch goes again record by record (stages treat a repeat as a
            # repeat), so only the record that really fails reaches the dead-letter topic.
            log.exception("bus: batch handler failed: handling these %d records one at a time", len(batch))
            batch.dead_lettered = rejected
            return list(batch.each(self.handler))

    def send(self, outputs: Iterable[Output]) -> int:
        """Enqueue outputs (stamped when this runner has a `stamp`). Returns how many."""
        send, stamp, n = self.producer.send, self.stamp, 0
        for out in outputs:
            send(out.topic, out.value, key=out.key, headers=out.headers,
                 timestamp_ms=None if stamp is None else stamp(out))  # fmt: skip
            n += 1
        return n

    def commit_progress(self) -> None:
        """Flush (outputs and dead letters durable first), let the stage checkpoint its state,
        then commit what is fully processed: everything polled, except from the lowest offset
        the stage still holds per partition.

        A commit the group refuses (fenced by a rebalance, or a restarted coordinator that no
        longer knows this member) is not fatal: the consumer rejoins, and what was not committed
        is committed with the next batch or redelivered to the partition's next owner."""
        self._deliver_progress()
        self.commit_pending = False
        if self.checkpoint is not None:
            self.checkpoint()  # state saved for what is about to be committed
        held = self.retained() if self.retained is not None else None
        offsets = None
        if held:
            positions = self.consumer.position()
            offsets = [(t, p, min(pos, held[(t, p)]) if (t, p) in held else pos) for t, p, pos in positions]
        try:
            self.consumer.commit(offsets)
        except BusError as exc:
            if exc.code != BusCode.COMMIT_FAILED:
                raise
            print(f"bus: {exc}: left uncommitted (next batch or redelivery)", file=sys.stderr, flush=True)
        else:
            self.committed_at = time.monotonic()

    def progress(self) -> None:
        """What a batch or a tick handled is done: committed now, or (`commit_interval_s`,
        `commit_on_request`) acknowledged now and committed later."""
        if self.commit_on_request:
            self._deliver_progress()
            self.commit_pending = True
        else:
            self.commit_progress()

    def _deliver_progress(self) -> None:
        """Outputs and dead letters acknowledged: what was handled is delivered (a record that
        comes again from there on is a repeat, skipped)."""
        self.deliver()
        self._delivered.update(self._handled)
        self._handled.clear()

    def caught_up(self) -> bool:
        """Whether the consumer has read everything its partitions hold now (lag 0 on each, by
        position). False when it cannot tell: no partitions assigned (a rebalance, a rejoin) or
        the cluster did not answer within `lag_timeout` (it is away). Asked at most once per
        `lag_every` seconds while the answer is no; a yes is asked again each time."""
        now = time.monotonic()
        if now < self._lag_not_before:
            return False
        try:
            lag = self.consumer.lag(self.lag_timeout)
        except BusError:
            lag = {}
        if lag and not any(lag.values()):
            return True
        self._lag_not_before = now + self.lag_every
        return False

    def deliver(self) -> None:
        """Flush until every output is acknowledged, however long the cluster is away (`deliver`)."""
        deliver(
            self.producer, self.flush_timeout, "nothing committed", on_wait=self.on_wait, resend_limit=self.resend_limit
        )

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_once()


def _given_up(
    producer: Producer, flush_timeout: float, on_wait: Callable[[], None] | None
) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]], int | None, int | None]]:
    """Every record the producer gave up on, once nothing is in flight any more (the others
    delivered, or given up on too): in the order their failures came."""
    failed = producer.take_failed()
    while producer.in_flight:
        try:
            producer.flush(flush_timeout)
        except BusError as exc:
            if exc.code not in (BusCode.TIMEOUT, BusCode.DELIVERY_FAILED):
                raise
            if on_wait is not None:
                on_wait()
        failed += producer.take_failed()
    return failed + producer.take_failed()


def deliver(
    producer: Producer,
    flush_timeout: float = 30.0,
    meanwhile: str = "",
    *,
    on_wait: Callable[[], None] | None = None,
    resend_limit: int = RESEND_LIMIT,
) -> None:
    """Flush `producer` until every record it holds is acknowledged, however long the cluster is
    away: a flush timeout is not a failure (the records are still queued, and the producer
    resends them until `message.timeout.ms`), so it is logged every `flush_timeout` seconds and
    the flush tried again. What the producer gave up on (a cluster away for longer than
    `message.timeout.ms`, or a client that stays stuck on a partition after the cluster came
    back) is sent again on a renewed client, up to `RESEND_LIMIT` times, and then raised
    (DELIVERY_FAILED). A record timed out in flight may have been written: sent again, it is
    an identical repeat, which every reader here already takes (at-least-once).
    `meanwhile` says in the log what the caller holds back while it waits; `on_wait` is called
    after each timed-out flush (a liveness beat: waiting for the cluster is not being stuck)."""
    waited = resent = 0
    while True:
        try:
            producer.flush(flush_timeout)
            break
        except BusError as exc:
            if exc.code == BusCode.DELIVERY_FAILED and resent < resend_limit:
                resent += 1
                again = _given_up(producer, flush_timeout, on_wait)
                producer.renew()  # the old client may stay stuck on those partitions
                for topic, value, key, headers, partition, at_ms in again:
                    producer.send(topic, value, key=key, headers=headers, partition=partition, timestamp_ms=at_ms)
                print(
                    f"bus: the producer gave up on {len(again)} output(s) ({exc}): sent again on a new "
                    f"connection ({resent} of {resend_limit} times)",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            if exc.code != BusCode.TIMEOUT:
                raise
            waited += 1
            if on_wait is not None:
                on_wait()
            print(
                f"bus: {producer.in_flight} outputs not acknowledged after {waited * flush_timeout:.0f}s: "
                f"waiting for the cluster{', ' + meanwhile if meanwhile else ''}",
                file=sys.stderr,
                flush=True,
            )
    if waited:
        print("bus: outputs acknowledged: going on", file=sys.stderr, flush=True)
