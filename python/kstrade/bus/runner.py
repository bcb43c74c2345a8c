"""`StageRunner`: the consume -> process -> produce -> commit loop every stage runs.

Per batch: poll, hand each record to the stage's handler, send its outputs, send what failed
to the dead-letter topic, flush (every output and dead letter acknowledged), and only then
commit. A crash anywhere before the commit redelivers the batch (at-least-once); a bad record
never stops the loop.

While the cluster is unreachable the runner waits: a flush that times out is tried again, since
the producer keeps the outputs queued and resends them until `message.timeout.ms`. Only outputs
the producer gave up on raise (DELIVERY_FAILED): the batch is not committed, the service exits
non-zero, and its restart gets the batch again. A commit the group refuses (a rebalance, or a
coordinator restarted with the whole cluster) is not fatal either: the batch comes again, and
what this runner already handled and delivered is skipped, not handled twice.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kstrade.bus.core import BusError, Consumer, Producer, Record
from kstrade.bus.dlq import DeadLetters


class MessageError(Exception):
    """Bad input: raised by a handler with a stable code; the record goes to the DLQ."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Output:
    """One record a handler wants produced."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = field(default_factory=list)


Handler = Callable[[Record], Iterable[Output]]
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


class StageRunner:
    """Runs `handler` over the records of `consumer`, at least once, with dead letters."""

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
    ) -> None:
        self.consumer = consumer
        self.retained = retained
        self.checkpoint = checkpoint
        self.producer = producer
        self.handler = handler
        self.dead_letters = DeadLetters(producer, stage)
        self.max_message_bytes = max_message_bytes
        self.max_records = max_records
        self.poll_timeout = poll_timeout
        self.flush_timeout = flush_timeout
        #: Per (topic, partition), the highest offset handled whose outputs are acknowledged, and
        #: the same for the batch in hand (merged once its outputs are).
        self._delivered: dict[tuple[str, int], int] = {}
        self._handled: dict[tuple[str, int], int] = {}

    def run_once(self, timeout: float | None = None) -> BatchResult:
        records = self.consumer.poll(self.max_records, self.poll_timeout if timeout is None else timeout)
        result = BatchResult(polled=len(records))
        if not records:
            return result
        for record in records:
            where = (record.topic, record.partition)
            if record.offset <= self._delivered.get(where, -1):
                result.redelivered += 1  # the stage's state and the bus already have it
                continue
            self._handled[where] = record.offset
            try:
                size = len(record.value or b"")
                if size > self.max_message_bytes:
                    raise MessageError(
                        "MESSAGE_TOO_LARGE",
                        f"{size} bytes exceeds this stage's limit of {self.max_message_bytes}",
                    )
                outputs = list(self.handler(record))
            except MessageError as exc:
                self.dead_letters.send(record, exc.code, exc.message)
                result.dead_lettered += 1
                continue
            except Exception as exc:  # a handler bug must not stop the pipeline
                # Errors that carry a stable code (CodecError, ...) keep it; others are bugs.
                code = getattr(exc, "code", None)
                if isinstance(code, str) and code:
                    self.dead_letters.send(record, code, str(exc))
                else:
                    self.dead_letters.send(record, "HANDLER_ERROR", f"{type(exc).__name__}: {exc}")
                result.dead_lettered += 1
                continue
            for out in outputs:
                self.producer.send(out.topic, out.value, key=out.key, headers=out.headers)
            result.processed += 1
            result.produced += len(outputs)
        self.commit_progress()
        return result

    def commit_progress(self) -> None:
        """Flush (outputs and dead letters durable first), let the stage checkpoint its state,
        then commit what is fully processed: everything polled, except from the lowest offset
        the stage still holds per partition.

        A commit the group refuses (fenced by a rebalance, or a restarted coordinator that no
        longer knows this member) is not fatal: the consumer rejoins, and what was not committed
        is committed with the next batch or redelivered to the partition's next owner."""
        self.deliver()
        self._delivered.update(self._handled)
        self._handled.clear()
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
            if exc.code != "COMMIT_FAILED":
                raise
            print(f"bus: {exc}: left uncommitted (next batch or redelivery)", file=sys.stderr, flush=True)

    def deliver(self) -> None:
        """Flush until every output is acknowledged, however long the cluster is away. A flush
        timeout is not a failure (the records are still queued and retried); what the producer
        gave up on after `message.timeout.ms` is, and is raised."""
        waited = 0
        while True:
            try:
                self.producer.flush(self.flush_timeout)
                break
            except BusError as exc:
                if exc.code != "TIMEOUT":
                    raise
                waited += 1
                print(
                    f"bus: {self.producer.in_flight} outputs not acknowledged after "
                    f"{waited * self.flush_timeout:.0f}s: waiting for the cluster, nothing committed",
                    file=sys.stderr,
                    flush=True,
                )
        if waited:
            print("bus: outputs acknowledged: going on", file=sys.stderr, flush=True)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_once()
