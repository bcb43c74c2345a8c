"""`[metrics]`: the collector's windows, alert thresholds, exporters, storage and Telegram."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from kstrade.config.base import ConfigError, _Section


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
