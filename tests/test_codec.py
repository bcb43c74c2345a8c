"""The codecs against the shared vectors (written by fastavro), against each other, and against
hostile input: every failure is a CodecError naming the topic, offset and field."""

from __future__ import annotations

import io
import itertools
import json
import math
import socket
import struct
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from uuid import uuid4

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kstrade import _native
from kstrade.bus import Bus
from kstrade.schemas import MODELS, Candle, Codec, CodecError, FeatureVector, MessageHeaders, Prediction, Signal
from kstrade.schemas.codec import HOT_TYPES, from_micros, locate_failure, schema_dir, to_micros
from kstrade.schemas.models import (
    CandleOrigin,
    ModelType,
    PredictedDirection,
    PredictionOutput,
    SignalDirection,
    SignalStage,
)
from kstrade.schemas.registry import CONTENT_TYPE, SchemaRefused, SchemaRegistry

VECTORS = Path(__file__).parent / "vectors"
T0 = datetime(2025, 11, 10, 16, 30, tzinfo=UTC)


def vectors(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return result


def fastavro_schema(name: str) -> Any:
    return fastavro.parse_schema(json.loads((schema_dir() / f"{name}.avsc").read_text()))


def fastavro_decode(name: str, data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(data), fastavro_schema(name), None)
    value["timestamp"] = to_micros(value["timestamp"])
    return value


def fastavro_encode(name: str, value: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro_schema(name), value)
    return buf.getvalue()


def bits(value: Any) -> Any:
    """Doubles by their bits, so -0.0 != 0.0 and the last ulp counts."""
    if isinstance(value, float):
        return struct.pack("<d", value).hex()
    if isinstance(value, dict):
        return {k: bits(v) for k, v in value.items()}
    if isinstance(value, list):
        return [bits(v) for v in value]
    return value


# --- shared vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOT_TYPES)
@pytest.mark.parametrize("engine", ["native", "fastavro"])
def test_valid_vectors_encode_byte_for_byte_and_decode_to_the_record(name: str, engine: str) -> None:
    codec = Codec(name, engine=engine)  # type: ignore[arg-type]
    cases = vectors(name)["valid"]
    assert len(cases) >= 3
    for case in cases:
        expected = bytes.fromhex(case["hex"])
        assert codec.encode_value(case["record"]) == expected, case["name"]
        assert bits(codec.decode_value(expected)) == bits(case["record"]), case["name"]


@pytest.mark.parametrize("name", HOT_TYPES)
def test_rust_encodings_decode_in_fastavro_and_the_reverse(name: str) -> None:
    native = Codec(name, engine="native")
    for case in vectors(name)["valid"]:
        record = case["record"]
        from_rust = native.encode_value(record)
        assert bits(fastavro_decode(name, from_rust)) == bits(record), case["name"]
        from_fastavro = fastavro_encode(name, record)
        assert from_fastavro == from_rust, case["name"]
        assert bits(native.decode_value(from_fastavro)) == bits(record), case["name"]


def test_noncanonical_array_blocks_decode_natively() -> None:
    for case in vectors("feature_vector")["noncanonical"]:
        got = Codec("feature_vector", engine="native").decode_value(bytes.fromhex(case["hex"]))
        assert got == case["record"]


@pytest.mark.parametrize("name", HOT_TYPES)
@pytest.mark.parametrize("engine", ["native", "fastavro"])
def test_invalid_vectors_name_code_field_topic_and_offset(name: str, engine: str) -> None:
    codec = Codec(name, engine=engine)  # type: ignore[arg-type]
    cases = vectors(name)["invalid"]
    assert cases
    for case in cases:
        with pytest.raises(CodecError) as info:
            # decode (not decode_value): NaN must be refused by the fastavro path too
            codec.decode(bytes.fromhex(case["hex"]), topic=f"test.{name}", offset=4242)
        e = info.value
        assert (e.code, e.field) == (case["code"], case["field"]) or (
            # fastavro cannot tell a names/values mismatch from the wire; the model can
            engine == "fastavro" and case["code"] == "INVALID" and e.code == "INVALID"
        ), f"{case['name']}: {e.code} {e.field}: {e}"
        assert (e.topic, e.offset) == (f"test.{name}", 4242)
        assert f"test.{name}" in str(e) and "4242" in str(e)
        if e.field:
            assert repr(e.field)[1:-1] in str(e)


def test_locate_failure_finds_the_field_of_a_truncated_signal() -> None:
    codec = Codec("signal")
    good = codec.encode(signal())
    schema = fastavro_schema("signal")
    # cut inside the `ttl_seconds` varint? It is the last field: drop it entirely.
    assert locate_failure(schema, good[:-1])[1] == "ttl_seconds"
    assert locate_failure(schema, good + b"\x00") == ("TRAILING_BYTES", "")


def test_every_truncation_of_a_non_hot_message_names_a_field() -> None:
    codec = Codec("signal")
    good = codec.encode(signal())
    fields = {f["name"] for f in codec.schema["fields"]}
    for n in range(len(good)):
        with pytest.raises(CodecError) as info:
            codec.decode(good[:n], topic="signals.final", offset=n)
        assert info.value.code in ("TRUNCATED", "MALFORMED", "INVALID"), info.value
        assert info.value.field.split(".")[0].split("[")[0] in fields, info.value


# --- models, JSON, versions ----------------------------------------------------------------------


def candle(**kw: Any) -> Candle:
    base = dict(
        timestamp=T0,
        symbol="BTC-USD",
        interval="1m",
        open=89234.5,
        high=89456.2,
        low=89123.1,
        close=89345.8,
        volume=123.456,
        source="coinbase",
        minutes=1,
        origin="TRADES",
    )
    return Candle(**{**base, **kw})


def signal(**kw: Any) -> Signal:
    base: dict[str, Any] = dict(
        timestamp=T0,
        symbol="BTC-USD",
        signal_id=uuid4(),
        stage=SignalStage.FINAL,
        direction=SignalDirection.LONG,
        confidence=0.68,
        tier="A",
        entry_price=89345.8,
        stop_loss=88900.0,
        take_profit=89900.0,
        position_size=0.05,
        features_snapshot={"rsi_14": 67.3},
        ensemble_weights={"lstm": 0.35},
        boosters_applied=["tf_alignment"],
        ttl_seconds=300,
    )
    return Signal(**{**base, **kw})


def test_nan_and_inf_are_refused_where_the_schema_forbids_them() -> None:
    with pytest.raises(ValueError):
        candle(close=math.nan)
    value = {**vectors("candle")["valid"][0]["record"], "close": math.inf}
    with pytest.raises(CodecError) as info:
        Codec("candle", engine="native").encode_value(value)
    assert (info.value.code, info.value.field) == ("NON_FINITE", "close")


def test_unknown_schema_version_is_refused_with_context() -> None:
    for engine in ("native", "fastavro"):
        codec = Codec("candle", engine=engine)  # type: ignore[arg-type]
        with pytest.raises(CodecError) as info:
            codec.decode(codec.encode(candle()), version=7, topic="market.candles.BTC-USD.1m", offset=3)
        e = info.value
        assert (e.code, e.field, e.topic, e.offset) == (
            "UNKNOWN_SCHEMA_VERSION",
            "schema_version",
            "market.candles.BTC-USD.1m",
            3,
        )
    with pytest.raises(CodecError) as info:
        _native.decode_candle(codec.encode(candle()), version=codec.version + 1, topic="t", offset=1)
    assert info.value.code == "UNKNOWN_SCHEMA_VERSION"


def test_json_uses_the_design_document_shapes() -> None:
    fv = FeatureVector(
        timestamp=T0, symbol="BTC-USD", version="v2.1", names=["5m_close", "rsi_14"], values=[89345.8, 67.3]
    )
    out = json.loads(Codec("feature_vector", format="json").encode(fv))
    assert out == {
        "timestamp": "2025-11-10T16:30:00Z",
        "symbol": "BTC-USD",
        "features": {"5m_close": 89345.8, "rsi_14": 67.3},
        "version": "v2.1",
    }
    p = Prediction(
        timestamp=T0,
        symbol="BTC-USD",
        model_type=ModelType.LSTM,
        model_version="a7aff5c4",
        prediction=PredictionOutput(direction=PredictedDirection.DOWN, probability=0.73, confidence=0.68),
        inference_time_ms=12,
    )
    out = json.loads(Codec("prediction", format="json").encode(p))
    assert out["prediction"] == {"direction": -1, "probability": 0.73, "confidence": 0.68}
    assert out["model_type"] == "lstm"
    for codec, rec in (
        (Codec("feature_vector", format="json"), fv),
        (Codec("prediction", format="json"), p),
        (Codec("signal", format="json"), signal()),
        (Codec("candle", format="json"), candle()),
    ):
        assert codec.decode(codec.encode(rec)) == rec


def test_json_errors_name_the_field() -> None:
    codec = Codec("candle", format="json")
    with pytest.raises(CodecError) as info:
        codec.decode(b'{"timestamp": "2025-11-10T16:30:00Z"', topic="t", offset=9)
    assert info.value.code == "MALFORMED"
    bad = json.loads(codec.encode(candle()))
    bad["volume"] = "lots"
    with pytest.raises(CodecError) as info:
        codec.decode(json.dumps(bad).encode(), topic="t", offset=9)
    assert (info.value.code, info.value.field, info.value.offset) == ("INVALID", "volume", 9)


@given(
    ts=st.integers(min_value=-(2**50), max_value=2**50),
    prices=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e12), min_size=5, max_size=5
    ),
    symbol=st.text(min_size=1, max_size=20),
    shape=st.one_of(
        st.tuples(st.just("5m"), st.one_of(st.none(), st.integers(1, 5)), st.none()),
        st.tuples(st.just("1h"), st.one_of(st.none(), st.integers(1, 60)), st.none()),
        st.tuples(st.just("1m"), st.sampled_from([None, 1]), st.sampled_from([None, *CandleOrigin])),
    ),
)
@settings(max_examples=200, deadline=None)
def test_native_and_fastavro_agree_on_any_candle(
    ts: int, prices: list[float], symbol: str, shape: tuple[str, int | None, CandleOrigin | None]
) -> None:
    lo, a, b, hi = sorted(prices[:4])
    interval, minutes, origin = shape
    c = Candle(
        timestamp=from_micros(ts),
        symbol=symbol,
        interval=interval,  # type: ignore[arg-type]
        open=a,
        high=hi,
        low=lo,
        close=b,
        volume=prices[4],
        source="replay",
        minutes=minutes,
        origin=origin,
    )
    native, python = Codec("candle", engine="native"), Codec("candle", engine="fastavro")
    data = native.encode(c)
    assert data == python.encode(c)
    assert native.decode(data) == python.decode(data) == c


@given(
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=150),
    version=st.text(min_size=1, max_size=8),
)
@settings(max_examples=150, deadline=None)
def test_native_and_fastavro_agree_on_any_feature_vector(values: list[float], version: str) -> None:
    fv = FeatureVector(
        timestamp=T0,
        symbol="SOL-USD",
        version=version,
        names=[f"f{i}" for i in range(len(values))],
        values=values,
    )
    native, python = Codec("feature_vector", engine="native"), Codec("feature_vector", engine="fastavro")
    data = native.encode(fv)
    assert data == python.encode(fv)
    assert native.decode(data) == python.decode(data) == fv


@given(
    rows=st.integers(min_value=1, max_value=60),
    width=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
@settings(max_examples=100, deadline=None)
def test_feature_columns_encode_as_the_vectors_they_hold(rows: int, width: int, data: st.DataObject) -> None:
    """The features stage's batch path writes each ready column of the engine's feature-major
    matrix straight to bytes: the same bytes fastavro writes for that column as a vector."""
    finite = st.floats(allow_nan=False, allow_infinity=False)
    matrix = np.array(data.draw(st.lists(finite, min_size=rows * width, max_size=rows * width))).reshape(rows, width)
    columns = data.draw(st.lists(st.integers(0, width - 1), max_size=width))
    times = [1_767_225_600_000_000 + 60_000_000 * c for c in columns]
    names = [f"f{i}" for i in range(rows)]
    bodies = _native.encode_feature_columns("SOL-USD", "v2.1", names, matrix.tobytes(), columns, times)
    python = Codec("feature_vector", engine="fastavro")
    expected = [
        python.encode(FeatureVector(timestamp=from_micros(t), symbol="SOL-USD", version="v2.1", names=names,
                                    values=matrix[:, c].tolist()))
        for c, t in zip(columns, times, strict=True)
    ]  # fmt: skip
    assert bodies == expected


def test_feature_columns_refuse_a_non_finite_value_and_a_column_out_of_the_matrix() -> None:
    matrix = np.array([[1.0, math.nan], [2.0, 3.0]])
    with pytest.raises(CodecError, match=r"values\[0\]"):
        _native.encode_feature_columns("BTC-USD", "v1", ["a", "b"], matrix.tobytes(), [1], [0])
    assert len(_native.encode_feature_columns("BTC-USD", "v1", ["a", "b"], matrix.tobytes(), [0], [0])) == 1
    with pytest.raises(CodecError, match="column 2 of a matrix 2 wide"):
        _native.encode_feature_columns("BTC-USD", "v1", ["a", "b"], matrix.tobytes(), [2], [0])
    with pytest.raises(CodecError, match="names x candles"):
        _native.encode_feature_columns("BTC-USD", "v1", ["a", "b", "c"], matrix.tobytes(), [0], [0])


@given(
    probability=st.floats(min_value=0, max_value=1),
    confidence=st.floats(min_value=0, max_value=1),
    direction=st.sampled_from(list(PredictedDirection)),
    model_type=st.sampled_from(list(ModelType)),
)
@settings(max_examples=150, deadline=None)
def test_native_and_fastavro_agree_on_any_prediction(
    probability: float, confidence: float, direction: PredictedDirection, model_type: ModelType
) -> None:
    p = Prediction(
        timestamp=T0,
        symbol="BTC-USD",
        model_type=model_type,
        model_version="a7aff5c4",
        prediction=PredictionOutput(direction=direction, probability=probability, confidence=confidence),
        inference_time_ms=0.5,
    )
    native, python = Codec("prediction", engine="native"), Codec("prediction", engine="fastavro")
    data = native.encode(p)
    assert data == python.encode(p)
    assert native.decode(data) == python.decode(data) == p


# --- batches ---------------------------------------------------------------------------------------


def test_candle_batch_decodes_to_numpy_columns() -> None:
    codec = Codec("candle")
    records = [candle(timestamp=T0 + timedelta(minutes=i), close=89000 + i, low=88000, high=90000) for i in range(100)]
    values = codec.encode_batch(records)
    assert values == [Codec("candle", engine="fastavro").encode(r) for r in records]
    cols = codec.decode_batch(values, topic="market.candles.BTC-USD.1m", offsets=list(range(100)))
    assert cols["count"] == 100
    np.testing.assert_array_equal(cols["close"], np.arange(100, dtype=float) + 89000)
    assert cols["timestamp"][5] == np.datetime64("2025-11-10T16:35:00", "us")
    assert cols["symbol"] == ["BTC-USD"] * 100
    # v2: `minutes` an int64 column (-1: not stated), `origin` the symbols (None: not stated).
    np.testing.assert_array_equal(cols["minutes"], np.ones(100, dtype=np.int64))
    assert cols["minutes"].dtype == np.int64 and cols["origin"] == ["TRADES"] * 100
    mixed = [candle(minutes=None, origin=None), candle(origin="REST"), candle(interval="5m", minutes=4, origin=None)]
    cols = codec.decode_batch(codec.encode_batch(mixed))
    assert cols["minutes"].tolist() == [-1, 1, 4] and cols["origin"] == [None, "REST", None]


@pytest.mark.parametrize("engine", ["native", "fastavro"])
def test_candles_written_as_v1_decode_one_by_one_and_in_batches(engine: str) -> None:
    """A v1 body (schema_version 1: no `minutes`, no `origin`) still decodes with both not stated;
    natively, a batch of them comes back as columns like a v2 batch."""
    codec = Codec("candle", engine=engine)  # type: ignore[arg-type]
    cases = vectors("candle")["older"]
    assert {c["version"] for c in cases} == {1}
    bodies = [bytes.fromhex(c["hex"]) for c in cases]
    for case, body in zip(cases, bodies, strict=True):
        record = case["record"]
        assert (record["minutes"], record["origin"]) == (None, None)
        assert bits(codec.decode_value(body, version=1)) == bits(record), case["name"]
        model = codec.decode(body, version=1, topic="market.candles.BTC-USD.1m", offset=3)
        assert to_micros(model.timestamp) == record["timestamp"]
        assert (model.minutes, model.origin) == (None, None)  # type: ignore[attr-defined]
        with pytest.raises(CodecError) as info:
            codec.decode(body, topic="market.candles.BTC-USD.1m", offset=3)  # read as v2, it is cut short
        assert (info.value.code, info.value.field) == ("TRUNCATED", "minutes")
    got = codec.decode_batch(bodies, version=1, topic="market.candles.BTC-USD.1m")
    if engine == "native":
        assert got["count"] == len(cases) and got["minutes"].tolist() == [-1] * len(cases)
        assert got["origin"] == [None] * len(cases)
        assert got["close"].tolist() == [c["record"]["close"] for c in cases]
    else:
        assert [m.close for m in got] == [c["record"]["close"] for c in cases]


def test_batch_skips_bad_messages_and_reports_them() -> None:
    codec = Codec("candle")
    values = codec.encode_batch([candle(), candle()])
    values.insert(1, values[0][:-4])
    with pytest.raises(CodecError) as info:
        codec.decode_batch(values, topic="t", offsets=[10, 11, 12])
    assert info.value.offset == 11
    cols = codec.decode_batch(values, topic="t", offsets=[10, 11, 12], errors="skip")
    assert cols["count"] == 2 and list(cols["rows"]) == [0, 2]
    [(position, error)] = cols["failed"]
    assert position == 1 and error.code == "TRUNCATED" and error.offset == 11


def test_feature_vector_batch_is_a_matrix_when_the_feature_list_is_shared() -> None:
    codec = Codec("feature_vector")
    fvs = [
        FeatureVector(timestamp=T0, symbol="BTC-USD", version="v1", names=["a", "b", "c"], values=[i, i + 0.5, -i])
        for i in range(4)
    ]
    cols = codec.decode_batch(codec.encode_batch(fvs))
    assert cols["names"] == ["a", "b", "c"]
    assert cols["values"].shape == (4, 3)
    np.testing.assert_array_equal(cols["values"][2], [2, 2.5, -2])
    mixed = [*fvs, FeatureVector(timestamp=T0, symbol="ETH-USD", version="v2", names=["x"], values=[1.0])]
    cols = codec.decode_batch(codec.encode_batch(mixed))
    assert cols["feature_sets"] == [["a", "b", "c"], ["x"]]
    assert list(cols["feature_set"]) == [0, 0, 0, 0, 1] and list(cols["lengths"]) == [3, 3, 3, 3, 1]


def test_prediction_batch_gives_the_design_direction_numbers() -> None:
    codec = Codec("prediction")
    preds = [
        Prediction(
            timestamp=T0,
            symbol="BTC-USD",
            model_type=ModelType.TRANSFORMER,
            model_version="x",
            prediction=PredictionOutput(direction=d, probability=0.5, confidence=0.5),
            inference_time_ms=1.0,
        )
        for d in PredictedDirection
    ]
    cols = codec.decode_batch(codec.encode_batch(preds))
    assert list(cols["direction"]) == [-1, 0, 1]
    assert cols["model_type"] == ["transformer"] * 3


# --- headers through the bus ---------------------------------------------------------------------


def test_headers_travel_with_the_message_and_are_checked() -> None:
    bus = Bus.memory()
    bus.admin().create_topics([("market.candles.BTC-USD.1m", 1, 1, {})], 10.0)
    codec = Codec("candle")
    origin = 1_762_792_260_000_000_123
    producer = bus.producer()
    producer.send("market.candles.BTC-USD.1m", codec.encode(candle()), headers=codec.headers(origin, "ingest"))
    producer.send("market.candles.BTC-USD.1m", b"\x01\x02", headers=codec.headers(origin, "ingest"))
    producer.flush(10.0)
    consumer = bus.consumer("g")
    consumer.subscribe(["market.candles.BTC-USD.1m"])
    records = []
    for _ in range(50):
        records += consumer.poll(max_records=10, timeout=0.2)
        if len(records) == 2:
            break
    h = MessageHeaders.from_kafka(records[0].headers)
    assert (h.schema, h.schema_version, h.origin_ns, h.stage, h.encoding) == (
        "kstrade.Candle",
        codec.version,
        origin,
        "ingest",
        "avro",
    )
    assert codec.decode_record(records[0]) == candle()
    with pytest.raises(CodecError) as info:
        codec.decode_record(records[1])
    assert (info.value.topic, info.value.offset) == ("market.candles.BTC-USD.1m", 1)
    with pytest.raises(CodecError) as info:
        Codec("prediction").decode_record(records[0])
    assert info.value.code == "SCHEMA_MISMATCH"


def test_missing_or_bad_headers_are_errors() -> None:
    good = Codec("candle").headers(5, "ingest")
    with pytest.raises(CodecError) as info:
        MessageHeaders.from_kafka([h for h in good if h[0] != "origin_ns"], topic="t", offset=1)
    assert (info.value.code, info.value.field) == ("MISSING_HEADER", "origin_ns")
    with pytest.raises(CodecError) as info:
        MessageHeaders.from_kafka([(k, b"x" if k == "schema_version" else v) for k, v in good])
    assert (info.value.code, info.value.field) == ("BAD_HEADER", "schema_version")


# --- Confluent wire format against a registry speaking the REST protocol ------------------------


class _Registry(BaseHTTPRequestHandler):
    """The Confluent Schema Registry REST API v1, for the two endpoints the client uses."""

    subjects: ClassVar[dict[str, list[int]]] = {}
    schemas: ClassVar[dict[int, str]] = {}
    requests: ClassVar[list[tuple[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.requests.append(("POST", self.path))
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
            return self._reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
        if self.headers.get("Content-Type") != CONTENT_TYPE:
            return self._reply(415, {"error_code": 415, "message": "Unsupported Media Type"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["schema"]
        fastavro.parse_schema(json.loads(text))  # the real registry rejects invalid schemas (422)
        # The same schema text gets the same id, under any subject.
        sid = next((i for i, existing in self.schemas.items() if existing == text), len(self.schemas) + 1)
        self.schemas[sid] = text
        self.subjects.setdefault(parts[1], []).append(sid)
        self._reply(200, {"id": sid})

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path))
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and int(parts[2]) in self.schemas:
            return self._reply(200, {"schema": self.schemas[int(parts[2])]})
        self._reply(404, {"error_code": 40403, "message": "Schema not found"})


@pytest.fixture
def registry() -> Any:
    _Registry.subjects, _Registry.schemas, _Registry.requests = {}, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_confluent_wire_format_registers_once_and_reads_back(registry: str) -> None:
    codec = Codec("candle", wire="confluent", registry=SchemaRegistry(registry))
    data = codec.encode(candle())
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0 and schema_id == 1
    assert data[5:] == Codec("candle", engine="fastavro").encode(candle())
    codec.encode(candle())
    assert _Registry.requests == [("POST", "/subjects/kstrade.Candle/versions")]  # cached
    # A consumer, knowing nothing, resolves the id through GET /schemas/ids/{id}, once.
    consumer = Codec("candle", wire="confluent", registry=SchemaRegistry(registry))
    assert consumer.decode(data) == candle()
    assert consumer.decode(data) == candle()
    assert _Registry.requests[1:] == [("GET", f"/schemas/ids/{schema_id}")]
    assert codec.decode(data) == candle()
    assert len(_Registry.requests) == 2
    assert dict(MessageHeaders.from_kafka(codec.headers(1, "ingest")).__dict__)["encoding"] == "avro-confluent"


def test_every_schema_is_registered_up_front_waiting_for_the_registry_then_never_needed(registry: str) -> None:
    """`Bus.from_settings` registers every message schema first (`register_schemas`), waiting
    while the registry is unreachable; after that a registry outage holds up no record this
    process writes (the ids are the client's), so none is dead-lettered for it."""
    from kstrade.schemas.codec import full_name, register_schemas, schema_json

    with socket.socket() as probe:  # a port nobody listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _Registry.subjects, _Registry.schemas, _Registry.requests = {}, {}, []
    servers: list[ThreadingHTTPServer] = []
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the registry comes up after two failed tries
            servers.append(ThreadingHTTPServer(("127.0.0.1", port), _Registry))
            threading.Thread(target=servers[0].serve_forever, daemon=True).start()

    client = SchemaRegistry(f"http://127.0.0.1:{port}")
    ids = register_schemas(client, delays=itertools.repeat(0.01), sleep=sleep)
    assert len(waits) == 2
    assert set(ids) == {full_name(schema_json(name)) for name in MODELS} == set(_Registry.subjects)
    servers[0].shutdown()
    servers[0].server_close()  # the registry away: every codec still writes
    for name in MODELS:
        assert Codec(name, wire="confluent", registry=client).schema_id() == ids[full_name(schema_json(name))]
    data = Codec("candle", wire="confluent", registry=client).encode(candle())
    assert Codec("candle", wire="confluent", registry=client).decode(data) == candle()
    # A refusal (4xx) is no outage: it raises at once, nothing waited for.
    with pytest.raises(SchemaRefused) as info:
        register_schemas(SchemaRegistry(registry + "/not-the-api"), delays=[], sleep=sleep)
    assert info.value.status == 404 and "kstrade." in str(info.value) and len(waits) == 2


def test_confluent_errors(registry: str) -> None:
    codec = Codec("candle", wire="confluent", registry=SchemaRegistry(registry))
    with pytest.raises(CodecError) as info:
        codec.decode(b"\x01\x00\x00\x00\x01\x00", topic="t", offset=2)
    assert info.value.code == "MALFORMED"
    with pytest.raises(CodecError) as info:
        codec.decode(b"\x00\x00\x00\x00\x63" + codec.encode(candle())[5:], topic="t", offset=2)
    assert (info.value.code, info.value.offset) == ("UNKNOWN_SCHEMA_ID", 2)
    sig = Codec("signal", wire="confluent", registry=SchemaRegistry(registry)).encode(signal())
    with pytest.raises(CodecError) as info:
        codec.decode(sig)
    assert info.value.code == "SCHEMA_MISMATCH"


@given(data=st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_give_records_or_codec_errors_never_a_panic(data: bytes) -> None:
    # PanicException derives from BaseException: `except CodecError` would not hide one.
    for decode in (_native.decode_candle, _native.decode_feature_vector, _native.decode_prediction):
        try:
            decode(data, topic="fuzz", offset=0)
        except CodecError as e:
            assert e.topic == "fuzz" and e.code
    for name in HOT_TYPES:
        cols = Codec(name).decode_batch([data, data], errors="skip")
        assert cols["count"] + len(cols["failed"]) == 2


def test_confluent_reads_an_evolved_writer_schema_by_resolution(registry: str) -> None:
    client = SchemaRegistry(registry)
    newer = json.loads((schema_dir() / "candle.avsc").read_text())
    newer["version"] += 1
    newer["fields"].append({"name": "trades", "type": ["null", "long"], "default": None})
    newer_id = client.register("kstrade.Candle", newer)
    value = {**vectors("candle")["valid"][0]["record"], "trades": 17}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(newer), value)
    data = struct.pack(">bI", 0, newer_id) + buf.getvalue()
    got = Codec("candle", wire="confluent", registry=SchemaRegistry(registry)).decode(data, topic="t", offset=1)
    assert to_micros(got.timestamp) == value["timestamp"] and got.close == value["close"]
