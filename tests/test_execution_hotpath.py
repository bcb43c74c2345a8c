"""The execution stage's per-candle path, made cheap without changing what it does: the guard is
saved only when what a restart restores changes, a candle is decoded without the model when it
certainly validates, a flat paper account is observed once per candle, the Prague day rolls
without a time zone conversion per event, and the UNCERTAIN scan needs no query while there are
none. Each is checked against the behaviour it replaces."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kstrade.bus.topics import METRICS_ALERTS, PNL, candles, dlq_topic
from kstrade.config import GuardrailSettings
from kstrade.execution import ExecutionStage, JournalState, OrderJournal, PaperBroker
from kstrade.execution.guardrails import AccountGuard, DailyLossGuard
from kstrade.execution.trading_day import trading_day
from kstrade.schemas import Codec
from kstrade.schemas.models import Candle
from tests.test_execution_stage import T0, Harness, ns, settings

#: The current candle schema version, as the `schema_version` header carries it.
_VERSION = str(Codec(Candle).version).encode()

#: Prague midnight between Monday 5 and Tuesday 6 January 2026 (CET, UTC+1).
MIDNIGHT = datetime(2026, 1, 5, 23, 0, tzinfo=UTC)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "orders.sqlite3")


def dead_letters(h: Harness, topic: str) -> list[Any]:
    reader = h.bus.consumer("test-dlq-reader")
    reader.subscribe([dlq_topic(topic)])
    return list(reader.poll(max_records=1000, timeout=0.0))


def every_event(guard: AccountGuard) -> tuple[Any, ...]:
    """The save rule before: the whole snapshot, so a save on every event (last_seen_ns moves)."""
    return (json.dumps(guard.snapshot(), sort_keys=True),)


def minutes(h: Harness, start: datetime, end: datetime, price: float = 50_000) -> None:
    t = start
    while t <= end:
        h.candle(t, price, price, price, price)
        t += timedelta(minutes=1)


def alerts(h: Harness) -> list[tuple[str, str]]:
    return [(a.code, a.message) for a in h.read().get(METRICS_ALERTS, [])]


def scenario(path: Path, crash: datetime, restart: datetime, monkeypatch: pytest.MonkeyPatch, old: bool) -> Any:
    """A losing trade (a daily halt), a quiet evening, a crash at `crash`, a restart at
    `restart` over the same journal and broker, and an hour more. Returns the alerts after the
    restart, the restored guard's snapshot and its state, and the snapshot an hour later."""
    with monkeypatch.context() as m:
        if old:
            m.setattr(AccountGuard, "durable_key", every_event)
        cfg = settings(max_daily_loss_pct=1.0, max_open_positions=5)
        h = Harness(path, cfg)
        h.candle(T0, 50_000, 50_000, 50_000, 50_000)
        h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
        h.candle(T0 + timedelta(minutes=1), 48_500, 48_600, 48_400, 48_500)  # gap through the stop: halted
        assert h.broker.sent == 1
        minutes(h, crash - timedelta(minutes=20), crash, 48_500)
        broker = h.broker
        h.journal.close()  # the process dies: nothing else is written
        again = Harness(path, cfg, broker)
        guard = again.stage.guard  # restored from the journal
        restored = (guard.snapshot(), guard.state)
        minutes(again, restart, restart + timedelta(hours=1), 48_500)
        out = (alerts(again), restored, again.stage.guard.snapshot(), again.stage.guard.state)
        again.journal.close()
        return out


@pytest.mark.parametrize(
    "crash",
    [MIDNIGHT - timedelta(minutes=10), MIDNIGHT - timedelta(minutes=5), MIDNIGHT - timedelta(minutes=2)],
    ids=["23:50", "23:55", "23:58"],
)
@pytest.mark.parametrize("restart_after", [timedelta(minutes=1), timedelta(minutes=30), timedelta(days=1)])
def test_a_restart_restores_the_guard_exactly_as_when_it_was_saved_on_every_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: datetime, restart_after: timedelta
) -> None:
    restart = crash + restart_after
    new = scenario(tmp_path / "new.sqlite3", crash, restart, monkeypatch, old=False)
    old = scenario(tmp_path / "old.sqlite3", crash, restart, monkeypatch, old=True)
    new_alerts, (new_restored, new_state), new_later, new_later_state = new
    old_alerts, (old_restored, old_state), old_later, old_later_state = old
    # Loss floors, trading days, daily profits, halts and the state: restored the same.
    assert {k: v for k, v in new_restored.items() if k != "last_seen_ns"} == {
        k: v for k, v in old_restored.items() if k != "last_seen_ns"
    }
    assert new_restored["trading_days"] == ["2026-01-05"] and new_restored["halted_until_ns"] == ns(MIDNIGHT)
    assert new_state is old_state
    # ... and they behave the same from there: the same alerts (DAY_START_LATE or not), the same guard.
    assert new_alerts == old_alerts
    assert new_later == old_later and new_later_state is old_later_state
    late = any(code == "DAY_START_LATE" for code, _ in new_alerts)
    # late when the first event of the new day came after a gap over its midnight of more than 5 minutes
    assert late == (restart > MIDNIGHT and crash < MIDNIGHT - timedelta(minutes=5))


def test_the_guard_is_written_when_it_changes_not_every_minute(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3")
    writes: list[dict[str, Any]] = []
    save = h.journal.save_guard

    def counted(data: dict[str, Any]) -> None:
        writes.append(data)
        save(data)

    h.journal.save_guard = counted  # type: ignore[method-assign]
    minutes(h, T0, T0 + timedelta(days=2))  # 2 881 candles over two Prague midnights
    # the first event, the last 5 minutes before each midnight, each new day
    assert len(writes) == 5
    assert [w["day"] for w in writes] == ["2026-01-05", "2026-01-05", "2026-01-06", "2026-01-06", "2026-01-07"]
    h.signal(T0 + timedelta(days=2, seconds=1), 50_000, 49_000, 52_000)
    assert h.broker.sent == 1
    assert len(writes) == 5  # the opening is saved at the next observation, as it always was
    h.candle(T0 + timedelta(days=2, minutes=1), 50_000, 50_000, 50_000, 50_000)
    assert len(writes) == 6 and writes[-1]["trading_days"] == ["2026-01-07"]
    assert h.journal.load_guard() == writes[-1]


def test_a_flat_account_is_observed_once_per_candle_an_open_one_twice(h: Harness) -> None:
    seen: list[int] = []
    account = h.broker.account

    def counted(now: int) -> Any:
        seen.append(now)
        return account(now)

    h.broker.account = counted  # type: ignore[method-assign]
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    assert len(seen) == 1
    h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
    seen.clear()
    h.candle(T0 + timedelta(minutes=1), 50_100, 50_200, 50_000, 50_100)
    assert len(seen) == 2  # marked: equity moved, observed again
    seen.clear()
    h.candle(T0 + timedelta(minutes=2), 52_500, 52_500, 52_500, 52_500)  # the target: closed
    assert len(seen) == 2 and len(h.read()[PNL]) == 1


def bad_values() -> list[tuple[str, dict[str, Any]]]:
    good = {
        "timestamp": ns(T0) // 1000, "symbol": "BTC-USD", "interval": "1m", "open": 100.0, "high": 101.0,
        "low": 99.0, "close": 100.5, "volume": 1.0, "source": "test",
    }  # fmt: skip
    return [
        ("low above the open", {**good, "low": 100.2}),
        ("high below the close", {**good, "high": 100.4}),
        ("negative volume", {**good, "volume": -1.0}),
        ("empty symbol", {**good, "symbol": ""}),
        ("unknown interval", {**good, "interval": "2m"}),
        ("timestamp beyond datetime", {**good, "timestamp": 2**62}),
    ]


def model_path(stage: ExecutionStage, record: Any) -> tuple[str, float, float, float, float, int]:
    """How the stage read a candle before: through the model, then the headers again."""
    candle = stage.decode(record, Candle)
    return candle.symbol, candle.open, candle.high, candle.low, candle.close, stage.origin_ns(record)


def dead_lettered(
    path: Path, records: list[tuple[bytes, list[tuple[str, bytes]]]], monkeypatch: pytest.MonkeyPatch, old: bool
) -> list[list[tuple[str, bytes | None]]]:
    """The dlq.* headers (what went wrong, where) of each of `records` sent to a fresh stage."""
    with monkeypatch.context() as m:
        if old:
            m.setattr(ExecutionStage, "_candle", model_path)
        h = Harness(path)
        topic = candles("BTC-USD", "1m")
        for body, headers in records:
            h.producer.send(topic, body, key=b"BTC-USD", headers=headers)
        h.producer.flush()
        h.pipeline.drain()
        assert h.broker.prices == {}  # nothing was marked
        h.candle(T0 + timedelta(minutes=1), 50_000, 50_000, 50_000, 50_000)  # still alive
        assert h.broker.prices == {"BTC-USD": 50_000}
        h.journal.close()
        return [[(k, v) for k, v in r.headers if k.startswith("dlq.") and "time" not in k]
                for r in dead_letters(h, topic)]  # fmt: skip


@pytest.mark.parametrize(("why", "value"), bad_values(), ids=[w for w, _ in bad_values()])
def test_a_bad_candle_is_dead_lettered_with_the_models_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str, value: dict[str, Any]
) -> None:
    codec = Codec(Candle)
    records = [(codec.encode_value(value), codec.headers(ns(T0), "test"))]
    new = dead_lettered(tmp_path / "new.sqlite3", records, monkeypatch, old=False)
    old = dead_lettered(tmp_path / "old.sqlite3", records, monkeypatch, old=True)
    assert len(new) == 1 and dict(new[0]).get("dlq.error.code")
    assert new == old


def test_bad_headers_and_foreign_records_are_dead_lettered_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = Codec(Candle)
    good = Candle(timestamp=T0, symbol="BTC-USD", interval="1m", open=1, high=1, low=1, close=1, volume=0,
                  source="test")  # fmt: skip
    body = codec.encode(good)
    cases = [
        [("schema", b"kstrade.Candle"), ("schema_version", b"1"), ("stage", b"test")],  # no origin_ns
        [("schema", b"kstrade.Candle"), ("schema_version", b"x"), ("origin_ns", b"1"), ("stage", b"test")],
        [("schema", b"kstrade.Signal"), ("schema_version", b"1"), ("origin_ns", b"1"), ("stage", b"test")],
        [("schema", b"kstrade.Candle"), ("schema_version", b"99"), ("origin_ns", b"1"), ("stage", b"test")],
        [
            ("schema", b"kstrade.Candle"),
            ("schema_version", b"1"),
            ("origin_ns", b"1"),
            ("stage", b"t"),
            ("encoding", b"json"),
        ],
        [("schema", b"kstrade.Candle"), ("schema_version", b"1"), ("origin_ns", b"1"), ("stage", b"t\xe9")],
    ]
    records = [(body, headers) for headers in cases] + [(b"\x02garbage", codec.headers(1, "test"))]
    new = dead_lettered(tmp_path / "new.sqlite3", records, monkeypatch, old=False)
    old = dead_lettered(tmp_path / "old.sqlite3", records, monkeypatch, old=True)
    codes = [dict(r).get("dlq.error.code") for r in new]
    assert codes == [b"MISSING_HEADER", b"BAD_HEADER", b"SCHEMA_MISMATCH", b"UNKNOWN_SCHEMA_VERSION",
                     b"FORMAT_MISMATCH", b"BAD_HEADER", b"MALFORMED"], codes  # fmt: skip
    assert new == old


def test_the_fast_candle_path_reads_what_the_model_reads(h: Harness) -> None:
    codec = Codec(Candle)
    topic = candles("BTC-USD", "1m")
    for i, (o, hi, lo, c, v) in enumerate([(1.0, 2.0, 0.5, 1.5, 0.0), (3e-9, 3e-9, 3e-9, 3e-9, 1e300),
                                           (-5.0, -1.0, -7.25, -2.0, 2.5)]):  # fmt: skip
        candle = Candle(timestamp=T0 + timedelta(minutes=i), symbol="BTC-USD", interval="1m", open=o, high=hi,
                        low=lo, close=c, volume=v, source="test")  # fmt: skip
        h.producer.send(topic, codec.encode(candle), key=b"BTC-USD", headers=codec.headers(1234 + i, "test"))
    h.producer.flush()
    records = h.bus.consumer("peek")
    records.subscribe([topic])
    got = records.poll(max_records=10, timeout=0.0)
    assert len(got) == 3
    for r in got:
        model = h.stage.decode(r, Candle)
        fast = h.stage._candle(r)
        assert fast == (model.symbol, model.open, model.high, model.low, model.close, h.stage.origin_ns(r))
        assert all(type(x) is float for x in fast[1:5])


def test_the_day_rolls_exactly_at_prague_midnight_across_daylight_saving(tmp_path: Path) -> None:
    rules = GuardrailSettings()
    for day in (date(2026, 3, 28), date(2026, 10, 24), date(2026, 12, 31)):
        start = ns(datetime(day.year, day.month, day.day, tzinfo=UTC))
        daily = DailyLossGuard(rules, start)
        reference = trading_day(start)
        for step in range(0, 3 * 86_400, 97):
            now = start + step * 1_000_000_000 + (step % 3 - 1)  # around whole seconds too
            today = trading_day(now)
            assert daily.roll(now, 1.0) == (today != reference), (day, step)
            assert daily.day == today
            reference = today
        for t in (start - 1, start + 10**15, start):  # back and forth
            today = trading_day(t)
            assert daily.roll(t, 1.0) == (today != daily.day) or daily.day == today
            assert daily.day == today


def test_the_uncertain_index_follows_the_journal_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = OrderJournal(path)
    assert journal.in_state(JournalState.UNCERTAIN) == []
    journal.record("s1", "ks-1", JournalState.SUBMITTING, "BTC-USD", 1)
    journal.record("s2", "ks-2", JournalState.SUBMITTING, "BTC-USD", 2)
    journal.record("s1", "ks-1", JournalState.UNCERTAIN, "BTC-USD", 3, reason="TIMEOUT")
    journal.record("s2", "ks-2", JournalState.UNCERTAIN, "BTC-USD", 4, reason="TIMEOUT")
    assert [e.signal_id for e in journal.in_state(JournalState.UNCERTAIN)] == ["s1", "s2"]
    journal.close()  # a crash: the next process finds them
    journal = OrderJournal(path)
    assert [e.signal_id for e in journal.in_state(JournalState.UNCERTAIN)] == ["s1", "s2"]
    journal.record("s1", "ks-1", JournalState.FILLED, "BTC-USD", 5)
    assert [e.signal_id for e in journal.in_state(JournalState.UNCERTAIN)] == ["s2"]
    journal.record("s2", "ks-2", JournalState.REJECTED, "BTC-USD", 6, reason="NEVER_CONFIRMED")
    assert journal.in_state(JournalState.UNCERTAIN) == []
    assert [e.signal_id for e in journal.in_state(JournalState.FILLED)] == ["s1"]
    journal.close()


def test_an_uncertain_order_found_after_a_restart_is_reconciled(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    h = Harness(path)
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    sig = h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
    assert h.broker.sent == 1
    entry = h.journal.get(str(sig.signal_id))
    assert entry is not None and entry.state is JournalState.FILLED
    # pretend the answer never came back before a crash: UNCERTAIN in the journal
    h.journal.record(entry.signal_id, entry.client_order_id, JournalState.UNCERTAIN, "BTC-USD", ns(T0))
    broker: PaperBroker = h.broker
    h.journal.close()
    again = Harness(path, broker=broker)
    again.at(T0 + timedelta(seconds=30))
    again.pipeline.step()
    after = again.journal.get(str(sig.signal_id))
    assert after is not None and after.state is JournalState.FILLED
    assert broker.sent == 1


@pytest.mark.parametrize(
    "headers",
    [
        [("schema", b"kstrade.Candle"), ("schema_version", _VERSION), ("origin_ns", b"0042"), ("stage", b"t"),
         ("encoding", b"avro")],
        [("schema", b"kstrade.Candle"), ("schema_version", _VERSION), ("origin_ns", b"-5"), ("stage", b"t"),
         ("encoding", b"avro")],
        [("schema", b"kstrade.Candle"), ("schema_version", _VERSION), ("origin_ns", b" 7 "), ("stage", b"t"),
         ("encoding", b"avro")],
        [("schema", b"kstrade.Candle"), ("schema_version", _VERSION), ("origin_ns", b"9"), ("stage", b"t")],
        [("schema", b"kstrade.Candle"), ("schema_version", _VERSION), ("origin_ns", b"9"), ("stage", b"t"),
         ("encoding", b"avro"), ("origin_ns", b"10")],
        [("origin_ns", b"3"), ("schema", b"kstrade.Candle"), ("schema_version", _VERSION), ("stage", b"t"),
         ("encoding", b"avro")],
    ],
)  # fmt: skip
def test_the_fast_header_path_reads_what_the_headers_say(h: Harness, headers: list[tuple[str, bytes]]) -> None:
    codec = Codec(Candle)
    topic = candles("BTC-USD", "1m")
    candle = Candle(timestamp=T0, symbol="BTC-USD", interval="1m", open=1, high=2, low=0.5, close=1.5, volume=1,
                    source="test")  # fmt: skip
    h.producer.send(topic, codec.encode(candle), key=b"BTC-USD", headers=headers)
    h.producer.flush()
    records = h.bus.consumer("peek")
    records.subscribe([topic])
    [r] = records.poll(max_records=10, timeout=0.0)
    assert h.stage._candle(r) == model_path(h.stage, r)
