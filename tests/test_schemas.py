"""The schemas themselves: they parse, the pydantic models mirror them, every message type
round-trips in every format, and each schema stays FULL compatible with its released version."""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args
from uuid import uuid4

import fastavro
import pytest

from kstrade.bus import Bus
from kstrade.bus.dlq import DeadLetters
from kstrade.schemas import MODELS, Codec, CodecError, DeadLetter
from kstrade.schemas import codec as codec_module
from kstrade.schemas.evolution import can_read, incompatibilities
from kstrade.schemas.models import DeadLetterHeader, PredictionOutput

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
NAMES = sorted(p.stem for p in SCHEMAS.glob("*.avsc"))
T0 = datetime(2025, 11, 10, 16, 30, 5, 123456, tzinfo=UTC)


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def test_one_schema_per_message_type_of_the_design() -> None:
    assert (
        set(NAMES)
        == set(MODELS)
        == {
            "candle",
            "feature_vector",
            "prediction",
            "signal",
            "order",
            "execution",
            "pnl_event",
            "performance_metrics",
            "model_drift",
            "latency",
            "alert",
            "dead_letter",
            "ingest_health",
            "control_command",
        }
    )


@pytest.mark.parametrize("name", NAMES)
def test_schema_parses_and_follows_the_conventions(name: str) -> None:
    s = load(SCHEMAS / f"{name}.avsc")
    fastavro.parse_schema(s)
    assert s["namespace"] == "kstrade" and isinstance(s["version"], int) and s["doc"]
    assert s["fields"][0]["name"] == "timestamp"
    assert s["fields"][0]["type"] == {"type": "long", "logicalType": "timestamp-micros"}


def _nullable(t: Any) -> bool:
    return isinstance(t, list) and "null" in t


@pytest.mark.parametrize("name", NAMES)
def test_model_mirrors_the_schema(name: str) -> None:
    s = load(SCHEMAS / f"{name}.avsc")
    model = MODELS[name]
    assert list(model.model_fields) == [f["name"] for f in s["fields"]], "same fields, same order"
    for f in s["fields"]:
        mf = model.model_fields[f["name"]]
        if _nullable(f["type"]):
            assert type(None) in get_args(mf.annotation), f"{name}.{f['name']} must be optional"
        assert mf.is_required() == ("default" not in f), f"{name}.{f['name']}: required differs"
        enum = f["type"] if isinstance(f["type"], dict) and f["type"].get("type") == "enum" else None
        if enum:
            assert [e.value for e in mf.annotation] == enum["symbols"], f"{name}.{f['name']} symbols"  # type: ignore[union-attr]


def samples() -> dict[str, Any]:
    sid = uuid4()
    return {
        "candle": dict(
            symbol="ETH-USD",
            interval="15m",
            open=3000.5,
            high=3010,
            low=2990,
            close=3001,
            volume=12.5,
            source="aggregated",
            minutes=12,  # an incomplete 15m bar
        ),
        "feature_vector": dict(symbol="ETH-USD", version="v2.1", names=["rsi_14", "macd_signal"], values=[55.5, -0.25]),
        "prediction": dict(
            symbol="ETH-USD",
            model_type="ensemble",
            model_version="abc",
            prediction=PredictionOutput(direction="UP", probability=0.61, confidence=0.55),
            inference_time_ms=3.25,
        ),
        "signal": dict(
            symbol="ETH-USD",
            signal_id=sid,
            stage="raw",
            direction="SHORT",
            confidence=0.6,
            entry_price=3000,
            stop_loss=3050,
            take_profit=2900,
            ttl_seconds=300,
        ),
        "order": dict(
            signal_id=sid,
            order_id="mt5-12345",
            symbol="ETH-USD",
            side="SELL",
            order_type="MARKET",
            quantity=0.5,
            price=3000,
            stop_loss=3050,
            status="PENDING",
            session="ny",
        ),
        "execution": dict(
            signal_id=sid,
            order_id="mt5-12345",
            execution_id="d-1",
            symbol="ETH-USD",
            side="SELL",
            order_type="MARKET",
            quantity=0.5,
            price=3000,
            status="FILLED",
            fill_price=2999.7,
            slippage_bps=1.0,
            commission=0.5,
            latency_ms=87,
            session="ny",
        ),
        "pnl_event": dict(
            signal_id=sid,
            order_id="mt5-12345",
            symbol="ETH-USD",
            side="SELL",
            quantity=0.5,
            entry_price=2999.7,
            exit_price=2900,
            realized_pnl=49.35,
            commission=0.5,
            currency="USD",
            balance=100049.35,
        ),
        "performance_metrics": dict(
            window_seconds=3600, trades=12, win_rate=0.58, sharpe=1.7, max_drawdown=0.02, realized_pnl=512.0
        ),
        "model_drift": dict(
            model_type="lstm",
            model_version="a7aff5c4",
            metric="live_accuracy",
            value=0.48,
            threshold=0.52,
            drifted=True,
        ),
        "latency": dict(stage="signals", topic="signals.final", count=1000, p50_ms=2.1, p99_ms=7.9, max_ms=12.0),
        "alert": dict(severity="CRITICAL", source="execution", code="DAILY_LOSS_NEAR", message="4.5% of 5%"),
        "control_command": dict(
            command_id=sid, account="ftmo-1", action="FLATTEN", issued_by="telegram:42", reason="news spike"
        ),
        "dead_letter": dict(
            source_topic="market.candles.BTC-USD.1m",
            source_partition=2,
            source_offset=99,
            stage="features",
            error_code="TRUNCATED",
            error_message="...",
            key=b"BTC-USD",
            value=b"\xff\x00",
            headers=[DeadLetterHeader(name="stage", value=b"ingest")],
        ),
        "ingest_health": dict(
            source="coinbase",
            symbols=["BTC-USD", "ETH-USD"],
            started=T0,
            last_message_age_s=0.25,
            messages=1200,
            reconnects=2,
            gaps_detected=3,
            gaps_backfilled=3,
            backfilled_candles=61,
            candles_produced=80,
            missing_minutes=4,
            incomplete_bars=1,
            duplicates=0,
            rejected=1,
            malformed_messages=0,
            unknown_channels=0,
            rate_limited=1,
            cross_checked=5,
            cross_check_mismatches=1,
            lost_minutes=2,
        ),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fmt,engine", [("avro", "fastavro"), ("avro", "auto"), ("json", "auto")])
def test_every_message_type_roundtrips(name: str, fmt: str, engine: str) -> None:
    record = MODELS[name](timestamp=T0, **samples()[name])
    codec = Codec(name, format=fmt, engine=engine)  # type: ignore[arg-type]
    data = codec.encode(record)
    assert codec.decode(data) == record
    if fmt == "avro":
        # the bare body is exactly what fastavro writes for the same Avro value
        assert data == Codec(name, engine="fastavro").encode(record)


def test_signal_stage_names_the_topic_it_was_written_for() -> None:
    from kstrade.bus.topics import SIGNAL_STAGES

    s = load(SCHEMAS / "signal.avsc")
    stage = next(f for f in s["fields"] if f["name"] == "stage")
    assert tuple(stage["type"]["symbols"]) == SIGNAL_STAGES


def test_dead_letter_envelope_from_the_bus_dead_letters() -> None:
    bus = Bus.memory()
    bus.admin().create_topics(
        [("market.candles.BTC-USD.1m", 1, 1, {}), ("dlq.market.candles.BTC-USD.1m", 1, 1, {})], 10.0
    )
    producer = bus.producer()
    producer.send("market.candles.BTC-USD.1m", b"\x01", key=b"BTC-USD", headers=Codec("candle").headers(7, "ingest"))
    producer.flush(10.0)
    consumer = bus.consumer("features")
    consumer.subscribe(["market.candles.BTC-USD.1m"])
    [record] = [r for _ in range(50) for r in consumer.poll(max_records=1, timeout=0.1)][:1]
    try:
        Codec("candle").decode_record(record)
    except CodecError as e:
        DeadLetters(producer, "features").send(record, e.code, str(e))
    producer.flush(10.0)
    dlq = bus.consumer("metrics")
    dlq.subscribe(["dlq.market.candles.BTC-USD.1m"])
    [dead] = [r for _ in range(50) for r in dlq.poll(max_records=1, timeout=0.1)][:1]
    envelope = DeadLetter.from_dead_letter_record(dead)
    assert (envelope.source_topic, envelope.source_offset, envelope.stage, envelope.error_code) == (
        "market.candles.BTC-USD.1m",
        0,
        "features",
        "TRUNCATED",
    )
    assert envelope.value == b"\x01" and envelope.key == b"BTC-USD"
    assert ("origin_ns", b"7") in [(h.name, h.value) for h in envelope.headers]
    codec = Codec("dead_letter")
    assert codec.decode(codec.encode(envelope)) == envelope


# --- evolution -------------------------------------------------------------------------------------


def released(name: str) -> dict[int, dict[str, Any]]:
    out = {}
    for p in (SCHEMAS / "released").glob(f"{name}.v*.avsc"):
        out[int(p.name[len(name) + 2 : -5])] = load(p)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_current_schema_is_released_or_a_compatible_next_version(name: str) -> None:
    current = load(SCHEMAS / f"{name}.avsc")
    versions = released(name)
    assert versions, f"{name}: no released version in schemas/released/"
    latest = max(versions)
    assert sorted(versions) == list(range(1, latest + 1)), f"{name}: released versions must be 1..N"
    if current["version"] == latest:
        assert current == versions[latest], f"{name} v{latest} is released and frozen: bump `version` to change it"
    else:
        assert current["version"] == latest + 1, f"{name}: the next version is {latest + 1}"
        assert incompatibilities(versions[latest], current) == []
    for v in range(2, latest + 1):
        assert incompatibilities(versions[v - 1], versions[v]) == [], f"{name} v{v - 1} -> v{v}"


def _candle() -> dict[str, Any]:
    return load(SCHEMAS / "candle.avsc")


def _field(s: dict[str, Any], name: str) -> dict[str, Any]:
    field: dict[str, Any] = next(f for f in s["fields"] if f["name"] == name)
    return field


def test_checker_catches_a_removed_field_without_default() -> None:
    broken = _candle()
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "volume"]
    problems = incompatibilities(_candle(), broken)
    assert any("volume" in p and p.startswith("forward") for p in problems), problems


def test_checker_catches_a_changed_type() -> None:
    broken = _candle()
    _field(broken, "close")["type"] = "string"
    problems = incompatibilities(_candle(), broken)
    assert any("close" in p and "double" in p for p in problems), problems


def test_checker_catches_an_added_field_without_default_and_a_lost_enum_symbol() -> None:
    broken = _candle()
    broken["fields"].append({"name": "vwap", "type": "double"})
    assert any("vwap" in p and p.startswith("backward") for p in incompatibilities(_candle(), broken))
    sig = load(SCHEMAS / "signal.avsc")
    fewer = copy.deepcopy(sig)
    _field(fewer, "stage")["type"]["symbols"] = ["raw", "final"]
    assert any("stage" in p for p in incompatibilities(sig, fewer))
    ts = _candle()
    _field(ts, "timestamp")["type"] = {"type": "long", "logicalType": "timestamp-millis"}
    assert any("logical" in p for p in incompatibilities(_candle(), ts))


def test_checker_accepts_compatible_changes() -> None:
    evolved = _candle()
    evolved["fields"].append({"name": "vwap", "type": ["null", "double"], "default": None})
    assert incompatibilities(_candle(), evolved) == []
    widened = load(SCHEMAS / "signal.avsc")
    _field(widened, "ttl_seconds")["type"] = "long"  # int -> long is a promotion for new readers...
    assert can_read(widened, load(SCHEMAS / "signal.avsc")) == []
    # ...but old readers cannot read longs as ints, so FULL compatibility refuses it.
    assert incompatibilities(load(SCHEMAS / "signal.avsc"), widened)


@pytest.fixture
def schemas_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of schemas/ where candle is one version past the native layout (the current
    version released), with a new optional field."""
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    s = _candle()
    s["version"] += 1
    s["fields"].append({"name": "trades", "type": ["null", "long"], "default": None})
    (tmp_path / "schemas" / "candle.avsc").write_text(json.dumps(s))
    monkeypatch.setenv("KSTRADE_SCHEMAS_DIR", str(tmp_path / "schemas"))
    for f in (codec_module.schema_json, codec_module.released_versions, codec_module._parsed):
        f.cache_clear()
    yield tmp_path / "schemas"
    monkeypatch.delenv("KSTRADE_SCHEMAS_DIR")
    for f in (codec_module.schema_json, codec_module.released_versions, codec_module._parsed):
        f.cache_clear()


def test_old_writer_versions_are_read_through_schema_resolution(schemas_next: Path) -> None:
    vectors = json.loads((Path(__file__).parent / "vectors" / "candle.json").read_text())
    native_version = vectors["version"]
    # the next schema is not the native layout: auto falls back to fastavro, native refuses
    with pytest.raises(ValueError):
        Codec("candle", engine="native")
    codec = Codec("candle")
    assert codec.version == native_version + 1 and not codec.native
    # Every released version still decodes, through fastavro's schema resolution.
    written = [(native_version, case) for case in vectors["valid"]]
    written += [(case["version"], case) for case in vectors["older"]]
    assert {v for v, _ in written} == set(range(1, native_version + 1))
    for version, case in written:
        value = codec.decode_value(bytes.fromhex(case["hex"]), version=version, topic="t", offset=0)
        assert value == {**case["record"], "trades": None}, case["name"]
    with pytest.raises(CodecError) as info:
        codec.decode_value(bytes.fromhex(written[0][1]["hex"]), version=codec.version + 1, topic="t", offset=0)
    assert info.value.code == "UNKNOWN_SCHEMA_VERSION"


def test_a_candle_written_as_v1_decodes_with_nothing_stated() -> None:
    """v2 says how many 1m candles a candle was built from (`minutes`) and where a 1m candle came
    from (`origin`), both optional: a v1 candle decodes with both None, and a v1 reader still
    reads a v2 candle."""
    v1 = fastavro.parse_schema(released("candle")[1])
    current = fastavro.parse_schema(load(SCHEMAS / "candle.avsc"))
    written = {k: v for k, v in samples()["candle"].items() if k not in ("minutes", "origin")}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1, {"timestamp": T0, **written})
    for engine in ("native", "fastavro"):
        codec = Codec("candle", engine=engine)  # type: ignore[arg-type]
        assert codec.version == 2
        message = codec.decode(body.getvalue(), version=1, topic="market.candles.ETH-USD.15m", offset=0)
        assert message == MODELS["candle"](timestamp=T0, **written)
        assert (message.minutes, message.origin) == (None, None)  # type: ignore[attr-defined]
    v2 = MODELS["candle"](timestamp=T0, **samples()["candle"])
    old = fastavro.schemaless_reader(io.BytesIO(Codec("candle").encode(v2)), current, v1)
    assert isinstance(old, dict) and "minutes" not in old and old["close"] == written["close"]


def test_the_candle_model_refuses_a_count_or_an_origin_that_cannot_be() -> None:
    base = {**samples()["candle"], "timestamp": T0}
    assert MODELS["candle"](**{**base, "interval": "1h", "minutes": 60}).minutes == 60  # type: ignore[attr-defined]
    for bad in (
        {"minutes": 16},  # a 15m bar of 16 minutes
        {"minutes": 0},
        {"origin": "TRADES"},  # origin is for 1m candles
        {"interval": "1m", "minutes": 2},
    ):
        with pytest.raises(ValueError):
            MODELS["candle"](**{**base, **bad})


def test_an_ingest_health_written_as_v1_decodes_with_no_lost_minutes() -> None:
    """v2 counts lost minutes apart (`lost_minutes`, default 0): a v1 report still on the topic
    (written by an ingest not yet upgraded) decodes, and a v1 reader still reads a v2 report."""
    v1 = fastavro.parse_schema(released("ingest_health")[1])
    current = fastavro.parse_schema(load(SCHEMAS / "ingest_health.avsc"))
    written = {k: v for k, v in samples()["ingest_health"].items() if k != "lost_minutes"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1, {"timestamp": T0, **written})
    codec = Codec("ingest_health")
    assert codec.version > 1 and 1 in codec_module.released_versions("ingest_health")
    message = codec.decode(body.getvalue(), version=1, topic="metrics.ingest_health", offset=0)
    assert message == MODELS["ingest_health"](timestamp=T0, **written, lost_minutes=0)
    # Forward: an old reader of a v2 report sees every v1 field, the new one left out.
    v2 = MODELS["ingest_health"](timestamp=T0, **samples()["ingest_health"])
    old = fastavro.schemaless_reader(io.BytesIO(codec.encode(v2)), current, v1)
    assert isinstance(old, dict) and "lost_minutes" not in old
    assert {k: old[k] for k in written} == written


def test_a_pnl_event_written_as_v1_decodes_without_an_exit_reason() -> None:
    """v2 says why the position closed (`exit_reason`, optional): a v1 event decodes with None,
    and a v1 reader still reads a v2 event."""
    v1 = fastavro.parse_schema(released("pnl_event")[1])
    current = fastavro.parse_schema(load(SCHEMAS / "pnl_event.avsc"))
    written = {k: v for k, v in samples()["pnl_event"].items() if k != "exit_reason"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1, {"timestamp": T0, **{k: str(v) if k == "signal_id" else v
                                                              for k, v in written.items()}})  # fmt: skip
    codec = Codec("pnl_event")
    assert codec.version == 2
    message = codec.decode(body.getvalue(), version=1, topic="trades.pnl", offset=0)
    assert message == MODELS["pnl_event"](timestamp=T0, **written) and message.exit_reason is None
    v2 = MODELS["pnl_event"](timestamp=T0, **written, exit_reason="TAKE_PROFIT")
    assert codec.decode(codec.encode(v2)).exit_reason == "TAKE_PROFIT"
    old = fastavro.schemaless_reader(io.BytesIO(codec.encode(v2)), current, v1)
    assert isinstance(old, dict) and "exit_reason" not in old and old["balance"] == written["balance"]


def test_nan_inside_a_map_is_refused_by_the_fastavro_path_with_its_field() -> None:
    codec = Codec("signal")
    good = MODELS["signal"](timestamp=T0, **samples()["signal"]).model_dump()
    buf = io.BytesIO()
    fastavro.schemaless_writer(
        buf, fastavro.parse_schema(codec.schema), {**good, "features_snapshot": {"rsi_14": float("nan")}}
    )
    with pytest.raises(CodecError) as info:
        codec.decode(buf.getvalue(), topic="signals.raw", offset=8)
    assert (info.value.code, info.value.field, info.value.offset) == (
        "NON_FINITE",
        "features_snapshot.rsi_14",
        8,
    )
