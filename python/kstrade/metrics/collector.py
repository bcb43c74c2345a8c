"""The metrics collector stage: reads every topic in its own consumer group, keeps bounded
windows of latency, trading performance and drift, and on its clock publishes `metrics.*`,
updates Prometheus, writes the database and sends alerts. Ingest reports its own health on
`metrics.ingest_health`; the collector exports it and alerts when the live feed goes stale."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any, ClassVar, cast

from sqlalchemy.exc import SQLAlchemyError

from kstrade._native import MetricsCore, latency_headers
from kstrade.bus import Bus, BusError, Output, Record
from kstrade.bus.runner import Batch
from kstrade.bus.topics import (
    CONTROL_EXECUTION,
    EXECUTIONS,
    METRICS_ALERTS,
    METRICS_DRIFT,
    METRICS_INGEST_HEALTH,
    METRICS_LATENCY,
    METRICS_PERFORMANCE,
    PNL,
    SIGNAL_STAGES,
    signals,
)
from kstrade.clock import EventClock
from kstrade.codes import RESOLVED_SUFFIX, AlertCode, DeadLetter
from kstrade.config import MetricsSettings, Settings
from kstrade.execution.control import make_command
from kstrade.metrics.account import AccountView
from kstrade.metrics.alerts import AlertRules, RaisedAlert
from kstrade.metrics.drift import PSI_SIGNIFICANT, DriftReference, PsiMonitor
from kstrade.metrics.lag import LagProbe
from kstrade.metrics.latency import STAGE_TIME, LatencySummary, LatencyTracker
from kstrade.metrics.performance import ClosedTrade, PerformanceWindow, TierCalibration
from kstrade.metrics.prometheus import MetricsExporter
from kstrade.metrics.storage import MetricsStore
from kstrade.metrics.telegram import COMMANDS, TelegramNotifier
from kstrade.schemas import (
    Alert,
    Candle,
    Execution,
    FeatureVector,
    Latency,
    Message,
    ModelDrift,
    PerformanceMetrics,
    PnlEvent,
    Prediction,
    Signal,
)
from kstrade.schemas.codec import (
    HEADER_ENCODING,
    HEADER_ORIGIN_NS,
    HEADER_SCHEMA,
    HEADER_SCHEMA_VERSION,
    HEADER_STAGE,
    Wire,
    codec_error,
    from_micros,
)
from kstrade.schemas.models import ControlAction, ControlCommand, IngestHealth, ModelType, Severity, SignalStage, Tier
from kstrade.signals import wire
from kstrade.stage import Stage

log = logging.getLogger(__name__)

#: Everything the pipeline writes, the alerts other stages raise, ingest's health reports, and
#: the dead letters (counted).
INPUTS = r"^((market|features|predictions|signals|trades|dlq)\..*|metrics\.(alerts|ingest_health))$"
_CANDLE = re.compile(r"^market\.candles\.(?P<symbol>[^.]+)\.(?P<interval>[^.]+)$")
_INTERVAL_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
#: Buffered database rows beyond which a flush is not left to the next emission.
_FLUSH_ROWS = 5_000
#: On the event clock (a replay) rows are written in transactions of this many, not per
#: emission: SQLite writes 72k signal rows in 1.6 s in one transaction, 4 s in 500-row ones.
_REPLAY_FLUSH_ROWS = 25_000
_SIGN = {"DOWN": -1, "FLAT": 0, "UP": 1}
_SIGNAL_TOPICS = frozenset(signals(stage) for stage in SIGNAL_STAGES)
#: A poll's records are taken run by run of one topic.
_TOPIC = attrgetter("topic")
#: What the collector reads from one record, given its origin_ns and stage headers.
Content = Callable[[Record, int, str], None]
#: What the collector does with a run of records from one topic.
Route = Callable[[Sequence[Record]], None]
#: A record's latency: (origin_ns, stage, key, produced_ns), as `LatencyTracker.observe_run` takes it.
Timed = tuple[int, str, bytes | None, int]
#: The key of the NO_PROGRESS alert a service's liveness alarm writes (the collector's too).
_LIVENESS_KEY = AlertCode.NO_PROGRESS.encode()
#: How long a /flatten waits for its /flatten confirm.
FLATTEN_CONFIRM_S = 60.0
#: What `MetricsCore.feed` stopped at (see rust/python/src/metrics_core.rs): every record done,
#: a topic to register, a record for the Python path whole, its content only (its latency taken
#: natively), a record that is no native `Record` (not counted either).
_DONE, _NEW_TOPIC, _WHOLE, _CONTENT, _FOREIGN = range(5)
#: A signal topic -> the index of its stage in the schema's enum (the native core's stage numbers).
_STAGE_INDEX = {signals(stage.value): i for i, stage in enumerate(SignalStage)}
#: The largest origin the native core holds (i128): an origin beyond is unreadable.
_ORIGIN_LIMIT = 2**127


def _origin_and_stage(record: Record) -> tuple[int, str]:
    """The two headers latency needs, read without building `MessageHeaders` for every record;
    a record without them, or with an origin that is no integer, is unreadable (raises)."""
    origin = record.header(HEADER_ORIGIN_NS)
    stage = record.header(HEADER_STAGE)
    if origin is None or stage is None:
        field = HEADER_ORIGIN_NS if origin is None else HEADER_STAGE
        raise codec_error(DeadLetter.MISSING_HEADER, "required on every message", schema="headers", field=field,
                          topic=record.topic, offset=record.offset)  # fmt: skip
    return int(origin), stage.decode("ascii")


def _at(now_ns: int) -> datetime:
    return datetime.fromtimestamp(now_ns / 1e9, tz=UTC)


#: An Avro record's `encoding` header -> its wire format: the collector reads both, whatever
#: its own codecs write (the schema registry turned on or off while records of the other wait).
_AVRO_WIRES: dict[bytes, Wire] = {b"avro": "bare", b"avro-confluent": "confluent"}


class MetricsCollector(Stage):
    """Observes; never dead-letters. A record it cannot read is counted and skipped: the stage
    that consumes that topic owns its dead letter, and a collector writing to `dlq.*` (which it
    also reads) would feed itself."""

    name = "metrics"
    #: The runner dead-letters records above this size before `handle`: an observer must not.
    max_message_bytes = 2**31
    #: Its handle never raises, so it needs no write access to anyone's dead-letter topic.
    writes_dead_letters: ClassVar[bool] = False

    def __init__(
        self,
        settings: MetricsSettings | None = None,
        *,
        reference: DriftReference | None = None,
        bus: Bus | None = None,
        store: MetricsStore | None = None,
        exporter: MetricsExporter | None = None,
        notifier: TelegramNotifier | None = None,
    ) -> None:
        super().__init__()
        self.settings = s = settings or MetricsSettings()
        self.performances = {
            w: PerformanceWindow(
                window_seconds=w, bar_seconds=s.bar_seconds, trading_days_per_year=s.trading_days_per_year
            )
            for w in sorted(s.performance_windows_s)
        }
        self.tiers = TierCalibration(window_trades=s.tier_window_trades)
        self.reference = reference
        self.psi = PsiMonitor(reference, window=s.psi_window, min_samples=s.psi_min_samples) if reference else None
        self.rules = AlertRules(repeat_after_s=s.alert_repeat_s)
        self.lag_probe = LagProbe(bus, list(s.lag_groups)) if bus is not None and s.lag_groups else None
        self.store = store
        self.exporter = exporter or MetricsExporter()
        self.notifier = notifier
        self.unreadable = 0
        self.lag: dict[tuple[str, str, int], int] = {}
        self._bar_interval = next((k for k, v in _INTERVAL_SECONDS.items() if v == s.bar_seconds), None)
        #: Topic -> what is done with its records, decided at its first record (`_route_of`)
        #: from the store, the drift reference and the clock: set before the first record.
        self._routes: dict[str, Route] = {}
        #: `counts` at the last emission: the rates of the window are the difference.
        self._tick_counts: dict[str, int] = {}
        #: Per hot type: its codec and the schema / encoding headers it reads, as bytes.
        self._expect: dict[type[Message], tuple[Any, bytes, bytes]] = {}
        self._last_emit_ns: int | None = None
        self._last_lag_ns: int | None = None
        #: The latest health report of each ingest source.
        self.ingest_health: dict[str, IngestHealth] = {}
        self._saw_trades = False
        self._operator: deque[RaisedAlert] = deque(maxlen=100)  # from the Telegram thread
        #: Operator commands from Telegram, written to control.execution on the next `on_time`.
        self._controls: deque[ControlCommand] = deque(maxlen=100)
        #: Chat -> (monotonic deadline, reason) of a /flatten waiting for its confirmation.
        self._flatten_pending: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        #: Held while the collector's thread works (a batch, a tick, close), so a reply to the
        #: operator (`command`, on the Telegram thread) reads the windows between two of them.
        self._busy = threading.Lock()
        self._storage_failing = False
        #: Open positions and today's P&L from the fills and closes seen (/positions, /daily).
        self.account = AccountView()
        #: Topic -> how a record's content is read once its latency is taken (`_content_of`).
        self._contents: dict[str, Content | None] = {}
        #: False: every record goes through the Python path (the tests compare both paths).
        self.native = True
        #: The per-record state: message counts, latency windows, closes and direction
        #: accuracy; and the per-record work where the native readers can take a record.
        self._core = self._new_core()
        #: Latency windows (`take_window`), read from the core.
        self.latency = _CoreLatency(self._core)

    def _new_core(self) -> MetricsCore:
        """The native core, with the settings' windows and a reader for each hot type whose
        codec reads bare Avro natively (the others' records all go to the Python path)."""
        s = self.settings

        def spec(model: type[Message], *, native: bool = True) -> tuple[str, int, str] | None:
            codec = self.codec(model)
            if codec.format != "avro" or (native and not codec.native):
                return None
            return codec.schema_name, codec.version, codec.encoding

        bounds = LatencyTracker()  # the tracker's bounds: one source for both paths
        return MetricsCore(
            headers=(HEADER_ORIGIN_NS, HEADER_STAGE, HEADER_SCHEMA, HEADER_SCHEMA_VERSION, HEADER_ENCODING),
            max_plausible_ns=bounds.max_plausible_ns, max_events=bounds.max_events, settle_ns=bounds.settle_ns,
            bar_ns=s.bar_seconds * 1_000_000_000, horizon_bars=s.horizon_bars, flat_band=s.flat_band_bps / 10_000,
            window=s.accuracy_window, delta=s.page_hinkley_delta, threshold=s.page_hinkley_threshold,
            sample_every=s.prediction_sample_every if self.store is not None else None,
            candle=spec(Candle), prediction=spec(Prediction),
            # signals: the reader of `wire.read_signal` (bare v1 bodies while its layout matches)
            signal=spec(Signal, native=False) if wire.ENABLED else None,
            final_stage=list(SignalStage).index(SignalStage.FINAL),
        )  # fmt: skip

    @property
    def counts(self) -> dict[str, int]:
        """Records seen per topic."""
        return dict(self._core.counts())

    @property
    def _unexported(self) -> dict[str, int]:
        """Records per topic not yet added to the Prometheus counter (added once per `on_time`)."""
        return dict(self._core.unexported())

    @property
    def _predictions_seen(self) -> int:
        return self._core.predictions_seen

    @property
    def _last_candle_ns(self) -> int | None:
        """The clock's time at the latest candle read."""
        return self._core.last_candle_ns

    def accuracy(self) -> dict[tuple[str, str], tuple[float | None, int, float]]:
        """(model, symbol) -> (rolling accuracy, hits in the window, Page-Hinkley statistic)."""
        return {(m, sym): (acc, hits, stat) for m, sym, acc, hits, stat, _, _ in self._core.accuracy(take=False)}

    def inputs(self) -> str:
        return self.inputs_for(())

    @classmethod
    def inputs_for(cls, symbols: Sequence[str], base_interval: str = "1m") -> str:
        return INPUTS  # every topic, whatever the base interval

    @classmethod
    def outputs_for(cls, symbols: Sequence[str]) -> list[str]:
        """Topics it emits to (it never dead-letters): what its principal may write (`kstrade.bus.acl`).
        control.execution: the operator commands that come in over Telegram."""
        return [METRICS_LATENCY, METRICS_PERFORMANCE, METRICS_DRIFT, METRICS_ALERTS, CONTROL_EXECUTION]

    # -- per record: cheap bookkeeping only ---------------------------------------------------------
    def handle_batch(self, batch: Batch) -> Iterable[Output]:
        """The records of a poll, run by run of one topic (a poll comes partition after
        partition): the counters move and the topic's route is looked up once per run, not
        once per record. The runs are taken in poll order, and a run's records in theirs, as
        `handle` takes them one by one: a candle scores the predictions read before it."""
        with self._busy:
            if self.native:
                self._feed(batch.records)
            else:
                for topic, run in groupby(batch.records, _TOPIC):
                    self._python(topic, list(run))
        return ()

    def handle(self, record: Record) -> Iterable[Output]:
        """One record: the same counters and route as `handle_batch`, for a run of one (under
        `_busy` too: the core is not to be read by an operator's reply while it is written)."""
        with self._busy:
            if self.native:
                self._feed([record])
            else:
                self._python(record.topic, (record,))
        return ()

    def _python(self, topic: str, records: Sequence[Record]) -> None:
        """The Python path for a run of one topic: counted, then routed."""
        route = self._route(topic)  # registers the topic with the core
        self._core.count(topic, len(records))
        route(records)

    def _feed(self, records: list[Record]) -> None:
        """The records through the native core, which counts them and reads what it can (its
        latency headers, a current well-formed bar, prediction or signal of the hot topics);
        each record it stops at is read here, in order, as the Python path reads it."""
        core, now_ns, i, n = self._core, self.clock.now_ns(), 0, len(records)
        if type(records) is not list:
            records = list(records)
        while i < n:
            i, step = core.feed(records, i, now_ns)
            if step == _DONE:
                return
            record = records[i]
            topic = record.topic
            if step == _NEW_TOPIC:
                self._route(topic)
                continue
            if step == _CONTENT:  # counted and timed: its content
                content = self._contents[topic]
                assert content is not None  # the core takes a record whole where it has no content
                origin_ns, stage = _origin_and_stage(record)
                try:
                    content(record, origin_ns, stage)
                except Exception as exc:
                    self._unreadable(record, exc)
            elif step == _WHOLE:  # counted: its headers too
                self._routes[topic]((record,))
            else:
                self._python(topic, (record,))
            i += 1

    def _route(self, topic: str) -> Route:
        """What to do with a run of records from `topic`, decided once per topic."""
        route = self._routes.get(topic)
        if route is None:
            route = self._routes[topic] = self._route_of(topic)
        return route

    def _route_of(self, topic: str) -> Route:
        """The topic's route, and what the native core does with its records (`_kind`)."""
        if topic.startswith("dlq.") or topic == METRICS_INGEST_HEALTH:
            # dead letters are counted; a report is not a market event: no latency to measure
            self._core.topic(topic, "python")
            return self._dead_letters if topic.startswith("dlq.") else self._ingest_reports
        content = self._contents[topic] = self._content_of(topic)
        kind, stored = self._kind(topic, content)
        self._core.topic(topic, kind, stored)
        return lambda records: self._timed(topic, records, content)

    def _kind(self, topic: str, content: Content | None) -> tuple[str, int | None]:
        """What the native core reads of a timed topic's records (its latency always): their
        content where `_content_of` chose one it has (else the Python path reads the content);
        for a signal topic, the stage whose signals on it the database keeps (those, and the
        final ones with a tier, it leaves to the Python path)."""
        if content is None:
            return "timed", None
        if content == self._candle:
            return "candle", None
        if content == self._bar:
            return "bar", None
        if content == self._prediction:
            return "prediction", None
        if topic.startswith("signals."):
            return "signal", _STAGE_INDEX.get(topic) if topic in self._stored_signals() else None
        return "timed_python", None

    def _content_of(self, topic: str) -> Content | None:
        """How a record of `topic` is read once its latency is taken; None: it is only counted
        and timed (other timeframes' candles, orders, signals neither final nor stored)."""
        if topic.startswith("market.candles."):
            return self._bar if self._is_bar(topic) else self._candle
        if topic.startswith("features.aggregated."):
            return self._features if self.psi is not None else None
        if topic.startswith("predictions."):
            return self._prediction
        if topic.startswith("signals."):
            if topic != signals("final") and (self.store is None or topic not in _SIGNAL_TOPICS):
                return None  # only FINAL signals feed the tiers; the others are read for the store
            # Read even where its stage is not kept: what is counted unreadable does not depend
            # on what the database keeps.
            stored = topic in self._stored_signals()
            return lambda record, origin_ns, stage: self._signal_content(record, stored)
        return {PNL: self._pnl, EXECUTIONS: self._execution, METRICS_ALERTS: self._relay}.get(topic)

    def _stored_signals(self) -> frozenset[str]:
        """The signal topics whose records the database keeps: the live setting, or the replay's
        on the event clock (as `intervals_s`)."""
        if self.store is None:
            return frozenset()
        s = self.settings
        stages = s.replay_stored_signal_stages if isinstance(self.clock, EventClock) else s.stored_signal_stages
        return frozenset(signals(stage) for stage in stages)

    def _dead_letters(self, records: Sequence[Record]) -> None:
        self.exporter.dead_letters.inc(len(records))

    def _ingest_reports(self, records: Sequence[Record]) -> None:
        for record in records:
            try:
                self._ingest_report(self.decode(record, IngestHealth))
            except Exception as exc:  # an observer counts what it cannot read
                self._unreadable(record, exc)

    def _timed(self, topic: str, records: Sequence[Record], content: Content | None) -> None:
        """The latency of every record of a run whose headers say when and by whom it was made,
        then the content of each. The latency windows and what the content feeds are apart, so
        one pass after the other leaves the state one pass per record would. Only the headers
        latency needs are read here (natively, for the whole run); the content's own headers
        (schema, version, encoding) are checked where the content is decoded, i.e. where it is used."""
        native = latency_headers(records, HEADER_ORIGIN_NS, HEADER_STAGE)
        if None in native:  # a record whose latency headers are missing or not plain
            records, timed = self._read_latency(records, native)
        else:
            timed = cast(list[Timed], native)
        self._core.observe_run(topic, timed)
        if content is None:
            return
        for record, (origin_ns, stage, _, _) in zip(records, timed, strict=True):
            try:
                content(record, origin_ns, stage)
            except Exception as exc:
                self._unreadable(record, exc)

    def _read_latency(self, records: Sequence[Record], timed: list[Timed | None]) -> tuple[list[Record], list[Timed]]:
        """The records `latency_headers` left to Python read as before (an origin such as
        '+5' is an integer to `int`), the unreadable ones counted and left out."""
        kept: list[Record] = []
        kept_timed: list[Timed] = []
        for record, latency in zip(records, timed, strict=True):
            if latency is None:
                try:
                    origin_ns, stage = _origin_and_stage(record)
                    if not -_ORIGIN_LIMIT <= origin_ns < _ORIGIN_LIMIT:
                        raise ValueError(f"origin_ns {origin_ns} is out of range")
                except Exception as exc:
                    self._unreadable(record, exc)
                    continue
                # Kafka create times are whole milliseconds: the middle of the millisecond halves the error.
                latency = (origin_ns, stage, record.key, record.timestamp_ms * 1_000_000 + 500_000)
            kept.append(record)
            kept_timed.append(latency)
        return kept, kept_timed

    def _unreadable(self, record: Record, exc: Exception) -> None:
        """An observer counts what it cannot read (the stage that consumes the topic owns its
        dead letter) and goes on with the other records."""
        self.unreadable += 1
        self.exporter.unreadable_of(record.topic).inc()
        log.debug("metrics: unreadable record on %s at offset %d: %s", record.topic, record.offset, exc)

    def _value(self, record: Record, model: type[Message]) -> dict[str, Any]:
        """The record's value as the native codec's plain dict (no pydantic), checked against
        its headers as `decode` checks them. Raises `CodecError` on a bad record. The native
        decoder refuses non-finite doubles and malformed bodies; what pydantic adds beyond that
        is checked by the callers, for the fields they use."""
        codec, version, value, wire = self._checked(record, model)
        decoded: dict[str, Any] = codec.decode_value(
            value, version=version, topic=record.topic, offset=record.offset, wire=wire
        )
        return decoded

    def _checked(self, record: Record, model: type[Message]) -> tuple[Any, int, bytes, Wire | None]:
        """The codec, schema version, value and (Avro) wire format of a record whose headers say
        it is a `model` in this codec's format (else raises `CodecError`, as `decode` does)."""
        expect = self._expect.get(model)
        if expect is None:
            codec = self.codec(model)
            expect = self._expect[model] = (codec, codec.schema_name.encode(), codec.encoding.encode())
        codec, schema, encoding = expect
        topic, offset = record.topic, record.offset
        if record.header(HEADER_SCHEMA) != schema:
            raise codec_error(DeadLetter.SCHEMA_MISMATCH, f"not a {codec.schema_name}", schema=codec.schema_name,
                              field=HEADER_SCHEMA, topic=topic, offset=offset)  # fmt: skip
        got = record.header(HEADER_ENCODING) or b"avro"
        if got != encoding and (codec.format == "json" or got not in _AVRO_WIRES):  # Avro: either wire
            raise codec_error(DeadLetter.FORMAT_MISMATCH, f"this codec reads {codec.encoding}",
                              schema=codec.schema_name, field=HEADER_ENCODING, topic=topic, offset=offset)  # fmt: skip
        version = record.header(HEADER_SCHEMA_VERSION)
        value = record.value
        if version is None:
            raise codec_error(DeadLetter.MISSING_HEADER, "required on every message", schema=codec.schema_name,
                              field=HEADER_SCHEMA_VERSION, topic=topic, offset=offset)  # fmt: skip
        if value is None:
            raise codec_error(DeadLetter.MALFORMED, "the record has no value", schema=codec.schema_name, field="",
                              topic=topic, offset=offset)  # fmt: skip
        return codec, int(version), value, _AVRO_WIRES.get(got)

    def _signal(self, record: Record) -> dict[str, Any]:
        """A signal's stored fields (`wire.read_signal`): read straight from a current bare
        Avro body, else through the codec (older versions, other formats) as `Signal`."""
        codec, version, value, framing = self._checked(record, Signal)
        if wire.ENABLED and version == codec.version and codec.format == "avro" and framing == "bare":
            return wire.read_signal(value)
        return dict(self.decode(record, Signal))

    def _is_bar(self, topic: str) -> bool:
        match = _CANDLE.match(topic)
        return bool(match and match["interval"] == self._bar_interval)

    def _candle(self, record: Record, origin_ns: int, stage: str) -> None:
        """A candle of another timeframe: counted and timed, not decoded; ingest is alive."""
        self._core.candle_seen(self.clock.now_ns())

    def _bar(self, record: Record, origin_ns: int, stage: str) -> None:
        """A candle of the bar interval: its close, and the predictions it settles are scored."""
        self._core.candle_seen(self.clock.now_ns())
        candle = self._value(record, Candle)
        symbol, close = candle["symbol"], candle["close"]
        if not symbol or not (candle["low"] <= min(candle["open"], close) <= max(candle["open"], close)
                              <= candle["high"]):  # fmt: skip
            raise ValueError("an invalid candle (empty symbol, or OHLC out of order)")
        self._core.add_bar(symbol, origin_ns, close)

    def _features(self, record: Record, origin_ns: int, stage: str) -> None:
        vector = self._value(record, FeatureVector)  # the native decoder checks shape and finiteness
        assert self.psi is not None  # routed here only with a drift reference
        self.psi.observe(vector["symbol"], vector["names"], vector["values"])

    def _signal_content(self, record: Record, stored: bool) -> None:
        """A final signal feeds the tiers; a signal on the topic of its stage, where that stage
        is `stored`, is buffered for the database."""
        signal = self._signal(record)
        signal_stage: SignalStage = signal["stage"]
        tier: Tier | None = signal["tier"]
        if signal_stage is SignalStage.FINAL and tier is not None:
            self.tiers.signal(signal["signal_id"], tier.value, signal["confidence"])
        if stored and self.store is not None and record.topic == signals(signal_stage.value):
            self.store.signal(signal)

    def _pnl(self, record: Record, origin_ns: int, stage: str) -> None:
        event = self.decode(record, PnlEvent)
        self._saw_trades = True
        closed_ns = int(event.timestamp.timestamp() * 1e9)
        for window in self.performances.values():
            window.record(ClosedTrade(closed_ns, event.realized_pnl, event.balance))
        self.tiers.outcome(event.signal_id, event.realized_pnl)
        self.account.pnl(event)
        if self.store is not None:
            self.store.trade(event)

    def _execution(self, record: Record, origin_ns: int, stage: str) -> None:
        fill = self.decode(record, Execution)
        self.account.execution(fill)
        if self.store is not None:
            self.store.execution(fill)

    def _relay(self, record: Record, origin_ns: int, stage: str) -> None:
        """Guardrails, circuit breaker, another service's NO_PROGRESS: relayed as they are. Its
        own alerts it counted when it raised them, except the one its liveness alarm raises from
        outside the stage (`kstrade.liveness`): that one is relayed too."""
        if stage == self.name and record.key != _LIVENESS_KEY:
            return
        alert = self.decode(record, Alert)
        self.exporter.alerts_of(alert.code, alert.severity.value).inc()
        if self.store is not None:
            self.store.alert(alert)
        self._notify(alert)

    def _prediction(self, record: Record, origin_ns: int, stage: str) -> None:
        prediction = self._value(record, Prediction)
        symbol, model_type = prediction["symbol"], prediction["model_type"]
        sign = _SIGN[prediction["prediction"]["direction"]]  # an unknown direction is unreadable
        if not symbol:
            raise ValueError("a prediction without a symbol")
        seen = self._core.add_prediction(model_type, symbol, origin_ns, sign)
        if self.store is not None and seen % self.settings.prediction_sample_every == 0:
            # The sampled one is validated in full (pydantic), as it is stored.
            value = dict(prediction, timestamp=from_micros(prediction["timestamp"]))
            self.store.prediction(
                Prediction.model_validate(value), topic=record.topic, partition=record.partition, offset=record.offset
            )

    def _ingest_report(self, report: IngestHealth) -> None:
        latest = self.ingest_health.get(report.source)
        if latest is not None and report.timestamp < latest.timestamp:
            return  # an older report redelivered: the newer one stands
        self.ingest_health[report.source] = report
        self.exporter.ingest.reports[report.source] = report

    # -- on the clock: summaries, alerts, exports -----------------------------------------------------
    def intervals_s(self) -> tuple[float, float]:
        """(emission, lag probe) intervals for the stage's clock. Live they are wall seconds. On
        the event clock (a replay) time jumps a bar per instant, so the live intervals would make
        every instant a tick (a commit, a lag probe and a set of metrics.* messages per event
        minute: half a replay's time); the replay intervals bound that work per event hour.
        Lag is still probed in a replay (it shows a stage falling behind on Kafka), only rarely."""
        s = self.settings
        if isinstance(self.clock, EventClock):
            return s.replay_emit_interval_s, s.replay_lag_interval_s
        return s.emit_interval_s, s.lag_interval_s

    def on_time(self, now_ns: int) -> Iterable[Output]:
        if self._nothing_due(now_ns):  # most calls: a replay asks after every lockstep round
            return []
        with self._busy:
            return self._on_time(now_ns)

    def _nothing_due(self, now_ns: int) -> bool:
        """True where `_on_time` would neither write, emit nor export anything at `now_ns`: no
        operator command or alert waiting, no ingest feed to watch, no tick or lag probe due, no
        database buffer at its flush size (a failing database waits for a tick anyway)."""
        if self._operator or self._controls or self.ingest_health or self._last_emit_ns is None:
            return False
        replay = isinstance(self.clock, EventClock)
        if not replay and self._unexported:
            return False
        emit_interval_s, lag_interval_s = self.intervals_s()
        if now_ns - self._last_emit_ns >= emit_interval_s * 1e9:
            return False
        if self.lag_probe is not None and (
            self._last_lag_ns is None or now_ns - self._last_lag_ns >= lag_interval_s * 1e9
        ):
            return False
        return self.store is None or self.store.pending < (_REPLAY_FLUSH_ROWS if replay else _FLUSH_ROWS)

    def _on_time(self, now_ns: int) -> list[Output]:
        s = self.settings
        emit_interval_s, lag_interval_s = self.intervals_s()
        # A replay (the event clock) exports its message counters once per tick, not at every
        # lockstep round: nothing scrapes them while the clock races. (The operator's replies
        # still follow every fill: a simulated operator may ask at any instant.)
        replay = isinstance(self.clock, EventClock)
        if not replay and self._unexported:  # the per-topic message counters, added once per batch
            self._export_counts()
        outputs: list[Output] = []
        raised: list[RaisedAlert] = []
        with self._lock:
            while self._operator:
                raised.append(self._operator.popleft())
            controls = list(self._controls)
            self._controls.clear()
        for command in controls:  # at once, whatever the emission interval: an operator is waiting
            outputs.append(self.emit(CONTROL_EXECUTION, command, key=command.account.encode(), origin_ns=now_ns))
        if self.ingest_health:
            raised += self._ingest_feeds(now_ns)
        if self.lag_probe is not None and (
            self._last_lag_ns is None or now_ns - self._last_lag_ns >= lag_interval_s * 1e9
        ):
            self._last_lag_ns = now_ns
            raised += self._measure_lag(now_ns)
        tick = False
        if self._last_emit_ns is None:
            self._last_emit_ns = now_ns
        elif now_ns - self._last_emit_ns >= emit_interval_s * 1e9:
            tick = True
            elapsed_s = (now_ns - self._last_emit_ns) / 1e9
            self._last_emit_ns = now_ns
            outputs += self._latency(now_ns, raised)
            outputs += self._performance(now_ns)
            outputs += self._drift(now_ns, raised)
            rate_of, before = self.exporter.messages_per_second_of, self._tick_counts
            for topic, n in self.counts.items():  # a topic gone quiet reads 0, not its last rate
                rate_of(topic).set((n - before.get(topic, 0)) / elapsed_s)
            self._tick_counts = dict(self.counts)
            stalled = self._last_candle_ns is not None and now_ns - self._last_candle_ns > s.ingest_stall_s * 1e9
            alert = self.rules.check(
                now_ns, AlertCode.INGEST_STALLED, "ingest", stalled, Severity.CRITICAL,
                f"no closed candle for more than {s.ingest_stall_s:.0f} s",
            )  # fmt: skip
            if alert:
                raised.append(alert)
        for alert in raised:
            outputs.append(self._alert(now_ns, alert))
        if replay and tick and self._unexported:
            self._export_counts()
        # Writes go out once per tick, or sooner when the buffer is large, but a failing database
        # is retried only once per tick, not on every poll. A replay writes big transactions
        # (and the rest on `close`): nobody reads the database while the event clock races.
        if (
            self.store is not None
            and self.store.pending
            and (
                (tick and not replay)
                or (self.store.pending >= (_REPLAY_FLUSH_ROWS if replay else _FLUSH_ROWS) and not self._storage_failing)
                or (tick and self._storage_failing)
            )
        ):
            self._flush(now_ns)
        return outputs

    def _export_counts(self) -> None:
        messages_of = self.exporter.messages_of
        for topic, n in self._core.take_unexported():
            messages_of(topic).inc(n)

    def _ingest_feeds(self, now_ns: int) -> list[RaisedAlert]:
        """Each ingest source's freshness as of now: the age its last report gave, plus the time
        since that report. So a feed whose process died (no more reports) goes stale too."""
        threshold = self.settings.ingest_feed_stale_s
        raised = []
        for source, report in sorted(self.ingest_health.items()):
            since_report_s = max(0.0, (now_ns - report.timestamp.timestamp() * 1e9) / 1e9)
            self.exporter.ingest_report_age_of(source).set(since_report_s)
            if report.last_message_age_s is None:
                continue  # a replay, or a feed that has not heard from the exchange yet
            age = report.last_message_age_s + since_report_s
            self.exporter.ingest_last_message_age_of(source).set(age)
            alert = self.rules.check(
                now_ns, AlertCode.INGEST_FEED_STALE, source, age > threshold, Severity.CRITICAL,
                f"{source}: no message from the exchange for {age:.0f} s (threshold {threshold:g} s); "
                f"{report.reconnects} reconnect(s) so far",
            )  # fmt: skip
            if alert:
                raised.append(alert)
        return raised

    def _latency(self, now_ns: int, raised: list[RaisedAlert]) -> list[Output]:
        outputs, stages = self.latency.take_window(now_ns)
        self.exporter.set_latency(outputs, stages)
        at = _at(now_ns)
        out = []
        target = self.settings.latency_p99_target_ms
        rows = [((stage, topic), summary) for (stage, topic), summary in outputs.items()]
        rows += [((stage, STAGE_TIME), summary) for stage, summary in stages.items()]
        for (stage, topic), summary in rows:
            message = Latency(
                timestamp=at, stage=stage, topic=topic, count=summary.count,
                p50_ms=summary.p50_ms, p99_ms=summary.p99_ms, max_ms=summary.max_ms,
            )  # fmt: skip
            out.append(self.emit(METRICS_LATENCY, message, key=stage.encode(), origin_ns=now_ns))
            if self.store is not None:
                self.store.metric("latency_p99_ms", {"stage": stage, "topic": topic}, at, summary.p99_ms)
        worst: dict[str, float] = {}
        for (stage, _topic), summary in outputs.items():
            worst[stage] = max(worst.get(stage, 0.0), summary.p99_ms)
        for stage, p99 in sorted(worst.items()):
            alert = self.rules.check(
                now_ns, AlertCode.LATENCY_P99_OVER_TARGET, stage, p99 > target, Severity.WARNING,
                f"{stage}: p99 latency {p99:.1f} ms over the {target:g} ms target",
            )  # fmt: skip
            if alert:
                raised.append(alert)
        return out

    def _performance(self, now_ns: int) -> list[Output]:
        if not self._saw_trades:
            return []
        at = _at(now_ns)
        tiers = self.tiers.tiers()
        self.exporter.set_tiers(tiers)
        out = []
        for window in self.performances.values():
            snap = window.snapshot(now_ns)
            self.exporter.set_performance(snap)
            if self.store is not None:
                for name in ("trades", "win_rate", "profit_factor", "sharpe", "max_drawdown", "realized_pnl"):
                    value = float(getattr(snap, name))
                    if math.isfinite(value):
                        self.store.metric(name, {"window": str(snap.window_seconds)}, at, value)
            message = PerformanceMetrics(
                timestamp=at, window_seconds=snap.window_seconds, trades=snap.trades, win_rate=snap.win_rate,
                sharpe=snap.sharpe, max_drawdown=snap.max_drawdown, realized_pnl=snap.realized_pnl,
            )  # fmt: skip
            out.append(self.emit(METRICS_PERFORMANCE, message, key=str(snap.window_seconds).encode(), origin_ns=now_ns))
        if self.store is not None:
            for tier, record in tiers.items():
                self.store.metric("tier_hit_rate", {"tier": tier}, at, record.hit_rate)
        return out

    def _drift(self, now_ns: int, raised: list[RaisedAlert]) -> list[Output]:
        at = _at(now_ns)
        out = []
        if self.psi is not None and self.reference is not None:
            ref = self.reference
            report = self.psi.report()
            self.exporter.set_drift(report)
            for f in report:
                drift = ModelDrift(
                    timestamp=at, model_type=ModelType(ref.model_type), model_version=ref.model_version,
                    symbol=f.symbol, metric=f"psi:{f.feature}", value=f.psi, threshold=PSI_SIGNIFICANT,
                    drifted=f.significant,
                )  # fmt: skip
                out.append(self.emit(METRICS_DRIFT, drift, key=f.symbol.encode(), origin_ns=now_ns))
                # KS at the same edges: a second opinion, published, not alerted on (PSI alerts)
                ks = drift.model_copy(
                    update={"metric": f"ks:{f.feature}", "value": f.ks, "threshold": f.ks_critical,
                            "drifted": f.ks > f.ks_critical}
                )  # fmt: skip
                out.append(self.emit(METRICS_DRIFT, ks, key=f.symbol.encode(), origin_ns=now_ns))
                if self.store is not None:
                    self.store.metric("feature_psi", {"symbol": f.symbol, "feature": f.feature}, at, f.psi)
                alert = self.rules.check(
                    now_ns, AlertCode.FEATURE_DRIFT_SIGNIFICANT, f"{f.symbol}/{f.feature}", f.significant,
                    Severity.WARNING,
                    f"{f.symbol} {f.feature}: PSI {f.psi:.3f} >= {PSI_SIGNIFICANT} against the training reference",
                )  # fmt: skip
                if alert:
                    raised.append(alert)
        for model_type, symbol, accuracy, _, statistic, threshold, fired in self._core.accuracy(take=True):
            self.exporter.error_drift_of(model_type, symbol).set(statistic)
            if accuracy is None:
                continue
            self.exporter.model_accuracy_of(model_type, symbol).set(accuracy)
            if self.store is not None:
                self.store.metric("model_accuracy", {"model_type": model_type, "symbol": symbol}, at, accuracy)
            version = "live"
            out.append(self.emit(METRICS_DRIFT, ModelDrift(
                timestamp=at, model_type=ModelType(model_type), model_version=version, symbol=symbol,
                metric="accuracy", value=accuracy, threshold=0.5, drifted=accuracy < 0.5,
            ), key=symbol.encode(), origin_ns=now_ns))  # fmt: skip
            out.append(self.emit(METRICS_DRIFT, ModelDrift(
                timestamp=at, model_type=ModelType(model_type), model_version=version, symbol=symbol,
                metric="page_hinkley", value=statistic, threshold=threshold, drifted=fired,
            ), key=symbol.encode(), origin_ns=now_ns))  # fmt: skip
            if fired:
                raised.append(self.rules.event(
                    AlertCode.MODEL_ERROR_DRIFT, f"{model_type}/{symbol}", Severity.WARNING,
                    f"{model_type} {symbol}: the error rate rose (Page-Hinkley); rolling accuracy {accuracy:.1%}",
                ))  # fmt: skip
        return out

    def _measure_lag(self, now_ns: int) -> list[RaisedAlert]:
        assert self.lag_probe is not None
        try:
            self.lag = self.lag_probe.measure(self.lag_probe.data_topics())
        except BusError as exc:
            log.warning("metrics: consumer lag unavailable: %s", exc)
            return []
        per_group = self.exporter.set_lag(self.lag)
        at = _at(now_ns)
        raised = []
        threshold = self.settings.lag_threshold
        for group in self.settings.lag_groups:
            behind = per_group.get(group, 0)
            if self.store is not None and group in per_group:
                self.store.metric("consumer_lag", {"group": group}, at, behind)
            alert = self.rules.check(
                now_ns, AlertCode.CONSUMER_LAG_OVER_THRESHOLD, group, behind > threshold, Severity.WARNING,
                f"{group}: {behind} messages behind (threshold {threshold})",
            )  # fmt: skip
            if alert:
                raised.append(alert)
        return raised

    def _alert(self, now_ns: int, raised: RaisedAlert) -> Output:
        alert = Alert(timestamp=_at(now_ns), severity=raised.severity, source=self.name, code=raised.code,
                      message=raised.message)  # fmt: skip
        self.exporter.alerts_of(alert.code, alert.severity.value).inc()
        if self.store is not None:
            self.store.alert(alert, {"subject": raised.subject})
        self._notify(alert)
        return self.emit(METRICS_ALERTS, alert, key=raised.code.encode(), origin_ns=now_ns)

    def _notify(self, alert: Alert) -> None:
        if self.notifier is None:
            return
        least = Severity(self.settings.telegram.min_severity)
        if _SEVERITY_RANK[alert.severity] >= _SEVERITY_RANK[least] or alert.code.endswith(RESOLVED_SUFFIX):
            if not self.notifier.notify(f"[{alert.severity.value}] {alert.code}\n{alert.message}"):
                self.exporter.telegram_dropped.inc()

    def _flush(self, now_ns: int) -> None:
        assert self.store is not None
        try:
            for table, n in self.store.flush().items():
                self.exporter.stored_rows_of(table).inc(n)
            self._storage_failing = False
            alert = self.rules.check(now_ns, AlertCode.STORAGE_FAILED, "database", False, Severity.CRITICAL, "")
            if alert:
                with self._lock:
                    self._operator.append(alert)
        except SQLAlchemyError as exc:
            self._storage_failing = True
            # The rows stay buffered for the next flush; the database may only be restarting.
            log.error("metrics: database write failed: %s", type(exc).__name__)
            alert = self.rules.check(now_ns, AlertCode.STORAGE_FAILED, "database", True, Severity.CRITICAL,
                                     f"metrics database write failed: {type(exc).__name__}")  # fmt: skip
            if alert:
                with self._lock:
                    self._operator.append(alert)  # announced on the next tick

    # -- operator commands (Telegram thread) -----------------------------------------------------------
    def _reply(self, name: str, now_ns: int) -> str | None:
        """The answer to /status, /profit, /balance, /positions or /daily as of now (None for
        another command). Called with `_busy` held: the windows are not being written."""
        if name == "/status":
            firing = ", ".join(f"{c}:{s}" for c, s in self.rules.firing) or "none"
            return (f"messages seen: {sum(self.counts.values())}; consumer lag: {sum(self.lag.values())}; "
                    f"alerts firing: {firing}")  # fmt: skip
        if name in ("/profit", "/balance"):
            snaps = [w.snapshot(now_ns) for w in self.performances.values()]
            if name == "/balance":
                balance = snaps[-1].balance
                return f"balance: {balance:.2f}" if balance is not None else "balance: no closed trade yet"
            return "\n".join(
                f"last {snap.window_seconds} s: {snap.trades} trades, P&L {snap.realized_pnl:.2f}, "
                f"win rate {snap.win_rate:.1%}, Sharpe {snap.sharpe:.2f}, max drawdown {snap.max_drawdown:.2%}"
                for snap in snaps
            )
        if name == "/positions":
            return self.account.positions_reply()
        if name == "/daily":
            return self.account.daily_reply(now_ns)
        return None

    def command(self, text: str, chat: str = "") -> str:
        """The reply to a bot command from `chat` (called from the Telegram thread, which obeys
        only the configured chats). /halt, /resume and /flatten become commands on
        control.execution; the execution stage's acknowledgement (OPERATOR_* on metrics.alerts)
        comes back to Telegram as an alert. /flatten asks for a confirmation first."""
        words = text.split()
        name = words[0].split("@")[0].lower() if words else ""
        rest = " ".join(words[1:])
        with self._busy:  # between two batches of the collector's thread, as of its clock
            reply = self._reply(name, self.clock.now_ns())
        if reply is not None:
            return reply
        if name in ("/halt", "/resume"):
            return self._control(ControlAction(name[1:].upper()), chat, rest)
        if name == "/flatten":
            if rest.lower() == "confirm":
                with self._lock:
                    pending = self._flatten_pending.pop(chat, None)
                if pending is None or time.monotonic() > pending[0]:
                    return "no flatten to confirm: send /flatten [reason], then /flatten confirm within 60 s"
                return self._control(ControlAction.FLATTEN, chat, pending[1])
            with self._lock:
                self._flatten_pending[chat] = (time.monotonic() + FLATTEN_CONFIRM_S, rest)
            return (f"flatten closes every open position at market, then halts trading. To go ahead, send "
                    f"/flatten confirm within {FLATTEN_CONFIRM_S:.0f} s.")  # fmt: skip
        return "commands: " + " ".join(COMMANDS)

    def _control(self, action: ControlAction, chat: str, reason: str) -> str:
        account = self.settings.telegram.control_account
        command = make_command(action, account=account, issued_by=f"telegram:{chat}", reason=reason or "from Telegram")
        with self._lock:
            self._controls.append(command)
        return (f"{action.value.lower()} for account {account} sent to {CONTROL_EXECUTION} (command "
                f"{command.command_id}); the execution stage confirms it here once applied")  # fmt: skip

    def close(self) -> None:
        with self._busy:
            self._close()

    def _close(self) -> None:
        if self._unexported:
            self._export_counts()
        if self.store is not None:
            try:
                self.store.flush()
            finally:
                self.store.close()
        if self.lag_probe is not None:
            self.lag_probe.close()
        if self.notifier is not None:
            self.notifier.close()

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus) -> MetricsCollector:
        """The collector as configured (`build_collector`, which its tests call with the metrics
        section alone): storage, Prometheus endpoint and Telegram as set."""
        return build_collector(settings.metrics, bus)


class _CoreLatency:
    """The latency windows the core keeps, as `LatencyTracker` hands them out."""

    def __init__(self, core: MetricsCore) -> None:
        self._core = core

    @property
    def implausible(self) -> int:
        """Latencies counted, not recorded (negative or implausibly large)."""
        return self._core.implausible

    def take_window(self, now_ns: int) -> tuple[dict[tuple[str, str], LatencySummary], dict[str, LatencySummary]]:
        """Summaries of the window that ends now; the next window starts empty."""
        outputs, stages = self._core.take_window(now_ns)
        return (
            {(stage, topic): LatencySummary(n, p50, p95, p99, top) for stage, topic, n, p50, p95, p99, top in outputs},
            {stage: LatencySummary(n, p50, p95, p99, top) for stage, _, n, p50, p95, p99, top in stages},
        )


def load_reference(path: Path) -> DriftReference:
    """The drift section of a model manifest (JSON): {"model_type", "model_version", "features":
    {name: {"edges": [...], "proportions": [...]}}}."""
    return DriftReference.model_validate_json(path.read_text())


def build_collector(settings: MetricsSettings, bus: Bus, *, serve: bool = True) -> MetricsCollector:
    """The collector a config describes: storage, Prometheus endpoint and Telegram as set."""
    reference = load_reference(settings.drift_reference) if settings.drift_reference else None
    store = MetricsStore(settings.database_url) if settings.database_url else None
    exporter = MetricsExporter()
    if serve and settings.prometheus_port:
        exporter.serve(settings.prometheus_port, settings.prometheus_addr)
    collector = MetricsCollector(settings, reference=reference, bus=bus, store=store, exporter=exporter)
    tg = settings.telegram
    if tg.enabled:
        token = tg.token()
        if not token:
            raise ValueError("metrics.telegram: enabled but no bot token (KSTRADE_METRICS__TELEGRAM__BOT_TOKEN)")
        collector.notifier = TelegramNotifier(
            token=token, chat_id=tg.chat_id, api_url=tg.api_url, per_chat_per_second=tg.per_chat_per_second,
            overall_per_second=tg.overall_per_second, queue_size=tg.queue_size,
            commands=collector.command if tg.commands else None, command_chats=tg.command_chats,
        )  # fmt: skip
    return collector


__all__: Sequence[str] = ["INPUTS", "MetricsCollector", "build_collector", "load_reference"]
