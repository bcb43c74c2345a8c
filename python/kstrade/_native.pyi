# Type stubs for the compiled core `kstrade._native` (rust/python). Sections by concern.

from collections.abc import Sequence
from typing import Any, Literal, Self, TypeAlias, TypedDict, final, type_check_only

import numpy.typing as npt

__version__: str

# --- bus ---

@type_check_only
class TopicDescription(TypedDict):
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]

class BusError(Exception):
    """A bus operation failed. `code` is stable (UNKNOWN_TOPIC, MESSAGE_TOO_LARGE, ...)."""

    code: str

@final
class MemoryBroker:
    def __new__(cls) -> Self: ...

@final
class Record:
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, bytes | None]]: ...
    def header(self, name: str) -> bytes | None: ...

@final
class Producer:
    @staticmethod
    def memory(broker: MemoryBroker, config: dict[str, str]) -> Producer: ...
    @staticmethod
    def kafka(config: dict[str, str]) -> Producer: ...
    @property
    def transport(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    def take_failed(
        self,
    ) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]], int | None, int | None]]: ...
    def renew(self) -> None: ...
    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None: ...
    def flush(self, timeout: float = 30.0) -> None: ...

@final
class Consumer:
    @staticmethod
    def memory(broker: MemoryBroker, config: dict[str, str]) -> Consumer: ...
    @staticmethod
    def kafka(config: dict[str, str]) -> Consumer: ...
    @property
    def transport(self) -> str: ...
    def subscribe(self, topics: list[str]) -> None: ...
    def subscribe_pattern(self, pattern: str) -> None: ...
    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]: ...
    def commit(self, offsets: list[tuple[str, int, int]] | None = None) -> None: ...
    def committed(
        self, partitions: list[tuple[str, int]], timeout: float = 10.0
    ) -> list[tuple[str, int, int | None]]: ...
    def seek(self, topic: str, partition: int, offset: int) -> None: ...
    def pause(self, partitions: list[tuple[str, int]]) -> None: ...
    def resume(self, partitions: list[tuple[str, int]]) -> None: ...
    def assignment(self) -> list[tuple[str, int]]: ...
    def position(self) -> list[tuple[str, int, int]]: ...
    def lag(self, timeout: float = 10.0) -> dict[tuple[str, int], int]: ...
    def rebalance_events(self) -> list[tuple[str, list[tuple[str, int]]]]: ...
    def has_pending(self) -> bool: ...
    def set_read_until(self, until_ms: int | None) -> None: ...
    def close(self) -> None: ...

@final
class Admin:
    @staticmethod
    def memory(broker: MemoryBroker) -> Admin: ...
    @staticmethod
    def kafka(config: dict[str, str]) -> Admin: ...
    def create_topics(
        self, specs: list[tuple[str, int, int, dict[str, str]]], timeout: float = 30.0
    ) -> list[tuple[str, bool]]: ...
    def delete_topics(self, names: list[str], timeout: float = 30.0) -> None: ...
    def describe_topics(self, names: list[str], timeout: float = 30.0) -> list[TopicDescription]: ...
    def list_topics(self, timeout: float = 30.0) -> list[str]: ...
    def end_offsets(self, topic: str, timeout: float = 30.0) -> list[int]: ...
    def purge_consumed(self, keep: list[str] = ...) -> int: ...

def murmur2(key: bytes) -> int: ...
def partition_for_key(key: bytes, partitions: int) -> int: ...
def librdkafka_version() -> str: ...
def probe_kafka(config: dict[str, str], timeout: float = 10.0) -> list[str]: ...

# --- metrics ---

def latency_headers(
    records: Sequence[Record], origin: str, stage: str
) -> list[tuple[int, str, bytes | None, int] | None]:
    """Per record (origin_ns, stage, key, produced_ns) from its `origin` and `stage` headers,
    or None where they are missing or not plain (the caller reads that record's itself)."""

# --- codec ---
# Avro codec for the hot message types (kstrade-codec). Records are dicts shaped like fastavro's
# Avro values, except `timestamp`, which is epoch microseconds. Batch decoders release the GIL
# and return columns: numeric ones as little-endian bytes (int64/float64) that
# kstrade.schemas.codec wraps in numpy arrays, strings as lists, plus `count`, `rows` (int64
# positions of the decoded inputs) and `failed` [(position, CodecError)] when errors="skip".

class CodecError(ValueError):
    code: str
    schema: str
    field: str
    topic: str | None
    offset: int | None

NATIVE_SCHEMA_VERSIONS: dict[str, int]
#: Every writer version each native layout reads (the current one and older prefixes of it).
NATIVE_READ_VERSIONS: dict[str, list[int]]
#: Every schemas/*.avsc (and released/*.avsc) this build was compiled from: path -> JSON text.
SCHEMA_FILES: dict[str, str]

def read_signal_fields(
    body: bytes,
) -> tuple[int, str, str, int, int, float, int | None, float, float, float, float | None]: ...

@final
class CandleMarks:
    def __new__(
        cls,
        *,
        schema: str,
        version: int,
        encoding: str,
        intervals: dict[str, int],
        origins: list[str],
        micros_min: int,
        micros_max: int,
    ) -> Self: ...
    def read(self, records: list[Record]) -> list[tuple[str, float, float, float, float, int] | None]: ...

@final
class FeaturePicker:
    def __new__(cls, wanted: list[str]) -> Self: ...
    @property
    def wanted(self) -> list[str]: ...
    def read(self, body: bytes) -> tuple[int, str, list[float | None]]: ...

@final
class SignalPlanner:
    def __new__(
        cls,
        *,
        weights: list[tuple[str, float]],
        tiers: list[float],
        stop_loss_atr: float,
        take_profit_atr: float,
        ttl_seconds: int,
        tf_alignment: float | None,
        volatility: tuple[float, float] | None,
        alignment_floor: float,
        blocked: list[bool],
        one_position_per_symbol: bool,
        risk_per_trade: float | None,
        tier_size_scale: list[float | None],
        features: list[str],
        atr: int,
        alignment: int,
        regimes: list[tuple[int, int]],
        snapshot: list[int],
        calibrators: list[tuple[str, str, float, float, list[float], list[float]]],
    ) -> Self: ...
    def plan(
        self,
        symbol: str,
        timestamp_us: int,
        votes: list[tuple[str, str, int, float, float]],
        features: list[float | None] | None,
        close: float | None,
        last_close: float | None,
        now_ns: int,
        position_open: bool,
        weights: list[tuple[str, float]] | None = None,
    ) -> tuple[bytes, bytes, bytes, int, str, str] | None: ...

_Spec = tuple[str, int, str]
_Vote = tuple[str, str, int, float, float]
_Context = tuple[int, int, list[_Vote], list[float | None] | None, float | None, float | None, int, bool]

@final
class SignalCore:
    def __new__(
        cls,
        *,
        symbols: list[str],
        required: list[str],
        deadline_ns: int,
        memory: int,
        backlog: int,
        planner: SignalPlanner | None,
        candle_topics: list[str],
        feature_topics: list[str],
        lstm_topics: list[str],
        transformer_topic: str,
        candles: tuple[_Spec, str, int] | None,
        features: tuple[_Spec, list[str]] | None,
        predictions: _Spec | None,
    ) -> Self: ...
    def feed(
        self, records: list[Record], start: int, now_ns: int
    ) -> tuple[int, list[tuple[int, bytes, bytes, bytes, int, int]], _Context | None]: ...
    def add_close(self, symbol: int, ts: int, close: float, topic: str, partition: int, offset: int) -> None: ...
    def add_features(
        self, symbol: int, ts: int, values: list[float | None], topic: str, partition: int, offset: int
    ) -> None: ...
    def add_prediction(
        self, symbol: int, ts: int, vote: _Vote, now_ns: int, origin_ns: int, topic: str, partition: int, offset: int
    ) -> None: ...
    def filled(self, symbol: int, signal_id: str) -> None: ...
    def closed(self, signal_id: str) -> None: ...
    def reserve(self, symbol: int, signal_id: str, expires_ns: int) -> None: ...
    def has_due(self, now_ns: int) -> bool: ...
    def queue_due(self, now_ns: int) -> None: ...
    def retained(self) -> dict[tuple[str, int], int]: ...
    def take_warnings(self) -> list[tuple[str, str, int, int, int, int]]: ...
    def stats(self) -> tuple[int, int, int, int]: ...
    def is_pending(self, symbol: int, ts: int) -> bool: ...
    def close(self, symbol: int, ts: int) -> float | None: ...
    def features(self, symbol: int, ts: int) -> list[float | None] | None: ...
    def decided_through(self, symbol: int) -> int | None: ...

_LatencyRow = tuple[str, str, int, float, float, float, float]

@final
class MetricsCore:
    def __new__(
        cls,
        *,
        headers: tuple[str, str, str, str, str],
        max_plausible_ns: int,
        max_events: int,
        settle_ns: int,
        bar_ns: int,
        horizon_bars: int,
        flat_band: float,
        window: int,
        delta: float,
        threshold: float,
        sample_every: int | None,
        candle: _Spec | None,
        prediction: _Spec | None,
        signal: _Spec | None,
        final_stage: int,
    ) -> Self: ...
    def topic(self, topic: str, kind: str, stored: int | None = None) -> None: ...
    def feed(self, records: list[Record], start: int, now_ns: int) -> tuple[int, int]: ...
    def count(self, topic: str, n: int) -> None: ...
    def counts(self) -> list[tuple[str, int]]: ...
    def unexported(self) -> list[tuple[str, int]]: ...
    def take_unexported(self) -> list[tuple[str, int]]: ...
    def observe_run(self, topic: str, timed: list[tuple[int, str, bytes | None, int]]) -> None: ...
    def take_window(self, now_ns: int) -> tuple[list[_LatencyRow], list[_LatencyRow]]: ...
    def add_bar(self, symbol: str, origin_ns: int, close: float) -> None: ...
    def add_prediction(self, model: str, symbol: str, origin_ns: int, direction: int) -> int: ...
    def accuracy(self, *, take: bool) -> list[tuple[str, str, float | None, int, float, float, bool]]: ...
    @property
    def predictions_seen(self) -> int: ...
    @property
    def last_candle_ns(self) -> int | None: ...
    def candle_seen(self, now_ns: int) -> None: ...
    @property
    def implausible(self) -> int: ...
    def dump(self) -> str: ...

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
def encode_feature_columns(
    symbol: str, version: str, names: list[str], matrix: bytes, columns: list[int], timestamps_us: list[int]
) -> list[bytes]:
    """Bare Avro FeatureVector bodies of some columns of a feature-major float64 matrix."""

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

# --- market engine ---

# Anything with the buffer protocol of the right item type (float64, or int64 for times).
_Buffer: TypeAlias = npt.NDArray[Any] | bytes | bytearray | memoryview

FEATURE_VERSION: str
FEATURE_COUNT: int

class MarketError(ValueError):
    """A candle or indicator input was rejected; `.code` is a stable error code."""

    code: str

@final
class Candle:
    def __new__(
        cls,
        open_time_ms: int,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        interval: str = "1m",
    ) -> Self: ...
    @property
    def open_time_ms(self) -> int: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...
    @property
    def interval(self) -> str: ...

@final
class ClosedBar:
    @property
    def candle(self) -> Candle: ...
    @property
    def interval(self) -> str: ...
    @property
    def minutes(self) -> int: ...
    @property
    def expected(self) -> int: ...
    @property
    def complete(self) -> bool: ...

@final
class CandleAggregator:
    def __new__(cls, base_interval: str = "1m") -> Self: ...
    def push(self, candle: Candle) -> tuple[int, list[ClosedBar]] | None: ...

@final
class SMA:
    def __new__(cls, timeperiod: int = ...) -> Self: ...  # defaults: timeperiod=30
    def update(self, real: float) -> float | None: ...

@final
class EMA:
    def __new__(cls, timeperiod: int = ...) -> Self: ...  # defaults: timeperiod=30
    def update(self, real: float) -> float | None: ...

@final
class RSI:
    def __new__(cls, timeperiod: int = ...) -> Self: ...  # defaults: timeperiod=14
    def update(self, real: float) -> float | None: ...

@final
class STDDEV:
    def __new__(cls, timeperiod: int = ..., nbdev: float = ...) -> Self: ...  # defaults: timeperiod=5, nbdev=1.0
    def update(self, real: float) -> float | None: ...

@final
class ROCP:
    def __new__(cls, timeperiod: int = ...) -> Self: ...  # defaults: timeperiod=10
    def update(self, real: float) -> float | None: ...

@final
class VolumeZScore:
    def __new__(cls, timeperiod: int = ...) -> Self: ...  # defaults: timeperiod=20
    def update(self, real: float) -> float | None: ...

@final
class MACD:
    def __new__(cls, fastperiod: int = 12, slowperiod: int = 26, signalperiod: int = 9) -> Self: ...
    def update(self, real: float) -> tuple[float, float, float] | None: ...

@final
class BBANDS:
    def __new__(cls, timeperiod: int = 5, nbdevup: float = 2.0, nbdevdn: float = 2.0, matype: int = 0) -> Self: ...
    def update(self, real: float) -> tuple[float, float, float] | None: ...

@final
class ATR:
    def __new__(cls, timeperiod: int = 14) -> Self: ...
    def update(self, high: float, low: float, close: float) -> float | None: ...

@final
class STOCH:
    def __new__(
        cls,
        fastk_period: int = 5,
        slowk_period: int = 3,
        slowk_matype: int = 0,
        slowd_period: int = 3,
        slowd_matype: int = 0,
    ) -> Self: ...
    def update(self, high: float, low: float, close: float) -> tuple[float, float] | None: ...

@final
class ADX:
    def __new__(cls, timeperiod: int = 14) -> Self: ...
    def update(self, high: float, low: float, close: float) -> float | None: ...

@final
class PLUS_DI:
    def __new__(cls, timeperiod: int = 14) -> Self: ...
    def update(self, high: float, low: float, close: float) -> float | None: ...

@final
class MINUS_DI:
    def __new__(cls, timeperiod: int = 14) -> Self: ...
    def update(self, high: float, low: float, close: float) -> float | None: ...

@final
class OBV:
    def __new__(cls) -> Self: ...
    def update(self, real: float, volume: float) -> float: ...

@final
class VWAP:
    def __new__(cls) -> Self: ...
    def update(self, high: float, low: float, close: float, volume: float) -> float: ...

@final
class SessionVWAP:
    def __new__(cls) -> Self: ...
    def update(self, session: int, high: float, low: float, close: float, volume: float) -> float: ...

def batch_single(kind: str, real: _Buffer, out: _Buffer, timeperiod: int) -> None: ...
def batch_stddev(real: _Buffer, out: _Buffer, timeperiod: int, nbdev: float) -> None: ...
def batch_log_return(real: _Buffer, out: _Buffer) -> None: ...
def batch_macd(
    real: _Buffer,
    macd: _Buffer,
    signal: _Buffer,
    hist: _Buffer,
    fastperiod: int,
    slowperiod: int,
    signalperiod: int,
) -> None: ...
def batch_bbands(
    real: _Buffer,
    upper: _Buffer,
    middle: _Buffer,
    lower: _Buffer,
    timeperiod: int,
    nbdevup: float,
    nbdevdn: float,
) -> None: ...
def batch_atr(high: _Buffer, low: _Buffer, close: _Buffer, out: _Buffer, timeperiod: int) -> None: ...
def batch_stoch(
    high: _Buffer,
    low: _Buffer,
    close: _Buffer,
    slowk: _Buffer,
    slowd: _Buffer,
    fastk_period: int,
    slowk_period: int,
    slowd_period: int,
) -> None: ...
def batch_directional(
    high: _Buffer,
    low: _Buffer,
    close: _Buffer,
    plus_di: _Buffer,
    minus_di: _Buffer,
    adx: _Buffer,
    timeperiod: int,
) -> None: ...
def batch_obv(real: _Buffer, volume: _Buffer, out: _Buffer) -> None: ...
def batch_vwap(high: _Buffer, low: _Buffer, close: _Buffer, volume: _Buffer, out: _Buffer) -> None: ...
def batch_session_vwap(
    session: _Buffer, high: _Buffer, low: _Buffer, close: _Buffer, volume: _Buffer, out: _Buffer
) -> None: ...

@final
class FeatureVector:
    @property
    def open_time_ms(self) -> int: ...
    @property
    def ready(self) -> bool: ...
    @property
    def values(self) -> list[float]: ...
    @property
    def names(self) -> tuple[str, ...]: ...
    @property
    def closed(self) -> list[ClosedBar]: ...
    def raw(self) -> bytes: ...
    def __len__(self) -> int: ...

class FeatureEngine:
    def __new__(cls, base_interval: str = "1m") -> Self: ...
    @property
    def timeframes(self) -> list[str]: ...
    def update(self, candle: Candle) -> FeatureVector | None: ...
    def update_ohlcv(
        self, open_time_ms: int, open: float, high: float, low: float, close: float, volume: float
    ) -> FeatureVector | None: ...
    def update_batch(
        self,
        open_time_ms: _Buffer,
        open: _Buffer,
        high: _Buffer,
        low: _Buffer,
        close: _Buffer,
        volume: _Buffer,
    ) -> tuple[bytes, list[int], list[bool], list[tuple[int, str, str]]]: ...
    def snapshot(self) -> bytes: ...
    def restore(self, snapshot: bytes) -> None: ...
    @property
    def candles(self) -> int: ...
    @property
    def incomplete_bars(self) -> dict[str, int]: ...
    @staticmethod
    def feature_names(base_interval: str = "1m") -> tuple[str, ...]: ...
