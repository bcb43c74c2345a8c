"""Dead letters: a message a stage cannot process goes to `dlq.{source topic}` with the reason.

The dead letter keeps the original key, value and headers, and adds `dlq.*` headers: the stable
error code, the message, the source topic/partition/offset, the stage and the time. Once it is
delivered (flush), the source offset may be committed: nothing is dropped silently.
"""

from __future__ import annotations

import time

from kstrade.bus.core import Producer, Record
from kstrade.bus.topics import dlq_topic

#: The broker rejects records over ~1 MB; a dead letter that large keeps only this much of its
#: value and says so in `dlq.value.truncated` (the original size).
MAX_DEAD_LETTER_VALUE = 900_000
MAX_ERROR_MESSAGE = 2_000


class DeadLetters:
    """Sends records that failed in `stage` to their dead-letter topics."""

    def __init__(self, producer: Producer, stage: str, *, keep_timestamps: bool = False) -> None:
        self.producer = producer
        self.stage = stage
        self.sent = 0
        #: Stamp a dead letter with its source record's timestamp (a replay, whose records carry
        #: event time) instead of the producer's.
        self.keep_timestamps = keep_timestamps

    def send(self, record: Record, code: str, message: str) -> None:
        value = record.value
        headers = list(record.headers)
        if value is not None and len(value) > MAX_DEAD_LETTER_VALUE:
            headers.append(("dlq.value.truncated", str(len(value)).encode()))
            value = value[:MAX_DEAD_LETTER_VALUE]
        headers += [
            ("dlq.error.code", code.encode()),
            ("dlq.error.message", message[:MAX_ERROR_MESSAGE].encode("utf-8", "replace")),
            ("dlq.source.topic", record.topic.encode()),
            ("dlq.source.partition", str(record.partition).encode()),
            ("dlq.source.offset", str(record.offset).encode()),
            ("dlq.stage", self.stage.encode()),
            ("dlq.time_ns", str(time.time_ns()).encode()),
        ]
        self.producer.send(
            dlq_topic(record.topic),
            value,
            key=record.key,
            headers=headers,
            timestamp_ms=record.timestamp_ms if self.keep_timestamps else None,
        )
        self.sent += 1
