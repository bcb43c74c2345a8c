"""The whole pipeline as six service processes over Kafka, fed a steady stream of 1m candles, and
every topic counted by id at the end: the harness of the restart and crash tests.

The input is SYNTHETIC (`kstrade.ingest.synthetic.generate`), relabelled to test-unique symbols
(with a models directory whose scalers carry those names), so every run has its own candle,
feature and LSTM topics on a shared broker; shared topics (predictions.transformer, signals.*,
trades.*) are filtered by symbol.

The features warm-up (about 34 h of minutes) is done in process, before the services start: a
`FeatureStage` eats the first 44 h and checkpoints into the `features.state_dir` the service is
given, so only the tail is streamed and every streamed candle yields a vector.

What every topic should hold is computed independently of the services: the same tail through
the same stage classes in one process (`Pipeline` on the memory bus, fed one minute at a time
and drained after each, as live), from a copy of the same features checkpoint. That is the
deterministic backtest path, so it says exactly which candles, vectors, predictions and signals
an uninterrupted run produces, with their contents. The settings make it a pure function of the
input: a long signal TTL (nothing is stale whether the clock is the event's or the wall's),
one position per symbol off (which depends on when fills arrive), the longest join deadline (a
restarting inference worker must not make signals decide a candle with one model), and low
tier bands and a wide take profit so that orders flow (the shipped models have no edge:
README, "tier bands"; at a confidence near 0.4 Kelly sizes 1.5/2.5 ATR stops to zero).
Execution depends on the wall clock and the paper account, so its outputs are checked by ids
against the final signals instead (one decision per signal: an order or a dropped-signal alert).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl

from kstrade.bus import Bus, Consumer, Record
from kstrade.bus.topics import (
    EXECUTIONS,
    METRICS_ALERTS,
    ORDERS_CONFIRMED,
    ORDERS_PENDING,
    PNL,
    PREDICTIONS_TRANSFORMER,
    candles,
    features_aggregated,
    predictions_lstm,
    signals,
)
from kstrade.config import Settings, load
from kstrade.execution.stage import client_order_id
from kstrade.features.stage import FeatureStage
from kstrade.inference import inference_stages
from kstrade.ingest.synthetic import generate
from kstrade.schemas import (
    Alert,
    Candle,
    Codec,
    CodecError,
    Execution,
    FeatureVector,
    Message,
    Order,
    PnlEvent,
    Prediction,
    Signal,
)
from kstrade.signals.aggregator import SignalAggregator
from kstrade.stage import Pipeline

from .helpers import memory_bus

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

#: Every stage, in pipeline order.
SERVICES = ("features", "inference.lstm", "inference.transformer", "signals", "execution", "metrics")
#: The first 44 h of the two generated days warm the features up in process; the rest streams.
WARM_MINUTES = 44 * 60

SIGNAL_TOPICS = tuple(signals(s) for s in ("raw", "calibrated", "filtered", "final"))
TRADE_TOPICS = (ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS, PNL)


def overrides(work: Path, models: Path) -> dict[str, Any]:
    """The settings of a run (see the module docstring for why each is set)."""
    return {
        "features": {"state_dir": str(work / "features")},
        "inference": {"models_dir": str(models), "state_dir": str(work / "inference")},
        "signals": {
            "tiers": {"a": 0.5, "b": 0.45, "c": 0.4},
            "take_profit_atr": 4.0,  # a payoff for which Kelly sizes a 0.4 confidence above zero
            "alignment_floor": -1.0,
            "ttl_seconds": 30 * 86_400,
            "join_deadline_ms": 60_000,
            "one_position_per_symbol": False,
        },
        "execution": {
            "journal_path": str(work / "orders.sqlite3"),
            "paper_state_path": str(work / "paper-account.json"),
            "guardrails": {"max_orders_per_minute": 10_000, "max_open_positions": 10_000},
            "prometheus_port": 0,  # two test workers may run a pipeline each: no fixed port
        },
        "metrics": {"prometheus_port": 0, "database_url": f"sqlite:///{work / 'metrics.sqlite3'}"},
    }


def as_env(nested: dict[str, Any], prefix: str = "KSTRADE_") -> dict[str, str]:
    """Nested settings as KSTRADE_SECTION__KEY variables (what the services read)."""
    env: dict[str, str] = {}
    for key, value in nested.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict):
            env.update(as_env(value, name + "__"))
        else:
            env[name] = json.dumps(value) if isinstance(value, bool | list) else str(value)
    return env


def aliased_models(directory: Path, aliases: dict[str, str]) -> Path:
    """A copy of the shipped models whose scalers (and LSTM folders) carry the test's symbol
    names; the model files themselves are untouched."""
    for alias, source in aliases.items():
        shutil.copytree(MODELS / "lstm" / source, directory / "lstm" / alias)
        rename_scalers(directory / "lstm" / alias, {alias: source})
    shutil.copytree(MODELS / "transformer", directory / "transformer")
    rename_scalers(directory / "transformer", aliases)
    return directory


def rename_scalers(directory: Path, aliases: dict[str, str]) -> None:
    """Point a model's manifest at alias symbols (alias -> the shipped symbol whose scaler it takes)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    scalers = manifest["scaler"]["per_symbol"]
    manifest["scaler"]["per_symbol"] = {alias: scalers[source] for alias, source in aliases.items()}
    manifest["symbols"] = list(aliases)
    path.write_text(json.dumps(manifest))


@dataclass
class Stream:
    """SYNTHETIC 1m candles per symbol: a warm-up done in process, then a tail to stream, one
    list per minute (every symbol's candle of that minute). The last minute closes now."""

    warm: list[Candle]
    tail: list[list[Candle]]

    @classmethod
    def make(cls, aliases: dict[str, str], seed: int = 21, source: str = "synthetic") -> Stream:
        """`aliases`: symbol -> the generator's symbol it follows. `source`: the candles' `source`
        field (what `ingest replay` writes is "replay"). Each states that it is one minute
        (`minutes` 1, as ingest writes it), so the reference run's candles are ingest's."""
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        start = end - timedelta(days=2)
        warm: list[Candle] = []
        minutes: dict[datetime, list[Candle]] = defaultdict(list)
        for alias, like in aliases.items():
            for i, row in enumerate(generate(like, start, 2, seed).iter_rows(named=True)):
                c = Candle(
                    timestamp=row["timestamp"], symbol=alias, interval="1m", open=row["open"], high=row["high"],
                    low=row["low"], close=row["close"], volume=row["volume"], source=source, minutes=1,
                )  # fmt: skip
                if i < WARM_MINUTES:
                    warm.append(c)
                else:
                    minutes[c.timestamp].append(c)
        return cls(warm, [minutes[t] for t in sorted(minutes)])

    def shortened(self, minutes: int) -> Stream:
        return Stream(self.warm, self.tail[:minutes])

    def write_tail(self, path: Path) -> Path:
        """The tail as a candle file for `python -m kstrade ingest replay` (Parquet)."""
        rows = [
            (c.timestamp, c.symbol, c.open, c.high, c.low, c.close, c.volume) for minute in self.tail for c in minute
        ]
        names = ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
        pl.DataFrame(rows, schema=names, orient="row").write_parquet(path)
        return path


def send_candles(producer: Any, batch: Iterable[Candle]) -> None:
    codec = Codec(Candle)
    for c in batch:
        close_ns = int((c.timestamp + timedelta(minutes=1)).timestamp() * 1e9)
        producer.send(
            candles(c.symbol, "1m"), codec.encode(c), key=c.symbol.encode(), headers=codec.headers(close_ns, "t")
        )
    producer.flush()


def warm_features(stream: Stream, settings: Settings) -> None:
    """The features warm-up in process, checkpointed into settings.features.state_dir."""
    bus = memory_bus(settings)
    send_candles(bus.producer(), stream.warm)
    stage = FeatureStage(settings.symbols, settings.features.state_dir)
    Pipeline(bus, [stage]).drain()  # the runner checkpoints before each commit
    assert stage.stats.emitted > 0, "the warm-up is too short for the 1h features"


def expected(stream: Stream, settings: Settings, work: Path) -> dict[str, dict[str, str]]:
    """What an uninterrupted run writes, per topic: id -> content, from the same stages in one
    process on the memory bus, fed one minute at a time (the backtest path)."""
    shutil.copytree(Path(str(settings.features.state_dir)), work / "features")
    reference = settings.model_copy(
        update={
            "features": settings.features.model_copy(update={"state_dir": work / "features"}),
            "inference": settings.inference.model_copy(update={"state_dir": None}),
        }
    )
    bus = memory_bus(reference)
    stages = [
        FeatureStage(reference.symbols, reference.features.state_dir),
        *inference_stages(reference),
        SignalAggregator.from_settings(reference),
    ]
    pipeline = Pipeline(bus, stages)
    producer = bus.producer()
    for minute in stream.tail:
        send_candles(producer, minute)
        pipeline.drain()
    for stage in stages:
        stage.close()
    reader = TopicReader(bus, data_topics(reference.symbols), reference.symbols, "reference")
    reader.read_to_end()
    reader.close()
    out: dict[str, dict[str, str]] = {}
    for topic, entries in reader.by_topic.items():
        ids = dict(entries)
        assert len(ids) == len(entries), f"the reference run repeated an id on {topic}"
        out[topic] = ids
    return out


@dataclass
class Prepared:
    """What a services test starts from (`prepare`): its symbols, the run's settings as `overrides`
    gives them (`nested`), the stream, the features warmed into the run's state directory, and
    what an uninterrupted run writes (`want`, from `expected`)."""

    symbols: list[str]
    nested: dict[str, Any]
    stream: Stream
    want: dict[str, dict[str, str]]
    logs: Path

    def services(self, bus: dict[str, Any], properties: dict[str, str] | None = None) -> tuple[Services, Bus]:
        """The services on the cluster `bus` describes (bus settings: transport, bootstrap, ...), with
        librdkafka `properties`, logging into `logs`; and a client of that cluster."""
        bootstrap = str(bus["bootstrap"])
        env = env_for(bus, self.symbols, self.nested, properties)
        return Services(bootstrap, env, self.logs), Bus.kafka(bootstrap)


def prepare(aliases: dict[str, str], work: Path, minutes: int, source: str = "synthetic") -> Prepared:
    """The set-up every services test shares, in `work`: models renamed for the `aliases`' symbols,
    a stream of `minutes` (`Stream.make`, `shortened`), the features warmed from its head, the
    reference run of its tail, and a directory for the services' logs."""
    symbols = list(aliases)
    nested = overrides(work / "run", aliased_models(work / "models", aliases))
    stream = Stream.make(aliases, source=source).shortened(minutes)
    settings = settings_for(symbols, nested)
    warm_features(stream, settings)
    want = expected(stream, settings, work / "reference")
    logs = work / "logs"
    logs.mkdir()
    return Prepared(symbols, nested, stream, want, logs)


def data_topics(symbols: list[str]) -> list[str]:
    """Topics whose every record the reference predicts."""
    per_symbol = [t for s in symbols for t in (candles(s, "1m"), features_aggregated(s), predictions_lstm(s))]
    return [*per_symbol, PREDICTIONS_TRANSFORMER, *SIGNAL_TOPICS]


#: Each topic's message type.
def model_of(topic: str) -> type[Message]:
    if topic.startswith("market.candles."):
        return Candle
    if topic.startswith("features.aggregated."):
        return FeatureVector
    if topic.startswith("predictions."):
        return Prediction
    if topic.startswith("signals."):
        return Signal
    trades: dict[str, type[Message]] = {
        ORDERS_PENDING: Order,
        ORDERS_CONFIRMED: Order,
        EXECUTIONS: Execution,
        PNL: PnlEvent,
    }
    return trades.get(topic, Alert)


def identify(topic: str, message: Message) -> tuple[str, str]:
    """A record's id on its topic, and its content (what a re-emission must repeat exactly).
    A prediction's inference_time_ms is a measurement of that call, not content: left out."""
    if isinstance(message, Candle | FeatureVector):
        return f"{message.symbol}|{message.timestamp.isoformat()}", message.model_dump_json()
    if isinstance(message, Prediction):
        content = message.model_copy(update={"inference_time_ms": 0.0}).model_dump_json()
        return f"{message.symbol}|{message.timestamp.isoformat()}|{message.model_type.value}", content
    if isinstance(message, Signal):
        return str(message.signal_id), message.model_dump_json()
    if isinstance(message, Execution):  # by order: a second fill of one order is a second order
        return message.order_id, message.model_dump_json()
    if isinstance(message, PnlEvent):
        return f"{message.signal_id}|{message.order_id}", message.model_dump_json()
    if isinstance(message, Order):
        return message.order_id, message.model_dump_json()
    assert isinstance(message, Alert)
    return f"{message.code}|{message.message}", message.model_dump_json()


def dropped_signals(reader: TopicReader) -> set[str]:
    """Final signals execution decided not to trade, from its alerts ("signal ID SYMBOL: no order")."""
    found = (re.search(r"\|signal ([0-9a-f-]{36}) ", alert) for alert, _ in reader.by_topic[METRICS_ALERTS])
    return {m.group(1) for m in found if m}


def undecided_finals(reader: TopicReader, finals: Iterable[str]) -> list[str]:
    """Final signals with neither an order (its client id derives from the signal id) nor an
    alert that says why there is none."""
    ordered = set(reader.counts(ORDERS_PENDING))
    dropped = dropped_signals(reader)
    return [s for s in finals if client_order_id(UUID(s)) not in ordered and s not in dropped]


def symbol_of(message: Message) -> str | None:
    symbol = getattr(message, "symbol", None)
    return symbol if isinstance(symbol, str) else None


class TopicReader:
    """Everything on `topics` that belongs to `symbols` (alerts: that mention one), read from
    the start and kept as (id, content) per topic, in the order read."""

    def __init__(self, bus: Bus, topics: list[str], symbols: list[str], group: str) -> None:
        self.bus = bus
        self.topics = topics
        self.symbols = set(symbols)
        self.consumer: Consumer = bus.consumer(f"count-{group}", {"auto.offset.reset": "earliest"})
        self.consumer.subscribe(topics)
        self.by_topic: dict[str, list[tuple[str, str]]] = {t: [] for t in topics}
        self.read = 0
        #: Per emitting stage (the `stage` header), the create times (ms) of what it wrote.
        self.emitted_ms: dict[str, list[int]] = defaultdict(list)
        self._pattern = re.compile("|".join(re.escape(s) for s in sorted(self.symbols)))

    def _keep(self, record: Record) -> tuple[str, str] | None:
        try:
            message = Codec(model_of(record.topic)).decode_record(record)
        except CodecError:
            return None  # another test's poison on a shared topic (ours write none)
        if isinstance(message, Alert):
            if not self._pattern.search(message.message):
                return None
        elif symbol_of(message) not in self.symbols:
            return None
        return identify(record.topic, message)

    def poll(self, seconds: float = 0.5) -> int:
        """What arrived within about `seconds`; returns the records read (all symbols)."""
        got = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            records = self.consumer.poll(max_records=5000, timeout=0.1)
            for record in records:
                kept = self._keep(record)
                if kept is not None:
                    self.by_topic[record.topic].append(kept)
                    stage = (record.header("stage") or b"").decode()
                    self.emitted_ms[stage].append(record.timestamp_ms)
            got += len(records)
        self.read += got
        return got

    def read_to_end(self, timeout: float = 60.0) -> None:
        """Until every record the topics hold now was read (end offsets, all partitions)."""
        admin = self.bus.admin()
        existing = set(admin.list_topics(10.0))
        total = sum(sum(admin.end_offsets(t, 10.0)) for t in self.topics if t in existing)
        deadline = time.monotonic() + timeout
        while self.read < total and time.monotonic() < deadline:
            self.poll(0.3)
        assert self.read >= total, f"read {self.read} of {total} records within {timeout}s"

    def first_after(self, stage: str, after_ms: int) -> int | None:
        """When `stage` first wrote something after `after_ms` (ms), if it did."""
        later = [t for t in self.emitted_ms[stage] if t > after_ms]
        return min(later) if later else None

    def counts(self, topic: str) -> Counter[str]:
        return Counter(i for i, _ in self.by_topic[topic])

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Services:
    """The six stage processes, each `python -m kstrade service NAME` with its stderr in a log."""

    bootstrap: str
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)

    def start(self, name: str, *, replica: int = 0) -> None:
        """Start stage `name`; `replica` > 0 starts one more member of its group (called
        `name#replica` here), with a state directory of its own."""
        key = name if replica == 0 else f"{name}#{replica}"
        env = self.env
        if replica:
            env = {k: (f"{v}-{replica}" if k.endswith("__STATE_DIR") else v) for k, v in env.items()}
        self._spawn(key, ["service", name, "--bus", "kafka"], env)

    def start_ingest(self, path: Path, speed: str) -> None:
        """`python -m kstrade ingest replay PATH --speed SPEED` as process "ingest"."""
        self._spawn("ingest", ["ingest", "replay", str(path), "--speed", speed], self.env)

    def _spawn(self, key: str, command: list[str], env: dict[str, str]) -> None:
        self.starts[key] += 1
        log = open(self._log(key), "wb")  # the process keeps its own copy of the descriptor
        run = [sys.executable, "-m", "kstrade", *command, "--bootstrap", self.bootstrap]
        self.procs[key] = subprocess.Popen(run, env=env, stderr=log, stdout=log)
        log.close()

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.{self.starts[name]}.log"

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = 90.0) -> None:
        """Until each process said it is consuming (its topics exist and it joins its group)."""
        deadline = time.monotonic() + timeout
        for name in list(self.procs) if names is None else names:
            while "consuming as" not in self._log(name).read_text():
                assert self.procs[name].poll() is None, f"{name} exited:\n{self._log(name).read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"{name} not consuming after {timeout}s"
                time.sleep(0.1)

    def stop(self, name: str, timeout: float = 60.0) -> None:
        """SIGTERM: the batch in hand is finished and committed, then it exits 0."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=timeout)
        assert code == 0, f"{name} exited {code}:\n{self._log(name).read_text()[-3000:]}"
        assert "stopped cleanly" in self._log(name).read_text()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL

    def close(self) -> None:
        """Whatever still runs: SIGTERM, then SIGKILL after a grace period."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def errors(self) -> list[str]:
        """Tracebacks any process logged (a stage bug the runner dead-lettered or logged)."""
        found = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text()
            if "Traceback" in text:
                found.append(f"{path.name}:\n{text[-2000:]}")
        return found


def env_for(
    bus: dict[str, Any], symbols: list[str], nested: dict[str, Any], properties: dict[str, str] | None = None
) -> dict[str, str]:
    """The services' environment: the run's settings, the bus (and librdkafka `properties`,
    given as one JSON value), and nothing KSTRADE_ from the caller's environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KSTRADE_")}
    extra = {"KSTRADE_BUS__PROPERTIES": json.dumps(properties)} if properties else {}
    return {
        **base,
        **as_env({"symbols": symbols, "bus": bus, **nested}),
        **extra,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # six processes on a small machine
    }


def settings_for(symbols: list[str], nested: dict[str, Any]) -> Settings:
    return load(symbols=symbols, **nested)


def feed(bus: Bus, stream: Stream, per_second: float, on_minute: Callable[[int], None]) -> float:
    """The tail at `per_second` minutes a second; `on_minute(i)` after minute i was sent.
    Returns the seconds it took."""
    producer = bus.producer()
    started = time.monotonic()
    for i, minute in enumerate(stream.tail):
        send_candles(producer, minute)
        on_minute(i)
        lag = started + (i + 1) / per_second - time.monotonic()
        if lag > 0:
            time.sleep(lag)
    return time.monotonic() - started


def wait_until(done: Callable[[], bool], timeout: float, step: Callable[[], object]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step()
        if done():
            return True
    return done()


def missing(reader: TopicReader, want: dict[str, dict[str, str]]) -> dict[str, int]:
    """Per topic, how many expected ids have not arrived (topics with none missing left out)."""
    out = {}
    for topic, ids in want.items():
        have = reader.counts(topic)
        gap = sum(1 for i in ids if i not in have)
        if gap:
            out[topic] = gap
    return out


@dataclass
class Verdict:
    """Per topic: records read, distinct ids, repeats, and what is wrong."""

    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    repeats: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Final signals execution did not trade, by its reason code.
    dropped: Counter[str] = field(default_factory=Counter)

    def table(self) -> str:
        rows = [f"  {t}: {n} records, {d} ids, {self.repeats.get(t, 0)} repeats" for t, (n, d) in self.counts.items()]
        rows.append(f"  final signals not traded, by reason: {dict(self.dropped)}")
        return "\n".join(rows)


def order_breaks(reader: TopicReader, topics: Iterable[str]) -> list[str]:
    """Where a symbol's candle times go backwards on a data topic, in the order read (a
    symbol's records share a partition, so that is their log order): for a failure's report."""
    out = []
    for topic in topics:
        last: dict[str, str] = {}
        for ident, _ in reader.by_topic.get(topic, []):
            if "|" not in ident:
                continue  # a signal, an order: not keyed by candle time
            symbol, when = ident.split("|")[:2]
            if symbol in last and when < last[symbol]:
                out.append(f"{topic}: {symbol} {when[11:16]} after {last[symbol][11:16]}")
            last[symbol] = max(when, last.get(symbol, when))
    return out


def _when(content: str) -> str:
    """The symbol and candle time of a record's content (JSON), to say where a problem lies."""
    data = json.loads(content)
    return f"{data.get('symbol')} {str(data.get('timestamp'))[11:16]}"


def _span(items: list[str]) -> str:
    return f"from {items[0]} to {items[-1]}" if items else ""


def judge(reader: TopicReader, want: dict[str, dict[str, str]]) -> Verdict:
    """Compare what the services wrote with the reference, and check execution by ids."""
    v = Verdict()
    for topic, ids in want.items():
        entries = reader.by_topic[topic]
        have = reader.counts(topic)
        v.counts[topic] = (len(entries), len(have))
        v.repeats[topic] = sum(n - 1 for n in have.values())
        lost = sorted(_when(ids[i]) for i in ids if i not in have)
        extra = sorted(_when(c) for i, c in entries if i not in ids)
        differ = sorted({str(i) for i, content in entries if i in ids and content != ids[i]})
        if lost:
            v.problems.append(f"{topic}: {len(lost)} of {len(ids)} ids missing, {_span(lost)}")
        if extra:
            v.problems.append(f"{topic}: {len(extra)} records of ids the reference does not have, {_span(extra)}")
        if differ:
            v.problems.append(f"{topic}: {len(differ)} ids with other content than the reference, e.g. {differ[:2]}")
    finals = set(want[signals("final")])
    ordered = set(reader.counts(ORDERS_PENDING))
    for topic in TRADE_TOPICS:
        entries = reader.by_topic[topic]
        have = Counter(i for i, _ in entries)
        v.counts[topic] = (len(entries), len(have))
        v.repeats[topic] = sum(n - 1 for n in have.values())
        contents: dict[str, set[str]] = defaultdict(set)
        for i, content in entries:
            contents[i].add(content)
        if any(len(c) > 1 for c in contents.values()):
            v.problems.append(f"{topic}: an id re-emitted with other content")
    undecided = undecided_finals(reader, finals)
    both = [s for s in finals if client_order_id(UUID(s)) in ordered and s in dropped_signals(reader)]
    if undecided:
        v.problems.append(f"{len(undecided)} of {len(finals)} final signals neither ordered nor dropped")
    if both:
        v.problems.append(f"{len(both)} final signals both ordered and dropped")
    stray = [o for o in ordered if o not in {client_order_id(UUID(s)) for s in finals}]
    if stray:
        v.problems.append(f"{len(stray)} orders for no final signal")
    v.counts["orders for final signals"] = (len(ordered), len(finals))
    v.dropped = Counter(alert.split("|")[0] for alert, _ in reader.by_topic[METRICS_ALERTS] if "|signal " in alert)
    return v
