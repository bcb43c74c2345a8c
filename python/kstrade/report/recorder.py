"""The run's outputs, read while a replay runs: what the run directory is written from.

A replay on the memory bus keeps every record of every topic unless something deletes them: a
simulated year of 3 symbols would hold ~15 GB. So `Pipeline(keep=...)` deletes, after each
chunk of instants, what every group reading a topic has committed, and the report reads its
topics as the run goes, in its own consumer group, keeping only what it needs: the records of
the small topics (final signals, orders, fills, P&L, alerts), the side and confidence of each
calibrated signal, and the count of each reason a candidate was rejected.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from kstrade.bus import Bus, Consumer, Record
from kstrade.bus.topics import EXECUTIONS, METRICS_ALERTS, ORDERS_CONFIRMED, ORDERS_PENDING, PNL, signals
from kstrade.report.calibration import calibrated_signals
from kstrade.signals.aggregator import REJECT_REASON

#: The topics whose records the run directory is written from, kept whole.
KEPT = (signals("final"), ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS, PNL, METRICS_ALERTS)


def reject_reason(record: Record) -> str:
    """The first reason a `signals.filtered` record gives (UNSPECIFIED where it gives none)."""
    return (record.header(REJECT_REASON) or b"UNSPECIFIED").decode("ascii", "replace")


class RunRecorder:
    """Reads the report's topics in group `kstrade.report`; `read` takes what is there now and
    commits it (so the bus may delete it), `close` leaves the group."""

    GROUP = "kstrade.report"

    def __init__(self, bus: Bus) -> None:
        self._consumer: Consumer = bus.consumer(self.GROUP, {"auto.offset.reset": "earliest"})
        self._consumer.subscribe([*KEPT, signals("calibrated"), signals("filtered")])
        self.records: dict[str, list[Record]] = {topic: [] for topic in KEPT}
        #: Why candidates did not become final signals: reason code -> count.
        self.rejections: Counter[str] = Counter()
        self._calibrated: list[pl.DataFrame] = []
        self._calibrated_topic, self._filtered_topic = signals("calibrated"), signals("filtered")

    def read(self) -> int:
        """Everything the topics hold now, taken in and committed. Returns records read."""
        n = 0
        while records := self._consumer.poll(5000, 0.0):
            n += len(records)
            calibrated = []
            for record in records:
                topic = record.topic
                if topic == self._calibrated_topic:
                    calibrated.append(record)
                elif topic == self._filtered_topic:
                    self.rejections[reject_reason(record)] += 1
                else:
                    self.records[topic].append(record)
            if calibrated:
                self._calibrated.append(calibrated_signals(calibrated))
        if n:
            self._consumer.commit()
        return n

    def calibrated(self) -> pl.DataFrame:
        """(symbol, open_time_ms, long, confidence) of every calibrated signal read."""
        if not self._calibrated:
            return calibrated_signals([])
        if len(self._calibrated) > 1:
            self._calibrated = [pl.concat(self._calibrated)]
        return self._calibrated[0]

    def close(self) -> None:
        self._consumer.close()
