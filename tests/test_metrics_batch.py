"""The collector's batch path (`handle_batch`: a poll taken run by run of one topic) and its
record path (`handle`, what `Pipeline(batched=False)` calls) leave the collector in the same
state and publish the same records, whatever the batch boundaries, the order of the topics and
the unreadable records mixed in; and the database keeps the signal stages its settings name."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from kstrade._native import latency_headers
from kstrade.bus import Batch, Bus, Output, Record
from kstrade.bus.dlq import DeadLetters
from kstrade.bus.topics import (
    EXECUTIONS,
    METRICS_ALERTS,
    METRICS_INGEST_HEALTH,
    PNL,
    candles,
    dlq_topic,
    features_aggregated,
    predictions_lstm,
    signals,
)
from kstrade.clock import EventClock, WallClock
from kstrade.config import MetricsSettings
from kstrade.metrics import INPUTS, DriftReference, FeatureReference, MetricsCollector
from kstrade.metrics.collector import _origin_and_stage
from kstrade.metrics.storage import MetricsStore, schema
from kstrade.schemas import Alert, Candle, Codec, Execution, FeatureVector, Message, PnlEvent, Prediction, Signal
from kstrade.schemas.models import (
    IngestHealth,
    ModelType,
    OrderStatus,
    OrderType,
    PredictionOutput,
    Severity,
    Side,
    SignalDirection,
    SignalStage,
    Tier,
)

from .conftest import drain
from .helpers import polls_of

NS = 1_000_000_000
T0 = datetime(2026, 1, 5, tzinfo=UTC)
SETTINGS = MetricsSettings(prometheus_port=0, database_url="", lag_groups=[], replay_emit_interval_s=600,
                           psi_min_samples=10, psi_window=20, accuracy_window=10)  # fmt: skip
#: A raw signal's body that is no signal (with the headers of one): unreadable.
NOT_A_SIGNAL = b"\x00not a signal"
REFERENCE = DriftReference(features={"rsi_14": FeatureReference(edges=[30.0, 70.0], proportions=[0.2, 0.6, 0.2])})


def _signal(minute: int, stage: SignalStage, symbol: str) -> Signal:
    return Signal(timestamp=T0 + timedelta(minutes=minute), symbol=symbol, signal_id=UUID(int=minute),
                  stage=stage, direction=SignalDirection.LONG, confidence=0.5 + minute / 100,
                  tier=Tier.A if minute % 2 else Tier.B, entry_price=100.0, stop_loss=99.0, take_profit=102.0,
                  ttl_seconds=60)  # fmt: skip


def _messages(minute: int) -> list[tuple[str, Message, bytes | None, str]]:
    """What one event minute of a replay sends: (topic, message, key, stage)."""
    at = T0 + timedelta(minutes=minute)
    out: list[tuple[str, Message, bytes | None, str]] = []
    for symbol, base in (("BTC-USD", 100.0), ("ETH-USD", 10.0)):
        close = base + (minute * 7 % 5) - 2
        candle = Candle(timestamp=at, symbol=symbol, interval="1m", open=base, high=max(base, close) + 1,
                        low=min(base, close) - 1, close=close, volume=1.0, source="test")  # fmt: skip
        out.append((candles(symbol, "1m"), candle, symbol.encode(), "ingest"))
        vector = FeatureVector(timestamp=at, symbol=symbol, version="1", names=["rsi_14"], values=[minute * 13 % 100])
        out.append((features_aggregated(symbol), vector, symbol.encode(), "features"))
        prediction = Prediction(timestamp=at, symbol=symbol, model_type=ModelType.LSTM, model_version="1",
                                prediction=PredictionOutput(direction=("UP", "DOWN", "FLAT")[minute % 3],
                                                            probability=0.6, confidence=0.2),
                                inference_time_ms=1.0)  # fmt: skip
        out.append((predictions_lstm(symbol), prediction, symbol.encode(), "inference"))
    if minute % 5 == 0:
        five = Candle(timestamp=at, symbol="BTC-USD", interval="5m", open=1.0, high=1.0, low=1.0, close=1.0,
                      volume=1.0, source="test")  # fmt: skip
        out.append((candles("BTC-USD", "5m"), five, b"BTC-USD", "ingest"))
    last = SignalStage.FINAL if minute % 3 == 0 else SignalStage.FILTERED
    for stage in (SignalStage.RAW, SignalStage.CALIBRATED, last):
        out.append((signals(stage.value), _signal(minute, stage, "BTC-USD"), b"BTC-USD", "signals"))
    if minute % 3 == 0 and minute >= 3:  # the trade of the final signal three minutes before
        signal_id = UUID(int=minute - 3)
        fill = Execution(timestamp=at, signal_id=signal_id, order_id=f"o{minute}", execution_id=f"x{minute}",
                         symbol="BTC-USD", side=Side.BUY, order_type=OrderType.MARKET, quantity=1.0,
                         status=OrderStatus.FILLED, fill_price=100.0, slippage_bps=0.5, commission=0.1,
                         latency_ms=1.0, session="s")  # fmt: skip
        out.append((EXECUTIONS, fill, b"BTC-USD", "execution"))
        pnl = PnlEvent(timestamp=at, signal_id=signal_id, order_id=f"o{minute}", symbol="BTC-USD", side=Side.BUY,
                       quantity=1.0, entry_price=100.0, exit_price=100.0 + minute % 4 - 1.5,
                       realized_pnl=minute % 4 - 1.5, commission=0.1, currency="USD",
                       balance=10_000.0 + minute)  # fmt: skip
        out.append((PNL, pnl, b"BTC-USD", "execution"))
    if minute % 7 == 0:
        alert = Alert(timestamp=at, severity=Severity.WARNING, source="execution", code="DAILY_LOSS_NEAR",
                      message=f"minute {minute}")  # fmt: skip
        out.append((METRICS_ALERTS, alert, b"DAILY_LOSS_NEAR", "execution" if minute % 2 else "metrics"))
    return out


@cache
def _corpus() -> tuple[Record, ...]:
    """Twenty event minutes of everything the collector reads, with unreadable records among
    them (a body that is no message, no headers, an origin that is no integer), as a consumer
    of the memory bus hands them out."""
    bus = Bus.memory()
    producer = bus.producer()
    sent, topics = 0, set()

    def send(topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]], ms: int) -> None:
        nonlocal sent
        if topic not in topics:
            bus.admin().create_topics([(topic, 1, 1, {})])
            topics.add(topic)
        producer.send(topic, value, key=key, headers=headers, timestamp_ms=ms)
        sent += 1

    for minute in range(20):
        origin_ns = int((T0 + timedelta(minutes=minute)).timestamp()) * NS
        for i, (topic, message, key, stage) in enumerate(_messages(minute)):
            codec = Codec(type(message))
            send(topic, codec.encode(message), key, codec.headers(origin_ns, stage), origin_ns // 1_000_000 + i)
        ms = origin_ns // 1_000_000 + 50
        headers = Codec(Prediction).headers(origin_ns, "inference")
        if minute % 4 == 1:
            send(predictions_lstm("BTC-USD"), b"\x00not a prediction", b"BTC-USD", headers, ms)
            send(signals("final"), b"no headers at all", None, [], ms)
            send(signals("raw"), NOT_A_SIGNAL, b"BTC-USD", Codec(Signal).headers(origin_ns, "signals"), ms)
        if minute % 4 == 2:
            bad_origin = [(name, b"soon" if name == "origin_ns" else value) for name, value in headers]
            send(candles("ETH-USD", "1m"), b"", b"ETH-USD", bad_origin, ms)
            send(dlq_topic(PNL), b"a dead letter", None, [], ms)
            counters = dict.fromkeys(("messages", "gaps_detected", "gaps_backfilled", "backfilled_candles",
                                      "missing_minutes", "incomplete_bars", "duplicates", "rejected",
                                      "malformed_messages", "unknown_channels", "rate_limited", "cross_checked",
                                      "cross_check_mismatches"), 0)  # fmt: skip
            health = IngestHealth(timestamp=T0 + timedelta(minutes=minute), source="coinbase", symbols=["BTC-USD"],
                                  started=T0, last_message_age_s=1.0, reconnects=minute, candles_produced=minute,
                                  **counters)  # fmt: skip
            codec = Codec(IngestHealth)
            send(METRICS_INGEST_HEALTH, codec.encode(health), b"coinbase", codec.headers(origin_ns, "ingest"), ms)
            send(METRICS_INGEST_HEALTH, b"not a report", None, [], ms)
    producer.flush()
    reader = bus.consumer("corpus", {"auto.offset.reset": "earliest"})
    reader.subscribe_pattern(INPUTS)
    return tuple(drain(reader, sent))


def _collector(store_dir: Path, name: str) -> MetricsCollector:
    collector = MetricsCollector(SETTINGS, reference=REFERENCE, store=MetricsStore(f"sqlite:///{store_dir / name}"))
    collector.clock = EventClock(int(T0.timestamp()) * NS)
    return collector


def _published(outputs: list[Output]) -> list[tuple[str, bytes | None, bytes | None, list[Any]]]:
    return [(o.topic, o.key, o.value, list(o.headers)) for o in outputs]


def _state(collector: MetricsCollector) -> dict[str, Any]:
    """What the records left in the collector: counters, latency windows, drift, trading
    performance, account, ingest health, the rows written and the Prometheus samples."""
    store = collector.store
    assert store is not None and collector.psi is not None
    store.flush()
    exported = [line for line in generate_latest(collector.exporter.registry).decode().splitlines()
                if "_created" not in line]  # fmt: skip
    return {
        "counts": collector.counts, "unexported": collector._unexported, "unreadable": collector.unreadable,
        # the native core's state: counts, latency windows and events, closes, direction accuracy
        "core": collector._core.dump(), "psi": collector.psi.report(), "tiers": collector.tiers.tiers(),
        "performance": [w.snapshot(collector.clock.now_ns()) for w in collector.performances.values()],
        "account": (collector.account.positions_reply(), collector.account.daily_reply(collector.clock.now_ns())),
        "ingest": collector.ingest_health, "seen": (collector._predictions_seen, collector._saw_trades),
        "last_candle": collector._last_candle_ns, "rows": {t: store.rows(t) for t in schema.tables},
        "exported": exported,
    }  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(range(40)), sizes=st.lists(st.integers(1, 60), min_size=1, max_size=30))
def test_the_batch_path_and_the_record_path_agree(order: list[int], sizes: list[int]) -> None:
    records = list(_corpus())
    # Shuffle blocks of the corpus (whole topics' runs move, single records too), then cut it
    # into polls of the drawn sizes (the last one takes the rest).
    block = -(-len(records) // len(order))
    records = [r for b in order for r in records[b * block : (b + 1) * block]]
    polls = polls_of(records, sizes)
    with tempfile.TemporaryDirectory() as tmp:
        by_record, by_batch = _collector(Path(tmp), "record.db"), _collector(Path(tmp), "batch.db")
        # the Python path (no native reading): the reference both native paths must equal
        by_python = _collector(Path(tmp), "python.db")
        by_python.native = False
        dead_letters = DeadLetters(Bus.memory().producer(), "metrics")
        for i, poll in enumerate(polls):
            now = int((T0 + timedelta(minutes=3 * i)).timestamp()) * NS
            for collector in (by_record, by_batch, by_python):
                collector.clock.advance_to(now)  # type: ignore[attr-defined]
            one = [o for r in poll for o in by_record.handle(r)]
            many = list(by_batch.handle_batch(Batch(poll, dead_letters)))
            python = list(by_python.handle_batch(Batch(poll, dead_letters)))
            assert _published(one) == _published(many) == _published(python)
            ticks = [_published(list(c.on_time(now))) for c in (by_record, by_batch, by_python)]
            assert ticks[0] == ticks[1] == ticks[2]
        assert dead_letters.sent == 0
        assert by_record.unreadable == by_batch.unreadable == by_python.unreadable == 25
        assert _state(by_record) == _state(by_batch) == _state(by_python)
        by_record.close()
        by_batch.close()
        by_python.close()


def test_the_database_keeps_the_signal_stages_its_settings_name(tmp_path: Path) -> None:
    """Live every stage by default; a replay (the event clock) only the final signals, unless
    its setting names more. What is counted unreadable (a raw signal's bad body) is the same
    whatever is kept."""
    records = [r for r in _corpus() if r.topic.startswith("signals.") and r.headers]
    readable = [r for r in records if r.value != NOT_A_SIGNAL]
    expected = {stage: sum(1 for r in readable if r.topic == signals(stage)) for stage in ("raw", "filtered", "final")}
    assert min(expected.values()) > 0

    def stored(settings: MetricsSettings, clock: EventClock | WallClock, name: str) -> dict[str, int]:
        store = MetricsStore(f"sqlite:///{tmp_path / name}")
        collector = MetricsCollector(settings, store=store)
        collector.clock = clock
        collector.handle_batch(Batch(records, DeadLetters(Bus.memory().producer(), "metrics")))
        collector.close()
        assert collector.unreadable == 5  # the raw signals that are no signal
        rows: dict[str, int] = {}
        for row in MetricsStore(f"sqlite:///{tmp_path / name}").rows("signals"):
            rows[row["stage"]] = rows.get(row["stage"], 0) + 1
        return rows

    assert stored(SETTINGS, WallClock(), "live.db") == {**expected, "calibrated": expected["raw"]}
    assert stored(SETTINGS, EventClock(), "replay.db") == {"final": expected["final"]}
    more = SETTINGS.model_copy(update={"replay_stored_signal_stages": ["raw", "final"]})
    assert stored(more, EventClock(), "more.db") == {"raw": expected["raw"], "final": expected["final"]}
    fewer = SETTINGS.model_copy(update={"stored_signal_stages": []})
    assert stored(fewer, WallClock(), "fewer.db") == {}


@settings(max_examples=25, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 10**20).map(lambda n: str(n).encode()), st.binary(max_size=6),
                      st.sampled_from([b" 12", b"+7", b"1_000", b"-3", b"\xd9\xa3", b"0012"])),
            st.one_of(st.none(), st.sampled_from([b"ingest", b"signals", b""]), st.binary(max_size=4)),
        ),
        min_size=1, max_size=20,
    )
)  # fmt: skip
def test_the_native_header_read_agrees_with_python(headers: list[tuple[bytes | None, bytes | None]]) -> None:
    """`latency_headers` reads what `_origin_and_stage` reads, the same; what it leaves (None)
    is left to that function, so a record is unreadable exactly where it always was."""
    bus = Bus.memory()
    bus.admin().create_topics([("t", 1, 1, {})])
    producer = bus.producer()
    for i, (origin, stage) in enumerate(headers):
        named = [(n, v) for n, v in (("origin_ns", origin), ("stage", stage)) if v is not None]
        producer.send("t", b"", key=str(i).encode(), headers=named, timestamp_ms=1_000 + i)
    producer.flush()
    reader = bus.consumer("r", {"auto.offset.reset": "earliest"})
    reader.subscribe(["t"])
    records = drain(reader, len(headers))
    for record, native in zip(records, latency_headers(records, "origin_ns", "stage"), strict=True):
        try:
            python: tuple[int, str] | None = _origin_and_stage(record)
        except Exception:
            python = None
        origin, stage = record.header("origin_ns") or b"", record.header("stage")
        if native is None:  # left to Python: only what is not plain (or unreadable)
            assert python is None or not (origin.isdigit() and origin.isascii() and len(origin) <= 19)
        else:
            assert python is not None and native == (*python, record.key, record.timestamp_ms * 1_000_000 + 500_000)
        if origin.isdigit() and origin.isascii() and len(origin) <= 19 and stage is not None and stage.isascii():
            assert native is not None  # an epoch nanosecond has 19 digits: read natively
