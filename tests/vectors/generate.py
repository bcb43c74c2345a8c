"""Generates the shared codec test vectors with fastavro, the independent implementation.

Run once and commit the output; the Rust codec (cargo test -p kstrade-codec) and the Python
codec (pytest) both check themselves against these files and must never write them.

    python tests/vectors/generate.py

Each `<schema>.json` holds `valid` cases (an Avro value, timestamps as epoch microseconds,
enums as symbols, and the hex of fastavro's encoding) and `invalid` cases (hostile bytes built
by hand from the Avro spec, with the error code and field a decoder must report). `older` cases
are bodies written by fastavro with a released older version of the schema (`version`), with the
value a current reader must decode them to (the fields added since at their defaults).
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parent.parent / "schemas"


def schema(name: str, version: int | None = None) -> Any:
    path = SCHEMAS / (f"{name}.avsc" if version is None else f"released/{name}.v{version}.avsc")
    return fastavro.parse_schema(json.loads(path.read_text()))


def encode(name: str, record: dict[str, Any], version: int | None = None) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema(name, version), record)
    return buf.getvalue()


def zigzag(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def avro_str(s: str) -> bytes:
    b = s.encode()
    return zigzag(len(b)) + b


def dbl(v: float) -> bytes:
    return struct.pack("<d", v)


TS = 1_762_792_200_000_000  # 2025-11-10T16:30:00Z, the design document's example


def candles() -> dict[str, Any]:
    base = {
        "timestamp": TS,
        "symbol": "BTC-USD",
        "interval": "1m",
        "open": 89234.50,
        "high": 89456.20,
        "low": 89123.10,
        "close": 89345.80,
        "volume": 123.456,
        "source": "coinbase",
        "minutes": 1,
        "origin": "TRADES",
    }
    not_stated = {**base, "minutes": None, "origin": None}
    valid = [
        ("design_example", base),
        ("rest_backfill", {**base, "origin": "REST"}),
        ("nothing_stated", not_stated),
        (
            "incomplete_5m_bar",
            {**base, "interval": "5m", "source": "aggregated", "minutes": 4, "origin": None},
        ),
        ("complete_1h_bar", {**base, "interval": "1h", "source": "aggregated", "minutes": 60, "origin": None}),
        (
            "epoch_zero_and_zero_prices",
            {**base, "timestamp": 0, "open": 0.0, "high": 0.0, "low": 0.0, "close": -0.0, "volume": 0.0},
        ),
        ("before_epoch", {**base, "timestamp": -1_000_001, "interval": "1h"}),
        (
            "extreme_doubles",
            {
                **base,
                "open": 5e-324,
                "high": 1.7976931348623157e308,
                "low": 2.2250738585072014e-308,
                "close": 0.1 + 0.2,
                "volume": 1e-9,
            },
        ),
        ("unicode_and_long_strings", {**base, "symbol": "EURUSD", "source": "réplay-" + "x" * 200}),
        ("empty_strings", {**base, "symbol": "", "interval": "", "source": ""}),
        ("far_future", {**base, "timestamp": 253_402_300_799_999_999}),  # 9999-12-31T23:59:59.999999Z
    ]
    good = encode("candle", base)
    # Layout: ts varint (8 bytes for TS), symbol (1+7), interval (1+2), open..volume (5x8), source (1+8),
    # minutes (union index 1, then 1: 2 bytes), origin (union index 1, then enum index 0: 2 bytes)
    close_at = 8 + 8 + 3 + 3 * 8
    source_end = close_at + 2 * 8 + 1 + 8
    assert len(good) == source_end + 4
    nan = bytearray(good)
    nan[close_at : close_at + 8] = dbl(float("nan"))
    inf = bytearray(good)
    inf[close_at - 8 : close_at] = dbl(float("-inf"))
    invalid = [
        {"name": "empty", "hex": "", "code": "TRUNCATED", "field": "timestamp"},
        {
            "name": "truncated_in_close",
            "hex": good[: close_at + 3].hex(),
            "code": "TRUNCATED",
            "field": "close",
        },
        {"name": "truncated_in_source", "hex": good[: source_end - 2].hex(), "code": "TRUNCATED", "field": "source"},
        {"name": "truncated_in_minutes", "hex": good[: source_end + 1].hex(), "code": "TRUNCATED", "field": "minutes"},
        {"name": "truncated_in_origin", "hex": good[:-1].hex(), "code": "TRUNCATED", "field": "origin"},
        {
            "name": "minutes_union_index_out_of_range",
            "hex": (good[:source_end] + zigzag(2) + zigzag(1) + zigzag(0)).hex(),
            "code": "MALFORMED",
            "field": "minutes",
        },
        {
            "name": "origin_out_of_range",
            "hex": (good[:-1] + zigzag(2)).hex(),  # CandleOrigin has 2 symbols
            "code": "MALFORMED",
            "field": "origin",
        },
        {"name": "nan_close", "hex": bytes(nan).hex(), "code": "NON_FINITE", "field": "close"},
        {"name": "minus_inf_low", "hex": bytes(inf).hex(), "code": "NON_FINITE", "field": "low"},
        {
            "name": "overlong_varint_timestamp",
            "hex": (b"\xff" * 11).hex(),
            "code": "MALFORMED",
            "field": "timestamp",
        },
        {
            "name": "negative_symbol_length",
            "hex": (zigzag(TS) + zigzag(-3)).hex(),
            "code": "MALFORMED",
            "field": "symbol",
        },
        {
            "name": "invalid_utf8_symbol",
            "hex": (zigzag(TS) + zigzag(2) + b"\xff\xfe").hex(),
            "code": "MALFORMED",
            "field": "symbol",
        },
        {"name": "trailing_byte", "hex": (good + b"\x00").hex(), "code": "TRAILING_BYTES", "field": ""},
    ]
    # v1 (released) had no minutes and no origin: its bodies decode with both not stated.
    v1 = {k: v for k, v in base.items() if k not in ("minutes", "origin")}
    older = [
        ("v1_design_example", 1, v1, not_stated),
        ("v1_hour_bar", 1, {**v1, "interval": "1h", "source": "aggregated"},
         {**not_stated, "interval": "1h", "source": "aggregated"}),
    ]  # fmt: skip
    return {"valid": valid, "invalid": invalid, "older": older}


def feature_vectors() -> dict[str, Any]:
    names = [f"f{i}" for i in range(70)]  # > 63 items: the block count needs a 2-byte varint
    base = {
        "timestamp": TS,
        "symbol": "BTC-USD",
        "version": "v2.1",
        "names": [
            "5m_close",
            "15m_close",
            "1h_close",
            "tf_alignment_score",
            "volatility_regime",
            "rsi_14",
            "macd_signal",
        ],
        "values": [89345.80, 89456.20, 89123.10, 0.75, 1.0, 67.3, 0.5],
    }
    valid = [
        ("design_example", base),
        ("empty_feature_set", {**base, "names": [], "values": []}),
        (
            "seventy_features",
            {**base, "version": "v3", "names": names, "values": [i * 0.5 - 17.25 for i in range(70)]},
        ),
    ]
    head = zigzag(TS) + avro_str("BTC-USD") + avro_str("v1")
    # Two blocks, the first with a negative count and its byte size (Avro spec, "Arrays").
    two_blocks = (
        head
        + zigzag(-1)
        + zigzag(2)
        + avro_str("a")
        + zigzag(1)
        + avro_str("b")
        + zigzag(0)
        + zigzag(2)
        + dbl(1.5)
        + dbl(-2.0)
        + zigzag(0)
    )
    two_blocks_record = {
        "timestamp": TS,
        "symbol": "BTC-USD",
        "version": "v1",
        "names": ["a", "b"],
        "values": [1.5, -2.0],
    }
    nan_values = (
        head
        + zigzag(2)
        + avro_str("a")
        + avro_str("b")
        + zigzag(0)
        + zigzag(2)
        + dbl(1.0)
        + dbl(float("nan"))
        + zigzag(0)
    )
    mismatch = head + zigzag(1) + avro_str("a") + zigzag(0) + zigzag(2) + dbl(1.0) + dbl(2.0) + zigzag(0)
    huge_count = head + zigzag(1 << 40)
    invalid = [
        {"name": "nan_value", "hex": nan_values.hex(), "code": "NON_FINITE", "field": "values[1]"},
        {"name": "names_values_length_mismatch", "hex": mismatch.hex(), "code": "INVALID", "field": "values"},
        {"name": "hostile_array_count", "hex": huge_count.hex(), "code": "TRUNCATED", "field": "names"},
        {
            "name": "truncated_in_values",
            "hex": encode("feature_vector", base)[:-5].hex(),
            "code": "TRUNCATED",
            "field": "values",
        },
    ]
    return {
        "valid": valid,
        "invalid": invalid,
        "noncanonical": [{"name": "two_blocks", "hex": two_blocks.hex(), "record": two_blocks_record}],
    }


def predictions() -> dict[str, Any]:
    base = {
        "timestamp": TS,
        "symbol": "BTC-USD",
        "model_type": "lstm",
        "model_version": "a7aff5c4",
        "prediction": {"direction": "UP", "probability": 0.73, "confidence": 0.68},
        "inference_time_ms": 12.0,
    }
    valid = [
        ("design_example", base),
        (
            "transformer_down",
            {
                **base,
                "symbol": "ETH-USD",
                "model_type": "transformer",
                "prediction": {"direction": "DOWN", "probability": 0.0, "confidence": 1.0},
            },
        ),
        (
            "ensemble_flat",
            {
                **base,
                "model_type": "ensemble",
                "prediction": {"direction": "FLAT", "probability": 0.5, "confidence": 0.1},
                "inference_time_ms": 0.125,
            },
        ),
    ]
    good = encode("prediction", base)
    head = zigzag(TS) + avro_str("BTC-USD")
    bad_enum = head + zigzag(3)  # ModelType has 3 symbols
    bad_direction = head + zigzag(0) + avro_str("v") + zigzag(5)
    # probability is the 3rd-last double: patch it to +inf
    inf_prob = bytearray(good)
    inf_prob[-24:-16] = dbl(float("inf"))
    invalid = [
        {
            "name": "model_type_out_of_range",
            "hex": bad_enum.hex(),
            "code": "MALFORMED",
            "field": "model_type",
        },
        {
            "name": "direction_out_of_range",
            "hex": bad_direction.hex(),
            "code": "MALFORMED",
            "field": "prediction.direction",
        },
        {
            "name": "inf_probability",
            "hex": bytes(inf_prob).hex(),
            "code": "NON_FINITE",
            "field": "prediction.probability",
        },
        {
            "name": "truncated_in_inference_time",
            "hex": good[:-1].hex(),
            "code": "TRUNCATED",
            "field": "inference_time_ms",
        },
    ]
    return {"valid": valid, "invalid": invalid}


def write(name: str, cases: dict[str, Any]) -> None:
    parsed = schema(name)
    out: dict[str, Any] = {
        "schema": parsed["name"],
        "version": parsed["version"],
        "generator": "fastavro " + fastavro.__version__,
        "valid": [],
        "invalid": cases["invalid"],
        "noncanonical": cases.get("noncanonical", []),
        "older": [],
    }
    for case_name, record in cases["valid"]:
        out["valid"].append({"name": case_name, "record": record, "hex": encode(name, record).hex()})
    for case_name, version, written, record in cases.get("older", []):
        body = encode(name, written, version)
        current = fastavro.schemaless_reader(io.BytesIO(body), schema(name, version), parsed)
        assert current == {**record, "timestamp": current["timestamp"]}, case_name  # resolution agrees
        out["older"].append({"name": case_name, "version": version, "record": record, "hex": body.hex()})
    # Every non-canonical encoding must still decode in fastavro to its record.
    for case in out["noncanonical"]:
        got = fastavro.schemaless_reader(io.BytesIO(bytes.fromhex(case["hex"])), parsed, parsed)
        assert got["values"] == case["record"]["values"] and got["names"] == case["record"]["names"]
        case["canonical_hex"] = encode(name, case["record"]).hex()
    (HERE / f"{name}.json").write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    write("candle", candles())
    write("feature_vector", feature_vectors())
    write("prediction", predictions())
