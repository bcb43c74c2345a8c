"""The dashboard's JSON API, as models: what each endpoint under /api answers (and so what its
OpenAPI document at /api/openapi.json says). Times are UTC: `time` fields in epoch seconds (what
the charts plot), `at` fields as ISO-8601 text. Money is in the account currency."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Meta(_Out):
    symbols: list[str] = Field(description="The configured symbols (the candle charts), then any others seen")
    account: str = Field(description="execution.account: the account operator commands address")
    currency: str
    transport: Literal["memory", "kafka"]
    group: str = Field(description="The dashboard's own consumer group (it never commits offsets)")
    controls: bool = Field(description="Whether operator controls are enabled (a token is configured)")
    controls_reason: str = Field(description="Why they are disabled, when they are")
    version: str = Field(description="kstrade's version")


class AccountPoint(_Out):
    time: int = Field(description="Close time of the trade, epoch seconds")
    balance: float = Field(description="Balance after the close")
    daily_floor: float = Field(description="FTMO daily-loss floor of that Prague day")
    max_loss_floor: float = Field(description="FTMO maximum-loss floor then")
    drawdown_pct: float = Field(description="Below the highest balance so far (initial balance included), in %")


class Rules(_Out):
    preset: str
    initial_balance: float
    max_daily_loss_pct: float
    max_loss_pct: float
    max_loss_mode: str


class Account(_Out):
    at: str | None = Field(description="The latest event time read from the bus (the pipeline's now)")
    trading_day: str | None = Field(description="The Prague trading day of `at` (FTMO: days start at Prague midnight)")
    currency: str
    initial_balance: float
    balance: float = Field(description="Balance after the last closed trade (trades.pnl), or the initial balance")
    floating_pnl: float = Field(description="Open positions marked at their symbol's last 1m close (an estimate)")
    equity_estimate: float = Field(description="balance + floating_pnl")
    realized_pnl_total: float
    realized_pnl_today: float = Field(description="Closed on the current Prague trading day")
    trades_closed: int
    wins: int
    drawdown_pct: float = Field(description="Current balance below its highest, in %")
    max_drawdown_pct: float = Field(description="Deepest drawdown of the closed balance, in %")
    daily_floor: float = Field(description="Today's FTMO daily-loss floor: balance at Prague midnight - daily limit")
    max_loss_floor: float = Field(description="FTMO maximum-loss floor (static, or trailing at end of day)")
    daily_headroom: float = Field(description="balance - daily_floor")
    max_loss_headroom: float = Field(description="balance - max_loss_floor")
    daily_headroom_pct: float = Field(description="daily_headroom in % of the initial balance (as in report.html)")
    max_loss_headroom_pct: float = Field(description="max_loss_headroom in % of the initial balance")
    rules: Rules
    curve: list[AccountPoint] = Field(description="One point per closed trade, in the order the account saw them")


class Position(_Out):
    order_id: str
    signal_id: str
    symbol: str
    side: str
    quantity: float = Field(description="Still open (the fill less any partial closes)")
    entry_price: float
    stop_loss: float | None
    take_profit: float | None
    opened_at: str
    last_price: float | None = Field(description="The symbol's last 1m close")
    unrealized_pnl: float | None = Field(description="Marked at last_price (an estimate: no commission)")


class Positions(_Out):
    at: str | None
    positions: list[Position]


class OrderRow(_Out):
    signal_id: str
    order_id: str = Field(description="The latest id: the client order id, then the broker's ticket once filled")
    symbol: str
    side: str
    quantity: float
    price: float | None
    stop_loss: float | None
    take_profit: float | None
    status: str = Field(description="The most final status seen (PENDING, CONFIRMED, REJECTED, ...)")
    at: str
    latency_ms: float | None


class Orders(_Out):
    total: int = Field(description="Orders seen (one per signal)")
    orders: list[OrderRow] = Field(description="Newest first")


class SignalRow(_Out):
    time: int
    at: str
    symbol: str
    signal_id: str
    direction: str
    confidence: float
    tier: str | None
    entry_price: float
    stop_loss: float
    take_profit: float


class Rejection(SignalRow):
    reason: str = Field(description="The reject_reason header of signals.filtered")


class Signals(_Out):
    symbol: str | None
    final: list[SignalRow] = Field(description="Recent final signals, oldest first (chart markers)")
    rejected: list[Rejection] = Field(description="Recent rejections from signals.filtered, oldest first")
    final_total: int
    rejected_total: int
    rejection_counts: dict[str, int] = Field(description="reject_reason -> count, most frequent first")


class CandleRow(_Out):
    time: int = Field(description="Open time, epoch seconds")
    open: float
    high: float
    low: float
    close: float
    volume: float


class Candles(_Out):
    symbol: str
    interval: Literal["1m"] = "1m"
    candles: list[CandleRow] = Field(description="Oldest first")


class LatencyRow(_Out):
    at: str
    stage: str
    topic: str
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class AlertRow(_Out):
    at: str
    severity: str
    source: str
    code: str
    message: str


class DeadLetterRow(_Out):
    topic: str
    partition: int
    offset: int
    code: str
    message: str
    stage: str


class Follower(_Out):
    group: str
    records_read: int
    behind: int | None = Field(description="Records of the followed topics not read yet (None before the first look)")
    unreadable: dict[str, int] = Field(description="Records that did not decode, per topic (skipped, counted)")
    error: str | None = Field(description="What keeps the dashboard from reading the bus, while something does")


class Pipeline(_Out):
    topics: dict[str, int] = Field(description="Messages per topic (end offsets), topics with any")
    dead_letters: dict[str, int] = Field(description="Messages per dlq.* topic, those with any")
    recent_dead_letters: list[DeadLetterRow] = Field(description="Newest first")
    latency: list[LatencyRow] = Field(description="The latest metrics.latency record per stage and topic")
    alerts: list[AlertRow] = Field(description="Newest first")
    alert_counts: dict[str, int]
    dashboard: Follower


class TierRow(_Out):
    tier: str
    signals: int = Field(description="Final signals of the tier")
    mean_confidence: float = Field(description="Their mean stated confidence")
    closed: int = Field(description="Of them, trades closed (trades.pnl, joined by signal_id)")
    wins: int
    hit_rate: float | None = Field(description="wins / closed")
    hit_rate_low: float | None = Field(description="95% Wilson interval")
    hit_rate_high: float | None


class TimeValue(_Out):
    time: int = Field(description="Epoch seconds")
    value: float


class ModelHealth(_Out):
    model_type: str
    symbol: str
    accuracy: float | None = Field(description="The collector's latest rolling accuracy (metrics.model.drift)")
    at: str | None = Field(description="When the collector measured it")
    last_direction: float | None = Field(
        description="The naive last-direction baseline's accuracy over the same minutes (from the 1m candles read)"
    )
    always_flat: float | None = Field(description="The always-FLAT baseline's accuracy over the same minutes")
    page_hinkley: float | None = Field(description="Page-Hinkley statistic of the model's errors")
    page_hinkley_threshold: float | None
    error_drift: bool = Field(description="The detector fired at its latest summary")


class FeatureDriftRow(_Out):
    symbol: str
    feature: str
    at: str
    psi: float = Field(description="Population stability index against the training reference")
    previous_psi: float | None = Field(description="At the collector's summary before")
    change: float | None = Field(description="psi - previous_psi")
    significant: bool = Field(description="PSI >= 0.2")
    ks: float | None = Field(description="Kolmogorov-Smirnov distance at the reference's bin edges")
    ks_critical: float | None = Field(description="The KS distance exceeded by chance 1 % of the time")


class ModelVersion(_Out):
    model_type: str
    version: str
    seen_at: str = Field(description="The latest drift summary naming it")


class Models(_Out):
    tiers: list[TierRow]
    health: list[ModelHealth] = Field(description="Per model and symbol")
    drift: list[FeatureDriftRow] = Field(description="PSI per symbol and feature, the highest first (at most 100)")
    drifted_features: int = Field(description="Features with a significant PSI")
    features_watched: int
    movers: list[FeatureDriftRow] = Field(description="The largest PSI changes since the summary before (at most 10)")
    versions: list[ModelVersion] = Field(description="Model versions the drift summaries name")
    accuracy_window: int = Field(description="Predictions per rolling accuracy figure (metrics.accuracy_window)")


class AccuracySeries(_Out):
    name: str = Field(description="A model type, or a baseline: last_direction, always_flat")
    points: list[TimeValue] = Field(description="Oldest first")


class AccuracyHistory(_Out):
    symbol: str
    window: int = Field(description="Outcomes per accuracy figure (metrics.accuracy_window)")
    horizon_bars: int
    flat_band_bps: float
    models: list[AccuracySeries]
    baselines: list[AccuracySeries] = Field(description="The naive baselines at the models' instants")


class RunRow(_Out):
    name: str = Field(description="The run directory's name (its page: /runs/{name})")
    written: str = Field(description="When its summary.json was written")
    data: str = ""
    symbols: list[str] = []
    start: str | None = None
    end: str | None = None
    trades_closed: int | None = None
    final_balance: float | None = None
    total_return: float | None = Field(None, description="A fraction (0.01 = 1 %)")
    max_drawdown: float | None = Field(None, description="A negative fraction")
    report: bool = Field(False, description="It has a report.html (/api/runs/{name}/report.html)")
    error: str | None = Field(None, description="Why its summary.json does not read, when it does not")


class Runs(_Out):
    root: str = Field(description="The directory whose run directories are listed (dashboard --runs)")
    runs: list[RunRow] = Field(description="Newest first")


class RunEquityPoint(_Out):
    time: int = Field(description="Epoch seconds: the period's start, then each close")
    balance: float
    drawdown_pct: float = Field(description="Below the highest balance so far, in %")


class HeadroomPoint(_Out):
    time: int = Field(description="Close time, epoch seconds")
    daily_loss_pct: float = Field(description="Balance above the FTMO daily floor, % of the initial balance")
    max_loss_pct: float = Field(description="Balance above the FTMO maximum-loss floor, % of the initial balance")


class RunTrade(_Out):
    """A row of trades.parquet (`kstrade.report.statistics.trades_frame`), times in epoch seconds."""

    signal_id: str | None
    symbol: str | None
    side: str | None
    quantity: float | None
    entry_time: int | None
    exit_time: int | None = Field(description="None: still open at the end")
    entry_price: float | None
    exit_price: float | None
    stop_loss: float | None
    take_profit: float | None
    realized_pnl: float | None
    commission: float | None
    exit_reason: str | None
    balance: float | None
    tier: str | None
    confidence: float | None


class RunDetail(_Out):
    name: str
    summary: dict[str, Any] = Field(description="summary.json as written (statistics, tiers, calibration, stages)")
    equity: list[RunEquityPoint]
    daily_returns: list[TimeValue] = Field(description="Per UTC day of the period, in % (the days without a trade: 0)")
    headroom: list[HeadroomPoint] = Field(description="After each closed trade, as report.html draws it")
    trades: list[RunTrade] = Field(description="Every position, in entry order")
    report: bool = Field(description="It has a report.html")


class CommandRow(_Out):
    command_id: str
    at: str
    account: str
    action: str
    issued_by: str
    reason: str
    acknowledged: bool = Field(description="The execution stage's OPERATOR_* alert naming this command was seen")
    acknowledgement: str | None


class Control(_Out):
    enabled: bool
    reason: str = Field(description="Why controls are disabled, when they are")
    account: str
    commands: list[CommandRow] = Field(description="Commands seen on control.execution, newest first")


class ControlRequest(BaseModel):
    """The body of POST /api/control/{action}."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="Why, in your words (journaled with the command)")
    confirm: bool = Field(False, description="flatten closes every open position at market: it needs true")


class ControlSent(_Out):
    command_id: str
    action: str
    account: str
    issued_by: str
    reason: str
    note: str


class Problem(_Out):
    error: str = Field(description="What was wrong with the request, in one line")
