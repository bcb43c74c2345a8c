"""`Stage` and `Pipeline`: how a pipeline stage is written and how stages are run.

A stage is a class with a name (its consumer group is `kstrade.{name}`), the topics it reads, a
`handle(record)` that returns the messages to emit, and optionally `on_time(now_ns)` for work
driven by the clock (deadlines, TTLs, grace periods). A stage on the hot path may also override
`handle_batch(batch)` to work on every record of a poll at once (one native decode, one model
call); its outputs must be exactly what `handle` would give record by record. It never touches
the bus itself: the runner polls, calls it, produces what it returns with the standard headers,
sends failures to the dead-letter topic, flushes and commits. So the same stage object runs

- in one process on the memory bus, deterministically, with the event clock (`Pipeline`:
  `python -m kstrade run` and backtests), or
- as its own process over Kafka, in its own consumer group, with the wall clock
  (`run_service`: `python -m kstrade service NAME`).

    class Doubler(Stage):
        name = "doubler"

        def inputs(self) -> list[str]:
            return ["prices"]

        def handle(self, record: Record) -> Iterable[Output]:
            price = self.decode(record, Candle)
            yield self.emit("doubled", price.model_copy(update={"close": 2 * price.close}),
                            key=record.key, origin_ns=self.origin_ns(record))
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from kstrade.bus import Batch, Bus, Consumer, Output, Record, StageRunner
from kstrade.bus.runner import Stamp
from kstrade.clock import Clock, EventClock, WallClock
from kstrade.liveness import Liveness, group_backlog
from kstrade.schemas import Codec, Message, MessageHeaders
from kstrade.schemas.codec import HEADER_ORIGIN_NS

if TYPE_CHECKING:
    from kstrade.config import Settings

M = TypeVar("M", bound=Message)

#: The interpreter's thread switch interval while stages run ahead in their own thread.
AHEAD_SWITCH_INTERVAL_S = 0.0005
#: The youngest generation's collection threshold during a replay (CPython's default: 700). A
#: replay allocates and drops objects by the million; collecting every 700 of them, and the
#: older generations in turn, took ~1.3 s of a 7-day `run` (~15 s), 0.4 s with this and
#: `gc.freeze` of what was built before the replay started.
REPLAY_GC_THRESHOLD = 20_000
#: How far ahead of the wall clock a record's market time may be (bus.max_future_skew_s): hosts
#: on NTP differ by milliseconds; two minutes also absorb an exchange clock that runs ahead, and
#: bound what one bad record can do (it cannot push a symbol's clock more than that ahead).
DEFAULT_MAX_FUTURE_SKEW_NS = 120 * 1_000_000_000
#: bus.max_past_jump_s's default: a week, the topics' retention.
DEFAULT_MAX_PAST_JUMP_NS = 7 * 86_400 * 1_000_000_000


class _Emitter:
    """What stages and sources share: a name, a clock, and encoding with the standard headers."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.clock: Clock = WallClock()
        self._codecs: dict[str, Codec] = {}

    def codec(self, model: type[Message]) -> Codec:
        codec = self._codecs.get(model.schema_file)
        if codec is None:
            codec = self._codecs[model.schema_file] = Codec(model)
        return codec

    def emit(self, topic: str, message: Message, *, key: bytes | None, origin_ns: int) -> Output:
        """An output with the standard headers (schema, version, origin_ns, stage, encoding)."""
        codec = self.codec(type(message))
        return Output(
            topic, codec.encode(message), key=key, headers=codec.headers(origin_ns, self.name), origin_ns=origin_ns
        )


class Stage(_Emitter, ABC):
    """One step of the pipeline. Subclasses set `name` and implement `inputs` and `handle`."""

    #: Records larger than this go to the dead-letter topic without reaching `handle`.
    max_message_bytes: ClassVar[int] = 256 * 1024
    #: Consumer properties this stage needs, e.g. {"partition.assignment.strategy": "range"}
    #: for a join that must see the same partition number of several co-partitioned topics.
    consumer_config: ClassVar[dict[str, str]] = {}
    #: Live, a record whose market time (origin_ns, or a candle's close) is further ahead of the
    #: wall clock than this is dead-lettered FUTURE_TIMESTAMP and never moves state (services
    #: set it from bus.max_future_skew_s). Replays skip the check: see `future_limit_ns`.
    max_future_skew_ns: int = DEFAULT_MAX_FUTURE_SKEW_NS
    #: Live, a record whose market time lies further behind the newest handled from its
    #: partition than this is dead-lettered PAST_TIMESTAMP (services set it from
    #: bus.max_past_jump_s; the runner's doc says why a week).
    max_past_jump_ns: int = DEFAULT_MAX_PAST_JUMP_NS

    def __init__(self) -> None:
        super().__init__()
        #: Whether everything on the stage's input topics has been read, for work on a deadline
        #: that must not run while inputs are still on their way (the signals join: a candle
        #: is decided without a model only once nothing more is to be read). In one process
        #: (`Pipeline`) every stage has drained before `on_time`: always true. A service is
        #: bound to its runner's lag probe (`StageRunner.caught_up`): false while the cluster
        #: is away and while it catches up after.
        self.caught_up: Callable[[], bool] = _always

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus) -> Stage:
        """The stage as the configuration describes it: the one constructor by which `run`,
        `backtest` and `service NAME` build every stage, built-in or the user's
        (`kstrade.stages`). Given the whole `Settings` (the stage reads its section, the symbols,
        the base interval) and the bus it will run on (most stages never touch it). A stage
        that is only ever built by hand (a test's) need not override it."""
        raise NotImplementedError(f"{cls.__module__}.{cls.__qualname__} has no from_settings(settings, bus)")

    @property
    def group(self) -> str:
        return f"kstrade.{self.name}"

    @abstractmethod
    def inputs(self) -> Sequence[str] | str:
        """Topics to read, or one regular expression (starting with '^') over topic names."""

    @abstractmethod
    def handle(self, record: Record) -> Iterable[Output]:
        """Process one record; raise `MessageError(code, message)` for bad input."""

    def handle_batch(self, batch: Batch) -> Iterable[Output]:
        """Process the records of one poll, in order. Default: `handle` for each (a record that
        raises goes to the dead-letter topic alone). Override where many records at once are
        cheaper; call `batch.reject(record, code, message)` for bad input, and give exactly
        the outputs, in exactly the order, that `handle` would."""
        return batch.each(self.handle)

    def on_time(self, now_ns: int) -> Iterable[Output]:
        """Called after every batch and when idle, with the stage clock's time."""
        return ()

    def close(self) -> None:
        """Release what the stage holds (files, servers, threads); called once when it stops."""

    def checkpoint(self) -> None:
        """Save state that a restart must not lose (e.g. warm indicators), consistent with what
        is about to be committed: called after the outputs are flushed, before each commit."""

    def retained(self) -> Mapping[tuple[str, int], int]:
        """Records this stage still holds in memory, as the lowest held offset per (topic,
        partition). Offsets from there on are not committed, so a crash redelivers them and the
        stage sees them again (its handle must treat a repeat as a repeat). Default: none."""
        return {}

    def future_limit_ns(self) -> int | None:
        """The latest market time (epoch ns) a record may carry now: the wall clock plus the
        allowed skew. None on any other clock: in a replay or backtest (`EventClock`) the data
        *is* the clock, so there is no outside time to be ahead of; the replay source reads its
        file in time order, so a far-future row comes last and nothing after it can be judged
        late against it. A stage that turns a payload time into state (features: a candle's
        minute) checks it against this too."""
        if not isinstance(self.clock, WallClock):
            return None
        return self.clock.now_ns() + self.max_future_skew_ns

    # -- helpers for subclasses ------------------------------------------------------------------
    def decode(self, record: Record, model: type[M]) -> M:
        """The record's value as `model`, checked against its headers. A `CodecError` (with a
        stable code naming topic, offset and field) sends the record to the DLQ."""
        message = self.codec(model).decode_record(record)
        assert isinstance(message, model)
        return message

    @staticmethod
    def origin_ns(record: Record) -> int:
        """The origin time of the market event behind `record`, to copy onto what it causes."""
        raw = record.header(HEADER_ORIGIN_NS)
        if raw is not None and raw.isdigit():  # the common case, without reading every header
            return int(raw)
        return MessageHeaders.from_kafka(record.headers, topic=record.topic, offset=record.offset).origin_ns


def _always() -> bool:
    return True


class Source(_Emitter, ABC):
    """Where market events enter: a replay or a live feed. Each call to `next_batch` returns the
    messages of the next instant (e.g. every symbol's candles that closed at one minute) and
    moves `clock` to that instant, or returns None when the source is exhausted."""

    @abstractmethod
    def next_batch(self) -> list[Output] | None: ...


def _consumer(bus: Bus, stage: Stage) -> Consumer:
    """A member of the stage's group, subscribed to its inputs."""
    consumer = bus.consumer(stage.group, stage.consumer_config)
    inputs = stage.inputs()
    if isinstance(inputs, str):
        consumer.subscribe_pattern(inputs)
    else:
        consumer.subscribe(list(inputs))
    return consumer


def _runner(
    bus: Bus,
    stage: Stage,
    *,
    poll_timeout: float,
    batched: bool = True,
    stamp: Stamp | None = None,
    max_records: int = 500,
    time_ordered: bool = False,
    commit_interval_s: float = 0.0,
) -> StageRunner:
    return StageRunner(
        _consumer(bus, stage),
        bus.producer(),
        stage.handle,
        stage=stage.name,
        max_message_bytes=stage.max_message_bytes,
        max_records=max_records,
        poll_timeout=poll_timeout,
        retained=stage.retained,
        checkpoint=stage.checkpoint,
        batch_handler=stage.handle_batch if batched else None,
        stamp=stamp,
        dead_letter_timestamps=stamp is not None,
        time_ordered=time_ordered,
        # An observer (the metrics collector) never dead-letters, and has no ACL to: no door check.
        future_limit=stage.future_limit_ns if getattr(stage, "writes_dead_letters", True) else None,
        max_backwards_ns=stage.max_past_jump_ns,
        commit_interval_s=commit_interval_s,
    )


@dataclass
class PipelineStats:
    rounds: int = 0
    polled: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[str, int] = field(default_factory=dict)
    produced: dict[str, int] = field(default_factory=dict)
    #: Wall-clock microseconds per record each stage took (poll, handle, produce, commit),
    #: one sample per batch: in a replay the event clock says nothing about speed. (8 bytes a
    #: sample: a simulated year is ~1.6M of them.)
    processing_us: dict[str, array[float]] = field(default_factory=dict)


class Pipeline:
    """Stages in one process on one bus, run round-robin in a fixed order with one clock.

    With the memory bus and an `EventClock` this is deterministic: the same input gives the
    same outputs byte for byte, which is what backtests rely on. `run` then stamps every record
    with the event time of the instant that produced it.

    `ahead` names stages, a prefix of `stages`, that read nothing a later stage writes (ingest ->
    features -> inference): `run` gives them many instants at once (up to `chunk` source
    batches: big batches, one model call for many vectors), then runs the other stages instant
    by instant behind an event-time fence (`Consumer.set_read_until`), so that what they read,
    and in which order, is exactly what they would read if every stage went instant by instant.
    `batched=False` makes every stage handle one record at a time (`Stage.handle`): the path
    that `handle_batch` must agree with.

    `keep` (memory bus, event clock) bounds a long replay's memory: after each chunk, the bus
    deletes from every other topic the records every group reading it has committed
    (`Admin.purge_consumed`); `keep` names the topics read after the run (the report's).
    """

    def __init__(
        self,
        bus: Bus,
        stages: Sequence[Stage],
        clock: Clock | None = None,
        *,
        ahead: Sequence[str] = (),
        chunk: int = 1024,
        batched: bool = True,
        max_records: int = 500,
        keep: Sequence[str] | None = None,
    ) -> None:
        self.bus = bus
        self.clock = clock or (EventClock() if bus.transport == "memory" else WallClock())
        self.stages = list(stages)
        names = [s.name for s in self.stages]
        if list(ahead) != names[: len(ahead)]:
            raise ValueError(f"stages that run ahead must come first, in order: {list(ahead)} vs {names}")
        if ahead and bus.transport != "memory":
            raise ValueError("running stages ahead needs the memory bus (its event-time fence)")
        if chunk < 1:
            raise ValueError("chunk must be at least one instant")
        if keep is not None and bus.transport != "memory":
            raise ValueError("deleting consumed records needs the memory bus (Kafka has its own retention)")
        self.keep = None if keep is None else list(keep)
        self.ahead = len(ahead)
        self.chunk = chunk
        for stage in self.stages:
            stage.clock = self.clock
        # Stamping (and so fencing) only on the event clock: live, the producer's time is right.
        self._stamping = isinstance(self.clock, EventClock)
        stamp_now: Stamp | None = self._now_ms if self._stamping else None
        stamp_origin: Stamp | None = self._origin_ms if self._stamping else None
        self.runners = [
            _runner(bus, s, poll_timeout=0.0, batched=batched, max_records=max_records,
                    stamp=stamp_origin if i < self.ahead else stamp_now, time_ordered=i < self.ahead)
            for i, s in enumerate(self.stages)
        ]  # fmt: skip
        self._producer = bus.producer()
        self.stats = PipelineStats()
        for name in names:  # every stage has its counters, also one that never got a record
            self.stats.polled[name] = self.stats.produced[name] = self.stats.dead_lettered[name] = 0

    def _now_ms(self, out: Output) -> int:
        return self.clock.now_ns() // 1_000_000

    def _origin_ms(self, out: Output) -> int:
        """A stage that ran ahead stamps each output with the instant it belongs to: the
        origin of the market event behind it (what the clock says when stages go in step)."""
        return self.clock.now_ns() // 1_000_000 if out.origin_ns is None else out.origin_ns // 1_000_000

    def step(self) -> int:
        """One round: every stage handles what is waiting for it. Returns records polled."""
        return self._round(0, len(self.stages), self.clock.now_ns())

    def _round(self, first: int, last: int, now: int) -> int:
        polled = 0
        stats = self.stats
        for i in range(first, last):
            stage, runner = self.stages[i], self.runners[i]
            started = time.perf_counter()
            result = runner.run_once(timeout=0.0)
            name = stage.name
            if result.polled:
                spent = (time.perf_counter() - started) * 1e6 / result.polled
                samples = stats.processing_us.get(name)
                if samples is None:
                    samples = stats.processing_us[name] = array("d")
                samples.append(spent)
                stats.polled[name] += result.polled
                stats.produced[name] += result.produced
                stats.dead_lettered[name] += result.dead_lettered
                polled += result.polled
            timed = list(stage.on_time(now))
            if timed:
                runner.send(timed)
                runner.producer.flush()
                runner.progress()  # what on_time released from `retained` is now done
                stats.produced[name] += len(timed)
                polled += len(timed)  # new messages: another round is needed
        stats.rounds += 1  # (a counter: a round of the stages that run ahead may race with it)
        return polled

    def drain(self, max_rounds: int = 1_000_000) -> None:
        """Run rounds until no stage has anything left to do."""
        self._drain(0, len(self.stages), max_rounds)

    def _drain(self, first: int, last: int, max_rounds: int = 1_000_000, *, settle: bool = False) -> None:
        """Rounds until one polls nothing. With `settle` (a replay's instant on the memory bus),
        also until, after a round, no stage has anything to read (`Consumer.has_pending`): the
        next round would poll nothing and ask each stage's `on_time`, at the same time and with
        nothing handled since, what it has just answered. Half the rounds of a replay."""
        for _ in range(max_rounds):
            now = self.clock.now_ns()
            if self._round(first, last, now) == 0:
                return
            if (
                settle
                and self.clock.now_ns() == now
                and not any(runner.consumer.has_pending() for runner in self.runners[first:last])
            ):
                return
        raise RuntimeError(f"pipeline still busy after {max_rounds} rounds")

    def _fence(self, first: int, last: int, until_ms: int | None) -> None:
        for runner in self.runners[first:last]:
            runner.consumer.set_read_until(until_ms)

    def run(
        self,
        source: Source,
        on_batch: Callable[[int], None] | None = None,
        on_chunk: Callable[[], object] | None = None,
    ) -> int:
        """Feed every batch of `source` through the stages, so that every stage sees the world
        exactly as it would live, instant by instant (see the class doc for the stages that
        run ahead). Returns the batches fed; `on_batch(batches so far)` is called after each
        instant the last stages finish (a progress view), `on_chunk()` after each chunk of
        instants, before what was read is deleted (`keep`): a reader of the outputs catches up."""
        clock = self.clock
        if not isinstance(clock, EventClock):
            return self._run_lockstep(source, on_batch)
        # The source keeps its own event time: it may be read ahead of the stages' clock.
        source.clock = source_clock = EventClock(self.clock.now_ns())
        everyone = len(self.stages)
        per_read = self.chunk if self.ahead else 1

        def read() -> list[int]:
            """The next instants from the source onto the bus, each record stamped with its
            instant; their times."""
            instants: list[int] = []
            while len(instants) < per_read and (batch := source.next_batch()) is not None:
                at_ms = source_clock.now_ns() // 1_000_000
                for out in batch:
                    self._producer.send(out.topic, out.value, key=out.key, headers=out.headers, timestamp_ms=at_ms)
                instants.append(source_clock.now_ns())
            self._producer.flush()
            return instants

        batches = 0
        # The stages that run ahead work on the next chunk in a thread while the others go
        # through this one: the fence keeps the next chunk out of their sight, and a model call
        # runs without the GIL, so on two cores the models' time mostly hides behind the rest.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kstrade-ahead") if self.ahead else None
        # Every bus call lets the GIL go; by default the other thread may then keep it 5 ms, an
        # eternity for a lockstep round of a few microseconds. Measured on `run --days 2`:
        # 9.1 s with the default, 6.5 s at 0.5 ms (7.9 s with no thread at all).
        switch = sys.getswitchinterval()
        if pool is not None:
            sys.setswitchinterval(AHEAD_SWITCH_INTERVAL_S)
        # The bus lives in this process, so a commit per batch would protect nothing: the stages
        # commit once per chunk, before its records are deleted (the purge reads the commits).
        on_request = self.bus.transport == "memory"
        for runner in self.runners:
            runner.commit_on_request = on_request
        # What exists now (stages, models, the source's frame) lives through the replay: the
        # collector need not walk it again and again (`gc.freeze`), and collects less often.
        thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(max(thresholds[0], REPLAY_GC_THRESHOLD), *thresholds[1:])
        try:
            instants = read()
            if self.ahead:
                self._drain(0, self.ahead)
            while instants:
                following = read()
                ahead = pool.submit(self._drain, 0, self.ahead) if pool is not None and following else None
                for at in instants:
                    clock.advance_to(at)
                    self._fence(self.ahead, everyone, at // 1_000_000)
                    self._drain(self.ahead, everyone, settle=on_request)
                    batches += 1
                    if on_batch is not None:
                        on_batch(batches)
                if ahead is not None:
                    ahead.result()  # its exception, if any, is this run's
                self._commit()
                if on_chunk is not None:
                    on_chunk()
                if self.keep is not None:
                    self.bus.admin().purge_consumed(self.keep)
                instants = following
            return batches
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
                sys.setswitchinterval(switch)
            self._fence(self.ahead, everyone, None)
            for runner in self.runners:
                runner.commit_on_request = False
            gc.set_threshold(*thresholds)
            gc.unfreeze()

    def _commit(self) -> None:
        """Commit what every stage has handled (`StageRunner.commit_on_request`)."""
        for runner in self.runners:
            if runner.commit_pending:
                runner.commit_progress()

    def _run_lockstep(self, source: Source, on_batch: Callable[[int], None] | None) -> int:
        source.clock = self.clock
        batches = 0
        while (batch := source.next_batch()) is not None:
            for out in batch:
                self._producer.send(out.topic, out.value, key=out.key, headers=out.headers)
            self._producer.flush()
            batches += 1
            self.drain()
            if on_batch is not None:
                on_batch(batches)
        return batches


def run_service(
    bus: Bus,
    stage: Stage,
    stop: threading.Event,
    *,
    poll_timeout: float = 0.1,
    liveness: Liveness | None = None,
    commit_interval_s: float = 0.0,
) -> None:
    """One stage as its own process member of `kstrade.{name}`, until `stop` is set. On stop it
    finishes the batch in hand (outputs flushed, offsets committed) and leaves the group. Given
    a `liveness`, the loop beats it each round and probes its lag (`kstrade.liveness`); given a
    `commit_interval_s`, it commits at most that often, and whenever it finds nothing to read
    (`StageRunner`)."""
    stage.clock = WallClock()
    runner = _runner(bus, stage, poll_timeout=poll_timeout, commit_interval_s=commit_interval_s)
    stage.caught_up = runner.caught_up
    producer = runner.producer
    if liveness is not None:
        liveness.attach(runner, stop, group_backlog(bus, stage.inputs(), lambda: runner.consumer))
    try:
        while not stop.is_set():
            if liveness is not None:
                liveness.beat()
                liveness.probe()
                if liveness.fetch_stalled():
                    # A fresh member rejoins and resumes from the committed offsets; what this
                    # process already handled and delivered is skipped when it comes again.
                    print(f"{stage.name}: {liveness.fetch_stall_reason()}: rejoining the group with a new consumer",
                          file=sys.stderr, flush=True)  # fmt: skip
                    runner.consumer.close()
                    runner.consumer = _consumer(bus, stage)
                    liveness.rejoined()
            runner.run_once()
            timed = list(stage.on_time(stage.clock.now_ns()))
            for out in timed:
                producer.send(out.topic, out.value, key=out.key, headers=out.headers)
            if timed:
                runner.commit_progress()
        if runner.commit_pending:
            runner.commit_progress()  # what was handled before the stop
    finally:
        if liveness is not None:
            liveness.stopped()
        producer.flush()
        runner.consumer.close()
        stage.close()


def save_state(path: Path, state: object) -> None:
    """Write a stage's checkpoint (JSON) so that a crash at any moment leaves either the old or
    the new file whole: written beside it, synced to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
