"""Every stable code the pipeline emits, defined once: alert codes on `metrics.alerts`, the reasons
a signal gets no order, signal filter reasons, broker reply codes, dead-letter reasons and the
guardrail states. Dashboards, Telegram filters, runbooks and tests key on these strings.

Shape: one small `StrEnum` per family, each member carrying its one-line `meaning` and the
modules that emit it (`emitters`, relative to `kstrade`; `rust/...` for the native core). A
member *is* its wire string (`AlertCode.CIRCUIT_OPEN == "CIRCUIT_OPEN"`, `.encode()` works), so an
emitter writes `Drop.SIGNAL_EXPIRED` where it wrote `"SIGNAL_EXPIRED"` and the bytes on the bus
do not change; the family says what kind of code it is, and a code that means two things (the
alert `WEEKEND_CLOSE` and the refusal `WEEKEND_CLOSE`) is two members with two meanings.
Why not a `Code` dataclass in a dict: emitters would write `codes.X.name` and lose the type
(a typo would be a KeyError at run time, not a mypy error).

Some alert codes are built from other families (`alert_codes` lists them all): every `Drop`
reason is also an INFO alert; a rejected order is `ORDER_` + its `BrokerCode` (WARNING); a
condition the metrics rules watch is followed by `<CODE>_RESOLVED` (INFO) when it clears; a
model the inference stage refuses to reload is a CRITICAL alert with its `ModelRefusal` code.

`python -m kstrade.codes --markdown` prints CODES.md; `--write` rewrites CODES.md and the alert
table of deploy/grafana/README.md (tests/test_codes.py checks both, and that every code here is
emitted and every emitted code is here). This module imports nothing from kstrade.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Self, TypeVar


class _Code(StrEnum):
    """A registered code: its wire string, what it means, who emits it."""

    meaning: str
    emitters: tuple[str, ...]

    def __new__(cls, value: str, meaning: str, emitters: str) -> Self:
        return _member(cls, value, meaning, emitters)


_C = TypeVar("_C", bound=_Code)


def _member(cls: type[_C], value: str, meaning: str, emitters: str) -> _C:
    member = str.__new__(cls, value)
    member._value_ = value
    member.meaning = meaning
    member.emitters = tuple(e.strip() for e in emitters.split(","))
    return member


class TradingState(_Code):
    """The account guard's state (execution); announced as `STATE_<state>` alerts."""

    ACTIVE = "ACTIVE", "orders may open", "execution.guardrails"
    REDUCING = "REDUCING", "near a loss limit: only orders that reduce exposure (closes)", "execution.guardrails"
    HALTED = (
        "HALTED",
        "at a limit or halted by the operator: flatten, no new orders until the next Prague midnight (or for good)",
        "execution.guardrails",
    )


class AlertCode(_Code):
    """Codes of `Alert` records on `metrics.alerts` (besides the derived ones: see `alert_codes`)."""

    severity: str

    def __new__(cls, value: str, severity: str, meaning: str, emitters: str) -> Self:
        member = _member(cls, value, meaning, emitters)
        member.severity = severity
        return member

    # execution: the account guard (FTMO rules)
    DAILY_LOSS_BREACHED = (
        "DAILY_LOSS_BREACHED",
        "CRITICAL",
        "equity at or below today's floor: flattening, no new orders until the next Prague midnight",
        "execution.guardrails",
    )
    MAX_LOSS_BREACHED = (
        "MAX_LOSS_BREACHED",
        "CRITICAL",
        "equity at or below the maximum-loss floor: flattening, halted for good",
        "execution.guardrails",
    )
    DAY_START_LATE = (
        "DAY_START_LATE",
        "CRITICAL",
        "the trading day rolled late (no observation near Prague midnight): the day's floor is from a late balance",
        "execution.guardrails",
    )
    STATE_ACTIVE = "STATE_ACTIVE", "INFO", "the guard's state went back to ACTIVE", "execution.guardrails"
    STATE_REDUCING = (
        "STATE_REDUCING",
        "WARNING",
        "the guard's state went to REDUCING (near a loss limit)",
        "execution.guardrails",
    )
    NEWS_CLOSE = (
        "NEWS_CLOSE",
        "INFO",
        "funded account: closing positions before high-impact news",
        "execution.guardrails",
    )
    WEEKEND_CLOSE = (
        "WEEKEND_CLOSE",
        "INFO",
        "funded account: closing every position before the weekend",
        "execution.guardrails",
    )
    PROFIT_TARGET_REACHED = (
        "PROFIT_TARGET_REACHED",
        "INFO",
        "the profit target is reached over the minimum trading days (and the best-day rule holds)",
        "execution.guardrails",
    )
    # execution: the broker link and orders
    CIRCUIT_OPEN = (
        "CIRCUIT_OPEN",
        "CRITICAL",
        "consecutive broker failures opened the circuit breaker: sending stopped for the cooldown",
        "execution.stage",
    )
    BROKER_UNAVAILABLE = (
        "BROKER_UNAVAILABLE",
        "CRITICAL",
        "the broker cannot be reached: no new orders (once a minute while it lasts)",
        "execution.stage",
    )
    FLATTEN_FAILED = (
        "FLATTEN_FAILED",
        "CRITICAL",
        "closing a position the guard must close failed (tried again on every observation)",
        "execution.stage",
    )
    ORDER_UNCERTAIN = (
        "ORDER_UNCERTAIN",
        "CRITICAL",
        "not known whether an order reached the broker: never resent, reconciled",
        "execution.stage",
    )
    ORDER_NEVER_CONFIRMED = (
        "ORDER_NEVER_CONFIRMED",
        "CRITICAL",
        "an uncertain order was not found at the broker after a day: check the terminal by hand",
        "execution.stage",
    )
    # operator control (control.execution), acknowledged by execution with the resulting state
    OPERATOR_HALT = (
        "OPERATOR_HALT",
        "CRITICAL",
        "an operator's halt (Telegram /halt or `kstrade control halt`) was applied: the message gives the state",
        "execution.control",
    )
    OPERATOR_RESUME = (
        "OPERATOR_RESUME",
        "WARNING",
        "an operator's resume (Telegram /resume or `kstrade control resume`) was applied: the message gives the state",
        "execution.control",
    )
    OPERATOR_FLATTEN = (
        "OPERATOR_FLATTEN",
        "CRITICAL",
        "an operator closed every open position at market, then halted",
        "execution.control",
    )
    # inference
    MODEL_RELOADED = "MODEL_RELOADED", "INFO", "a new model file was checked and now serves", "inference.stage"
    # the example of a user's own stage (README, "Your own stage")
    WIDE_BAR = "WIDE_BAR", "INFO", "a bar wider than max_range of its close", "examples.wide_bars"
    # metrics: threshold rules (each followed by <CODE>_RESOLVED) and detectors
    LATENCY_P99_OVER_TARGET = (
        "LATENCY_P99_OVER_TARGET",
        "WARNING",
        "a stage's p99 latency over its target",
        "metrics.collector",
    )
    CONSUMER_LAG_OVER_THRESHOLD = (
        "CONSUMER_LAG_OVER_THRESHOLD",
        "WARNING",
        "a consumer group is further behind than the threshold",
        "metrics.collector",
    )
    FEATURE_DRIFT_SIGNIFICANT = (
        "FEATURE_DRIFT_SIGNIFICANT",
        "WARNING",
        "a feature's PSI against the training reference is significant (>= 0.2)",
        "metrics.collector",
    )
    MODEL_ERROR_DRIFT = (
        "MODEL_ERROR_DRIFT",
        "WARNING",
        "Page-Hinkley detected drift in a model's errors (an event: no _RESOLVED)",
        "metrics.collector",
    )
    INGEST_STALLED = "INGEST_STALLED", "CRITICAL", "no candles from ingest for too long", "metrics.collector"
    INGEST_FEED_STALE = (
        "INGEST_FEED_STALE",
        "CRITICAL",
        "the live feed's last exchange message is older than ingest_feed_stale_s (ingest health reports)",
        "metrics.collector",
    )
    STORAGE_FAILED = "STORAGE_FAILED", "CRITICAL", "the collector cannot write its database", "metrics.collector"
    # every service (its liveness watch)
    NO_PROGRESS = (
        "NO_PROGRESS",
        "CRITICAL",
        "a service has records waiting but has handled none for service.no_progress_s (once per stall)",
        "liveness",
    )
    # ingest
    INGEST_MINUTE_LOST = (
        "INGEST_MINUTE_LOST",
        "CRITICAL",
        "the live feed saw trades in a minute and REST has no candle for it, asked twice: it is missing",
        "ingest.coinbase.feed",
    )
    INGEST_CROSS_CHECK_MISMATCH = (
        "INGEST_CROSS_CHECK_MISMATCH",
        "WARNING",
        "a 5m bar built from 1m candles differs from the exchange's own 5m candle",
        "ingest.coinbase.feed",
    )


class Drop(_Code):
    """Why execution placed no order for a final signal: the journal's reason, and an INFO alert of
    the same code on `metrics.alerts`."""

    SIGNAL_EXPIRED = "SIGNAL_EXPIRED", "the signal's TTL ran out before it was decided", "execution.stage"
    BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE", "the broker is unreachable", "execution.stage"
    PRICE_BEYOND_STOPS = (
        "PRICE_BEYOND_STOPS",
        "the market (with slippage) is not between stop and target",
        "execution.stage",
    )
    OPERATOR_HALTED = "OPERATOR_HALTED", "an operator halted trading (control.execution)", "execution.guardrails"
    # the guard's refusals
    TRADING_HALTED = "TRADING_HALTED", "the guard is HALTED", "execution.guardrails"
    REDUCING_ONLY = "REDUCING_ONLY", "the guard is REDUCING: no opening orders", "execution.guardrails"
    WEEKEND_CLOSE = "WEEKEND_CLOSE", "funded account: the weekend close is on", "execution.guardrails"
    NEWS_BLACKOUT = (
        "NEWS_BLACKOUT",
        "high-impact news for the symbol within the blackout window",
        "execution.guardrails",
    )
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS", "as many positions open as allowed", "execution.guardrails"
    ORDER_RATE_LIMIT = "ORDER_RATE_LIMIT", "the per-minute order limit is reached", "execution.guardrails"
    WORST_CASE_BREACH = (
        "WORST_CASE_BREACH",
        "every open stop hit, then this one, would cross a loss floor",
        "execution.guardrails",
    )
    # the sizer's zero sizes
    ZERO_STOP_DISTANCE = "ZERO_STOP_DISTANCE", "entry and stop loss are the same price", "execution.sizing"
    KELLY_NON_POSITIVE = "KELLY_NON_POSITIVE", "no edge: the Kelly fraction is not positive", "execution.sizing"
    NO_HEADROOM = "NO_HEADROOM", "no loss headroom left to risk", "execution.sizing"
    BELOW_MIN_VOLUME = "BELOW_MIN_VOLUME", "the size rounds below the symbol's minimum volume", "execution.sizing"


#: The sizer's reason when it gave a real size: not a drop, never emitted.
SIZED = "SIZED"


class FilterReason(_Code):
    """Why the signals stage filtered a signal (`reject_reason(s)` headers on `signals.filtered`).
    Listed in the order they are checked; the first is the signal's reason."""

    NO_PRICE = "NO_PRICE", "no 1m close for the candle time: no honest entry price", "signals.decision"
    NO_FEATURES = "NO_FEATURES", "no feature vector for the candle time, or a feature missing", "signals.decision"
    NO_ATR = "NO_ATR", "ATR not positive (warming up) or stops would cross zero", "signals.decision"
    STALE = "STALE", "decided after the signal's TTL had already run out", "signals.decision"
    FLAT = "FLAT", "the ensemble's most likely class is FLAT: no move to trade", "signals.decision"
    TIER_D = "TIER_D", "calibrated confidence below tier C: never traded", "signals.decision"
    TF_MISALIGNED = "TF_MISALIGNED", "higher timeframes point the other way", "signals.decision"
    VOLATILITY_REGIME = "VOLATILITY_REGIME", "regime blocked by configuration", "signals.decision"
    POSITION_OPEN = "POSITION_OPEN", "one open position per symbol", "signals.decision"


class BrokerCode(_Code):
    """A broker's reply code (the journal's reason; a rejected order is alerted as `ORDER_<code>`).
    MT5 retcodes by name (MqlTradeResult.retcode); an unnamed one is `RETCODE_<n>`."""

    DONE = "DONE", "filled (or closed)", "execution.paper, execution.mt5"
    RECONCILED = "RECONCILED", "an earlier send was found filled at the broker", "execution.router, execution.stage"
    DUPLICATE_CLIENT_ORDER_ID = (
        "DUPLICATE_CLIENT_ORDER_ID",
        "this client order id was filled already",
        "execution.paper",
    )
    POSITION_NOT_FOUND = "POSITION_NOT_FOUND", "no open position with that ticket", "execution.paper, execution.mt5"
    NEVER_CONFIRMED = (
        "NEVER_CONFIRMED",
        "journal only: an uncertain order still not found at the broker after a day, given up (not a broker reply)",
        "execution.stage",
    )
    NOT_SENT = "NOT_SENT", "the router never got to send", "execution.router"
    RECONCILE_FAILED = "RECONCILE_FAILED", "looking for an earlier send failed: not sent again", "execution.router"
    CIRCUIT_OPEN = "CIRCUIT_OPEN", "the circuit breaker is open: not sent", "execution.router"
    CONNECTION = (
        "CONNECTION",
        "the link failed during the send (MT5 10031): outcome unknown",
        "execution.router, execution.mt5",
    )
    NOT_CONNECTED = "NOT_CONNECTED", "no terminal to send to: nothing sent", "execution.mt5"
    NO_PRICE = "NO_PRICE", "no tick for the symbol: nothing sent", "execution.mt5"
    NO_RESULT = "NO_RESULT", "order_send answered nothing: outcome unknown", "execution.mt5"
    DONE_UNCONFIRMED = "DONE_UNCONFIRMED", "MT5 said done but no deal is found yet: outcome unknown", "execution.mt5"
    REQUOTE = "REQUOTE", "MT5 10004: requote (retried)", "execution.mt5"
    PRICE_CHANGED = "PRICE_CHANGED", "MT5 10020: prices changed (retried)", "execution.mt5"
    PRICE_OFF = "PRICE_OFF", "MT5 10021: no quotes (retried)", "execution.mt5"
    TOO_MANY_REQUESTS = "TOO_MANY_REQUESTS", "MT5 10024: too frequent requests (retried)", "execution.mt5"
    TIMEOUT = "TIMEOUT", "MT5 10012: request timed out: outcome unknown", "execution.mt5"
    REJECT = "REJECT", "MT5 10006: request rejected", "execution.mt5"
    INVALID = "INVALID", "MT5 10013: invalid request", "execution.mt5"
    INVALID_VOLUME = "INVALID_VOLUME", "MT5 10014: invalid volume", "execution.mt5"
    INVALID_PRICE = "INVALID_PRICE", "MT5 10015: invalid price", "execution.mt5"
    INVALID_STOPS = (
        "INVALID_STOPS",
        "invalid stops (MT5 10016; paper: fill outside stop/target)",
        "execution.paper, execution.mt5",
    )
    TRADE_DISABLED = "TRADE_DISABLED", "MT5 10017: trade disabled", "execution.mt5"
    MARKET_CLOSED = "MARKET_CLOSED", "MT5 10018: market closed", "execution.mt5"
    NO_MONEY = "NO_MONEY", "MT5 10019: not enough money", "execution.mt5"
    AUTOTRADING_DISABLED = "AUTOTRADING_DISABLED", "MT5 10027: autotrading disabled in the terminal", "execution.mt5"
    INVALID_FILL = "INVALID_FILL", "MT5 10030: unsupported filling mode", "execution.mt5"


#: A rejected order's alert code: ORDER_ + its BrokerCode (or RETCODE_<n>).
ORDER_REJECTED_PREFIX = "ORDER_"
#: An MT5 retcode with no name in BrokerCode.
RETCODE_PREFIX = "RETCODE_"
#: Appended to a condition's alert code when it clears (metrics rules).
RESOLVED_SUFFIX = "_RESOLVED"
#: Alert codes the metrics rules watch as conditions (each followed by <CODE>_RESOLVED).
CONDITIONS = (
    AlertCode.LATENCY_P99_OVER_TARGET,
    AlertCode.CONSUMER_LAG_OVER_THRESHOLD,
    AlertCode.FEATURE_DRIFT_SIGNIFICANT,
    AlertCode.INGEST_STALLED,
    AlertCode.INGEST_FEED_STALE,
    AlertCode.STORAGE_FAILED,
)


class DeadLetter(_Code):
    """`dlq.error.code` of a record a stage could not take (the runner dead-letters it alone)."""

    # the runner
    HANDLER_ERROR = "HANDLER_ERROR", "the handler raised something that is not bad input (a bug)", "bus.runner"
    FUTURE_TIMESTAMP = (
        "FUTURE_TIMESTAMP",
        "live: the record's market time is more than bus.max_future_skew_s ahead of the wall clock",
        "bus.runner",
    )
    PAST_TIMESTAMP = (
        "PAST_TIMESTAMP",
        "live: the record's market time is more than bus.max_past_jump_s behind its partition's newest",
        "bus.runner",
    )
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE", "the record is over the stage's max_message_bytes", "bus.runner"
    # decoding (the Python codec and the native one agree on these)
    TRUNCATED = "TRUNCATED", "the body ends inside a field", "schemas.diagnosis, rust/codec"
    MALFORMED = (
        "MALFORMED",
        "the body is not a valid record of its schema",
        "schemas.codec, metrics.collector, rust/codec",
    )
    NON_FINITE = "NON_FINITE", "a number that must be finite is NaN or infinite", "schemas.codec, rust/codec"
    INVALID = "INVALID", "a field fails the model's validation", "schemas.codec, rust/codec"
    TRAILING_BYTES = "TRAILING_BYTES", "bytes after the record", "schemas.codec, rust/codec"
    UNKNOWN_SCHEMA_VERSION = (
        "UNKNOWN_SCHEMA_VERSION",
        "a schema version this build does not know",
        "schemas.codec, rust/codec",
    )
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID", "a registry schema id this build does not know", "schemas.codec"
    BAD_HEADER = "BAD_HEADER", "a header that is not ASCII or not a valid value", "schemas.headers"
    MISSING_HEADER = "MISSING_HEADER", "a required header is missing", "schemas.headers, metrics.collector"
    SCHEMA_MISMATCH = "SCHEMA_MISMATCH", "the schema header names another schema", "schemas.codec, metrics.collector"
    FORMAT_MISMATCH = (
        "FORMAT_MISMATCH",
        "the encoding header names another encoding",
        "schemas.codec, metrics.collector",
    )
    # the stages
    UNKNOWN_SYMBOL = (
        "UNKNOWN_SYMBOL",
        "a symbol this stage does not trade or serve",
        "execution.stage, signals.aggregator, inference.stage",
    )
    SYMBOL_TOPIC_MISMATCH = (
        "SYMBOL_TOPIC_MISMATCH",
        "the record's symbol is not its topic's",
        "execution.stage, signals.aggregator, features.stage",
    )
    UNKNOWN_TOPIC = "UNKNOWN_TOPIC", "not a 1m candle topic of the configured symbols", "features.stage"
    UNEXPECTED_TOPIC = "UNEXPECTED_TOPIC", "a topic the stage does not read", "signals.aggregator"
    WRONG_INTERVAL = (
        "WRONG_INTERVAL",
        "a candle of another interval on a 1m topic",
        "features.stage, signals.aggregator",
    )
    MODEL_TOPIC_MISMATCH = (
        "MODEL_TOPIC_MISMATCH",
        "a prediction of another model type on a model's topic",
        "signals.aggregator",
    )
    NON_FINITE_FEATURE = (
        "NON_FINITE_FEATURE",
        "a ready feature vector with NaN/inf (or overflowing float32)",
        "features.stage, inference.stage",
    )
    FEATURE_VERSION_MISMATCH = (
        "FEATURE_VERSION_MISMATCH",
        "a feature vector of another feature version",
        "inference.stage",
    )
    FEATURE_NAMES_MISMATCH = (
        "FEATURE_NAMES_MISMATCH",
        "a feature vector whose names differ from the model's",
        "inference.stage",
    )
    NOT_FINAL_SIGNAL = "NOT_FINAL_SIGNAL", "a signal on signals.final whose stage is not FINAL", "execution.stage"
    BROKER_UNAVAILABLE = (
        "BROKER_UNAVAILABLE",
        "a redelivered signal whose order cannot be reconciled: the broker is away (replay it later)",
        "execution.stage",
    )


class MarketCode(_Code):
    """Codes of the native market core's `MarketError` (candles, indicators): a candle a stage
    cannot take is dead-lettered with one; ingest counts and logs them."""

    UNKNOWN_INTERVAL = "UNKNOWN_INTERVAL", "an interval that is not one of the supported ones", "rust/market"
    NON_FINITE = "NON_FINITE", "a price or volume that is NaN or infinite", "rust/market"
    NON_POSITIVE_PRICE = "NON_POSITIVE_PRICE", "a price at or below zero", "rust/market"
    HIGH_BELOW_BODY = "HIGH_BELOW_BODY", "high below open or close", "rust/market"
    LOW_ABOVE_BODY = "LOW_ABOVE_BODY", "low above open or close", "rust/market"
    NEGATIVE_VOLUME = "NEGATIVE_VOLUME", "volume below zero", "rust/market"
    MISALIGNED_TIME = "MISALIGNED_TIME", "an open time not on the interval's boundary", "rust/market"
    TIME_OUT_OF_RANGE = "TIME_OUT_OF_RANGE", "a time outside the representable range", "rust/market"
    WRONG_INTERVAL = "WRONG_INTERVAL", "a candle of another interval than expected", "rust/market"
    LATE_CANDLE = "LATE_CANDLE", "a minute older than one already rolled up: never rewritten", "rust/market"
    CONFLICTING_DUPLICATE = "CONFLICTING_DUPLICATE", "the same minute again with other values", "rust/market"
    INVALID_PARAMETER = "INVALID_PARAMETER", "an indicator parameter out of range", "rust/market"
    LENGTH_MISMATCH = "LENGTH_MISMATCH", "indicator input columns of different lengths", "rust/market"
    BAD_SNAPSHOT = "BAD_SNAPSHOT", "an aggregator snapshot that cannot be restored", "rust/market"
    MARKET_ERROR = "MARKET_ERROR", "a MarketError without a code (should not happen)", "ingest.rollup"


class BusCode(_Code):
    """Codes of the native bus's `BusError`: callers branch on them (the runner waits out a
    TIMEOUT, survives COMMIT_FAILED)."""

    BUS_CONFIG = "BUS_CONFIG", "invalid bus configuration", "rust/bus"
    UNKNOWN_TOPIC = "UNKNOWN_TOPIC", "unknown topic or partition", "rust/bus"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE", "a record over the producer's size limit", "rust/bus"
    INVALID_PARTITION = "INVALID_PARTITION", "a partition the topic does not have", "rust/bus"
    DELIVERY_FAILED = "DELIVERY_FAILED", "the producer gave up on outputs after message.timeout.ms", "rust/bus"
    COMMIT_FAILED = "COMMIT_FAILED", "the group refused a commit (rebalance, restarted coordinator)", "rust/bus"
    NOT_ASSIGNED = "NOT_ASSIGNED", "a partition not assigned to this consumer", "rust/bus"
    TIMEOUT = "TIMEOUT", "an operation timed out (a flush: the cluster is away)", "rust/bus"
    TOPIC_EXISTS = "TOPIC_EXISTS", "the topic already exists", "rust/bus"
    BAD_PATTERN = "BAD_PATTERN", "an invalid subscription pattern", "rust/bus"
    CLOSED = "CLOSED", "the consumer is closed", "rust/bus"
    KAFKA = "KAFKA", "any other librdkafka error (its code in the message)", "rust/bus"


class ModelRefusal(_Code):
    """Why inference refuses a model (`ModelRefused`): at start the service will not serve it; on
    a reload, the running model keeps serving and a CRITICAL alert of this code goes out."""

    MANIFEST_UNREADABLE = "MANIFEST_UNREADABLE", "the manifest cannot be read", "inference.manifest"
    MANIFEST_INVALID = (
        "MANIFEST_INVALID",
        "the manifest is not valid (or its version is not the sha256 prefix)",
        "inference.manifest, inference.runtime",
    )
    FEATURE_VERSION_MISMATCH = "FEATURE_VERSION_MISMATCH", "trained on another feature version", "inference.manifest"
    FEATURE_NAMES_MISMATCH = "FEATURE_NAMES_MISMATCH", "trained on other feature names", "inference.manifest"
    SCALER_INVALID = "SCALER_INVALID", "a scaler without one value per feature", "inference.manifest"
    MODEL_UNREADABLE = "MODEL_UNREADABLE", "the model file cannot be read", "inference.runtime"
    MODEL_SHA256_MISMATCH = (
        "MODEL_SHA256_MISMATCH",
        "the model file's sha256 is not the manifest's",
        "inference.runtime",
    )
    MODEL_UNLOADABLE = "MODEL_UNLOADABLE", "onnxruntime cannot load the model", "inference.runtime, inference.stage"
    MODEL_SHAPE_MISMATCH = (
        "MODEL_SHAPE_MISMATCH",
        "the model's inputs or outputs are not the manifest's",
        "inference.runtime",
    )
    REFERENCE_UNREADABLE = "REFERENCE_UNREADABLE", "the reference windows cannot be read", "inference.runtime"
    REFERENCE_MISMATCH = (
        "REFERENCE_MISMATCH",
        "the model does not reproduce its reference outputs",
        "inference.runtime",
    )
    WINDOW_MISMATCH = "WINDOW_MISMATCH", "a reload with another window than the running model's", "inference.stage"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL", "no scaler for a symbol the service serves", "inference.stage"


class FeedCode(_Code):
    """Why ingest ignored an exchange WebSocket frame (`FeedMessageError`: counted as
    malformed_messages in the ingest health report, and logged)."""

    MALFORMED_JSON = "MALFORMED_JSON", "the frame is not JSON", "ingest.coinbase.messages"
    MALFORMED = "MALFORMED", "the frame is not the message shape the channel promises", "ingest.coinbase.messages"
    BAD_FIELD = "BAD_FIELD", "a field of the wrong type or value", "ingest.coinbase.messages"


class ExitReason(_Code):
    """Why a position closed: `exit_reason` of a P&L event on `trades.pnl` (v2) and of a run's
    closed trades. An MT5 account reports what its terminal's deal says instead."""

    STOP_LOSS = "STOP_LOSS", "the price reached the stop loss", "execution.paper"
    STOP_LOSS_GAP = "STOP_LOSS_GAP", "the price opened beyond the stop loss: filled at the open", "execution.paper"
    TAKE_PROFIT = "TAKE_PROFIT", "the price reached the take profit (or opened beyond it)", "execution.paper"
    GUARDRAIL = "GUARDRAIL", "a guardrail closed it (a loss limit, a funded weekend close)", "execution.stage"
    OPERATOR_FLATTEN = "OPERATOR_FLATTEN", "the operator's /flatten closed the position", "execution.stage"


#: Every family, in the order the docs list them.
FAMILIES: tuple[type[_Code], ...] = (
    AlertCode, Drop, FilterReason, BrokerCode, DeadLetter, TradingState, MarketCode, BusCode, ModelRefusal, FeedCode,
    ExitReason,
)  # fmt: skip


def alert_codes() -> list[tuple[str, str, str, str]]:
    """Every code that can appear on `metrics.alerts`: (code, severity, meaning, emitters);
    patterns (`ORDER_<BrokerCode>`) as one row each."""
    rows = [(a.value, a.severity, a.meaning, ", ".join(a.emitters)) for a in AlertCode]
    rows += [(c + RESOLVED_SUFFIX, "INFO", f"{c} cleared", "metrics.collector") for c in CONDITIONS]
    rows += [(d.value, "INFO", f"no order: {d.meaning}", ", ".join(d.emitters)) for d in Drop]
    rows.append((
        f"{ORDER_REJECTED_PREFIX}<BrokerCode>", "WARNING", "the broker rejected the order (or retries ran out)",
        "execution.stage",
    ))  # fmt: skip
    rows += [(m.value, "CRITICAL", f"a reload refused: {m.meaning}", "inference.stage") for m in ModelRefusal]
    return rows


def _row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def alert_table() -> str:
    """The markdown table of `alert_codes` (deploy/grafana/README.md holds it between markers)."""
    lines = [_row("code", "severity", "meaning", "emitted by"), "|---|---|---|---|"]
    lines += [_row(f"`{c}`", s, m, e) for c, s, m, e in alert_codes()]
    return "\n".join(lines) + "\n"


def markdown() -> str:
    """CODES.md: every family, every code, its meaning and emitters."""
    out = [
        "# Stable codes",
        "",
        "Generated from `python/kstrade/codes.py` by `python -m kstrade.codes --write`; do not edit by hand",
        "(`tests/test_codes.py` fails when this file and the registry differ).",
        "",
        "## Everything on `metrics.alerts`",
        "",
        alert_table(),
    ]
    for family in FAMILIES:
        doc = " ".join((family.__doc__ or "").split())
        out += [f"## {family.__name__}", "", doc, "", _row("code", "meaning", "emitted by"), "|---|---|---|"]
        out += [_row(f"`{c.value}`", c.meaning, ", ".join(c.emitters)) for c in family]
        out.append("")
    return "\n".join(out)


ALERTS_BEGIN = "<!-- codes:alerts begin (python -m kstrade.codes --write) -->"
ALERTS_END = "<!-- codes:alerts end -->"


def with_alert_table(text: str) -> str:
    """`text` (a markdown file) with the block between the alert markers replaced by `alert_table`."""
    head, sep, rest = text.partition(ALERTS_BEGIN)
    _, sep2, tail = rest.partition(ALERTS_END)
    if not sep or not sep2:
        raise ValueError("no codes:alerts markers")
    return head + ALERTS_BEGIN + "\n" + alert_table() + ALERTS_END + tail


def _write(root: Path) -> None:
    (root / "CODES.md").write_text(markdown())
    readme = root / "deploy" / "grafana" / "README.md"
    readme.write_text(with_alert_table(readme.read_text()))


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown())
    elif sys.argv[1:] == ["--alerts"]:
        sys.stdout.write(alert_table())
    elif sys.argv[1:] == ["--write"]:
        _write(Path(__file__).resolve().parents[2])
    else:
        sys.exit("usage: python -m kstrade.codes --markdown | --alerts | --write")
