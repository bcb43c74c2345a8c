"""Poison messages on every input topic of every stage land in the DLQ with a reason; every
other message flows on, unchanged.

The stages are the real ones (`kstrade.services.STAGES`), run as `python -m kstrade run` runs
them (one `Pipeline` on the memory bus, event clock, replayed SYNTHETIC candles). A clean run
gives the reference outputs and a real record of each topic; a second run injects, between two
replayed minutes, poison derived from those records into every topic a stage reads:

- random bytes with no headers,
- a body that does not decode, under the topic's real headers,
- a valid message of another schema (wrong schema),
- a real message with a price/value patched to NaN and to +inf,
- a real message re-encoded for a symbol the pipeline does not trade,
- a giant payload (300 KB, over every stage's 256 KB limit).

Asserted: every data topic of the poisoned run holds exactly the clean run's records (nothing
lost, duplicated or changed downstream of the poison), and each poison record sits in
`dlq.{topic}` once per stage that reads the topic, with a non-empty `dlq.error.code`/message and
its source offset. The metrics collector is an observer: it counts what it cannot read (its
`unreadable` counter) instead of dead-lettering it, and it relays nothing it could not decode.

The same poison then goes over the real broker (`kafka` marker): each stage, alone in its own
consumer group over a local Kafka node, dead-letters every poison with its reason and commits
past every record.
"""

from __future__ import annotations

import math
import os
import re
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from kstrade.app import _isolated
from kstrade.bus import Bus, BusError, Output, Record, StageRunner
from kstrade.bus.topics import dlq_topic
from kstrade.codes import DeadLetter, MarketCode
from kstrade.config import Settings
from kstrade.ingest import synthetic
from kstrade.ingest.replay import ReplaySource
from kstrade.schemas import Codec
from kstrade.schemas import models as schema_models
from kstrade.services import STAGES, build, ensure_topics
from kstrade.stage import Stage

from .conftest import FAST_GROUP
from .helpers import embedded_pipeline

SYMBOLS = ["BTC-USD", "ETH-USD"]
UNKNOWN_SYMBOL = "ZZZ-USD"
#: Minutes replayed; poison goes in after POISON_AT of them (everything is warm by then).
MINUTES = 2 * 1440
POISON_AT = 2400
GIANT = 300 * 1024
#: Poison a stage lets through today (each one a bug, reported): (stage, kind) -> topic pattern.
#: Empty since issue 19: execution dead-letters a 1m candle whose symbol is not its topic's, and
#: signals an execution or P&L event of a symbol it does not trade (both used to let them by).
KNOWN_GAPS: dict[tuple[str, str], str] = {}
#: What a dead letter's code may be: a registered code (kstrade.codes).
DEAD_LETTER_CODES = {c.value.encode() for family in (DeadLetter, MarketCode) for c in family}


def _gap(stage: str, kind: str, topic: str) -> bool:
    pattern = KNOWN_GAPS.get((stage, kind))
    return pattern is not None and re.match(pattern, topic) is not None


PREDICTION = Codec(schema_models.Prediction).schema_name
KINDS = ("random", "garbage", "wrong_schema", "nan", "inf", "unknown_symbol", "giant")


def _frame() -> pl.DataFrame:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    frames = [synthetic.generate(s, start, MINUTES // 1440, 11) for s in SYMBOLS]  # SYNTHETIC
    frame = pl.concat(frames).sort(["timestamp", "symbol"]).drop("regime")
    return frame.with_columns(pl.col("timestamp").dt.epoch("ms").alias("open_time_ms"))


def _models() -> dict[str, type[schema_models.Message]]:
    """Message classes by schema name (the `schema` header)."""
    out: dict[str, type[schema_models.Message]] = {}
    for value in vars(schema_models).values():
        if isinstance(value, type) and issubclass(value, schema_models.Message) and value is not schema_models.Message:
            schema_file = getattr(value, "schema_file", None)
            if isinstance(schema_file, str):
                out[Codec(value).schema_name] = value
    return out


def _schema(record: Record | Sample) -> str:
    return (dict(record.headers).get("schema") or b"").decode()


def _everything(bus: Bus, group: str) -> list[Record]:
    consumer = bus.consumer(group)
    consumer.subscribe_pattern("^.*")
    out: list[Record] = []
    for _ in range(100_000):
        batch = consumer.poll(max_records=5000, timeout=0.0)
        if not batch:
            break
        out += batch
    consumer.close()
    return out


@dataclass(frozen=True)
class Sample:
    """A record to derive poison from (what `Codec.decode_record` reads)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    offset: int = 0


def _sample(r: Record) -> Sample:
    return Sample(r.topic, r.key, r.value, list(r.headers), r.offset)


def _synthesized(signal_record: Record) -> dict[str, Sample]:
    """Valid messages for the inputs a two-day replay leaves empty (no final signal, hence no
    trade, no operator): a final signal, an execution, a P&L event, an alert and a control command."""
    signal = Codec(schema_models.Signal).decode_record(signal_record)
    assert isinstance(signal, schema_models.Signal)
    ts, symbol, sid = signal.timestamp, signal.symbol, signal.signal_id
    final = signal.model_copy(update={"stage": schema_models.SignalStage.FINAL, "tier": schema_models.Tier.A})
    side = schema_models.Side.BUY if signal.direction is schema_models.SignalDirection.LONG else schema_models.Side.SELL
    execution = schema_models.Execution(
        timestamp=ts, signal_id=sid, order_id="o-1", execution_id="e-1", symbol=symbol, side=side,
        order_type=schema_models.OrderType.MARKET, quantity=0.5, price=None,
        status=schema_models.OrderStatus.FILLED, fill_price=signal.entry_price, slippage_bps=1.5,
        commission=0.25, latency_ms=3.0, session="paper",
    )  # fmt: skip
    pnl = schema_models.PnlEvent(
        timestamp=ts, signal_id=sid, order_id="o-1", symbol=symbol, side=side, quantity=0.5,
        entry_price=signal.entry_price, exit_price=signal.take_profit, realized_pnl=12.5, commission=0.25,
        currency="USD", balance=100_012.25,
    )  # fmt: skip
    alert = schema_models.Alert(
        timestamp=ts, severity=schema_models.Severity.WARNING, source="test", code="TEST", message="poison template"
    )
    control = schema_models.ControlCommand(
        timestamp=ts, command_id=sid, account="default", action=schema_models.ControlAction.HALT,
        issued_by="test", reason="poison template",
    )  # fmt: skip
    out = {}
    for topic, message in (("signals.final", final), ("trades.executions", execution), ("trades.pnl", pnl),
                           ("metrics.alerts", alert), ("control.execution", control)):  # fmt: skip
        codec = Codec(type(message))
        out[topic] = Sample(topic, symbol.encode(), codec.encode(message), list(codec.headers(1, "test")))
    return out


@dataclass
class Run:
    records: list[Record]
    stages: list[Stage]
    poisoned: dict[str, list[tuple[str, int, int]]]  # topic -> [(kind, partition, offset)]


def _readers(stages: list[Stage], topics: list[str]) -> dict[str, list[str]]:
    """Per topic, the stages that read it (the metrics collector's pattern included)."""
    readers: dict[str, list[str]] = defaultdict(list)
    for stage in stages:
        inputs = stage.inputs()
        for topic in topics:
            if (isinstance(inputs, str) and re.match(inputs, topic)) or (
                not isinstance(inputs, str) and topic in inputs
            ):
                readers[topic].append(stage.name)
    return readers


def _patch_float(template: Sample, codec: Codec, replacement: float) -> bytes | None:
    """The template's value with its first non-zero float field set to `replacement` in place
    (the codec refuses to encode NaN/inf, so the bytes are patched)."""
    assert template.value is not None
    message = codec.decode_record(template)
    candidates: list[float] = []
    for value in message.__dict__.values():
        if isinstance(value, float):
            candidates.append(value)
        elif isinstance(value, list):
            candidates += [v for v in value if isinstance(v, float)]
        elif hasattr(value, "__dict__"):
            candidates += [v for v in value.__dict__.values() if isinstance(v, float)]
    for value in candidates:
        if value != 0.0 and math.isfinite(value):
            packed = struct.pack("<d", value)
            if packed in template.value:
                return template.value.replace(packed, struct.pack("<d", replacement), 1)
    return None


def poison_for(
    topic: str, template: Sample, other: Sample, models: dict[str, type[Any]]
) -> Iterator[tuple[str, Output]]:
    """Every kind of poison for `topic`, built from a real record of it and one of another schema."""
    key, headers = template.key, list(template.headers)
    codec = Codec(models[_schema(template)])
    rng = os.urandom
    yield "random", Output(topic, rng(64), key=key, headers=[])
    yield "garbage", Output(topic, b"\x00" + rng(7), key=key, headers=headers)
    yield "wrong_schema", Output(topic, other.value, key=key, headers=list(other.headers))
    for kind, number in (("nan", math.nan), ("inf", math.inf)):
        patched = _patch_float(template, codec, number)
        if patched is not None:
            yield kind, Output(topic, patched, key=key, headers=headers)
    message = codec.decode_record(template)
    if isinstance(getattr(message, "symbol", None), str):
        renamed = message.model_copy(update={"symbol": UNKNOWN_SYMBOL})
        yield "unknown_symbol", Output(topic, codec.encode(renamed), key=UNKNOWN_SYMBOL.encode(), headers=headers)
    yield "giant", Output(topic, rng(GIANT), key=key, headers=headers)


def _settings(out: Path) -> Settings:
    return _isolated(Settings(symbols=SYMBOLS), out)


def _run(out: Path, frame: pl.DataFrame, templates: dict[str, tuple[Sample, Sample]] | None) -> Run:
    settings = _settings(out)
    bus, stages, pipeline = embedded_pipeline(settings)
    producer = bus.producer()
    source = ReplaySource(frame)
    source.clock = pipeline.clock
    models = _models()
    poisoned: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    batches = 0
    try:
        while (batch := source.next_batch()) is not None:
            for o in batch:
                producer.send(o.topic, o.value, key=o.key, headers=o.headers)
            producer.flush()
            pipeline.drain()
            batches += 1
            if templates is not None and batches == POISON_AT:
                for topic, (template, other) in sorted(templates.items()):
                    for kind, o in poison_for(topic, template, other, models):
                        before = bus.admin().end_offsets(topic)
                        producer.send(o.topic, o.value, key=o.key, headers=o.headers)
                        producer.flush()
                        after = bus.admin().end_offsets(topic)
                        [partition] = [p for p in range(len(after)) if after[p] != before[p]]
                        poisoned[topic].append((kind, partition, before[partition]))
                pipeline.drain()
        records = _everything(bus, "check")
    finally:
        for stage in stages:
            stage.close()
    return Run(records, stages, dict(poisoned))


@dataclass
class Runs:
    clean: Run
    poisoned: Run
    readers: dict[str, list[str]]
    templates: dict[str, tuple[Sample, Sample]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    frame = _frame()
    clean = _run(tmp_path_factory.mktemp("clean"), frame, None)
    by_topic: dict[str, list[Record]] = defaultdict(list)
    for r in clean.records:
        by_topic[r.topic].append(r)
    topics = sorted({*by_topic, "signals.final", "trades.executions", "trades.pnl", "metrics.alerts",
                     "control.execution"})  # fmt: skip
    readers = _readers(clean.stages, topics)
    samples = {t: _sample(rs[len(rs) // 2]) for t, rs in by_topic.items()}
    samples = {**_synthesized(by_topic["signals.filtered"][-1]), **samples}
    templates: dict[str, tuple[Sample, Sample]] = {}
    for topic in sorted(set(readers) | set(samples)):
        if topic.startswith("dlq.") or topic not in samples or topic not in readers:
            continue
        template = samples[topic]
        other = next(samples[t] for t in sorted(samples) if _schema(samples[t]) != _schema(template))
        templates[topic] = (template, other)
    poisoned = _run(tmp_path_factory.mktemp("poisoned"), frame, templates)
    return Runs(clean, poisoned, readers, templates)


def _key(r: Record) -> tuple[int, int]:
    return r.partition, r.offset


def _data_records(run: Run) -> dict[tuple[str, int], list[tuple[bytes | None, Any, list[Any]]]]:
    """Per (topic, partition), every record outside the DLQs and the metrics topics, poison removed."""
    skip = {(t, p, o) for t, items in run.poisoned.items() for _, p, o in items}
    out: dict[tuple[str, int], list[tuple[bytes | None, Any, list[Any]]]] = defaultdict(list)
    for r in run.records:
        if r.topic.startswith(("dlq.", "metrics.")) or (r.topic, r.partition, r.offset) in skip:
            continue
        value: Any = r.value
        if _schema(r) == PREDICTION:  # inference_time_ms is measured on the wall clock
            value = {**Codec(schema_models.Prediction).decode_record(r).model_dump(), "inference_time_ms": None}
        out[(r.topic, r.partition)].append((r.key, value, list(r.headers)))
    return dict(out)


def test_the_clean_replay_reaches_every_stage_and_dead_letters_nothing(runs: Runs) -> None:
    clean, readers = runs.clean, runs.readers
    topics = Counter(r.topic for r in clean.records)
    assert not [t for t in topics if t.startswith("dlq.")]
    for stage in ("features", "inference.lstm", "inference.transformer", "signals", "execution", "metrics"):
        assert any(stage in names for names in readers.values()), stage
    # every stage produced, so the poison of each input topic meets a warm stage
    for topic in ("features.aggregated.BTC-USD", "predictions.lstm.ETH-USD", "predictions.transformer", "signals.raw"):
        assert topics[topic] > 0, topic


def test_everything_but_the_poison_flows_on_unchanged(runs: Runs) -> None:
    clean, poisoned = runs.clean, runs.poisoned
    assert sum(len(v) for v in poisoned.poisoned.values()) >= 6 * len(poisoned.poisoned)
    before, after = _data_records(clean), _data_records(poisoned)
    assert sorted(before) == sorted(after)
    for tp in before:
        assert len(after[tp]) == len(before[tp]), tp  # nothing lost, nothing duplicated
        assert after[tp] == before[tp], tp  # nothing changed


def test_each_poison_lands_in_its_dlq_with_a_reason(runs: Runs) -> None:
    poisoned, readers = runs.poisoned, runs.readers
    letters: dict[tuple[str, int, int], list[dict[str, bytes]]] = defaultdict(list)
    for r in poisoned.records:
        if r.topic.startswith("dlq."):
            h = {k: v or b"" for k, v in r.headers}
            source = h["dlq.source.topic"].decode()
            assert r.topic == dlq_topic(source)
            letters[(source, int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))].append(h)
    expected = 0
    kinds: Counter[str] = Counter()
    for topic, items in poisoned.poisoned.items():
        for kind, partition, offset in items:
            owners = [s for s in readers[topic] if s != "metrics"]  # the observer dead-letters nothing
            got = letters.pop((topic, partition, offset), [])
            stages = sorted(h["dlq.stage"].decode() for h in got)
            gap = {s for s in owners if _gap(s, kind, topic)}
            assert len(stages) == len(set(stages)), (topic, kind, stages)  # once per stage
            assert set(owners) - gap <= set(stages) <= set(owners), (topic, kind, stages, owners)
            expected += len(stages)
            for h in got:
                assert h["dlq.error.code"] and h["dlq.error.message"], (topic, kind)
                assert h["dlq.error.code"] in DEAD_LETTER_CODES, (topic, kind, h["dlq.error.code"])
                if kind == "giant":
                    assert h["dlq.error.code"] == b"MESSAGE_TOO_LARGE"
            kinds[kind] += 1
    assert not letters, f"dead letters for records that were not poison: {sorted(letters)[:5]}"
    assert expected > 0 and set(kinds) == set(KINDS), kinds
    for stage in poisoned.stages:  # every input topic of every stage got its poison
        inputs = stage.inputs()
        if not isinstance(inputs, str):
            assert set(inputs) <= set(poisoned.poisoned), (stage.name, set(inputs) - set(poisoned.poisoned))


def test_the_metrics_observer_counts_the_poison_it_cannot_read(runs: Runs) -> None:
    clean, poisoned, readers = runs.clean, runs.poisoned, runs.readers
    [observer_clean] = [s for s in clean.stages if s.name == "metrics"]
    [observer] = [s for s in poisoned.stages if s.name == "metrics"]
    undecodable = sum(
        1
        for topic, items in poisoned.poisoned.items()
        for kind, _, _ in items
        if kind in ("random", "garbage", "wrong_schema") and "metrics" in readers[topic]
    )
    assert undecodable > 0
    assert _unreadable(observer) - _unreadable(observer_clean) >= undecodable


def _unreadable(stage: Stage) -> int:
    count = getattr(stage, "unreadable")  # noqa: B009 (the collector's counter; Stage does not declare it)
    assert isinstance(count, int)
    return count


# -- over the real broker --------------------------------------------------------------------------


def _dead_letters_for(
    bus: Bus, group: str, dlq_starts: dict[str, list[int]], wanted: int, stage: str, timeout: float = 60.0
) -> dict[tuple[str, int, int], list[dict[str, bytes]]]:
    """Dead letters written by `stage` since `dlq_starts`, by source record, once `wanted` arrived
    (then a quiet second to catch extras)."""
    consumer = bus.consumer(group, FAST_GROUP)
    consumer.commit([(t, p, o) for t, ends in dlq_starts.items() for p, o in enumerate(ends)])
    consumer.subscribe(sorted(dlq_starts))
    out: dict[tuple[str, int, int], list[dict[str, bytes]]] = defaultdict(list)
    found = 0
    deadline = time.monotonic() + timeout
    quiet_until: float | None = None
    while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
        for r in consumer.poll(max_records=500, timeout=0.2):
            h = {k: v or b"" for k, v in r.headers}
            if h.get("dlq.stage", b"").decode() != stage:
                continue
            source = (h["dlq.source.topic"].decode(), int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))
            out[source].append(h)
            found += 1
        if found >= wanted and quiet_until is None:
            quiet_until = time.monotonic() + 1.0
    consumer.close()
    return dict(out)


def _end_offsets(bus: Bus, topic: str, timeout: float = 30.0) -> list[int]:
    """End offsets, waiting out the leader elections of topics that were just created."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bus.admin().end_offsets(topic)
        except BusError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.kafka
@pytest.mark.parametrize("name", sorted(STAGES))
def test_poison_over_the_broker_lands_in_the_dlq_and_is_committed_past(
    name: str, runs: Runs, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The stage, in its own consumer group on a real broker: every poison on every topic it
    reads is dead-lettered once with its reason, and the group commits past all of it."""
    settings = _settings(tmp_path)
    (tmp_path / "state").mkdir()  # the metrics database lives there
    bus = Bus.kafka(kafka_bootstrap)
    ensure_topics(bus, settings)
    stage = build(name, settings, bus)
    topics = sorted(t for t in runs.templates if name in runs.readers[t])
    assert topics
    starts = {t: _end_offsets(bus, t) for t in topics}
    dlq_starts = {dlq_topic(t): _end_offsets(bus, dlq_topic(t)) for t in topics}
    consumer = bus.consumer(f"poison-{name}-{unique}", FAST_GROUP)
    consumer.commit([(t, p, o) for t, ends in starts.items() for p, o in enumerate(ends)])
    consumer.subscribe(topics)
    runner = StageRunner(
        consumer, bus.producer(), stage.handle, stage=stage.name, max_message_bytes=stage.max_message_bytes,
        poll_timeout=0.2, retained=stage.retained,
    )  # fmt: skip
    producer = bus.producer()
    models = _models()
    sent: list[tuple[str, str]] = []
    for topic in topics:
        template, other = runs.templates[topic]
        for kind, o in poison_for(topic, template, other, models):
            producer.send(o.topic, o.value, key=o.key, headers=o.headers)
            sent.append((topic, kind))
    producer.flush()
    ends = {t: _end_offsets(bus, t) for t in topics}
    assert sum(sum(ends[t]) - sum(starts[t]) for t in topics) == len(sent)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            runner.run_once()
            done = consumer.committed([(t, p) for t in topics for p in range(len(ends[t]))])
            if all((c or 0) >= ends[t][p] for t, p, c in done):
                break
        else:
            raise AssertionError(f"{name}: the group did not commit past the poison within 90 s")
    finally:
        consumer.close()
        stage.close()
    must = [(t, kind) for t, kind in sent if not _gap(name, kind, t)]
    wanted = 0 if name == "metrics" else len(must)
    letters = _dead_letters_for(bus, f"dlq-{name}-{unique}", dlq_starts, wanted, stage.name)
    got: Counter[tuple[str, str]] = Counter()
    for (topic, _, _), hs in letters.items():
        assert len(hs) == 1, (topic, hs)  # once
        h = hs[0]
        assert h["dlq.error.code"] and h["dlq.error.message"]
        got[(topic, h["dlq.error.code"].decode())] += 1
        _, partition, offset = source = (topic, int(h["dlq.source.partition"]), int(h["dlq.source.offset"]))
        assert starts[topic][partition] <= offset < ends[topic][partition], source  # a poison, not another record
    if name == "metrics":
        assert not letters  # the observer counts instead (asserted on the memory bus)
        return
    assert sum(got.values()) >= len(must), (name, got, must)
    assert sum(got.values()) <= len(sent), (name, got)
    for topic in topics:
        assert got[(topic, "MESSAGE_TOO_LARGE")] == 1, (topic, got)
