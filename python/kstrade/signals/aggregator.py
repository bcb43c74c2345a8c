"""`SignalAggregator`: the signals stage. Reads predictions, 1m closes, feature vectors and the
execution engine's fills and P&L; writes `signals.raw`, `signals.calibrated`, and then each
signal either to `signals.final` or, with its reason code, to `signals.filtered`."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

import kstrade._native as _native
from kstrade.bus import MessageError, Output, Record
from kstrade.bus.topics import (
    EXECUTIONS,
    PNL,
    PREDICTIONS_TRANSFORMER,
    SIGNAL_STAGES,
    candles,
    features_aggregated,
    predictions_lstm,
    signals,
)
from kstrade.codes import DeadLetter, FilterReason
from kstrade.config import Settings, SignalSettings
from kstrade.schemas import Candle, Execution, FeatureVector, PnlEvent, Prediction, Signal
from kstrade.schemas.codec import from_micros
from kstrade.schemas.models import OrderStatus, PredictedDirection
from kstrade.signals import inputs
from kstrade.signals.calibration import Calibrator, calibrator_from_spec
from kstrade.signals.decision import (
    CandleContext,
    Decision,
    ModelVote,
    SignalPlan,
    calibrated_vote,
    epoch_ns,
    plan_signals,
)
from kstrade.signals.join import MARKET_BACKLOG, Key, MarketBook, OpenPositions, PredictionJoin, put_in_time_order
from kstrade.signals.native import planner
from kstrade.signals.reweighting import OutcomeWeights
from kstrade.signals.wire import encode_plan
from kstrade.stage import Stage

log = logging.getLogger(__name__)

#: Header on `signals.filtered` records: the first reason code (see `FilterReason`).
REJECT_REASON = "reject_reason"
#: Header on `signals.filtered` records: every reason that applied, comma-separated.
REJECT_REASONS = "reject_reasons"


@dataclass(slots=True)
class SignalStats:
    decided: int = 0
    final: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    #: Candles decided with no price known at all for the symbol: nothing could be written
    #: (the schema needs an entry price); counted here so none vanishes silently.
    unpriced: int = 0
    #: Candles whose decision raised (a bug, logged with its traceback).
    errors: int = 0


class SignalAggregator(Stage):
    name = "signals"
    #: The join needs every input of a symbol on one member: all its topics are keyed by symbol
    #: with the same partition count, and `range` gives a member the same partition numbers of
    #: every topic (cooperative-sticky balances each topic on its own and would split a symbol).
    consumer_config: ClassVar[dict[str, str]] = {"partition.assignment.strategy": "range"}

    def __init__(
        self,
        symbols: Iterable[str],
        settings: SignalSettings | None = None,
        calibrators: Mapping[str, Calibrator] | None = None,
        *,
        base_interval: str = "1m",
    ) -> None:
        super().__init__()
        self.symbols = list(symbols)
        #: The candles it decides on: the pipeline's base interval (`Settings.base_interval`).
        self.base_interval = base_interval
        self._symbols = set(self.symbols)
        self.settings = settings or SignalSettings()
        # Manifest calibrators from the settings, then any handed in (they win).
        self.calibrators: dict[str, Calibrator] = {
            v: calibrator_from_spec(spec) for v, spec in self.settings.calibrators.items()
        }
        self.calibrators.update(calibrators or {})
        required = {m for m, w in self.settings.weights.items() if w > 0}
        self.market = MarketBook()
        self.join = PredictionJoin(required, self.settings.join_deadline_ms * 1_000_000, self.market)
        self.positions = OpenPositions()
        self.outcome_weights = OutcomeWeights(self.settings.weights, self.settings.reweighting)
        self.stats = SignalStats()
        #: Where each undecided candle's inputs sit on the bus (candle, features, predictions):
        #: never committed past until the candle is decided, so a crash redelivers them. Per
        #: symbol, by candle time, in time order (see `put_in_time_order`).
        self._held: dict[str, dict[datetime, list[tuple[str, int, int]]]] = {}
        #: The same offsets as a multiset per (topic, partition): offset -> times held.
        self._held_offsets: dict[tuple[str, int], dict[int, int]] = {}
        #: The newest offset held per partition, and the partitions where an older one came after it.
        self._newest_held: dict[tuple[str, int], int] = {}
        self._unordered: set[tuple[str, int]] = set()
        self._lstm_topics = {predictions_lstm(s): s for s in self.symbols}
        self._candle_topics = {candles(s, base_interval): s for s in self.symbols}
        self._feature_topics = {features_aggregated(s): s for s in self.symbols}
        self._topic_raw, self._topic_calibrated = signals("raw"), signals("calibrated")
        self._topic_final, self._topic_filtered = signals("final"), signals("filtered")
        self._candles = inputs.FastReader(self.codec(Candle))
        self._vectors = inputs.FastReader(self.codec(FeatureVector))
        #: The only features a decision reads (`decision.plan_signals`): the rest of a vector
        #: is never decoded on the fast path, nor kept.
        s = self.settings
        self._wanted_features = sorted({s.atr_feature, s.alignment_feature, *s.regime_features.values()})
        self._picker = _native.FeaturePicker(self._wanted_features) if self._vectors.enabled else None
        self._predictions = inputs.FastReader(self.codec(Prediction))
        #: The decision in one native call (None: only the Python path can decide here).
        self._planner = planner(self.settings, self.calibrators, self._wanted_features)

    @classmethod
    def from_settings(cls, settings: Settings, calibrators: Mapping[str, Calibrator] | None = None) -> SignalAggregator:
        """The stage as configured: the settings' symbols and `signals` section."""
        return cls(settings.symbols, settings.signals, calibrators, base_interval=settings.base_interval)

    def inputs(self) -> list[str]:
        return self.inputs_for(self.symbols, self.base_interval)

    @classmethod
    def inputs_for(cls, symbols: Sequence[str], base_interval: str = "1m") -> list[str]:
        return [
            *(predictions_lstm(s) for s in symbols),
            PREDICTIONS_TRANSFORMER,
            *(candles(s, base_interval) for s in symbols),
            *(features_aggregated(s) for s in symbols),
            EXECUTIONS,
            PNL,
        ]

    @classmethod
    def outputs_for(cls, symbols: Sequence[str]) -> list[str]:
        """Topics it emits to (dead letters aside): what its principal may write (`kstrade.bus.acl`)."""
        return [signals(stage) for stage in SIGNAL_STAGES]

    # -- records -----------------------------------------------------------------------------
    def retained(self) -> dict[tuple[str, int], int]:
        """The lowest offset, per partition, of an input of a candle not yet decided."""
        # A partition's records arrive in offset order, so its held offsets (a dict: insertion
        # order) start with the lowest; only one that saw an offset come back (a redelivery
        # after a rebalance) needs the full min().
        unordered = self._unordered
        return {
            tp: min(offsets) if tp in unordered else next(iter(offsets))
            for tp, offsets in self._held_offsets.items()
            if offsets
        }

    def _hold(self, key: Key, record: Record) -> None:
        symbol, timestamp = key
        done = self.join.decided_through.get(symbol)
        if done is not None and timestamp <= done:
            return  # already decided: nothing to keep
        held = self._held.get(symbol)
        if held is None:
            held = self._held[symbol] = {}
        tp = (record.topic, record.partition)
        offsets = self._held_offsets.get(tp)
        if offsets is None:
            offsets = self._held_offsets[tp] = {}
        offset = record.offset
        if offset < self._newest_held.get(tp, -1):
            self._unordered.add(tp)
        self._newest_held[tp] = max(offset, self._newest_held.get(tp, -1))
        offsets[offset] = offsets.get(offset, 0) + 1
        where = (record.topic, record.partition, record.offset)
        positions = held.get(timestamp)
        if positions is not None:
            positions.append(where)
        else:
            # Bounded like the market book: every candle here is undecided, and is let go only
            # beyond its backlog (a candle no model ever predicts: warm-up, a model down).
            for dropped in put_in_time_order(held, timestamp, [where], MARKET_BACKLOG):
                self._release(dropped)

    def _decided(self, symbol: str, timestamp: datetime) -> None:
        """A candle is decided: its inputs and those of the symbol's older candles are done."""
        held = self._held.get(symbol)
        while held and next(iter(held)) <= timestamp:
            self._release(held.pop(next(iter(held))))

    def _release(self, positions: list[tuple[str, int, int]]) -> None:
        """Forget held inputs (their candle is decided or let go)."""
        for topic, partition, offset in positions:
            offsets = self._held_offsets[(topic, partition)]
            n = offsets[offset] - 1
            if n:
                offsets[offset] = n
            else:
                del offsets[offset]

    def handle(self, record: Record) -> Iterable[Output]:
        topic = record.topic
        if topic in self._lstm_topics or topic == PREDICTIONS_TRANSFORMER:
            return self._prediction(record)
        if topic in self._candle_topics:
            symbol, timestamp, interval, close = self._read_candle(record)
            self._check_symbol(symbol, self._candle_topics[topic], topic)
            if interval != self.base_interval:
                raise MessageError(
                    DeadLetter.WRONG_INTERVAL, f"{topic}: a {interval} candle on the {self.base_interval} topic"
                )
            self.market.add_close(symbol, timestamp, close)
            key = (symbol, timestamp)
            self._hold(key, record)
            self.outcome_weights.close(symbol, timestamp, close)
            return self._decide_all(self.join.ready(key))
        if topic in self._feature_topics:
            symbol, timestamp, features = self._read_features(record)
            self._check_symbol(symbol, self._feature_topics[topic], topic)
            self.market.add_features(symbol, timestamp, features)
            key = (symbol, timestamp)
            self._hold(key, record)
            return self._decide_all(self.join.ready(key))
        if topic == EXECUTIONS:
            fill = self.decode(record, Execution)
            if fill.symbol not in self._symbols:
                raise MessageError(DeadLetter.UNKNOWN_SYMBOL, f"{topic}: symbol {fill.symbol!r} is not configured")
            if fill.status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
                self.positions.filled(fill.symbol, str(fill.signal_id))
            return ()
        if topic == PNL:
            pnl = self.decode(record, PnlEvent)
            if pnl.symbol not in self._symbols:
                raise MessageError(DeadLetter.UNKNOWN_SYMBOL, f"{topic}: symbol {pnl.symbol!r} is not configured")
            self.positions.closed(str(pnl.signal_id))
            return ()
        raise MessageError(DeadLetter.UNEXPECTED_TOPIC, f"the signals stage does not read {topic}")

    # Inputs: the cheap native read when the record is a well-formed current message, else the
    # full decode, which raises what it always raised (see `kstrade.signals.inputs`).
    def _read_candle(self, record: Record) -> tuple[str, datetime, str, float]:
        fast = self._candles.read(record)
        if fast is not None:
            fields = inputs.candle(fast[0])
            if fields is not None:
                return fields
        candle = self.decode(record, Candle)
        return candle.symbol, candle.timestamp, candle.interval, candle.close

    def _read_features(self, record: Record) -> tuple[str, datetime, dict[str, float]]:
        """(symbol, time, the features a decision uses): natively picked from a well-formed
        current vector, else from the full decode (which raises what it always raised)."""
        picker, value, wanted = self._picker, record.value, self._wanted_features
        if picker is not None and value is not None and self._vectors.origin_ns(record) is not None:
            try:
                micros, symbol, values = picker.read(value)
            except Exception:  # not one the picker takes: the full decode judges it
                pass
            else:
                return symbol, from_micros(micros), {n: v for n, v in zip(wanted, values, strict=True) if v is not None}
        vector = self.decode(record, FeatureVector)
        features = vector.features
        return vector.symbol, vector.timestamp, {n: features[n] for n in wanted if n in features}

    def _read_prediction(
        self, record: Record
    ) -> tuple[tuple[str, datetime, str, str, PredictedDirection, float, float], int]:
        fast = self._predictions.read(record)
        if fast is not None:
            fields = inputs.prediction(fast[0])
            if fields is not None:
                return fields, fast[1]
        p = self.decode(record, Prediction)
        out = p.prediction
        fields = (
            p.symbol,
            p.timestamp,
            p.model_type.value,
            p.model_version,
            out.direction,
            out.probability,
            out.confidence,
        )
        return fields, self.origin_ns(record)

    def _prediction(self, record: Record) -> list[Output]:
        (symbol, timestamp, model_type, version, direction, probability, confidence), origin_ns = self._read_prediction(
            record
        )
        if record.topic in self._lstm_topics:
            self._check_symbol(symbol, self._lstm_topics[record.topic], record.topic)
            if model_type != "lstm":
                raise MessageError(DeadLetter.MODEL_TOPIC_MISMATCH, f"{record.topic}: a {model_type} prediction")
        elif model_type != "transformer":
            raise MessageError(DeadLetter.MODEL_TOPIC_MISMATCH, f"{record.topic}: a {model_type} prediction")
        elif symbol not in self._symbols:
            raise MessageError(DeadLetter.UNKNOWN_SYMBOL, f"{record.topic}: symbol {symbol!r} is not configured")
        vote = ModelVote(model_type, version, direction, probability, confidence)
        key = (symbol, timestamp)
        keys = self.join.add(vote, symbol, timestamp, now_ns=self.clock.now_ns(), origin_ns=origin_ns)
        if key in self.join.pending:
            self._hold(key, record)
        return self._decide_all(keys)

    @staticmethod
    def _check_symbol(symbol: str, expected: str, topic: str) -> None:
        if symbol != expected:
            raise MessageError(DeadLetter.SYMBOL_TOPIC_MISMATCH, f"{topic}: a message for {symbol!r}")

    # -- decisions ---------------------------------------------------------------------------
    def on_time(self, now_ns: int) -> Iterable[Output]:
        """Decide every candle whose deadline passed, with the models present; but only once
        every input on the bus is read (`caught_up`): a deadline that passed while the cluster
        was away, or while this stage catches up after it, says nothing about a model being
        down, since its prediction (or the candle or vector) may be the next record."""
        due = self.join.due(now_ns)
        if not due or not self.caught_up():
            return []
        out: list[Output] = []
        for key in due:
            out += self._decide(key, now_ns)
        return out

    def _decide_all(self, keys: list[Key]) -> list[Output]:
        now_ns = self.clock.now_ns()
        out: list[Output] = []
        for key in keys:
            out += self._decide(key, now_ns)
        return out

    def _decide(self, key: Key, now_ns: int) -> list[Output]:
        try:
            return self._decide_candle(key, now_ns)
        except Exception:
            # Inputs were validated on the way in, so this is a bug, not bad input: the record
            # that happened to trigger the decision (or none, from on_time) is not to blame, and
            # the other candles must still be decided. Logged and counted, never silent.
            self.stats.errors += 1
            log.exception("signals: deciding %s at %s failed", key[0], key[1].isoformat())
            return []

    def _decide_candle(self, key: Key, now_ns: int) -> list[Output]:
        context, origin_ns = self.join.take(key)
        symbol, timestamp = key
        self._decided(symbol, timestamp)
        self.stats.decided += 1
        reweighting = self.settings.reweighting.enabled
        position_open = self.positions.is_open(context.symbol, now_ns)
        weights = self.outcome_weights.weights() if reweighting else None
        if self._planner is not None:
            native = self._planner.plan(context, now_ns=now_ns, position_open=position_open, weights=weights)
            if native is not None:
                if reweighting and context.close is not None:
                    self._reweigh(context)
                written = (native.raw, native.calibrated, native.last)
                return self._written(
                    context.symbol, context.timestamp, native.signal_id, written, native.reasons, origin_ns
                )
        plan = plan_signals(
            context,
            self.settings,
            self.calibrators,
            now_ns=now_ns,
            position_open=position_open,
            weights=weights,
        )
        # The bodies straight from the plan's values when they are certainly valid; else the
        # validated signals (raising, as `decide` does, before anything else happens).
        bodies = decision = None
        if plan is not None:
            bodies = encode_plan(plan)
            if bodies is None:
                decision = plan.decision()
        if reweighting and context.close is not None:
            self._reweigh(context)
        if plan is None:
            self.stats.unpriced += 1
            # Never silent: the market book forgot the candle (a backlog beyond its bound) or
            # no close of the symbol was ever read.
            log.warning("signals: %s at %s has no price (no close of it or before it): no signal", symbol,
                        timestamp.isoformat())  # fmt: skip
            return []
        if bodies is not None:
            return self._encoded_outputs(plan, bodies, origin_ns)
        assert decision is not None
        return self._outputs(decision, origin_ns)

    def _reweigh(self, context: CandleContext) -> None:
        """The candle's calibrated votes, for the outcome re-weighting to score once it closes."""
        assert context.close is not None
        votes = {m: calibrated_vote(v, self.calibrators) for m, v in context.votes.items()}
        self.outcome_weights.predicted(context.symbol, context.timestamp, context.close, votes)

    def _headers(self, origin_ns: int) -> list[tuple[str, bytes]]:
        return self.codec(Signal).headers(origin_ns, self.name)

    def _encoded_outputs(self, plan: SignalPlan, bodies: tuple[bytes, bytes, bytes], origin_ns: int) -> list[Output]:
        """What `_outputs` gives for `plan.decision()`, from bodies `encode_plan` wrote."""
        calibrated = plan.calibrated
        symbol, timestamp, signal_id = calibrated["symbol"], calibrated["timestamp"], str(calibrated["signal_id"])
        return self._written(symbol, timestamp, signal_id, bodies, plan.reasons, origin_ns)

    def _written(
        self,
        symbol: str,
        timestamp: datetime,
        signal_id: str,
        bodies: tuple[bytes, bytes, bytes],
        reasons: list[FilterReason],
        origin_ns: int,
    ) -> list[Output]:
        """The outputs of a decision whose bodies are written (raw, calibrated, then filtered or
        final): a final signal reserves the symbol's position until it expires."""
        key = symbol.encode()
        codec = self.codec(Signal)
        if codec.wire != "bare":  # the bodies are bare Avro: behind the registry's wire header
            bodies = (codec.frame(bodies[0]), codec.frame(bodies[1]), codec.frame(bodies[2]))
        outs = [
            Output(self._topic_raw, bodies[0], key=key, headers=self._headers(origin_ns)),
            Output(self._topic_calibrated, bodies[1], key=key, headers=self._headers(origin_ns)),
        ]
        if not reasons:
            expires = epoch_ns(timestamp) + self.settings.ttl_seconds * 1_000_000_000
            self.positions.reserve(symbol, signal_id, expires)
            self.stats.final += 1
            outs.append(Output(self._topic_final, bodies[2], key=key, headers=self._headers(origin_ns)))
        else:
            codes = [r.value for r in reasons]
            self.stats.rejected[codes[0]] += 1
            headers = [
                *self._headers(origin_ns),
                (REJECT_REASON, codes[0].encode()),
                (REJECT_REASONS, ",".join(codes).encode()),
            ]
            outs.append(Output(self._topic_filtered, bodies[2], key=key, headers=headers))
        return outs

    def _outputs(self, decision: Decision, origin_ns: int) -> list[Output]:
        key = decision.raw.symbol.encode()
        outs = [
            self.emit(signals("raw"), decision.raw, key=key, origin_ns=origin_ns),
            self.emit(signals("calibrated"), decision.calibrated, key=key, origin_ns=origin_ns),
        ]
        if decision.final is not None:
            final = decision.final
            expires = epoch_ns(final.timestamp) + final.ttl_seconds * 1_000_000_000
            self.positions.reserve(final.symbol, str(final.signal_id), expires)
            self.stats.final += 1
            outs.append(self.emit(signals("final"), final, key=key, origin_ns=origin_ns))
        elif decision.rejected is not None:
            reasons = [r.value for r in decision.reasons]
            self.stats.rejected[reasons[0]] += 1
            rejected = self.emit(signals("filtered"), decision.rejected, key=key, origin_ns=origin_ns)
            headers = [
                *rejected.headers,
                (REJECT_REASON, reasons[0].encode()),
                (REJECT_REASONS, ",".join(reasons).encode()),
            ]
            outs.append(Output(rejected.topic, rejected.value, key=rejected.key, headers=headers))
        return outs
