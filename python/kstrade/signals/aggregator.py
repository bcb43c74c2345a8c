"""`SignalAggregator`: the signals stage. Reads predictions, 1m closes, feature vectors and the
execution engine's fills and P&L; writes `signals.raw`, `signals.calibrated`, and then each
signal either to `signals.final` or, with its reason code, to `signals.filtered`.

Its state (the market book, the prediction join, the inputs each undecided candle holds on the
bus, the open positions) lives in one native object, `kstrade._native.SignalCore`: in a replay
the stage runs instant by instant in lockstep with execution, and a record's Python cost was
most of its time. A batch goes to the core in one call; the core reads the records it can
(current, well-formed candles, vectors and predictions of their own topics) and decides the
candles they complete. What it cannot take (anything malformed, of another schema version or
wire format, on the wrong topic; fills and P&L; decisions the native planner declines) comes
back here in order and takes the Python path, which judges, raises and dead-letters exactly as
before and feeds what it read into the same core.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

import kstrade._native as _native
from kstrade.bus import Batch, Bus, MessageError, Output, Record
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
from kstrade.clock import EventClock
from kstrade.codes import DeadLetter, FilterReason
from kstrade.config import Settings, SignalSettings
from kstrade.schemas import Candle, Execution, FeatureVector, PnlEvent, Prediction, Signal
from kstrade.schemas.codec import from_micros, to_micros
from kstrade.schemas.models import INTERVAL_MINUTES, OrderStatus, PredictedDirection
from kstrade.signals import inputs
from kstrade.signals.calibration import Calibrator, calibrator_from_spec
from kstrade.signals.decision import CandleContext, Decision, ModelVote, calibrated_vote, epoch_ns, plan_signals
from kstrade.signals.join import MARKET_BACKLOG, MARKET_MEMORY, JoinStats
from kstrade.signals.native import planner
from kstrade.signals.reweighting import OutcomeWeights
from kstrade.signals.wire import encode_plan
from kstrade.stage import Stage

log = logging.getLogger(__name__)
#: The join's warnings keep the logger they always had.
join_log = logging.getLogger("kstrade.signals.join")

#: Header on `signals.filtered` records: the first reason code (see `FilterReason`).
REJECT_REASON = "reject_reason"
#: Header on `signals.filtered` records: every reason that applied, comma-separated.
REJECT_REASONS = "reject_reasons"


#: Where a record that raises goes in a batch (`Batch.fail`).
Fail = Callable[[Record, Exception], None]
_DIRECTIONS = list(PredictedDirection)
_DIRECTION_INDEX = {d: i for i, d in enumerate(_DIRECTIONS)}
#: A candle for the Python path to decide (`SignalCore.feed`): symbol index, time (us), votes
#: (model, version, direction index, probability, confidence), the wanted features' values (or
#: None: no vector), close, last close before it, origin_ns, whether its position is open.
CoreContext = tuple[
    int, int, list[tuple[str, str, int, float, float]], list[float | None] | None, float | None, float | None, int, bool
]


def _spec(reader: inputs.FastReader) -> tuple[str, int, str]:
    """The standard headers the core accepts for a reader's messages."""
    return reader.schema_name, reader.version, reader.encoding


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
        self.outcome_weights = OutcomeWeights(self.settings.weights, self.settings.reweighting)
        self.stats = SignalStats()
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
        #: The core's symbols, by index (the configured ones, each once), and their record keys.
        self._core_symbols = list(dict.fromkeys(self.symbols))
        self._index = {symbol: i for i, symbol in enumerate(self._core_symbols)}
        self._keys = [symbol.encode() for symbol in self._core_symbols]
        self._codes: dict[int, list[str]] = {}
        self.core = self._core()

    def _core(self, *, native: bool = True) -> _native.SignalCore:
        """The stage's state, and its per-record work where the native readers and planner can
        do it. With outcome re-weighting the weights change with every close, which only the
        Python path scores: candles are read and candles decided there. `native=False`: every
        record read and every candle decided on the Python path (what the tests hold the
        native path equal to)."""
        reweighting = self.settings.reweighting.enabled
        minutes = INTERVAL_MINUTES.get(self.base_interval)
        candle_reader = None
        if native and self._candles.enabled and minutes is not None and not reweighting:
            candle_reader = (_spec(self._candles), self.base_interval, minutes)
        plans = self._planner.native if native and self._planner is not None and not reweighting else None
        symbols = self._core_symbols
        return _native.SignalCore(
            symbols=symbols,
            required=sorted(m for m, w in self.settings.weights.items() if w > 0),
            deadline_ns=self.settings.join_deadline_ms * 1_000_000,
            memory=MARKET_MEMORY,
            backlog=MARKET_BACKLOG,
            planner=plans,
            candle_topics=[candles(s, self.base_interval) for s in symbols],
            feature_topics=[features_aggregated(s) for s in symbols],
            lstm_topics=[predictions_lstm(s) for s in symbols],
            transformer_topic=PREDICTIONS_TRANSFORMER,
            candles=candle_reader,
            features=(_spec(self._vectors), self._wanted_features) if native and self._picker is not None else None,
            predictions=_spec(self._predictions) if native and self._predictions.enabled else None,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, bus: Bus | None = None, calibrators: Mapping[str, Calibrator] | None = None
    ) -> SignalAggregator:
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
        """The lowest offset, per partition, of an input of a candle not yet decided (the core
        holds a candle's inputs from when it reads them until the candle or a newer one of the
        symbol is decided; the runner never commits past them, so a crash redelivers them)."""
        return self.core.retained()

    def handle(self, record: Record) -> Iterable[Output]:
        return self._run([record], self.clock.now_ns(), None)

    def handle_batch(self, batch: Batch) -> Iterable[Output]:
        """The batch in one native call where it can (see `_run`). On the event clock the time
        stands still through a batch; on any other, each record gets its own reading of it,
        as `handle` would."""
        if isinstance(self.clock, EventClock):
            return self._run(batch.records, self.clock.now_ns(), batch.fail)
        out: list[Output] = []
        for record in batch.records:
            out += self._run([record], self.clock.now_ns(), batch.fail)
        return out

    def _run(self, records: list[Record], now_ns: int, fail: Fail | None) -> list[Output]:
        """`records` in order: the core reads and decides what it can, and stops at what only
        the Python path can take (a record it does not read natively, or a candle the native
        planner declines); that one is taken here, and the core goes on after it. A record that
        raises goes to `fail` (the dead-letter topic), or the exception propagates (`handle`)."""
        core = self.core
        out: list[Output] = []
        i, n = 0, len(records)
        try:
            while True:
                i, decided, context = core.feed(records, i, now_ns)
                if decided:
                    out += self._planned(decided)
                if context is not None:
                    out += self._decide(context, now_ns)
                elif i < n:
                    record = records[i]
                    i += 1
                    try:
                        self._read(record, now_ns)
                    except Exception as exc:
                        if fail is None:
                            raise
                        fail(record, exc)
                else:
                    return out
        finally:
            self._log_warnings()

    def _read(self, record: Record, now_ns: int) -> None:
        """The Python path of one record: read (or raise what it always raised), then fed to
        the core, which decides what it completes on the next `feed`."""
        topic = record.topic
        if topic in self._lstm_topics or topic == PREDICTIONS_TRANSFORMER:
            self._prediction(record, now_ns)
        elif topic in self._candle_topics:
            symbol, timestamp, interval, close = self._read_candle(record)
            self._check_symbol(symbol, self._candle_topics[topic], topic)
            if interval != self.base_interval:
                raise MessageError(
                    DeadLetter.WRONG_INTERVAL, f"{topic}: a {interval} candle on the {self.base_interval} topic"
                )
            at = to_micros(timestamp)
            self.core.add_close(self._index[symbol], at, close, topic, record.partition, record.offset)
            self.outcome_weights.close(symbol, timestamp, close)
        elif topic in self._feature_topics:
            symbol, timestamp, features = self._read_features(record)
            self._check_symbol(symbol, self._feature_topics[topic], topic)
            values = [features.get(n) for n in self._wanted_features]
            self.core.add_features(self._index[symbol], to_micros(timestamp), values, topic, record.partition,
                                   record.offset)  # fmt: skip
        elif topic == EXECUTIONS:
            fill = self.decode(record, Execution)
            if fill.symbol not in self._symbols:
                raise MessageError(DeadLetter.UNKNOWN_SYMBOL, f"{topic}: symbol {fill.symbol!r} is not configured")
            if fill.status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
                self.core.filled(self._index[fill.symbol], str(fill.signal_id))
        elif topic == PNL:
            pnl = self.decode(record, PnlEvent)
            if pnl.symbol not in self._symbols:
                raise MessageError(DeadLetter.UNKNOWN_SYMBOL, f"{topic}: symbol {pnl.symbol!r} is not configured")
            self.core.closed(str(pnl.signal_id))
        else:
            raise MessageError(DeadLetter.UNEXPECTED_TOPIC, f"the signals stage does not read {topic}")

    def _log_warnings(self) -> None:
        """What the core has to say, logged as the Python join and market book logged it."""
        for kind, model, index, micros, count, n in self.core.take_warnings():
            symbol, at = self._core_symbols[index], from_micros(micros).isoformat()
            if kind == "late":
                join_log.warning(
                    "signals: %s prediction for %s at %s came after the symbol was decided through %s: not used",
                    model, symbol, at, from_micros(count).isoformat(),
                )  # fmt: skip
            else:
                join_log.warning(
                    "signals: %s has %d candles not yet decided (the models are behind); forgetting the price "
                    "of %s (%d so far)", symbol, count, at, n,
                )  # fmt: skip

    # -- what the core holds, for tests and views ---------------------------------------------
    def join_stats(self) -> JoinStats:
        late, repeated, ignored, _ = self.core.stats()
        return JoinStats(late=late, repeated=repeated, ignored=ignored)

    def is_pending(self, symbol: str, timestamp: datetime) -> bool:
        """Whether a prediction of the candle is waiting for the rest of its inputs."""
        return self.core.is_pending(self._index[symbol], to_micros(timestamp))

    def market_close(self, symbol: str, timestamp: datetime) -> float | None:
        return self.core.close(self._index[symbol], to_micros(timestamp))

    def market_features(self, symbol: str, timestamp: datetime) -> dict[str, float] | None:
        values = self.core.features(self._index[symbol], to_micros(timestamp))
        if values is None:
            return None
        return {n: v for n, v in zip(self._wanted_features, values, strict=True) if v is not None}

    def decided_through(self, symbol: str) -> datetime | None:
        micros = self.core.decided_through(self._index[symbol])
        return None if micros is None else from_micros(micros)

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

    def _prediction(self, record: Record, now_ns: int) -> None:
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
        if not -(2**63) <= origin_ns < 2**63:  # the core keeps times as 64-bit integers
            raise MessageError(DeadLetter.BAD_HEADER, f"{record.topic}: origin_ns {origin_ns} does not fit 64 bits")
        vote = (model_type, version, _DIRECTION_INDEX[direction], probability, confidence)
        self.core.add_prediction(self._index[symbol], to_micros(timestamp), vote, now_ns, origin_ns, record.topic,
                                 record.partition, record.offset)  # fmt: skip

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
        if not self.core.has_due(now_ns) or not self.caught_up():
            return []
        self.core.queue_due(now_ns)
        return self._run([], now_ns, None)

    def _planned(self, decided: list[tuple[int, bytes, bytes, bytes, int, int]]) -> list[Output]:
        """The outputs of candles the core decided (and whose final signals it reserved)."""
        out: list[Output] = []
        for index, raw, calibrated, last, reasons, origin_ns in decided:
            self.stats.decided += 1
            out += self._written(index, (raw, calibrated, last), self._reason_codes(reasons), origin_ns)
        return out

    def _reason_codes(self, bits: int) -> list[str]:
        codes = self._codes.get(bits)
        if codes is None:
            codes = self._codes[bits] = [r.value for i, r in enumerate(FilterReason) if bits >> i & 1]
        return codes

    def _decide(self, context: CoreContext, now_ns: int) -> list[Output]:
        """A candle only the Python path decides (see `kstrade.signals.native`)."""
        index, micros, votes, values, close, last_close, origin_ns, position_open = context
        symbol, timestamp = self._core_symbols[index], from_micros(micros)
        try:
            self.stats.decided += 1
            features = None if values is None else {n: v for n, v in zip(self._wanted_features, values, strict=True)
                                                     if v is not None}  # fmt: skip
            candle = CandleContext(
                symbol=symbol,
                timestamp=timestamp,
                votes={m: ModelVote(m, version, _DIRECTIONS[d], p, c) for m, version, d, p, c in votes},
                features=features,
                close=close,
                last_close=last_close,
            )
            return self._decide_candle(index, candle, origin_ns, now_ns, position_open)
        except Exception:
            # Inputs were validated on the way in, so this is a bug, not bad input: the record
            # that happened to trigger the decision (or none, from on_time) is not to blame, and
            # the other candles must still be decided. Logged and counted, never silent.
            self.stats.errors += 1
            log.exception("signals: deciding %s at %s failed", symbol, timestamp.isoformat())
            return []

    def _decide_candle(
        self, index: int, context: CandleContext, origin_ns: int, now_ns: int, position_open: bool
    ) -> list[Output]:
        reweighting = self.settings.reweighting.enabled
        weights = self.outcome_weights.weights() if reweighting else None
        if self._planner is not None:
            native = self._planner.plan(context, now_ns=now_ns, position_open=position_open, weights=weights)
            if native is not None:
                if reweighting and context.close is not None:
                    self._reweigh(context)
                if not native.reasons:
                    self._reserve(index, context.timestamp, native.signal_id)
                written = (native.raw, native.calibrated, native.last)
                return self._written(index, written, [r.value for r in native.reasons], origin_ns)
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
            log.warning("signals: %s at %s has no price (no close of it or before it): no signal", context.symbol,
                        context.timestamp.isoformat())  # fmt: skip
            return []
        if bodies is not None:
            if not plan.reasons:
                self._reserve(index, context.timestamp, str(plan.calibrated["signal_id"]))
            return self._written(index, bodies, [r.value for r in plan.reasons], origin_ns)
        assert decision is not None
        return self._outputs(index, decision, origin_ns)

    def _reserve(self, index: int, timestamp: datetime, signal_id: str) -> None:
        """A final signal reserves its symbol's position until it expires."""
        self.core.reserve(index, signal_id, epoch_ns(timestamp) + self.settings.ttl_seconds * 1_000_000_000)

    def _reweigh(self, context: CandleContext) -> None:
        """The candle's calibrated votes, for the outcome re-weighting to score once it closes."""
        assert context.close is not None
        votes = {m: calibrated_vote(v, self.calibrators) for m, v in context.votes.items()}
        self.outcome_weights.predicted(context.symbol, context.timestamp, context.close, votes)

    def _headers(self, origin_ns: int) -> list[tuple[str, bytes]]:
        return self.codec(Signal).headers(origin_ns, self.name)

    def _written(
        self, index: int, bodies: tuple[bytes, bytes, bytes], codes: list[str], origin_ns: int
    ) -> list[Output]:
        """The outputs of a decision whose bodies are written (raw, calibrated, then filtered or
        final, by its reason codes: none, final); its position is reserved already."""
        key = self._keys[index]
        codec = self.codec(Signal)
        if codec.wire != "bare":  # the bodies are bare Avro: behind the registry's wire header
            bodies = (codec.frame(bodies[0]), codec.frame(bodies[1]), codec.frame(bodies[2]))
        outs = [
            Output(self._topic_raw, bodies[0], key=key, headers=self._headers(origin_ns)),
            Output(self._topic_calibrated, bodies[1], key=key, headers=self._headers(origin_ns)),
        ]
        if not codes:
            self.stats.final += 1
            outs.append(Output(self._topic_final, bodies[2], key=key, headers=self._headers(origin_ns)))
        else:
            self.stats.rejected[codes[0]] += 1
            headers = [
                *self._headers(origin_ns),
                (REJECT_REASON, codes[0].encode()),
                (REJECT_REASONS, ",".join(codes).encode()),
            ]
            outs.append(Output(self._topic_filtered, bodies[2], key=key, headers=headers))
        return outs

    def _outputs(self, index: int, decision: Decision, origin_ns: int) -> list[Output]:
        key = decision.raw.symbol.encode()
        outs = [
            self.emit(signals("raw"), decision.raw, key=key, origin_ns=origin_ns),
            self.emit(signals("calibrated"), decision.calibrated, key=key, origin_ns=origin_ns),
        ]
        if decision.final is not None:
            final = decision.final
            expires = epoch_ns(final.timestamp) + final.ttl_seconds * 1_000_000_000
            self.core.reserve(index, str(final.signal_id), expires)
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
