"""The collector's native core (`kstrade._native.MetricsCore`, rust/codec/src/metrics_core.rs)
against the Python it replaces: the collector's native path, batched and record by record,
and its Python path (`native = False`) publish the same records, write the same database
rows and leave the same counters, unreadable counts, Prometheus samples and state, on inputs
mixing well-formed records with malformed, old-version, non-finite, badly framed and
unknown-topic ones. And the core's latency windows and direction accuracy equal
`LatencyTracker` and `DirectionAccuracy` (kstrade/metrics/latency.py, drift.py) on random
streams."""

from __future__ import annotations

import math
import struct
import tempfile
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kstrade._native import MetricsCore
from kstrade.bus import Batch, Bus, Record
from kstrade.bus.dlq import DeadLetters
from kstrade.clock import EventClock
from kstrade.metrics import INPUTS, MetricsCollector
from kstrade.metrics.drift import CloseHistory, DirectionAccuracy, PageHinkley
from kstrade.metrics.latency import LatencyTracker
from kstrade.metrics.storage import MetricsStore
from kstrade.schemas import Codec

from .conftest import drain
from .helpers import polls_of
from .test_metrics_batch import NS, REFERENCE, SETTINGS, T0, _messages, _published, _state

#: A record as sent: (topic, value, key, headers, timestamp ms).
Sent = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]], int]
_NAN = struct.pack("<d", math.nan)


def _header(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, value if n == name else v) for n, v in headers]


def _get(headers: list[tuple[str, bytes]], name: str) -> bytes:
    return next(v for n, v in headers if n == name)


def _nan(value: bytes) -> bytes:
    """The first double the messages of `_messages` share (a probability of 0.6, a volume of
    1.0, an entry price of 100.0) made NaN: a body the codecs refuse."""
    for known in (0.6, 1.0, 100.0):
        packed = struct.pack("<d", known)
        if packed in value:
            return value.replace(packed, _NAN, 1)
    return value


def _signal_id(value: bytes, replacement: Callable[[bytes], bytes]) -> bytes:
    """A signal body with its canonical UUID string (36 characters) replaced, same length."""
    at = value.find(b"00000000-0000-0000-0000-")
    return value if at < 0 else value[:at] + replacement(value[at : at + 36]) + value[at + 36 :]


def _v1(sent: Sent) -> bytes | None:
    return (sent[1] or b"")[:-2] if sent[0].startswith("market.") else sent[1]


#: Ways a record can differ from a well-formed current one; each names a rule of the Python path.
MUTATIONS: list[Callable[[Sent], Sent]] = [
    lambda s: (s[0], _nan(s[1] or b""), s[2], s[3], s[4]),  # a non-finite double
    lambda s: (s[0], s[1], s[2], _header(s[3], "schema_version", b"1"), s[4]),  # an older version's header
    # a real v1 candle (v2 less its two trailing null unions); other types: an unknown version
    lambda s: (s[0], _v1(s), s[2], _header(s[3], "schema_version", b"1"), s[4]),
    lambda s: (s[0], s[1], s[2], _header(s[3], "schema_version", b"+" + _get(s[3], "schema_version")), s[4]),
    lambda s: (s[0], s[1], s[2], _header(s[3], "encoding", b"avro-confluent"), s[4]),  # bare body, wrong framing
    lambda s: (s[0], s[1], s[2], _header(s[3], "encoding", b""), s[4]),  # empty: Avro
    lambda s: (s[0], s[1], s[2], _header(s[3], "schema", b"kstrade.Nope"), s[4]),
    lambda s: (s[0], None, s[2], s[3], s[4]),  # no value
    lambda s: (s[0], s[1], s[2], [], s[4]),  # no headers
    lambda s: (s[0], s[1], s[2], _header(s[3], "origin_ns", b"+" + _get(s[3], "origin_ns")), s[4]),
    lambda s: (s[0], s[1], s[2], _header(s[3], "origin_ns", b"9" * 25), s[4]),  # beyond an i64
    lambda s: (s[0], s[1], s[2], _header(s[3], "stage", "étape".encode()), s[4]),
    lambda s: (s[0], (s[1] or b"")[:-1], s[2], s[3], s[4]),  # truncated
    lambda s: (s[0], (s[1] or b"") + b"\x00", s[2], s[3], s[4]),  # a trailing byte
    lambda s: ("market.ticks.BTC-USD", s[1], s[2], s[3], s[4]),  # a topic nothing else reads
    lambda s: ("dlq." + s[0], s[1], s[2], s[3], s[4]),
    lambda s: (s[0], _signal_id(s[1] or b"", lambda u: b"zzzzzzzz" + u[8:]), s[2], s[3], s[4]),  # no UUID
    lambda s: (s[0], _signal_id(s[1] or b"", lambda u: u.replace(b"-", b"0")), s[2], s[3], s[4]),  # 36 digits
    lambda s: (s[0], _signal_id(s[1] or b"", lambda u: u.upper()), s[2], s[3], s[4]),  # a UUID still
    lambda s: (s[0], (s[1] or b"").replace(b"\x0eBTC-USD", b"\x00", 1), s[2], s[3], s[4]),  # no symbol
    lambda s: s,  # repeated as it is
]


@cache
def _sent() -> tuple[Sent, ...]:
    """Twelve event minutes of well-formed records of every topic the collector reads."""
    out: list[Sent] = []
    for minute in range(12):
        origin_ns = int((T0 + timedelta(minutes=minute)).timestamp()) * NS
        for i, (topic, message, key, stage) in enumerate(_messages(minute)):
            codec = Codec(type(message))
            out.append((topic, codec.encode(message), key, codec.headers(origin_ns, stage), origin_ns // 10**6 + i))
    return tuple(out)


def _records(sent: list[Sent]) -> list[Record]:
    """The records as a consumer of the memory bus hands them out, in the order sent."""
    bus = Bus.memory()
    topics = sorted({s[0] for s in sent})
    bus.admin().create_topics([(t, 1, 1, {}) for t in topics])
    producer = bus.producer()
    for topic, value, key, headers, ms in sent:
        producer.send(topic, value, key=key, headers=headers, timestamp_ms=ms)
    producer.flush()
    reader = bus.consumer("corpus", {"auto.offset.reset": "earliest"})
    reader.subscribe_pattern(INPUTS)
    got = {(r.topic, r.offset): r for r in drain(reader, len(sent))}
    seen: dict[str, int] = {}
    ordered = []
    for topic, *_ in sent:
        ordered.append(got[(topic, seen.get(topic, 0))])
        seen[topic] = seen.get(topic, 0) + 1
    return ordered


def _collector(path: Path, *, native: bool) -> MetricsCollector:
    # one prediction in three stored: the sampled ones go through the Python path
    s = SETTINGS.model_copy(update={"prediction_sample_every": 3})
    collector = MetricsCollector(s, reference=REFERENCE, store=MetricsStore(f"sqlite:///{path}"))
    collector.clock = EventClock(int(T0.timestamp()) * NS)
    collector.native = native
    return collector


@settings(max_examples=40, deadline=None)
@given(
    changes=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, len(MUTATIONS) - 1)), max_size=60),
    sizes=st.lists(st.integers(1, 80), min_size=1, max_size=12),
)
def test_the_native_paths_and_the_python_path_agree(changes: list[tuple[int, int]], sizes: list[int]) -> None:
    sent = list(_sent())
    for at, mutation in changes:  # each change replaces a record, or adds its changed copy after it
        i = at % len(sent)
        changed = MUTATIONS[mutation](sent[i])
        if at % 2:
            sent[i] = changed
        else:
            sent.insert(i + 1, changed)
    records = _records(sent)
    polls = polls_of(records, sizes)
    with tempfile.TemporaryDirectory() as tmp:
        batched = _collector(Path(tmp) / "batched.db", native=True)
        one_by_one = _collector(Path(tmp) / "record.db", native=True)
        python = _collector(Path(tmp) / "python.db", native=False)
        collectors = (batched, one_by_one, python)
        dead_letters = DeadLetters(Bus.memory().producer(), "metrics")
        for i, poll in enumerate(polls):
            now = int((T0 + timedelta(minutes=4 * i)).timestamp()) * NS
            for c in collectors:
                c.clock.advance_to(now)  # type: ignore[attr-defined]
            outputs = [
                list(batched.handle_batch(Batch(poll, dead_letters))),
                [o for r in poll for o in one_by_one.handle(r)],
                list(python.handle_batch(Batch(poll, dead_letters))),
            ]
            outputs = [o + list(c.on_time(now)) for o, c in zip(outputs, collectors, strict=True)]
            assert _published(outputs[0]) == _published(outputs[1]) == _published(outputs[2])
        end = int((T0 + timedelta(hours=3)).timestamp()) * NS
        for c in collectors:
            c.clock.advance_to(end)  # type: ignore[attr-defined]
        finals = [_published(list(c.on_time(end))) for c in collectors]
        assert finals[0] == finals[1] == finals[2]
        assert dead_letters.sent == 0
        assert batched.unreadable == one_by_one.unreadable == python.unreadable
        states = [_state(c) for c in collectors]
        assert states[0] == states[1] == states[2]
        for c in collectors:
            c.close()


def test_the_corpus_exercises_both_paths() -> None:
    """The inputs above reach the native readers and the Python path: without a mutation every
    hot record is read natively and nothing is unreadable; each mutation of a hot record that
    the Python path refuses is counted unreadable by both paths."""
    records = _records(list(_sent()))
    with tempfile.TemporaryDirectory() as tmp:
        native, python = _collector(Path(tmp) / "n.db", native=True), _collector(Path(tmp) / "p.db", native=False)
        native.handle_batch(Batch(records, DeadLetters(Bus.memory().producer(), "metrics")))
        python.handle_batch(Batch(records, DeadLetters(Bus.memory().producer(), "metrics")))
        assert native.unreadable == python.unreadable == 0
        assert native._core.dump() == python._core.dump()
        assert native._predictions_seen == python._predictions_seen > 0
        rows = native.accuracy()
        assert rows == python.accuracy() and any(hits for _, hits, _ in rows.values())
        native.close()
        python.close()
    refused = 0
    for mutation in (0, 6, 7, 8, 12, 13, 19):  # NaN, wrong schema, no value/headers, truncated, trailing, no symbol
        prediction = next(s for s in _sent() if s[0].startswith("predictions."))
        records = _records([MUTATIONS[mutation](prediction)])
        with tempfile.TemporaryDirectory() as tmp:
            native = _collector(Path(tmp) / "n.db", native=True)
            python = _collector(Path(tmp) / "p.db", native=False)
            for c in (native, python):
                c.handle_batch(Batch(records, DeadLetters(Bus.memory().producer(), "metrics")))
            assert native.unreadable == python.unreadable == 1, mutation
            refused += 1
            native.close()
            python.close()
    assert refused == 7


def _core(*, max_events: int, window: int = 10) -> MetricsCore:
    return MetricsCore(
        headers=("origin_ns", "stage", "schema", "schema_version", "encoding"),
        max_plausible_ns=3_600 * NS, max_events=max_events, settle_ns=2 * NS, bar_ns=60 * NS, horizon_bars=1,
        flat_band=1e-4, window=window, delta=0.01, threshold=5.0, sample_every=None, candle=None, prediction=None,
        signal=None, final_stage=3,
    )  # fmt: skip


_STAGES = ["ingest", "features", "inference", "signals", "execution", "metrics", "zeta"]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.integers(0, 40),
                st.sampled_from(_STAGES),
                st.sampled_from([None, b"a", b"b"]),
                st.integers(-3_000_000, 5 * NS),
                st.sampled_from(["t1", "t2"]),
            ),
            st.integers(0, 30),  # a window taken at this many seconds
        ),
        max_size=120,
    ),
    max_events=st.integers(1, 8),
)
def test_the_core_latency_windows_equal_latency_tracker(steps: list[object], max_events: int) -> None:
    """Origin -> output histograms per (stage, topic) and the stage times of settled (or pushed
    out) events: the same summaries, in the same order, and the same implausible count."""
    core = _core(max_events=max_events)
    tracker = LatencyTracker(max_events=max_events)
    for topic in ("t1", "t2"):
        core.topic(topic, "timed")
    for step in steps:
        if isinstance(step, int):
            outputs, stages = tracker.take_window(step * NS)
            expected = (
                [(s, t, x.count, x.p50_ms, x.p95_ms, x.p99_ms, x.max_ms) for (s, t), x in outputs.items()],
                [(s, "*", x.count, x.p50_ms, x.p95_ms, x.p99_ms, x.max_ms) for s, x in stages.items()],
            )
            assert core.take_window(step * NS) == expected
        else:
            assert isinstance(step, tuple)
            origin_s, stage, key, latency_ns, topic = step
            origin_ns = origin_s * NS // 4
            timed = [(origin_ns, stage, key, origin_ns + latency_ns)]
            tracker.observe_run(topic, timed)
            core.observe_run(topic, timed)
    assert core.implausible == tracker.implausible


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("bar"),
                st.sampled_from(["BTC", "ETH"]),
                st.integers(0, 30),
                st.sampled_from([100.0, 100.005, 101.0, 99.0, 0.0, -1.0]),
            ),
            st.tuples(
                st.just("prediction"),
                st.sampled_from(["BTC", "ETH"]),
                st.integers(0, 30),
                st.sampled_from(["lstm", "transformer"]),
                st.sampled_from([-1, 0, 1]),
            ),
            st.just("emit"),
        ),
        max_size=150,
    )
)
def test_the_core_accuracy_equals_direction_accuracy(steps: list[tuple[object, ...] | str]) -> None:
    """Closes shared per symbol, predictions scored when their outcome bar arrives (in any
    order), the rolling window and Page-Hinkley: the collector's former Python bookkeeping."""
    bar_ns = 60 * NS
    core = _core(max_events=10, window=4)
    closes: dict[str, CloseHistory] = {}
    trackers: dict[tuple[str, str], DirectionAccuracy] = {}
    for step in steps:
        if step == "emit":
            expected = [
                (model, symbol, t.accuracy, len(t.hits), t.detector.statistic, t.detector.threshold, t.take_drift())
                for (model, symbol), t in sorted(trackers.items())
            ]
            assert core.accuracy(take=True) == expected
        elif step[0] == "bar":
            _, symbol, minute, close = step
            assert isinstance(symbol, str) and isinstance(minute, int) and isinstance(close, float)
            closes.setdefault(symbol, CloseHistory(bar_ns)).add(minute * bar_ns, close)
            for (_, tracked), t in trackers.items():
                if tracked == symbol:
                    t.score()
            core.add_bar(symbol, minute * bar_ns, close)
        else:
            _, symbol, minute, model, direction = step
            assert isinstance(symbol, str) and isinstance(model, str) and isinstance(minute, int)
            assert isinstance(direction, int)
            history = closes.setdefault(symbol, CloseHistory(bar_ns))
            t = trackers.get((model, symbol))
            if t is None:
                t = trackers[(model, symbol)] = DirectionAccuracy(
                    bar_ns=bar_ns, horizon_bars=1, flat_band=1e-4, window=4,
                    detector=PageHinkley(delta=0.01, threshold=5.0), closes=history,
                )  # fmt: skip
            t.prediction(minute * bar_ns, direction)
            core.add_prediction(model, symbol, minute * bar_ns, direction)
    assert core.predictions_seen == sum(1 for s in steps if s != "emit" and s[0] == "prediction")
