"""Pydantic models that mirror `schemas/*.avsc`: validation at the edges of the pipeline.

Field names, order and meaning follow the Avro schemas (the source of truth; a test checks the
two agree). Timestamps are timezone-aware UTC datetimes (Avro `timestamp-micros`), enums are
`StrEnum`s whose values are the Avro symbols, and no double may be NaN or infinite.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from kstrade.clock import EPOCH

Interval = Literal["1m", "5m", "15m", "1h"]
#: How many 1m candles make a candle of each interval.
INTERVAL_MINUTES: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "1h": 60}


class ModelType(StrEnum):
    LSTM = "lstm"
    TRANSFORMER = "transformer"
    ENSEMBLE = "ensemble"


class PredictedDirection(StrEnum):
    """The design's -1 / 0 / 1; `sign` gives the number."""

    DOWN = "DOWN"
    FLAT = "FLAT"
    UP = "UP"

    @property
    def sign(self) -> int:
        return {"DOWN": -1, "FLAT": 0, "UP": 1}[self.value]

    @classmethod
    def from_sign(cls, sign: int) -> PredictedDirection:
        try:
            return {-1: cls.DOWN, 0: cls.FLAT, 1: cls.UP}[sign]
        except KeyError:
            raise ValueError(f"direction must be -1, 0 or 1, not {sign!r}") from None


class SignalStage(StrEnum):
    RAW = "raw"
    CALIBRATED = "calibrated"
    FILTERED = "filtered"
    FINAL = "final"


class SignalDirection(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"


class Tier(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    CONFIRMED = "CONFIRMED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class CandleOrigin(StrEnum):
    """Where a 1m candle came from: built by ingest from live trades, or the exchange's own
    candle fetched over REST (a backfill)."""

    TRADES = "TRADES"
    REST = "REST"


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class Message(BaseModel):
    """Base of every message: immutable, strict about unknown keys, finite doubles, UTC times."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Stem of the `.avsc` file in `schemas/`.
    schema_file: ClassVar[str]

    timestamp: AwareDatetime

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)


class Candle(Message):
    schema_file: ClassVar[str] = "candle"
    symbol: str = Field(min_length=1)
    interval: Interval
    open: float
    high: float
    low: float
    close: float
    volume: float = Field(ge=0)
    source: str
    #: How many 1m candles it was built from (v2): 1 for a 1m candle, fewer than the interval's
    #: minutes for an incomplete 5m/15m/1h bar; None: not stated (a v1 writer, a file's bar).
    minutes: int | None = Field(None, ge=1)
    #: Where a 1m candle came from (v2); None: not stated (higher bars, replays, v1 writers).
    origin: CandleOrigin | None = None

    @model_validator(mode="after")
    def _ohlc(self) -> Candle:
        if not (self.low <= min(self.open, self.close) and max(self.open, self.close) <= self.high):
            raise ValueError(f"low {self.low} <= open/close <= high {self.high} does not hold")
        if self.minutes is not None and self.minutes > INTERVAL_MINUTES[self.interval]:
            raise ValueError(f"a {self.interval} candle cannot be built from {self.minutes} 1m candles")
        if self.origin is not None and self.interval != "1m":
            raise ValueError(f"origin is stated for 1m candles only, not {self.interval}")
        return self


def candle_provenance_valid(interval: Any, minutes: Any, origin: Any) -> bool:
    """Whether `Candle` accepts these `minutes` and `origin` (as decoded: int/None and an
    `CandleOrigin` symbol/None) for a candle of this `interval`: for the fast paths that check
    a decoded value as the model would, without building it."""
    if interval not in INTERVAL_MINUTES:
        return False
    if minutes is not None and (type(minutes) is not int or not 1 <= minutes <= INTERVAL_MINUTES[interval]):
        return False
    return origin is None or (interval == "1m" and origin in _CANDLE_ORIGINS)


_CANDLE_ORIGINS = frozenset(o.value for o in CandleOrigin)


class FeatureVector(Message):
    schema_file: ClassVar[str] = "feature_vector"
    symbol: str = Field(min_length=1)
    version: str = Field(min_length=1)
    names: list[str]
    values: list[float]

    @model_validator(mode="after")
    def _shape(self) -> FeatureVector:
        if len(self.names) != len(self.values):
            raise ValueError(f"{len(self.values)} values for {len(self.names)} names")
        if len(set(self.names)) != len(self.names):
            raise ValueError("feature names must be unique")
        return self

    @property
    def features(self) -> dict[str, float]:
        """The design document's `features` object, in model input order."""
        return dict(zip(self.names, self.values, strict=True))


class PredictionOutput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    direction: PredictedDirection
    probability: float = Field(ge=0, le=1)
    confidence: float = Field(ge=0, le=1)


class Prediction(Message):
    schema_file: ClassVar[str] = "prediction"
    model_config = ConfigDict(protected_namespaces=())
    symbol: str = Field(min_length=1)
    model_type: ModelType
    model_version: str
    prediction: PredictionOutput
    inference_time_ms: float = Field(ge=0)


class Signal(Message):
    schema_file: ClassVar[str] = "signal"
    symbol: str = Field(min_length=1)
    signal_id: UUID
    stage: SignalStage
    direction: SignalDirection
    confidence: float = Field(ge=0, le=1)
    tier: Tier | None = None
    entry_price: float = Field(gt=0)
    stop_loss: float = Field(gt=0)
    take_profit: float = Field(gt=0)
    position_size: float | None = Field(default=None, ge=0)
    features_snapshot: dict[str, float] = Field(default_factory=dict)
    ensemble_weights: dict[str, float] = Field(default_factory=dict)
    boosters_applied: list[str] = Field(default_factory=list)
    ttl_seconds: int = Field(gt=0, lt=2**31)

    @model_validator(mode="after")
    def _stops_on_the_right_side(self) -> Signal:
        # A stop on the wrong side of the entry would be hit at once: refuse it at the edge.
        long = self.direction is SignalDirection.LONG
        ok = (
            (self.stop_loss < self.entry_price < self.take_profit)
            if long
            else (self.take_profit < self.entry_price < self.stop_loss)
        )
        if not ok:
            raise ValueError(f"{self.direction.value}: stop_loss / entry_price / take_profit out of order")
        return self


class Order(Message):
    schema_file: ClassVar[str] = "order"
    signal_id: UUID
    order_id: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    side: Side
    order_type: OrderType
    quantity: float = Field(gt=0)
    price: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    status: OrderStatus
    session: str
    latency_ms: float | None = None


class Execution(Message):
    schema_file: ClassVar[str] = "execution"
    signal_id: UUID
    order_id: str = Field(min_length=1)
    execution_id: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    side: Side
    order_type: OrderType
    quantity: float = Field(gt=0)
    price: float | None = None
    status: OrderStatus
    fill_price: float = Field(gt=0)
    slippage_bps: float
    commission: float = 0.0
    latency_ms: float = Field(ge=0)
    session: str


class PnlEvent(Message):
    schema_file: ClassVar[str] = "pnl_event"
    signal_id: UUID
    order_id: str
    symbol: str = Field(min_length=1)
    side: Side
    quantity: float = Field(gt=0)
    entry_price: float
    exit_price: float
    realized_pnl: float
    commission: float
    currency: str
    balance: float
    #: Why the position closed (`ExitReason` values, or an MT5 deal's comment); None from a v1 producer.
    exit_reason: str | None = None


class PerformanceMetrics(Message):
    schema_file: ClassVar[str] = "performance_metrics"
    window_seconds: int = Field(gt=0, lt=2**31)
    trades: int = Field(ge=0, lt=2**31)
    win_rate: float = Field(ge=0, le=1)
    sharpe: float
    max_drawdown: float = Field(ge=0)
    realized_pnl: float


class ModelDrift(Message):
    schema_file: ClassVar[str] = "model_drift"
    model_config = ConfigDict(protected_namespaces=())
    model_type: ModelType
    model_version: str
    symbol: str | None = None
    metric: str
    value: float
    threshold: float
    drifted: bool


class Latency(Message):
    schema_file: ClassVar[str] = "latency"
    stage: str
    topic: str
    count: int = Field(ge=0)
    p50_ms: float = Field(ge=0)
    p99_ms: float = Field(ge=0)
    max_ms: float = Field(ge=0)


class Alert(Message):
    schema_file: ClassVar[str] = "alert"
    severity: Severity
    source: str
    code: str
    message: str


class ControlAction(StrEnum):
    HALT = "HALT"
    RESUME = "RESUME"
    FLATTEN = "FLATTEN"


#: `ControlCommand.account` that addresses every account.
EVERY_ACCOUNT = "*"


class ControlCommand(Message):
    """An operator's command to one account's execution stage (`control.execution`)."""

    schema_file: ClassVar[str] = "control_command"
    command_id: UUID
    account: str = Field(min_length=1)
    action: ControlAction
    issued_by: str = Field(min_length=1)
    reason: str


class DeadLetterHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")
    name: str
    value: bytes | None = None


class DeadLetter(Message):
    schema_file: ClassVar[str] = "dead_letter"
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    source_topic: str
    source_partition: int = Field(ge=0, lt=2**31)
    source_offset: int = Field(ge=0)
    stage: str
    error_code: str
    error_message: str
    key: bytes | None = None
    value: bytes | None = None
    value_size: int | None = None
    headers: list[DeadLetterHeader] = Field(default_factory=list)

    @classmethod
    def from_dead_letter_record(cls, record: Any) -> DeadLetter:
        """Builds the envelope from a record on `dlq.*` written by `kstrade.bus.DeadLetters`."""
        hs: list[tuple[str, bytes | None]] = list(record.headers)
        dlq = {k: v.decode() for k, v in hs if k.startswith("dlq.") and v is not None}
        size = dlq.get("dlq.value.truncated")
        return cls(
            timestamp=EPOCH + timedelta(microseconds=int(dlq["dlq.time_ns"]) // 1000),
            source_topic=dlq["dlq.source.topic"],
            source_partition=int(dlq["dlq.source.partition"]),
            source_offset=int(dlq["dlq.source.offset"]),
            stage=dlq["dlq.stage"],
            error_code=dlq["dlq.error.code"],
            error_message=dlq["dlq.error.message"],
            key=record.key,
            value=record.value,
            value_size=int(size) if size is not None else None,
            headers=[DeadLetterHeader(name=k, value=v) for k, v in hs if not k.startswith("dlq.")],
        )


class IngestHealth(Message):
    """An ingest process's health counters (cumulative since `started`) for the metrics collector."""

    schema_file: ClassVar[str] = "ingest_health"
    source: str = Field(min_length=1)
    symbols: list[str]
    started: AwareDatetime
    last_message_age_s: float | None = Field(None, ge=0)
    messages: int = Field(ge=0)
    reconnects: int = Field(ge=0)
    gaps_detected: int = Field(ge=0)
    gaps_backfilled: int = Field(ge=0)
    backfilled_candles: int = Field(ge=0)
    candles_produced: int = Field(ge=0)
    #: Quiet minutes: no candle, and no trade seen in them (a v1 writer counted lost ones here too).
    missing_minutes: int = Field(ge=0)
    incomplete_bars: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    rejected: int = Field(ge=0)
    malformed_messages: int = Field(ge=0)
    unknown_channels: int = Field(ge=0)
    rate_limited: int = Field(ge=0)
    cross_checked: int = Field(ge=0)
    cross_check_mismatches: int = Field(ge=0)
    #: Minutes with trades seen and no candle obtained, each alerted INGEST_MINUTE_LOST (v2; 0 from v1).
    lost_minutes: int = Field(0, ge=0)

    @field_validator("started")
    @classmethod
    def _started_utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)


#: Every message model by schema file stem.
MODELS: dict[str, type[Message]] = {
    m.schema_file: m
    for m in (
        Candle,
        FeatureVector,
        Prediction,
        Signal,
        Order,
        Execution,
        PnlEvent,
        PerformanceMetrics,
        ModelDrift,
        Latency,
        Alert,
        DeadLetter,
        IngestHealth,
        ControlCommand,
    )
}
