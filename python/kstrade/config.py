"""The one config loader: a TOML file, then `KSTRADE_*` environment variables, then CLI flags.

Every section rejects unknown keys and all fields are validated at once, so a broken config
fails at start-up with one message that names every bad key. Secrets (e.g. the Kafka SASL
password) come only from the environment or from a file named by `*_file`, never from the TOML
file, and are redacted whenever the config is printed: by one rule on the name
(`kstrade.redaction`), so a librdkafka property such as `ssl.key.pem` is masked without a list.

    KSTRADE_BUS__TRANSPORT=kafka KSTRADE_BUS__BOOTSTRAP=10.0.0.5:9092 python -m kstrade config show
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from kstrade.redaction import is_secret_name, mask_properties, mask_tree
from kstrade.symbols import DEFAULT_SYMBOLS, check_symbol

if TYPE_CHECKING:
    from kstrade.schemas.registry import SchemaRegistry

#: The TOML file `load` is reading, for the settings source that sits under the environment.
_TOML_FILE: ContextVar[Path | None] = ContextVar("kstrade_toml_file", default=None)


class ConfigError(ValueError):
    """The configuration is invalid; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusSettings(_Section):
    """Which transport the stages talk through, and how to reach Kafka."""

    transport: Literal["memory", "kafka"] = "memory"
    bootstrap: str = "127.0.0.1:9092"
    replication_factor: int = Field(1, ge=1)
    min_insync_replicas: int | None = Field(None, ge=1)
    #: Any librdkafka property, applied to every client (e.g. "security.protocol"). One that
    #: carries a secret (`ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...) only from the
    #: environment (KSTRADE_BUS__PROPERTIES, JSON); it is masked wherever settings are shown.
    properties: dict[str, str] = Field(default_factory=dict)
    sasl_username: str | None = None
    #: Only from KSTRADE_BUS__SASL_PASSWORD or the file named by sasl_password_file.
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    #: Time sanity at every live stage's door: a record whose market time (its origin_ns, a
    #: candle's close) is more than this ahead of the wall clock is dead-lettered
    #: FUTURE_TIMESTAMP and never moves state (replays have no wall clock: see Stage.future_limit_ns).
    max_future_skew_s: float = Field(120.0, gt=0, le=86_400)
    #: Backwards: live, a record whose market time lies more than this behind the newest a stage
    #: handled from the same partition is dead-lettered PAST_TIMESTAMP (a week: the topics'
    #: retention, so never a redelivery).
    max_past_jump_s: float = Field(7 * 86_400.0, gt=0)
    #: A Confluent-compatible schema registry (e.g. Apicurio's `http://host:8080/apis/ccompat/v7`).
    #: Set: on the kafka transport every producer registers its schema (subject: the full record
    #: name, e.g. `kstrade.Candle`) and writes the Confluent wire format; consumers read both
    #: wire formats either way. None: bare Avro (schemas/README.md, Encodings).
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    #: Only from KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD or the file named by schema_registry_password_file.
    schema_registry_password: SecretStr | None = None
    schema_registry_password_file: Path | None = None

    @model_validator(mode="after")
    def _checks(self) -> BusSettings:
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError("min_insync_replicas cannot exceed replication_factor")
        url = self.schema_registry_url
        if url is not None:
            if not re.match(r"https?://[^/\s]+", url):
                raise ValueError("schema_registry_url must be an http:// or https:// URL")
            if "@" in url.split("://", 1)[1].split("/", 1)[0]:
                raise ValueError(
                    "schema_registry_url: no credentials in the URL: set schema_registry_username and "
                    "KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD"
                )
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # A traceback or log line that prints the settings must not print ssl.key.pem.
        for name, value in super().__repr_args__():
            yield name, mask_properties(value) if name == "properties" and isinstance(value, dict) else value

    def password(self) -> str | None:
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is not None:
            try:
                return self.sasl_password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"bus.sasl_password_file: cannot read {self.sasl_password_file}: {exc}") from exc
        return None

    def schema_registry(self) -> SchemaRegistry | None:
        """The registry client these settings describe (credentials included), or None: off."""
        if self.schema_registry_url is None:
            return None
        from kstrade.schemas.registry import SchemaRegistry

        auth = None
        if self.schema_registry_username is not None:
            if self.schema_registry_password is not None:
                secret = self.schema_registry_password.get_secret_value()
            elif self.schema_registry_password_file is not None:
                try:
                    secret = self.schema_registry_password_file.read_text().strip()
                except OSError as exc:
                    raise ConfigError(
                        f"bus.schema_registry_password_file: cannot read {self.schema_registry_password_file}: {exc}"
                    ) from exc
            else:
                raise ConfigError(
                    "bus.schema_registry_password: schema_registry_username is set but no password: set "
                    "KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD or bus.schema_registry_password_file"
                )
            auth = (self.schema_registry_username, secret)
        return SchemaRegistry(self.schema_registry_url, auth=auth)

    @property
    def protocol(self) -> str:
        """The client's `security.protocol` (librdkafka's default: PLAINTEXT)."""
        return self.properties.get("security.protocol", "PLAINTEXT").upper()

    def client_properties(self) -> dict[str, str]:
        """librdkafka properties for this cluster, credentials included."""
        props = {**self.properties, "bootstrap.servers": self.bootstrap}
        if self.sasl_username is not None:
            secret = self.password()
            if secret is None:
                raise ConfigError(
                    "bus.sasl_password: sasl_username is set but no password: set KSTRADE_BUS__SASL_PASSWORD "
                    "or bus.sasl_password_file"
                )
            props["sasl.username"] = self.sasl_username
            props["sasl.password"] = secret
        return props


#: FTMO objectives per product (public rules, see docs): every number can be overridden.
GUARDRAIL_PRESETS: dict[str, dict[str, Any]] = {
    # 2-Step Challenge: 5% daily, 10% static maximum loss, 10% target, 4 trading days.
    "ftmo_2step": {
        "max_daily_loss_pct": 5.0,
        "max_loss_pct": 10.0,
        "max_loss_mode": "static",
        "profit_target_pct": 10.0,
        "min_trading_days": 4,
        "best_day_pct": None,
    },
    # 1-Step: 3% daily, 10% trailing at end of day, best day <= 50% of total profit.
    "ftmo_1step": {
        "max_daily_loss_pct": 3.0,
        "max_loss_pct": 10.0,
        "max_loss_mode": "trailing_eod",
        "profit_target_pct": 10.0,
        "min_trading_days": 4,
        "best_day_pct": 50.0,
    },
}


class GuardrailSettings(_Section):
    """Prop-firm loss limits and trading restrictions. `preset` fills every rule number that is
    not given explicitly (FTMO 2-Step by default, `ftmo_1step` for 1-Step)."""

    preset: Literal["ftmo_2step", "ftmo_1step"] = "ftmo_2step"
    initial_balance: float = Field(100_000.0, gt=0)
    currency: str = "USD"
    max_daily_loss_pct: float = Field(5.0, gt=0, lt=100)
    max_loss_pct: float = Field(10.0, gt=0, lt=100)
    max_loss_mode: Literal["static", "trailing_eod"] = "static"
    profit_target_pct: float = Field(10.0, gt=0)
    min_trading_days: int = Field(4, ge=0)
    best_day_pct: float | None = Field(None, gt=0, le=100)
    #: REDUCING once this share of the room to either floor is used (only closing orders then).
    reducing_at_pct: float = Field(80.0, gt=0, le=100)
    #: Adverse slippage assumed when a stop is hit, in bps of the stop price (worst-case check).
    stop_slippage_bps: float = Field(10.0, ge=0)
    max_open_positions: int = Field(5, ge=1)
    max_orders_per_minute: int = Field(10, ge=1)
    #: Funded accounts: news blackout and weekend close apply; swing accounts are exempt.
    funded: bool = False
    swing: bool = False
    news_calendar: Path | None = None
    news_window_minutes: float = Field(2.0, ge=0)
    #: Targeted positions are closed this long before a blackout starts (closing inside it counts
    #: as a breach too, and so would their stop or target filling there).
    news_close_lead_minutes: float = Field(5.0, ge=0)
    #: Weekend close (Prague time): flatten and stop opening from Friday at this time ...
    weekend_close: str = Field("21:45", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    #: ... until Sunday at this time.
    weekend_reopen: str = Field("23:05", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = GUARDRAIL_PRESETS.get(str(data.get("preset", "ftmo_2step")), {})
            return {**preset, **data}
        return data


class SymbolSettings(_Section):
    """Contract facts the sizer needs (MT5's symbol_info gives them live)."""

    #: Account currency gained per lot when the price moves by 1.0 (EURUSD standard lot: 100000).
    value_per_unit: float = Field(1.0, gt=0)
    volume_step: float = Field(0.0001, gt=0)
    volume_min: float = Field(0.0001, gt=0)
    volume_max: float = Field(1000.0, gt=0)
    #: Commission per lot per side, in account currency.
    commission_per_lot: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _volumes(self) -> SymbolSettings:
        if self.volume_min > self.volume_max:
            raise ValueError("volume_min exceeds volume_max")
        return self


class ExecutionSettings(_Section):
    """The execution stage: broker, sizing, retries, circuit breaker, order journal."""

    broker: Literal["paper", "mt5", "mt5linux"] = "paper"
    #: The account this execution process trades: the key of its commands on control.execution.
    account: str = Field("default", min_length=1, pattern=r"^[A-Za-z0-9._:@-]+$")
    #: A flatten read later than this after it was issued only halts (it closes nothing).
    control_flatten_max_age_s: float = Field(300.0, gt=0)
    #: The durable signal_id -> order journal (SQLite); survives restarts.
    journal_path: Path = Path("~/.local/state/kstrade/execution/orders.sqlite3")
    #: Every write of the journal and the paper account reaches the disk before the stage goes
    #: on (fsync), so a crash loses no order. A replay's run directory turns it off (`run`,
    #: `backtest`): a backtest is run again, never recovered, and ~1,000 fsyncs a simulated week
    #: were a tenth of its time; the paper account is then written once, when the stage closes.
    durable_state: bool = True
    guardrails: GuardrailSettings = Field(default_factory=lambda: GuardrailSettings())
    #: Per-symbol contract facts; symbols not listed use the defaults of SymbolSettings.
    symbols: dict[str, SymbolSettings] = Field(default_factory=dict)
    kelly_fraction: float = Field(0.25, gt=0, le=1)
    max_risk_pct: float = Field(1.0, gt=0, le=100)
    #: Paper broker: adverse slippage on every fill, in bps.
    paper_slippage_bps: float = Field(2.0, ge=0)
    #: Paper broker: its account (balance, positions) as JSON; None keeps it in memory only.
    paper_state_path: Path | None = Path("~/.local/state/kstrade/execution/paper-account.json")
    retry_attempts: int = Field(3, ge=0)
    retry_initial_s: float = Field(0.5, gt=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_s: float = Field(60.0, gt=0)
    #: MT5: the magic number that marks our orders, and the slippage allowed in points.
    mt5_magic: int = Field(770_001, ge=0)
    mt5_deviation_points: int = Field(20, ge=0)
    #: mt5linux: the RPyC bridge. RPyC classic allows remote code execution: loopback only.
    mt5linux_host: Literal["127.0.0.1", "localhost", "::1"] = "127.0.0.1"
    mt5linux_port: int = Field(18812, ge=1, le=65535)
    mt5_login: int | None = None
    mt5_server: str | None = None
    #: Only from KSTRADE_EXECUTION__MT5_PASSWORD, never from the config file.
    mt5_password: SecretStr | None = None
    #: The account's Prometheus endpoint (equity, headroom, states, orders); 0 disables it.
    prometheus_port: int = Field(9465, ge=0, le=65535)
    prometheus_addr: str = "127.0.0.1"


class TierBands(_Section):
    """Lower bounds of calibrated confidence for tiers A, B and C; below C is D (never traded)."""

    a: float = Field(0.70, gt=0, lt=1)
    b: float = Field(0.60, gt=0, lt=1)
    c: float = Field(0.55, gt=0, lt=1)

    @model_validator(mode="after")
    def _descending(self) -> TierBands:
        if not self.a > self.b > self.c:
            raise ValueError(f"tier bands must descend: a {self.a} > b {self.b} > c {self.c}")
        return self


class BoosterSettings(_Section):
    """One FREE booster. Off by default: none has shown on held-out data that it keeps calibration."""

    enabled: bool = False
    #: The most the booster may move confidence, either way (bounded so no booster can make a tier).
    max_adjustment: float = Field(0.05, ge=0, le=0.10)


class VolatilityBoosterSettings(BoosterSettings):
    #: SL/TP multiples are scaled by this in the high-volatility regime (1 = unchanged).
    high_volatility_sl_tp_scale: float = Field(1.25, ge=1, le=2)


class CalibratorSpec(_Section):
    """A fitted calibrator as plain data, as a model manifest stores it (issue 5 writes these).

    platt: p' = sigmoid(a * logit(p) + b); isotonic: piecewise linear through (x[i], y[i]),
    x increasing, y non-decreasing, clipped at the ends.
    """

    method: Literal["platt", "isotonic"]
    a: float | None = None
    b: float | None = None
    x: list[float] | None = None
    y: list[float] | None = None

    @model_validator(mode="after")
    def _complete(self) -> CalibratorSpec:
        if self.method == "platt":
            if self.a is None or self.b is None:
                raise ValueError("platt calibration needs a and b")
        else:
            if self.x is None or self.y is None or len(self.x) != len(self.y) or len(self.x) < 2:
                raise ValueError("isotonic calibration needs x and y of the same length (>= 2)")
            if any(x1 <= x0 for x0, x1 in zip(self.x, self.x[1:], strict=False)):
                raise ValueError("isotonic x must be strictly increasing")
            if any(y1 < y0 for y0, y1 in zip(self.y, self.y[1:], strict=False)):
                raise ValueError("isotonic y must be non-decreasing")
            if not all(0 <= v <= 1 for v in self.y):
                raise ValueError("isotonic y must lie in [0, 1]")
        return self


class OutcomeReweighting(_Section):
    """Ensemble weights re-weighted from realized outcomes (off by default): each model's
    exponentially weighted log-loss on the realized direction scales its configured weight by
    exp(-(its loss - the best model's loss)). The label must match the models' (issue 5)."""

    enabled: bool = False
    #: The realized direction: close `horizon_minutes` later vs the candle's close, FLAT within
    #: +-dead_band (a fraction of the price).
    horizon_minutes: int = Field(5, ge=1, le=1440)
    dead_band: float = Field(0.0005, ge=0, lt=0.1)
    #: Outcomes after which an outcome's weight in the running loss has halved.
    half_life: float = Field(500.0, gt=0)
    #: Outcomes per model before its weight moves at all.
    min_outcomes: int = Field(100, ge=1)


class SignalSettings(_Section):
    """The signal aggregator: ensemble weights, join deadline, calibration, boosters, tiers,
    filters and the levels of the final signal."""

    #: Weight per model type. Types absent here (or weighted 0) drop out of the ensemble; the
    #: join waits for every type weighted > 0.
    weights: dict[str, float] = Field(default_factory=lambda: {"lstm": 0.5, "transformer": 0.5})
    reweighting: OutcomeReweighting = Field(default_factory=lambda: OutcomeReweighting())
    #: How long to wait, from the first prediction of a candle, for the other models.
    join_deadline_ms: int = Field(2000, ge=0, le=60_000)
    #: Calibrators by model version (from the manifests). A version without one uses the
    #: prediction's own calibrated `confidence`.
    calibrators: dict[str, CalibratorSpec] = Field(default_factory=dict)
    tiers: TierBands = Field(default_factory=lambda: TierBands())
    tf_alignment: BoosterSettings = Field(default_factory=lambda: BoosterSettings())
    volatility_adaptive: VolatilityBoosterSettings = Field(default_factory=lambda: VolatilityBoosterSettings())
    #: Feature names read from `features.aggregated.{symbol}` (the features stage's names).
    atr_feature: str = "5m_atr14"
    alignment_feature: str = "mtf_alignment"
    regime_features: dict[str, str] = Field(
        default_factory=lambda: {"low": "vol_regime_low", "medium": "vol_regime_medium", "high": "vol_regime_high"}
    )
    #: Stop loss and take profit distances in ATRs from the entry.
    stop_loss_atr: float = Field(1.5, gt=0, le=20)
    take_profit_atr: float = Field(2.5, gt=0, le=40)
    #: A signal expires this long after its candle time (and is stale if decided later).
    ttl_seconds: int = Field(300, gt=0, lt=2**31)
    #: Reject when the timeframes' alignment with the signal's direction is below this (-1: off).
    alignment_floor: float = Field(0.0, ge=-1, le=1)
    #: Volatility regimes in which no signal is traded.
    blocked_regimes: list[Literal["low", "medium", "high"]] = Field(default_factory=list)
    one_position_per_symbol: bool = True
    #: Quote currency risked per trade for the suggested size (size = risk x tier scale / stop
    #: distance); None leaves position_size null for the execution engine to size.
    risk_per_trade: float | None = Field(None, gt=0)
    tier_size_scale: dict[str, float] = Field(default_factory=lambda: {"A": 1.0, "B": 0.6, "C": 0.3})

    # Field validators (not one model validator) so every bad key is reported at once.
    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not w >= 0 for w in value.values()):
            raise ValueError("weights must be >= 0")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one model type needs a weight > 0")
        return value

    @field_validator("regime_features")
    @classmethod
    def _regimes(cls, value: dict[str, str]) -> dict[str, str]:
        if set(value) - {"low", "medium", "high"}:
            raise ValueError("regime_features keys are low, medium and high")
        return value

    @field_validator("tier_size_scale")
    @classmethod
    def _tier_scale(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) - {"A", "B", "C"} or any(not v >= 0 for v in value.values()):
            raise ValueError("keys A, B, C with values >= 0 (D is never traded)")
        return value


class TelegramSettings(_Section):
    """Alerts to one Telegram chat over the Bot API; commands accepted only from the configured chats."""

    enabled: bool = False
    chat_id: str = ""
    #: Only from KSTRADE_METRICS__TELEGRAM__BOT_TOKEN or the file named by bot_token_file.
    bot_token: SecretStr | None = None
    bot_token_file: Path | None = None
    api_url: str = "https://api.telegram.org"
    #: Telegram's limits: about one message a second per chat, thirty a second overall.
    per_chat_per_second: float = Field(1.0, gt=0)
    overall_per_second: float = Field(30.0, gt=0)
    queue_size: int = Field(1000, ge=1)
    commands: bool = False
    #: More chats whose commands are obeyed (the alert chat always is); alerts go to `chat_id` only.
    command_chats: list[str] = Field(default_factory=list)
    #: The account that /halt, /resume and /flatten address (execution.account); "*" for every one.
    control_account: str = Field("*", min_length=1, pattern=r"^(\*|[A-Za-z0-9._:@-]+)$")
    min_severity: Literal["INFO", "WARNING", "CRITICAL"] = "WARNING"

    @model_validator(mode="after")
    def _checks(self) -> TelegramSettings:
        if self.enabled and not self.chat_id:
            raise ValueError("chat_id is required when telegram is enabled")
        return self

    def token(self) -> str | None:
        if self.bot_token is not None:
            return self.bot_token.get_secret_value()
        if self.bot_token_file is not None:
            try:
                return self.bot_token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"metrics.telegram.bot_token_file: cannot read {self.bot_token_file}: {exc}") from exc
        return None


#: The stages a signal passes (`kstrade.schemas.models.SignalStage`), as the metrics settings name them.
SignalStageName = Literal["raw", "calibrated", "filtered", "final"]
_SIGNAL_STAGE_NAMES: tuple[SignalStageName, ...] = ("raw", "calibrated", "filtered", "final")
_REPLAY_SIGNAL_STAGES: tuple[SignalStageName, ...] = ("final",)


class MetricsSettings(_Section):
    """The metrics collector: windows, targets and thresholds for alerts, exporters, storage."""

    #: How often latency, performance and drift are summarised and published (wall seconds, live).
    emit_interval_s: float = Field(10.0, gt=0)
    #: The same on the event clock (a replay): event seconds between summaries, writes and lag probes.
    replay_emit_interval_s: float = Field(3600.0, gt=0)
    #: Consumer lag probes on the event clock (event seconds); live probes follow `lag_interval_s`.
    replay_lag_interval_s: float = Field(3600.0, gt=0)
    #: The product's latency target: p99 of market event -> stage output, per stage.
    latency_p99_target_ms: float = Field(10.0, gt=0)
    #: Consumer lag (messages, summed over a group's partitions) that raises an alert.
    lag_threshold: int = Field(1000, ge=1)
    #: How often consumer lag is probed (wall seconds, live).
    lag_interval_s: float = Field(10.0, gt=0)
    #: Groups whose lag is watched; default: every stage's group (kstrade.{stage}) but the collector's own.
    lag_groups: list[str] = Field(
        default_factory=lambda: [
            f"kstrade.{s}" for s in ("features", "inference.lstm", "inference.transformer", "signals", "execution")
        ]
    )
    #: No closed candle for this long (after the first) means ingest has stalled.
    ingest_stall_s: float = Field(180.0, gt=0)
    #: The live feed heard nothing from the exchange for this long (heartbeats come every
    #: second; the feed itself reconnects after `ingest.coinbase.stall_timeout_s`): it is stale.
    ingest_feed_stale_s: float = Field(60.0, gt=0)
    #: Trading performance: sliding windows (default the last hour and the last day), and the
    #: bar the Sharpe ratio is computed on.
    performance_windows_s: list[int] = Field(default_factory=lambda: [3_600, 86_400], min_length=1)
    bar_seconds: int = Field(60, gt=0)
    #: 365 for crypto (trades every day); about 260 for forex (closed at weekends).
    trading_days_per_year: float = Field(365.0, gt=0, le=366)
    tier_window_trades: int = Field(200, ge=1)
    #: Drift: the training reference (JSON, as in a model manifest), window and detector.
    drift_reference: Path | None = None
    psi_window: int = Field(500, ge=10)
    psi_min_samples: int = Field(200, ge=10)
    accuracy_window: int = Field(500, ge=10)
    horizon_bars: int = Field(1, ge=1)
    flat_band_bps: float = Field(1.0, ge=0)
    page_hinkley_delta: float = Field(0.01, ge=0)
    page_hinkley_threshold: float = Field(50.0, gt=0)
    alert_repeat_s: float = Field(900.0, ge=0)
    #: Prometheus scrape endpoint; 0 disables it.
    prometheus_port: int = Field(9464, ge=0, le=65535)
    prometheus_addr: str = "127.0.0.1"
    #: Any SQLAlchemy URL; SQLite by default. Empty disables storage.
    database_url: str = "sqlite:///kstrade-metrics.db"
    #: Store one prediction in this many (they are by far the most numerous).
    prediction_sample_every: int = Field(10, ge=1)
    #: Which signal stages the database's `signals` table keeps, live. Every decision writes
    #: three signals (raw, calibrated, then filtered or final).
    stored_signal_stages: list[SignalStageName] = Field(default_factory=lambda: list(_SIGNAL_STAGE_NAMES))
    #: The same on the event clock (a replay): only the final signals, those that trade (also
    #: the run directory's signals.parquet). The raw, calibrated and filtered ones were most of
    #: a 7-day replay's database (90,356 of 106,030 rows) and of its write time, and nothing
    #: reads them from a replay's database: the report summarises them as the run goes, and the
    #: same replay writes them again byte for byte. (The collector still reads every one: what
    #: it counts unreadable does not depend on this setting.)
    replay_stored_signal_stages: list[SignalStageName] = Field(default_factory=lambda: list(_REPLAY_SIGNAL_STAGES))
    telegram: TelegramSettings = Field(default_factory=lambda: TelegramSettings())

    @model_validator(mode="after")
    def _windows(self) -> MetricsSettings:
        if self.bar_seconds not in (60, 300, 900, 3600):
            raise ValueError("bar_seconds must be a candle interval: 60, 300, 900 or 3600")
        for window in self.performance_windows_s:
            if window < self.bar_seconds or window % self.bar_seconds:
                raise ValueError(f"performance_windows_s: {window} is not a whole number of {self.bar_seconds} s bars")
        if len(set(self.performance_windows_s)) != len(self.performance_windows_s):
            raise ValueError("performance_windows_s repeat")
        return self


class CoinbaseSettings(_Section):
    """The Coinbase Advanced Trade feed. Base URLs are settable so the client can talk to any
    server that speaks the protocol (KSTRADE_COINBASE_WS_URL, KSTRADE_COINBASE_REST_URL win)."""

    ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    rest_url: str = "https://api.coinbase.com"
    #: Subscribe the 5-minute `candles` channel too, to cross-check the 5m bars built from trades.
    candles_channel: bool = False
    #: A minute closes on the first later trade, or this long after its end with no such trade.
    grace_ms: int = Field(5_000, ge=0, le=60_000)
    #: How long after a backfill window's last minute before REST is asked for it.
    rest_delay_ms: int = Field(5_000, ge=0, le=300_000)
    #: No message at all (heartbeats arrive every second) for this long: the feed is stalled.
    stall_timeout_s: float = Field(10.0, gt=0, le=300)
    #: Start-up backfill: this many hours back, or from the last candle on the topics if newer.
    #: The default is the history a replay warms up with (`kstrade.app.WARMUP`, 2 days: the 1h
    #: indicators need about 34 hours, the models' windows 30 vectors more), so a pipeline
    #: started cold decides from its first live minute.
    warmup_hours: float = Field(48.0, ge=0, le=24 * 30)
    reconnect_initial_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=600)
    #: A session that streamed trusted data (subscribed, in sequence) for this long before its
    #: incident starts the reconnect backoff again from `reconnect_initial_s`.
    reconnect_reset_after_s: float = Field(60.0, gt=0, le=3600)
    #: A JWT for authenticated subscriptions, only from the environment (public channels need none).
    jwt: SecretStr | None = None


class IngestSettings(_Section):
    """Market data in: a live Coinbase feed or a file replay."""

    source: Literal["coinbase", "replay"] = "replay"
    #: Replay: a CSV or Parquet candle file; `speed` is 'max', 'realtime' or 'xN'.
    replay_path: Path | None = None
    speed: str = "max"
    coinbase: CoinbaseSettings = Field(default_factory=lambda: CoinbaseSettings())


class FeatureSettings(_Section):
    """The features stage: where it checkpoints its warm indicators. None (the default): it does
    not, and a restarted service warms up again from new candles. Give each deployment (cluster
    and consumer group) its own directory: a checkpoint is only true for the stream it came from."""

    state_dir: Path | None = None


class InferenceSettings(_Section):
    """The inference stage: where the models live and how often it looks for new versions."""

    #: Holds lstm/{symbol}/ and transformer/, each with manifest.json, the ONNX file, reference.npz.
    models_dir: Path = Path("models")
    #: Seconds between checks of the manifests for a new model version (hot reload).
    reload_check_seconds: float = Field(2.0, gt=0, le=3600)
    #: Where each inference stage checkpoints its model input windows. None (the default): it
    #: does not, and a restarted worker predicts nothing for its first `window - 1` vectors per
    #: symbol. One directory per deployment, as for features.state_dir.
    state_dir: Path | None = None


class ServiceSettings(_Section):
    """Liveness of every `python -m kstrade service NAME` process (`kstrade.liveness`): its
    HTTP endpoint (`/healthz`, `/readyz`, `/progress`) and when it calls itself stalled."""

    #: Serve the endpoint. On by default: it only listens on loopback, and without it nothing
    #: outside the process can tell a stalled service from a working one.
    health_endpoint: bool = True
    health_addr: str = "127.0.0.1"
    #: 0 (the default): a free port, logged at start ("NAME: health on http://ADDR:PORT"), so
    #: several services on one host never collide; give each one its own port for systemd or
    #: an orchestrator's probes.
    health_port: int = Field(0, ge=0, le=65535)
    #: Records waiting (lag > 0, or a batch in hand) and none handled for this long: the service
    #: is stalled: `/readyz` answers 503 and one NO_PROGRESS alert goes to metrics.alerts.
    no_progress_s: float = Field(60.0, gt=0)
    #: The loop has not come round for this long: `/healthz` answers 503 (restart me). Longer
    #: than a flush timeout (30 s): a loop waiting out a cluster outage still comes round.
    stuck_s: float = Field(120.0, gt=0)
    #: How often the loop probes its consumer lag (wall seconds; not on every round).
    lag_interval_s: float = Field(5.0, gt=0)
    #: Commit (and checkpoint the stage's state) at most this often, and whenever a poll finds
    #: nothing; outputs are still acknowledged after every batch. A commit costs a round trip and
    #: an fsync that the next records would wait for: after every batch (0), a candle waited
    #: ~10 ms in the features stage behind the two before it. A crash redelivers at most this
    #: much, which every stage skips as repeats.
    commit_interval_s: float = Field(0.1, ge=0)
    #: The loop comes round and records wait, but the consumer has fetched none for this long
    #: (what a consumer that lost its coordinator or its group membership can look like after a
    #: whole-cluster restart): the service replaces its consumer, which rejoins the group and
    #: resumes from the committed offsets. At most once per this interval.
    rejoin_after_s: float = Field(120.0, gt=0)


#: The candle interval the pipeline runs on, and the timeframes the features are built on
#: above it (`kstrade._native.FeatureEngine.timeframes`).
BASE_INTERVALS: dict[str, tuple[str, str, str, str]] = {"1m": ("1m", "5m", "15m", "1h"), "1h": ("1h", "4h", "8h", "1d")}
#: What follows the base interval, where the user did not set it: the defaults above are the 1m
#: base's. Scaled by bars, as on 1m: the ATR of the next timeframe up, a signal living 5 bars, the
#: outcome horizon of 5 bars the models are trained on, Sharpe on the base's bars, performance
#: over a day and a week, an ingest stall after 3 missing bars, and the models trained on 1h.
BASE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "1h": {
        "signals": {"atr_feature": "4h_atr14", "ttl_seconds": 5 * 3600},
        "signals.reweighting": {"horizon_minutes": 5 * 60},
        "metrics": {"bar_seconds": 3600, "performance_windows_s": [86_400, 7 * 86_400], "ingest_stall_s": 3 * 3600.0},
        "inference": {"models_dir": Path("models/1h")},
    }
}


def _base_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`BASE_DEFAULTS` of the data's base interval under what the data sets (sections that
    arrive as models, not tables, are left as they are)."""
    defaults = BASE_DEFAULTS.get(str(data.get("base_interval", "1m")), {})
    out = dict(data)
    for path, values in defaults.items():
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            child = node.get(key, {})
            if not isinstance(child, dict):
                break
            node[key] = node = dict(child)
        else:
            section = node.get(leaf, {})
            if isinstance(section, dict):
                node[leaf] = {**values, **section}
    return out


class Settings(BaseSettings):
    """Everything configurable, one section per concern; stages add their sections here."""

    model_config = SettingsConfigDict(
        env_prefix="KSTRADE_", env_nested_delimiter="__", extra="forbid", frozen=True, validate_default=True
    )

    symbols: list[str] = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    #: The interval of the candles the pipeline runs on: 1m (5m, 15m, 1h above it) or 1h (4h,
    #: 8h, 1d above it; the models trained on 1h, `BASE_DEFAULTS`). Every stage reads
    #: `market.candles.{symbol}.{base_interval}`.
    base_interval: Literal["1m", "1h"] = "1m"
    bus: BusSettings = Field(default_factory=lambda: BusSettings())
    execution: ExecutionSettings = Field(default_factory=lambda: ExecutionSettings())
    signals: SignalSettings = Field(default_factory=lambda: SignalSettings())
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings())
    ingest: IngestSettings = Field(default_factory=lambda: IngestSettings())
    features: FeatureSettings = Field(default_factory=lambda: FeatureSettings())
    inference: InferenceSettings = Field(default_factory=lambda: InferenceSettings())
    service: ServiceSettings = Field(default_factory=lambda: ServiceSettings())

    @model_validator(mode="before")
    @classmethod
    def _follow_base_interval(cls, data: Any) -> Any:
        return _base_defaults(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _bars_of_the_base(self) -> Settings:
        base_seconds = 60 if self.base_interval == "1m" else 3600
        if self.metrics.bar_seconds % base_seconds:
            raise ValueError(
                f"metrics.bar_seconds {self.metrics.bar_seconds} is not a whole number of {self.base_interval} "
                f"bars (base_interval): use {base_seconds} or a multiple"
            )
        return self

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one symbol is needed")
        for s in value:
            check_symbol(s)  # a symbol is part of topic names
        if len(set(value)) != len(value):
            raise ValueError("symbols repeat")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CLI flags (init) win over the environment, which wins over the TOML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _without_none(flags: dict[str, Any]) -> dict[str, Any]:
    """CLI flags left unset arrive as None, at any depth: they must not override anything."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if isinstance(value, dict):
            value = _without_none(value)
            if not value:
                continue
        if value is not None:
            out[key] = value
    return out


#: The environment variable naming the config file, and the file looked for in the working
#: directory when neither it nor --config names one.
CONFIG_ENV = "KSTRADE_CONFIG"
CONFIG_FILE = "kstrade.toml"


def discover(explicit: Path | str | None = None) -> Path | None:
    """The config file a command reads: `explicit` (--config), else the file $KSTRADE_CONFIG
    names, else ./kstrade.toml where there is one, else None (defaults and KSTRADE_*
    variables only). A file named but missing is an error, not a silent default."""
    if explicit is not None:
        return Path(explicit)
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV} names {named}, which is not a file")
        return path
    local = Path(CONFIG_FILE)
    return local if local.is_file() else None


def load(path: Path | str | None = None, **flags: Any) -> Settings:
    """Load and validate. `flags` are CLI values as nested dicts (None values are ignored)."""
    if path is not None:
        try:
            from_file = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        for secret in ("sasl_password", "schema_registry_password"):
            if secret in from_file.get("bus", {}):
                raise ConfigError(f"bus.{secret}: secrets are not read from config files; use the environment")
        if "bot_token" in from_file.get("metrics", {}).get("telegram", {}):
            raise ConfigError("metrics.telegram.bot_token: secrets are not read from config files; use the environment")
        if "jwt" in from_file.get("ingest", {}).get("coinbase", {}):
            raise ConfigError("ingest.coinbase.jwt: secrets are not read from config files; use the environment")
        if "mt5_password" in from_file.get("execution", {}):
            raise ConfigError("execution.mt5_password: secrets are not read from config files; use the environment")
        for key in from_file.get("bus", {}).get("properties", {}):
            if is_secret_name(key):
                raise ConfigError(
                    f"bus.properties.{key}: secrets are not read from config files; use the environment "
                    "(KSTRADE_BUS__PROPERTIES) or the property's file form (e.g. ssl.key.location)"
                )
    clean_flags = _coinbase_urls(_without_none(flags))
    token = _TOML_FILE.set(Path(path) if path is not None else None)
    try:
        return Settings(**clean_flags)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(root)"
            lines.append(f"  {key}: {e['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except SettingsError as exc:  # a KSTRADE_* variable of a table or list that is not JSON
        raise ConfigError(_env_json_error(exc)) from None
    finally:
        _TOML_FILE.reset(token)


def _env_json_error(exc: SettingsError) -> str:
    """Which environment variable is not JSON, and why, in one line (never its value: it may
    hold a secret). pydantic-settings names only the top-level field ("bus")."""
    import json
    import os

    field = re.search(r'field "([^"]+)"', str(exc))
    prefix = f"KSTRADE_{field.group(1)}".upper() if field else "KSTRADE_"
    for name in sorted(os.environ):
        upper = name.upper()
        if upper != prefix and not upper.startswith(prefix + "__"):
            continue
        try:
            json.loads(os.environ[name])
        except ValueError as err:
            if upper == prefix or os.environ[name].lstrip()[:1] in "[{":
                return f"{name} is not valid JSON ({err}): tables and lists are JSON in the environment"
    return f"{exc} ({exc.__cause__})" if exc.__cause__ else str(exc)


def _coinbase_urls(flags: dict[str, Any]) -> dict[str, Any]:
    """KSTRADE_COINBASE_WS_URL / KSTRADE_COINBASE_REST_URL: the documented short names of
    ingest.coinbase.ws_url / rest_url (CLI flags still win)."""
    import os

    short = {
        "ws_url": os.environ.get("KSTRADE_COINBASE_WS_URL"),
        "rest_url": os.environ.get("KSTRADE_COINBASE_REST_URL"),
    }
    short = {k: v for k, v in short.items() if v}
    if not short:
        return flags
    ingest = dict(flags.get("ingest") or {})
    coinbase = dict(ingest.get("coinbase") or {})
    for key, value in short.items():
        coinbase.setdefault(key, value)
    ingest["coinbase"] = coinbase
    return {**flags, "ingest": ingest}


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, with every secret shown as '**********': the SecretStr
    fields, and every other value whose name the redaction rule calls secret (bus properties)."""
    data: dict[str, Any] = mask_tree(settings.model_dump(mode="json"))  # SecretStr dumps masked already
    return data
