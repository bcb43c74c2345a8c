"""The one way to turn a message into bytes and back: Avro (bare or Confluent wire format) or
JSON, with the headers every message carries. No stage hand-rolls serialization.

    codec = Codec("candle")                      # Avro, native engine for the hot types
    value = codec.encode(candle)                 # bytes for the bus
    headers = codec.headers(origin_ns=..., stage="ingest")
    candle = codec.decode(value, topic=record.topic, offset=record.offset)
    columns = codec.decode_batch(values, topic=..., offsets=...)   # numpy columns, GIL released

Candles, feature vectors and predictions encode natively (`kstrade._native`, hand-written for
these schemas); every type also encodes with fastavro from the same `.avsc` files, and both
agree byte for byte (tests/vectors). Failures raise `CodecError` whose `.code` is stable and
whose message names the schema, field, topic and offset.

Beside it: `headers` (the headers and `CodecError`), `files` (where the schemas are read from),
`diagnosis` (where a bad body broke); their names are re-exported here.
"""

from __future__ import annotations

import io
import itertools
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import fastavro
import numpy as np
import orjson
from pydantic import ValidationError

import kstrade._native as _native
from kstrade.clock import from_micros, to_micros
from kstrade.codes import DeadLetter
from kstrade.schemas.diagnosis import field_path, locate_failure
from kstrade.schemas.files import full_name, released_versions, schema_dir, schema_json
from kstrade.schemas.files import parsed_schema as _parsed
from kstrade.schemas.headers import (
    ENCODINGS,
    HEADER_ENCODING,
    HEADER_ORIGIN_NS,
    HEADER_SCHEMA,
    HEADER_SCHEMA_VERSION,
    HEADER_STAGE,
    CodecError,
    MessageHeaders,
    codec_error,
)
from kstrade.schemas.models import MODELS, FeatureVector, Message, PredictedDirection, Prediction
from kstrade.schemas.registry import RegistryError, SchemaRefused

if TYPE_CHECKING:
    from kstrade.schemas.registry import SchemaRegistry

log = logging.getLogger(__name__)

Format = Literal["avro", "json"]
Engine = Literal["auto", "native", "fastavro"]
Wire = Literal["bare", "confluent"]
#: A codec's constant headers for one stage: schema, schema_version, stage, encoding.
_HeaderTemplate = tuple[tuple[str, bytes], tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]]

# --- JSON shapes of the design document -----------------------------------------------------------


def _json_out(name: str, d: dict[str, Any]) -> dict[str, Any]:
    if name == "feature_vector":
        # The design's {"timestamp", "symbol", "features": {name: value}, "version"}.
        return {
            "timestamp": d["timestamp"],
            "symbol": d["symbol"],
            "features": dict(zip(d["names"], d["values"], strict=True)),
            "version": d["version"],
        }
    if name == "prediction":
        p = d["prediction"]
        return {**d, "prediction": {**p, "direction": PredictedDirection(p["direction"]).sign}}
    return d


def _json_in(name: str, d: Any) -> Any:
    if not isinstance(d, dict):
        return d
    if name == "feature_vector" and isinstance(d.get("features"), dict):
        f = d.pop("features")
        return {**d, "names": list(f), "values": list(f.values())}
    if name == "prediction" and isinstance(d.get("prediction"), dict):
        p = d["prediction"]
        if isinstance(p.get("direction"), int) and not isinstance(p["direction"], bool):
            try:
                direction = PredictedDirection.from_sign(p["direction"]).value
            except ValueError:
                return d  # the model reports the bad value with its field
            return {**d, "prediction": {**p, "direction": direction}}
    return d


# --- the codec ----------------------------------------------------------------------------------

_NATIVE: dict[str, tuple[Any, Any, Any, Any]] = {
    "candle": (_native.encode_candle, _native.decode_candle, _native.encode_candles, _native.decode_candles),
    "feature_vector": (
        _native.encode_feature_vector,
        _native.decode_feature_vector,
        _native.encode_feature_vectors,
        _native.decode_feature_vectors,
    ),
    "prediction": (
        _native.encode_prediction,
        _native.decode_prediction,
        _native.encode_predictions,
        _native.decode_predictions,
    ),
}
#: Message types with a hand-written native codec (the hot path).
HOT_TYPES = tuple(_NATIVE)

_CONFLUENT = struct.Struct(">bI")

#: The registry that a `Codec` made without a `wire` writes through (None: bare Avro). Set for
#: the process by `use_registry`: the kafka bus does, from `bus.schema_registry_url`.
_default_registry: SchemaRegistry | None = None


def use_registry(registry: SchemaRegistry | None) -> SchemaRegistry | None:
    """Every `Codec` made from now on without an explicit `wire` writes the Confluent wire format
    through `registry` (None: bare Avro again); returns the registry set before. Codecs already
    made keep their wire. Every codec reads both wire formats, whatever it writes."""
    global _default_registry
    previous, _default_registry = _default_registry, registry
    return previous


def register_schemas(
    registry: SchemaRegistry,
    *,
    delays: Iterable[float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Registers the current schema of every message type (subject: its full record name) and
    returns the ids, waiting while the registry cannot be reached or answers 5xx (`delays`
    between tries: default from 0.5 s doubling to 30 s, forever), each wait logged. A refusal
    (4xx: an incompatible schema, bad credentials) raises `SchemaRefused` (a ValueError) at
    once. The client caches the ids, so from then on no record of this process waits on the
    registry, or is dead-lettered for it: writing needs only these ids; what a registry outage
    can still hold up is reading a record written under a schema this process did not register
    (another producer's version)."""
    waits = iter(delays) if delays is not None else (min(30.0, 0.5 * 2**n) for n in itertools.count())
    ids: dict[str, int] = {}
    for name in MODELS:
        schema = schema_json(name)
        subject = full_name(schema)
        while True:
            try:
                ids[subject] = registry.register(subject, schema)
                break
            except RegistryError as exc:
                if exc.status is not None and exc.status < 500:
                    raise SchemaRefused(f"schema registry {registry.url} refused {subject}: {exc}", exc.status) from exc
                wait = next(waits)
                log.warning("schema registry %s: %s; trying again in %.1f s", registry.url, exc, wait)
                sleep(wait)
    return ids


class Codec:
    """Encodes and decodes one message type.

    `format`: `avro` (default) or `json` (the design document's shapes, for debugging).
    `engine`: for Avro, `native` (the Rust codec, hot types only), `fastavro`, or `auto` (native
    where there is one). `wire`: `bare` Avro body or `confluent` (magic byte 0, 4-byte
    big-endian schema id, body), which needs a `registry`; the subject is the full record name
    (RecordNameStrategy), because one schema serves several topics (e.g. `signals.*`). By default
    `confluent` when a `registry` is given or set for the process (`use_registry`), else `bare`.
    `decode_record` reads both wire formats, as the record's `encoding` header says.
    """

    def __init__(
        self,
        schema: str | type[Message],
        format: Format = "avro",
        *,
        engine: Engine = "auto",
        wire: Wire | None = None,
        registry: SchemaRegistry | None = None,
    ) -> None:
        name = schema if isinstance(schema, str) else schema.schema_file
        if name not in MODELS:
            raise ValueError(f"unknown message type {name!r}: use one of {', '.join(sorted(MODELS))}")
        if format not in ("avro", "json"):
            raise ValueError(f"format must be 'avro' or 'json', not {format!r}")
        if engine not in ("auto", "native", "fastavro"):
            raise ValueError(f"engine must be 'auto', 'native' or 'fastavro', not {engine!r}")
        if engine == "native" and name not in _NATIVE:
            raise ValueError(f"no native codec for {name!r}: native types are {', '.join(HOT_TYPES)}")
        if registry is None:
            registry = _default_registry
        if wire is None:
            wire = "confluent" if registry is not None and format == "avro" else "bare"
        if wire not in ("bare", "confluent"):
            raise ValueError(f"wire must be 'bare' or 'confluent', not {wire!r}")
        if wire == "confluent" and registry is None:
            raise ValueError("the confluent wire format needs a schema registry")
        self.name = name
        self.model: type[Message] = MODELS[name]
        self.format: Format = format
        self.wire: Wire = wire
        self.registry = registry
        self.schema: dict[str, Any] = schema_json(name)
        self.schema_name = full_name(self.schema)
        self.version: int = int(self.schema["version"])
        self._parsed = _parsed(name)
        # The native layout is written for one schema version; a bumped .avsc without a new
        # layout must not be encoded natively (the Rust tests fail on that drift too).
        native_ok = name in _NATIVE and _native.NATIVE_SCHEMA_VERSIONS.get(self.schema_name) == self.version
        if engine == "native" and not native_ok:
            raise ValueError(
                f"the native codec implements {self.schema_name} "
                f"v{_native.NATIVE_SCHEMA_VERSIONS.get(self.schema_name)}, not v{self.version}"
            )
        self.native = engine != "fastavro" and native_ok
        #: Older released versions the native layout reads too (fields only added at the end).
        self._native_older = (
            frozenset(_native.NATIVE_READ_VERSIONS.get(self.schema_name, ())) - {self.version}
            if self.native
            else frozenset()
        )
        self._enc1, self._dec1, self._encn, self._decn = _NATIVE.get(name, (None, None, None, None))
        self._schema_header = self.schema_name.encode()
        self._version_header = str(self.version).encode()
        self._encoding_header = self.encoding.encode()
        self._header_templates: dict[str, _HeaderTemplate] = {}
        self._schema_id: int | None = None
        self._current_ids: set[int] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        engine = "native" if self.native else "fastavro"
        return f"Codec({self.name!r}, format={self.format!r}, engine={engine!r}, wire={self.wire!r})"

    @property
    def encoding(self) -> str:
        if self.format == "json":
            return "json"
        return "avro-confluent" if self.wire == "confluent" else "avro"

    # headers

    def headers(self, origin_ns: int, stage: str) -> list[tuple[str, bytes]]:
        """The headers for a message this codec encoded (`MessageHeaders.to_kafka`'s list, from
        a per-stage template: every output of every stage takes this path)."""
        schema, version, stage_header, encoding = self._header_templates.get(stage) or self._header_template(stage)
        return [schema, version, (HEADER_ORIGIN_NS, str(origin_ns).encode()), stage_header, encoding]

    def _header_template(self, stage: str) -> _HeaderTemplate:
        made = MessageHeaders(self.schema_name, self.version, 0, stage, self.encoding).to_kafka()
        if [name for name, _ in made] != [HEADER_SCHEMA, HEADER_SCHEMA_VERSION, HEADER_ORIGIN_NS, HEADER_STAGE,
                                          HEADER_ENCODING]:  # fmt: skip
            raise RuntimeError("MessageHeaders.to_kafka changed its order: update Codec.headers")
        template = self._header_templates[stage] = (made[0], made[1], made[3], made[4])
        return template

    # errors

    def _err(
        self, code: str, reason: str, field: str = "", topic: str | None = None, offset: int | None = None
    ) -> Exception:
        return codec_error(code, reason, schema=self.schema_name, field=field, topic=topic, offset=offset)

    def _invalid(self, e: ValidationError, topic: str | None, offset: int | None) -> Exception:
        first = e.errors()[0]
        code = DeadLetter.NON_FINITE if first["type"] == "finite_number" else DeadLetter.INVALID
        return self._err(code, first["msg"], field_path(first["loc"]), topic, offset)

    def _check_version(self, version: int | None, topic: str | None, offset: int | None) -> int | None:
        """None for the current version, else an older released version to resolve from."""
        if version is None or version == self.version:
            return None
        if version in released_versions(self.name) and version < self.version:
            return version
        known = sorted({*released_versions(self.name), self.version})
        raise self._err(
            DeadLetter.UNKNOWN_SCHEMA_VERSION,
            f"version {version} is not one of {known}",
            HEADER_SCHEMA_VERSION,
            topic,
            offset,
        )

    # Avro values (dicts shaped like fastavro's, timestamps as epoch microseconds)

    def encode_value(self, value: dict[str, Any]) -> bytes:
        """Encodes an Avro value without model validation (the codec still refuses NaN natively)."""
        if self.format == "json":
            return orjson.dumps(value)
        if self.native:
            body: bytes = self._enc1(value)
        else:
            buf = io.BytesIO()
            try:
                fastavro.schemaless_writer(buf, self._parsed, value)
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise self._err(DeadLetter.INVALID, str(e)) from None
            body = buf.getvalue()
        return self.frame(body)

    def encode_values(self, values: list[dict[str, Any]]) -> list[bytes]:
        """`encode_value` for many values at once (one native call for the hot types): the
        same bytes, for values that are valid by construction (a stage's own outputs)."""
        if self.native and self.format == "avro":
            out: list[bytes] = self._encn(values)
            return out if self.wire == "bare" else self._frame_all(out)
        return [self.encode_value(v) for v in values]

    def decode_value(
        self,
        data: bytes,
        *,
        version: int | None = None,
        topic: str | None = None,
        offset: int | None = None,
        wire: Wire | None = None,
    ) -> dict[str, Any]:
        """Decodes to an Avro value (timestamps as epoch microseconds); no model validation."""
        if self.format == "json":
            try:
                result: dict[str, Any] = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                raise self._err(DeadLetter.MALFORMED, f"invalid JSON: {e}", "", topic, offset) from None
            return result
        data, writer = self._unframe(data, version, topic, offset, wire)
        native_version = self._native_version(version, writer)
        if native_version is not None:
            value: dict[str, Any] = self._dec1(data, version=native_version, topic=topic, offset=offset)
            return value
        value = self._fastavro_decode(data, writer, topic, offset)
        ts = value.get("timestamp")
        if isinstance(ts, datetime):
            value["timestamp"] = to_micros(ts)
        return value

    def _native_version(self, version: int | None, writer: Any) -> int | None:
        """The writer version to decode natively (after `_unframe`), or None: fastavro resolves
        it (no native layout, or a writer schema the layout cannot read)."""
        if not self.native:
            return None
        if writer is None:
            return self.version
        # An older version the layout reads, named by the headers (not a registry's schema).
        if version in self._native_older and writer is _parsed(self.name, version):
            return version
        return None

    def _fastavro_decode(self, data: bytes, writer: Any, topic: str | None, offset: int | None) -> dict[str, Any]:
        writer_schema = self._parsed if writer is None else writer
        buf = io.BytesIO(data)
        try:
            raw = fastavro.schemaless_reader(buf, writer_schema, None if writer is None else self._parsed)
        except Exception as e:  # fastavro raises EOFError, IndexError, UnicodeDecodeError, ...
            code, field = locate_failure(writer_schema, data)
            raise self._err(code, f"{type(e).__name__}: {e}", field, topic, offset) from None
        if not isinstance(raw, dict):
            raise self._err(DeadLetter.MALFORMED, "the body is not a record", "", topic, offset)
        value: dict[str, Any] = raw
        if buf.tell() != len(data):
            raise self._err(
                DeadLetter.TRAILING_BYTES, f"{len(data) - buf.tell()} byte(s) after the record", "", topic, offset
            )
        return value

    # framing: bare body or Confluent wire format

    def schema_id(self) -> int:
        """The registry id of the current schema (registered on first use, then cached)."""
        assert self.registry is not None
        with self._lock:
            if self._schema_id is None:
                self._schema_id = self.registry.register(self.schema_name, self.schema)
            return self._schema_id

    def frame(self, body: bytes) -> bytes:
        """The value this codec writes for an Avro body of the current schema: the body itself
        (bare), or behind the Confluent wire header (magic byte 0, this schema's registry id)."""
        if self.wire == "bare":
            return body
        return _CONFLUENT.pack(0, self.schema_id()) + body

    def _frame_all(self, bodies: list[bytes]) -> list[bytes]:
        head = _CONFLUENT.pack(0, self.schema_id())
        return [head + body for body in bodies]

    def _current_frame(self, data: bytes) -> bool:
        """Whether `data` is Confluent-framed with the id of the current schema (looked up once)."""
        if len(data) < _CONFLUENT.size or data[0] != 0:
            return False
        schema_id = _CONFLUENT.unpack_from(data)[1]
        if schema_id == self._schema_id or schema_id in self._current_ids:
            return True
        if self.registry is None:
            return False
        try:
            writer = self.registry.schema_by_id(schema_id)
        except LookupError:
            return False
        if writer == self.schema:
            self._current_ids.add(schema_id)
            return True
        return False

    def _unframe(
        self, data: bytes, version: int | None, topic: str | None, offset: int | None, wire: Wire | None = None
    ) -> tuple[bytes, Any]:
        """The Avro body and the writer schema to resolve from (None: the current schema).
        `wire`: how `data` is framed (the record's `encoding` header), else this codec's wire."""
        if (wire or self.wire) == "bare":
            old = self._check_version(version, topic, offset)
            return data, (None if old is None else _parsed(self.name, old))
        if len(data) < _CONFLUENT.size or data[0] != 0:
            raise self._err(
                DeadLetter.MALFORMED,
                "not in Confluent wire format (magic byte 0 + 4-byte schema id)",
                "<wire header>",
                topic,
                offset,
            )
        _, schema_id = _CONFLUENT.unpack_from(data)
        body = data[_CONFLUENT.size :]
        # A consumer only looks ids up (GET); it never registers anything.
        if schema_id == self._schema_id or schema_id in self._current_ids:
            return body, None
        if self.registry is None:
            # The registry is off here: the headers name the writer version, as for bare Avro.
            old = self._check_version(version, topic, offset)
            return body, (None if old is None else _parsed(self.name, old))
        try:
            writer = self.registry.schema_by_id(schema_id)
        except LookupError as e:
            raise self._err(DeadLetter.UNKNOWN_SCHEMA_ID, str(e), "<wire header>", topic, offset) from None
        if full_name(writer) != self.schema_name:
            raise self._err(
                DeadLetter.SCHEMA_MISMATCH,
                f"schema id {schema_id} is {full_name(writer)}",
                "<wire header>",
                topic,
                offset,
            )
        if writer == self.schema:
            self._current_ids.add(schema_id)
            return body, None
        return body, fastavro.parse_schema(writer)

    # models

    def encode(self, record: Message) -> bytes:
        """Encodes a validated message."""
        if not isinstance(record, self.model):
            raise TypeError(f"{self!r} encodes {self.model.__name__}, not {type(record).__name__}")
        if self.format == "json":
            return orjson.dumps(_json_out(self.name, record.model_dump(mode="json")))
        if self.native:
            value = self._native_value(record)
        else:
            value = record.model_dump()
        return self.encode_value(value)

    def _native_value(self, record: Message) -> dict[str, Any]:
        # A validated model's fields are already Avro values (StrEnums are str); only the
        # timestamp and the nested prediction need converting. Cheaper than model_dump().
        value = dict(record.__dict__)
        value["timestamp"] = to_micros(record.timestamp)
        if self.name == "prediction":
            value["prediction"] = dict(value["prediction"].__dict__)
        return value

    def decode(
        self,
        data: bytes,
        *,
        version: int | None = None,
        topic: str | None = None,
        offset: int | None = None,
        wire: Wire | None = None,
    ) -> Message:
        """Decodes and validates one message; `version` is the `schema_version` header if known."""
        if self.format == "json":
            self._check_version(version, topic, offset)
            try:
                if self.name in ("feature_vector", "prediction"):
                    return self.model.model_validate(_json_in(self.name, orjson.loads(data)))
                return self.model.model_validate_json(data)
            except orjson.JSONDecodeError as e:
                raise self._err(DeadLetter.MALFORMED, f"invalid JSON: {e}", "", topic, offset) from None
            except ValidationError as e:
                if e.errors()[0]["type"] == "json_invalid":
                    raise self._err(DeadLetter.MALFORMED, e.errors()[0]["msg"], "", topic, offset) from None
                raise self._invalid(e, topic, offset) from None
        data, writer = self._unframe(data, version, topic, offset, wire)
        native_version = self._native_version(version, writer)
        if native_version is not None:
            value = self._dec1(data, version=native_version, topic=topic, offset=offset)
            value["timestamp"] = from_micros(value["timestamp"])
        else:
            value = self._fastavro_decode(data, writer, topic, offset)  # timestamps already datetimes
        try:
            return self.model.model_validate(value)
        except ValidationError as e:
            raise self._invalid(e, topic, offset) from None

    def plain_headers(self, record: Any) -> bool:
        """Whether `decode_record` would certainly accept `record`'s headers: this codec's schema,
        current version and encoding, a stage and a decimal origin_ns, every header ASCII, and a
        value. A batch path decodes such records natively and leaves the others to
        `decode_record`, which names what is wrong."""
        if record.value is None:
            return False
        first: dict[str, bytes] = {}
        for name, value in record.headers:
            if value is None or name in first:
                continue
            if not value.isascii():
                return False  # MessageHeaders.from_kafka refuses any header that is not ASCII
            first[name] = value
        origin = first.get(HEADER_ORIGIN_NS)
        encoding = first.get(HEADER_ENCODING)
        return bool(
            origin is not None
            and origin.isdigit()
            and first.get(HEADER_SCHEMA) == self._schema_header
            and first.get(HEADER_SCHEMA_VERSION) == self._version_header
            and (encoding == self._encoding_header or (encoding is None and self.encoding == "avro"))
            and HEADER_STAGE in first
        )

    def decode_record(self, record: Any) -> Message:
        """Decodes a consumed bus record, checking its headers against this codec."""
        h = MessageHeaders.from_kafka(record.headers, topic=record.topic, offset=record.offset)
        if h.schema != self.schema_name:
            raise self._err(
                DeadLetter.SCHEMA_MISMATCH,
                f"the record carries {h.schema}",
                HEADER_SCHEMA,
                record.topic,
                record.offset,
            )
        if (h.encoding == "json") != (self.format == "json"):  # Avro reads both wire formats
            raise self._err(
                DeadLetter.FORMAT_MISMATCH,
                f"the record is {h.encoding}, this codec reads {self.encoding}",
                HEADER_ENCODING,
                record.topic,
                record.offset,
            )
        if record.value is None:
            raise self._err(DeadLetter.MALFORMED, "the record has no value", "", record.topic, record.offset)
        wire: Wire = "confluent" if h.encoding == "avro-confluent" else "bare"
        return self.decode(record.value, version=h.schema_version, topic=record.topic, offset=record.offset, wire=wire)

    # batches

    def encode_batch(self, records: Sequence[Message]) -> list[bytes]:
        if self.native and self.format == "avro":
            out: list[bytes] = self._encn([self._native_value(r) for r in records])
            return out if self.wire == "bare" else self._frame_all(out)
        return [self.encode(r) for r in records]

    def decode_batch(
        self,
        values: Sequence[bytes],
        *,
        version: int | None = None,
        topic: str | None = None,
        offsets: Sequence[int] | None = None,
        errors: Literal["raise", "skip"] = "raise",
    ) -> Any:
        """Decodes many messages at once.

        Hot types (native, bare Avro, a `version` the native layout reads) come back as a `dict`
        of numpy columns, decoded with the GIL released: `timestamp` (datetime64[us]), the numeric
        fields (float64; prediction `direction` as int64 -1/0/1; candle `minutes` as int64, -1
        where not stated), strings and enum symbols as lists (candle `origin`: None where not
        stated), `rows` (input positions decoded) and `failed` [(position, CodecError)] when
        `errors="skip"`. A feature vector batch has `values` as an (n, k) matrix when all rows
        share one feature list (`names`), else flat with `lengths`, `feature_sets` and
        `feature_set`. Other types, and older versions read through fastavro, give a list of
        models. Confluent-framed values of the current schema decode natively too (`_framed_batch`).
        """
        if self.native and self.format == "avro" and self.wire == "confluent" and version in (None, self.version):
            return self._framed_batch(values, topic, offsets, errors)
        old = (
            self._check_version(version, topic, None)
            if self.native and self.format == "avro" and self.wire == "bare"
            else -1
        )
        if old is None or old in self._native_older:
            cols = self._decn(
                list(values),
                version=self.version if old is None else old,
                topic=topic,
                offsets=None if offsets is None else list(offsets),
                errors=errors,
            )
            return _columns(self.name, cols)
        out: list[Message] = []
        for i, v in enumerate(values):
            off = None if offsets is None else offsets[i]
            out.append(self.decode(v, version=version, topic=topic, offset=off))
        return out

    def _framed_batch(
        self,
        values: Sequence[bytes],
        topic: str | None,
        offsets: Sequence[int] | None,
        errors: Literal["raise", "skip"],
    ) -> Any:
        """`decode_batch` of Confluent-framed values: the native columns of the bodies framed with
        the current schema's id. Any other value fails alone (errors="skip": in `failed`, with
        its own error, or SCHEMA_MISMATCH for a valid older writer the columns cannot hold);
        with errors="raise" the batch is decoded value by value instead (a list of models)."""
        current = {_CONFLUENT.pack(0, i) for i in self._current_ids}
        if self._schema_id is not None:
            current.add(_CONFLUENT.pack(0, self._schema_id))
        where = [i for i, v in enumerate(values) if v[: _CONFLUENT.size] in current or self._current_frame(v)]
        if len(where) < len(values) and errors == "raise":
            return [
                self.decode(v, topic=topic, offset=None if offsets is None else offsets[i], wire="confluent")
                for i, v in enumerate(values)
            ]
        raw = self._decn(
            [values[i][_CONFLUENT.size :] for i in where],
            version=self.version,
            topic=topic,
            offsets=None if offsets is None else [offsets[i] for i in where],
            errors=errors,
        )
        if len(where) == len(values):
            return _columns(self.name, raw)
        index = np.asarray(where, dtype="<i8")
        raw["rows"] = index[np.frombuffer(raw["rows"], dtype="<i8")].tobytes()
        failed = [(where[pos], e) for pos, e in raw["failed"]]
        taken = set(where)
        for i, v in enumerate(values):
            if i in taken:
                continue
            off = None if offsets is None else offsets[i]
            try:
                self.decode(v, topic=topic, offset=off, wire="confluent")
                failed.append((i, self._err(DeadLetter.SCHEMA_MISMATCH, "an older writer schema: decode it alone",
                                            "<wire header>", topic, off)))  # fmt: skip
            except CodecError as e:
                failed.append((i, e))
        raw["failed"] = sorted(failed, key=lambda f: f[0])
        return _columns(self.name, raw)


def _columns(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            dtype = "<i8" if key in ("timestamp", "rows", "lengths", "feature_set", "direction", "minutes") else "<f8"
            arr = np.frombuffer(value, dtype=dtype)
            cols[key] = arr.view("datetime64[us]") if key == "timestamp" else arr
        else:
            cols[key] = value
    if name == "feature_vector":
        n = raw["count"]
        sets = raw["feature_sets"]
        if len(sets) == 1:
            cols["names"] = sets[0]
            cols["values"] = cols["values"].reshape(n, len(sets[0]))
        elif n == 0:
            cols["names"] = []
            cols["values"] = cols["values"].reshape(0, 0)
    return cols


__all__ = [
    "ENCODINGS",
    "HEADER_ENCODING",
    "HEADER_ORIGIN_NS",
    "HEADER_SCHEMA",
    "HEADER_SCHEMA_VERSION",
    "HEADER_STAGE",
    "HOT_TYPES",
    "Codec",
    "CodecError",
    "FeatureVector",
    "MessageHeaders",
    "Prediction",
    "codec_error",
    "from_micros",
    "full_name",
    "locate_failure",
    "released_versions",
    "schema_dir",
    "schema_json",
    "to_micros",
]
