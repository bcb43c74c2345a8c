# --- codec ---
# Avro codec for the hot message types (kstrade-codec). Records are dicts shaped like fastavro's
# Avro values, except `timestamp`, which is epoch microseconds. Batch decoders release the GIL
# and return columns: numeric ones as little-endian bytes (int64/float64) that
# kstrade.schemas.codec wraps in numpy arrays, strings as lists, plus `count`, `rows` (int64
# positions of the decoded inputs) and `failed` [(position, CodecError)] when errors="skip".
from typing import Any, Literal

class CodecError(ValueError):
    code: str
    schema: str
    field: str
    topic: str | None
    offset: int | None

NATIVE_SCHEMA_VERSIONS: dict[str, int]

def encode_candle(record: dict[str, Any]) -> bytes: ...
def decode_candle(
    data: bytes, *, version: int | None = None, topic: str | None = None, offset: int | None = None
) -> dict[str, Any]: ...
def encode_candles(records: list[dict[str, Any]]) -> list[bytes]: ...
def decode_candles(
    values: list[bytes],
    *,
    version: int | None = None,
    topic: str | None = None,
    offsets: list[int] | None = None,
    errors: Literal["raise", "skip"] = "raise",
) -> dict[str, Any]: ...
def encode_feature_vector(record: dict[str, Any]) -> bytes: ...
def decode_feature_vector(
    data: bytes, *, version: int | None = None, topic: str | None = None, offset: int | None = None
) -> dict[str, Any]: ...
def encode_feature_vectors(records: list[dict[str, Any]]) -> list[bytes]: ...
def decode_feature_vectors(
    values: list[bytes],
    *,
    version: int | None = None,
    topic: str | None = None,
    offsets: list[int] | None = None,
    errors: Literal["raise", "skip"] = "raise",
) -> dict[str, Any]: ...
def encode_prediction(record: dict[str, Any]) -> bytes: ...
def decode_prediction(
    data: bytes, *, version: int | None = None, topic: str | None = None, offset: int | None = None
) -> dict[str, Any]: ...
def encode_predictions(records: list[dict[str, Any]]) -> list[bytes]: ...
def decode_predictions(
    values: list[bytes],
    *,
    version: int | None = None,
    topic: str | None = None,
    offsets: list[int] | None = None,
    errors: Literal["raise", "skip"] = "raise",
) -> dict[str, Any]: ...
