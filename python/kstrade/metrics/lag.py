"""Consumer lag of every stage's group, per topic and partition: the log end offset (admin API)
minus the group's committed offset, read without joining the group."""

from __future__ import annotations

from kstrade.bus import Bus, BusError, Consumer


class LagProbe:
    """Reads committed offsets of other groups. A consumer that never subscribes does not join
    its group, so asking it for `committed` offsets disturbs no one's assignment."""

    def __init__(self, bus: Bus, groups: list[str], *, timeout: float = 5.0) -> None:
        self.bus = bus
        self.groups = groups
        self.timeout = timeout
        self._admin = bus.admin()
        self._readers: dict[str, Consumer] = {}

    def _reader(self, group: str) -> Consumer:
        reader = self._readers.get(group)
        if reader is None:
            reader = self._readers[group] = self.bus.consumer(group, {"enable.auto.commit": False})
        return reader

    def data_topics(self) -> list[str]:
        """Topics whose lag matters: everything but dead letters and Kafka's internal topics."""
        return [t for t in self._admin.list_topics(self.timeout) if not t.startswith(("dlq.", "__"))]

    def measure(self, topics: list[str]) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) -> messages behind, for partitions the group has committed
        on. A group with no commit on a topic does not read it and is left out."""
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            try:
                for partition, end in enumerate(self._admin.end_offsets(topic, self.timeout)):
                    ends[(topic, partition)] = end
            except BusError:
                continue  # deleted between listing and asking: nothing to report
        if not ends:
            return {}
        out: dict[tuple[str, str, int], int] = {}
        for group in self.groups:
            committed = self._reader(group).committed(sorted(ends), self.timeout)
            for topic, partition, offset in committed:
                if offset is not None and offset >= 0:
                    out[(group, topic, partition)] = max(0, ends[(topic, partition)] - offset)
        return out

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
