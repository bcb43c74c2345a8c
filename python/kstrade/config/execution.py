"""`[execution]`: the execution stage's broker, sizing, journal and the prop-firm guardrails."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from kstrade.config.base import _Section

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
