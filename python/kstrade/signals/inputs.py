"""The signals stage's candles and predictions read cheaply (feature vectors have their own
native reader, `kstrade._native.FeaturePicker`, which picks the few values a decision uses): a
record whose headers and body are those of a current, well-formed message is decoded natively
to a plain Avro value (`Codec.decode_value`) and checked here with exactly the rules its
pydantic model applies; anything else goes through the full `Stage.decode`, which raises the
same `CodecError` (code, field, message) as before.

The checks accept only what the model would accept, so a record either yields the very values
the model would hold, or takes the slow path and is judged (and dead-lettered) as it always was.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from kstrade.bus import Record
from kstrade.schemas import Codec
from kstrade.schemas.codec import (
    HEADER_ENCODING,
    HEADER_ORIGIN_NS,
    HEADER_SCHEMA,
    HEADER_SCHEMA_VERSION,
    HEADER_STAGE,
    from_micros,
)
from kstrade.schemas.models import ModelType, PredictedDirection, candle_provenance_valid

_INTERVALS = frozenset(("1m", "5m", "15m", "1h"))  # `Interval`
_MODEL_TYPES = frozenset(m.value for m in ModelType)
DIRECTIONS: dict[str, PredictedDirection] = {d.value: d for d in PredictedDirection}
_isfinite = math.isfinite


class FastReader:
    """Reads records of one message type the cheap way, or says it cannot (None)."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.schema_name = codec.schema_name
        self.version = codec.version
        self.encoding = codec.encoding
        # Only the bare, native Avro path decodes to the value the model is validated from.
        self.enabled = codec.native and codec.format == "avro" and codec.wire == "bare"

    def origin_ns(self, record: Record) -> int | None:
        """`origin_ns` when the headers are those `Codec.decode_record` accepts for a message of
        the current schema version (the same rules as `MessageHeaders.from_kafka`); else None."""
        found: dict[str, str] = {}
        for name, value in record.headers:
            if name in found or value is None:
                continue
            try:
                found[name] = value.decode("ascii")
            except UnicodeDecodeError:
                return None
        try:
            if (
                found[HEADER_SCHEMA] != self.schema_name
                or found.get(HEADER_ENCODING, "avro") != self.encoding
                or HEADER_STAGE not in found
                or int(found[HEADER_SCHEMA_VERSION]) != self.version
            ):
                return None
            return int(found[HEADER_ORIGIN_NS])
        except (KeyError, ValueError):
            return None

    def read(self, record: Record) -> tuple[dict[str, Any], int] | None:
        """(Avro value, origin_ns), or None: let the full decode judge the record."""
        if not self.enabled:
            return None
        origin = self.origin_ns(record)
        data = record.value
        if origin is None or data is None:
            return None
        try:
            value = self.codec.decode_value(data, topic=record.topic, offset=record.offset)
        except Exception:
            return None
        return value, origin


def _text(value: Any) -> bool:
    return type(value) is str and len(value) >= 1


def _finite(value: Any) -> bool:
    return type(value) is float and _isfinite(value)


def _probability(value: Any) -> bool:
    return type(value) is float and 0.0 <= value <= 1.0  # NaN fails the comparison


def candle(value: dict[str, Any]) -> tuple[str, datetime, str, float] | None:
    """(symbol, time, interval, close) if `Candle` would accept the value, else None."""
    try:
        o, h, lo, c, vol = value["open"], value["high"], value["low"], value["close"], value["volume"]
        if not (
            len(value) == 11
            and _text(value["symbol"])
            and value["interval"] in _INTERVALS
            and type(value["source"]) is str
            and candle_provenance_valid(value["interval"], value["minutes"], value["origin"])
            and _finite(o)
            and _finite(h)
            and _finite(lo)
            and _finite(c)
            and _finite(vol)
            and vol >= 0
            and lo <= min(o, c)
            and max(o, c) <= h
        ):
            return None
        return value["symbol"], from_micros(value["timestamp"]), value["interval"], c
    except Exception:
        return None


def prediction(value: dict[str, Any]) -> tuple[str, datetime, str, str, PredictedDirection, float, float] | None:
    """(symbol, time, model type, model version, direction, probability, confidence) if
    `Prediction` would accept the value, else None."""
    try:
        out = value["prediction"]
        probability, confidence = out["probability"], out["confidence"]
        elapsed = value["inference_time_ms"]
        if not (
            len(value) == 6
            and type(out) is dict
            and len(out) == 3
            and _text(value["symbol"])
            and value["model_type"] in _MODEL_TYPES
            and type(value["model_version"]) is str
            and out["direction"] in DIRECTIONS
            and _probability(probability)
            and _probability(confidence)
            and _finite(elapsed)
            and elapsed >= 0
        ):
            return None
        return (
            value["symbol"],
            from_micros(value["timestamp"]),
            value["model_type"],
            value["model_version"],
            DIRECTIONS[out["direction"]],
            probability,
            confidence,
        )
    except Exception:
        return None
