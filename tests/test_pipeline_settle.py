"""A replay's instant ends after the first round that leaves no stage anything to read
(`Pipeline._drain` with `settle`, `Consumer.has_pending`), not with one more round that polls
nothing: the same records on every topic (dead letters, feedback from a later stage to an
earlier one and `on_time` messages among them, with polls cut short by `max_records`), in
fewer rounds and polls.

Checked on generated replays of toy stages against the same replay drained the old way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstrade.bus import Bus, MessageError, Output, Record
from kstrade.clock import EventClock
from kstrade.stage import Pipeline, Source, Stage
from tests.test_pipeline_batch import everything

MINUTE_NS = 60_000_000_000
T0_NS = 1_767_571_200_000_000_000  # 2026-01-05 00:00 UTC
TOPICS = ["in", "mid", "back", "out", "dlq.in", "dlq.mid", "dlq.back"]


class Script(Source):
    """Each instant's records on `in`, a minute apart."""

    name = "script"

    def __init__(self, instants: list[list[bytes]]) -> None:
        super().__init__()
        self.instants = instants
        self.i = 0

    def next_batch(self) -> list[Output] | None:
        if self.i >= len(self.instants):
            return None
        assert isinstance(self.clock, EventClock)
        at = T0_NS + (self.i + 1) * MINUTE_NS
        self.clock.advance_to(at)
        records = self.instants[self.i]
        self.i += 1
        return [Output("in", v, key=b"k", headers=[("origin_ns", str(at).encode())], origin_ns=at) for v in records]


class First(Stage):
    """Reads `in` and what the later stage sends back: `in` goes on to `mid`, a record sent
    back goes to `out`; `bad` is dead-lettered. Every third minute its `on_time` writes a tick
    to `mid` (once per instant)."""

    name = "first"

    def __init__(self) -> None:
        super().__init__()
        self.last_tick: int | None = None

    def inputs(self) -> list[str]:
        return ["in", "back"]

    def handle(self, record: Record) -> Iterable[Output]:
        value = record.value or b""
        if value == b"bad":
            raise MessageError("BAD", "a bad record")
        topic = "out" if record.topic == "back" else "mid"
        return [Output(topic, value + b"/1", key=record.key, headers=record.headers)]

    def on_time(self, now_ns: int) -> Iterable[Output]:
        if (now_ns // MINUTE_NS) % 3 or self.last_tick == now_ns:
            return []
        self.last_tick = now_ns
        return [Output("mid", b"tick", key=b"k", headers=[("origin_ns", str(now_ns).encode())])]


class Second(Stage):
    """Reads `mid`: `loop...` goes back to the first stage (a round later), `quiet...` is
    read and dropped, the rest goes to `out`."""

    name = "second"

    def inputs(self) -> list[str]:
        return ["mid"]

    def handle(self, record: Record) -> Iterable[Output]:
        value = record.value or b""
        if value.startswith(b"quiet"):
            return []
        topic = "back" if value.startswith(b"loop") and value.count(b"/") < 3 else "out"
        return [Output(topic, value + b"/2", key=record.key, headers=record.headers)]


def replay(instants: list[list[bytes]], max_records: int, *, settle: bool, monkeypatch: Any) -> tuple[Any, int, int]:
    bus = Bus.memory()
    bus.admin().create_topics([(t, 1, 1, {}) for t in TOPICS])
    pipeline = Pipeline(bus, [First(), Second()], max_records=max_records)
    polls = 0
    with monkeypatch.context() as m:
        if not settle:  # the old way: rounds until one polls nothing
            drain = Pipeline._drain
            m.setattr(Pipeline, "_drain", lambda self, first, last, max_rounds=1_000_000, *, settle=False: drain(
                self, first, last, max_rounds))  # fmt: skip
        for runner in pipeline.runners:
            poll = runner.consumer.poll

            def counted(max_records: int = 500, timeout: float = 1.0, poll: Any = poll) -> list[Record]:
                nonlocal polls
                polls += 1
                got: list[Record] = poll(max_records, timeout)
                return got

            runner.consumer.poll = counted  # type: ignore[method-assign]
        assert pipeline.run(Script(instants)) == len(instants)
    return everything(bus), pipeline.stats.rounds, polls


value = st.sampled_from([b"a", b"b", b"bad", b"loop", b"quiet"])


@pytest.mark.parametrize("max_records", [1, 2, 500])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(value, max_size=5), min_size=1, max_size=30))
def test_an_instant_ends_when_nothing_is_left_to_read(
    monkeypatch: pytest.MonkeyPatch, max_records: int, instants: list[list[bytes]]
) -> None:
    new, new_rounds, new_polls = replay(instants, max_records, settle=True, monkeypatch=monkeypatch)
    old, old_rounds, old_polls = replay(instants, max_records, settle=False, monkeypatch=monkeypatch)
    assert new == old
    assert new_rounds <= old_rounds and new_polls <= old_polls
    if max_records == 500 and not any(b"loop" in records for records in instants):
        # nothing goes back to an earlier stage: each instant is done in one round
        assert new_rounds == len(instants)


def test_a_replay_of_quiet_instants_takes_one_round_each(monkeypatch: pytest.MonkeyPatch) -> None:
    instants = [[b"quiet"], [b"quiet", b"quiet"], [b"quiet"], [b"quiet"]]
    # each writes to `mid`, read by the second stage in the same round (a tick at minute 3 too)
    new, new_rounds, _ = replay(instants, 500, settle=True, monkeypatch=monkeypatch)
    old, old_rounds, _ = replay(instants, 500, settle=False, monkeypatch=monkeypatch)
    assert new == old
    assert old_rounds == new_rounds + len(instants)
