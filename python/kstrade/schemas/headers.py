"""The headers every message carries (schema, schema_version, origin_ns, stage, encoding), and
`CodecError`, the error every codec failure raises: a stable `.code`, and a message that names
the schema, the field, the topic and the offset."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import kstrade._native as _native
from kstrade.codes import DeadLetter

CodecError = _native.CodecError

HEADER_SCHEMA = "schema"
HEADER_SCHEMA_VERSION = "schema_version"
HEADER_ORIGIN_NS = "origin_ns"
HEADER_STAGE = "stage"
HEADER_ENCODING = "encoding"
#: `encoding` header values: bare Avro body, Confluent wire format, or JSON.
ENCODINGS = ("avro", "avro-confluent", "json")


def codec_error(
    code: str,
    reason: str,
    *,
    schema: str = "",
    field: str = "",
    topic: str | None = None,
    offset: int | None = None,
) -> Exception:
    """A `CodecError` shaped like the native ones: same attributes, same message layout."""
    where = f"field '{field}' of {schema}" if field else schema
    if topic is not None and offset is not None:
        where += f" (topic '{topic}', offset {offset})"
    elif topic is not None:
        where += f" (topic '{topic}')"
    elif offset is not None:
        where += f" (offset {offset})"
    e = CodecError(f"{code.lower().replace('_', ' ')} at {where}: {reason}")
    e.code, e.schema, e.field, e.topic, e.offset = code, schema, field, topic, offset
    return e


@dataclass(frozen=True)
class MessageHeaders:
    """The headers on every message. Values are ASCII text, like the bus's `dlq.*` headers.

    - `schema`: full Avro name of the value, e.g. `kstrade.Candle`
    - `schema_version`: the `version` of that schema the value was written with, e.g. `1`
    - `origin_ns`: epoch nanoseconds of the market event that caused this message (the candle
      close that started the chain); every stage copies it from its input, so any consumer can
      measure end-to-end latency as `now - origin_ns`
    - `stage`: the stage that produced the message (ingest, features, inference, ...)
    - `encoding`: `avro` (bare body), `avro-confluent` (magic byte + schema id + body) or `json`
    """

    schema: str
    schema_version: int
    origin_ns: int
    stage: str
    encoding: str = "avro"

    def to_kafka(self) -> list[tuple[str, bytes]]:
        return [
            (HEADER_SCHEMA, self.schema.encode()),
            (HEADER_SCHEMA_VERSION, str(self.schema_version).encode()),
            (HEADER_ORIGIN_NS, str(self.origin_ns).encode()),
            (HEADER_STAGE, self.stage.encode()),
            (HEADER_ENCODING, self.encoding.encode()),
        ]

    @classmethod
    def from_kafka(
        cls,
        headers: Iterable[tuple[str, bytes | None]],
        *,
        topic: str | None = None,
        offset: int | None = None,
    ) -> MessageHeaders:
        """Reads the headers of a consumed record; the first occurrence of each name wins."""
        found: dict[str, str] = {}
        for name, value in headers:
            if name in found or value is None:
                continue
            try:
                found[name] = value.decode("ascii")
            except UnicodeDecodeError:
                raise codec_error(
                    DeadLetter.BAD_HEADER, "not ASCII text", schema="headers", field=name, topic=topic, offset=offset
                ) from None
        for name in (HEADER_SCHEMA, HEADER_SCHEMA_VERSION, HEADER_ORIGIN_NS, HEADER_STAGE):
            if name not in found:
                raise codec_error(
                    DeadLetter.MISSING_HEADER,
                    "required on every message",
                    schema="headers",
                    field=name,
                    topic=topic,
                    offset=offset,
                )
        encoding = found.get(HEADER_ENCODING, "avro")
        if encoding not in ENCODINGS:
            raise codec_error(
                DeadLetter.BAD_HEADER,
                f"unknown encoding {encoding!r}",
                schema="headers",
                field=HEADER_ENCODING,
                topic=topic,
                offset=offset,
            )
        ints = {}
        for name in (HEADER_SCHEMA_VERSION, HEADER_ORIGIN_NS):
            try:
                ints[name] = int(found[name])
            except ValueError:
                raise codec_error(
                    DeadLetter.BAD_HEADER,
                    f"{found[name]!r} is not an integer",
                    schema="headers",
                    field=name,
                    topic=topic,
                    offset=offset,
                ) from None
        return cls(
            found[HEADER_SCHEMA],
            ints[HEADER_SCHEMA_VERSION],
            ints[HEADER_ORIGIN_NS],
            found[HEADER_STAGE],
            encoding,
        )
