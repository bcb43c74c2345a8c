"""The front door: the whole pipeline in one process (`python -m kstrade run` and `backtest`).

Candles are replayed through exactly the stages that run live (features, inference, signals,
execution, metrics) on the bus the config names: the in-process memory bus by default, or
Kafka. On the memory bus with the event clock the run is deterministic: the same data and
models give byte-identical signals, orders and executions. The run directory is written by
`kstrade.report`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from kstrade.bus import Bus
from kstrade.bus.topics import EXECUTIONS, ORDERS_PENDING, signals
from kstrade.config import Settings
from kstrade.features.engine import BASE_INTERVAL_MS, FeatureEngine
from kstrade.features.stage import FeatureStage
from kstrade.inference.stage import InferenceStage
from kstrade.ingest import synthetic
from kstrade.report import write_run_directory
from kstrade.report.recorder import RunRecorder
from kstrade.services import ensure_topics
from kstrade.stage import Pipeline, Stage

# The stages of a full run come from the registry: the built-in ones in PIPELINE_ORDER, the user's
# `[pipeline] extra_stages` before metrics; RUN_AHEAD those that a replay runs ahead (re-exported).
from kstrade.stages import PIPELINE_ORDER as PIPELINE_ORDER
from kstrade.stages import RUN_AHEAD, pipeline_stages

if TYPE_CHECKING:
    from kstrade.dashboard.web import DashboardServer


#: History replayed into the indicators and the models' windows before a run's period (`warm_up`):
#: the 1h timeframe's indicators need about 34 hours, the models 30 vectors more.
WARMUP = timedelta(days=2)
#: The replayed candles' interval: a period ends one bar after its last candle opened.
BAR = timedelta(minutes=1)
#: `WARMUP` on a 1h base: the 1d timeframe's indicators need about 34 days (and FX markets close
#: at weekends), the models' windows 30 hours more.
WARMUPS = {"1m": WARMUP, "1h": timedelta(days=60)}


@dataclass(frozen=True)
class BundledData:
    """A data set that ships with kstrade, by the name `--data` takes (`backtest --data eurusd`),
    and the settings a run on it needs (they win over the config file: the data decides its
    symbols and interval)."""

    label: str
    settings: dict[str, Any]
    #: Where the models' held-out test period starts: a backtest without --from starts there, so
    #: its trades are out of sample. None: the whole file.
    out_of_sample: bool = True


EURUSD_LOT = {"value_per_unit": 100_000.0, "volume_step": 0.01, "volume_min": 0.01, "volume_max": 50.0}
BUNDLED_DATA = {
    "eurusd": BundledData(
        label="REAL market data: EURUSD 1h ask candles of 2017 (gym-anytrading FOREX_EURUSD_1H_ASK, MIT; "
        "kstrade/data/eurusd_1h_ask.csv)",
        settings={
            "symbols": ["EURUSD"],
            "base_interval": "1h",
            # A standard lot: 100,000 EUR, so a move of 1.0 in the price is worth 100,000 USD.
            "execution": {"symbols": {"EURUSD": EURUSD_LOT}},
            "metrics": {"trading_days_per_year": 260.0},  # FX: closed at weekends
        },
    )
}


def bundled(data: Path | pl.DataFrame | str | None) -> BundledData | None:
    """The bundled data set `data` names (a name like 'eurusd' that is not a file here), or None."""
    if isinstance(data, str | Path) and str(data) in BUNDLED_DATA and not Path(data).exists():
        return BUNDLED_DATA[str(data)]
    return None


def bundled_candles(name: str) -> pl.DataFrame:
    from kstrade.ingest.replay import eurusd_1h_candles

    if name != "eurusd":
        raise ValueError(f"no bundled data set {name!r}: choose from {', '.join(BUNDLED_DATA)}")
    return eurusd_1h_candles()


def test_period_start(settings: Settings) -> datetime | None:
    """The latest start of the held-out test slice among the configured models trained on
    market data (their manifests' `data.ranges`): before it, some model has seen the data in
    training. None for the SYNTHETIC training's models (`train` without --data: they never saw
    a file's candles); models trained on candles (`train --data`) say their data's `kind`."""
    from kstrade.inference.manifest import resolved_models_dir, shipped_manifests

    starts = []
    for manifest in shipped_manifests(resolved_models_dir(settings)):
        if manifest.data.get("synthetic", True) and "kind" not in manifest.data:
            continue
        for ranges in manifest.data.get("ranges", {}).values():
            starts.append(datetime.strptime(ranges["test"].split(" .. ")[0], "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC))
    return max(starts) if starts else None


#: What a replay reads of a SYNTHETIC frame (not its state or true probabilities).
CANDLE_COLUMNS = ("timestamp", "symbol", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class RunOptions:
    out: Path
    #: A CSV/Parquet candle file, or a polars DataFrame of candles; None: SYNTHETIC minutes for the symbols.
    data: Path | pl.DataFrame | None = None
    days: int = 7
    seed: int = 7
    #: The SYNTHETIC market (without `data`): `kstrade.ingest.synthetic.MARKETS`.
    market: str = synthetic.DEFAULT_MARKET
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    since: datetime | None = None
    until: datetime | None = None
    live_view: bool = True
    #: False: every stage handles one record at a time and goes instant by instant (the path
    #: the batched replay must agree with byte for byte; slow).
    batched: bool = True
    #: Instants the stages in RUN_AHEAD get at once.
    chunk: int = 1024
    #: Serve the dashboard (`kstrade.dashboard`, the `dashboard` extra) on the run's bus while it
    #: replays, on this port of 127.0.0.1 (0: any free one); None: no dashboard.
    dashboard_port: int | None = None
    #: Called with the dashboard's address once the run directory is written, before the
    #: dashboard stops (the CLI waits there for Ctrl-C).
    dashboard_hold: Callable[[str], None] | None = None


@dataclass(frozen=True)
class Candles:
    """What a run replays: `history` before the period (into the indicators only), the
    `period`, a `label` saying where they came from, and the `truth` (symbol, open_time_ms,
    p_down, p_up) where the SYNTHETIC generator knows the true label probabilities."""

    history: pl.DataFrame
    period: pl.DataFrame
    label: str
    truth: pl.DataFrame | None = None


def load_candles(settings: Settings, options: RunOptions) -> Candles:
    """The 1m candles of the history before the period (`WARMUP` of it, where there is any: the
    SYNTHETIC market is generated from `WARMUP` before its start; a file gives what it holds
    before `since`) and of the period to replay."""
    from kstrade.data.store import read_candles  # a candle file, or a store directory (`data download`)
    from kstrade.ingest.replay import normalise

    since = options.since
    truth: pl.DataFrame | None = None
    shipped = bundled(options.data)
    warmup = WARMUPS[settings.base_interval]
    if shipped is not None:
        frame = bundled_candles(str(options.data))
        label = shipped.label
        if since is None and shipped.out_of_sample:
            since = test_period_start(settings)
    elif isinstance(options.data, pl.DataFrame):
        frame = normalise(options.data, what="the DataFrame")
        label = f"a polars DataFrame of {frame.height:,} candles"
    elif options.data is not None:
        frame = read_candles(options.data)
        label = str(options.data)
        if since is None:  # models trained on earlier candles of this data: replay only what they never saw
            since = test_period_start(settings)
    else:
        if settings.base_interval != "1m":
            raise ValueError(
                f"the SYNTHETIC market makes 1m candles, the pipeline runs on {settings.base_interval} "
                "(base_interval): pass --data with candles of that interval (e.g. --data eurusd)"
            )
        unknown = [s for s in settings.symbols if s not in synthetic.MODELS]
        if unknown:
            raise ValueError(
                f"no synthetic model for {', '.join(unknown)}: pass --data FILE or use symbols "
                f"{', '.join(synthetic.MODELS)}"
            )
        first = options.start - warmup
        days = options.days + warmup.days
        frames = [synthetic.generate(s, first, days, options.seed, options.market) for s in settings.symbols]
        frame = pl.concat(frames).sort(["timestamp", "symbol"])
        if {"p_down", "p_up"} <= set(frame.columns):  # the planted-edge market knows the truth
            truth = frame.select("symbol", pl.col("timestamp").dt.epoch("ms").alias("open_time_ms"), "p_down", "p_up")
        frame = frame.select(CANDLE_COLUMNS)
        label = (f"SYNTHETIC {options.market} market {options.days}d seed {options.seed} "
                 f"({synthetic.generator(options.market)})")  # fmt: skip
        since = max(since or options.start, options.start)
    if "timestamp" in frame.columns and "open_time_ms" not in frame.columns:
        frame = frame.with_columns(pl.col("timestamp").dt.epoch("ms").alias("open_time_ms"))
    if options.data is not None:
        _check_interval(frame, settings.base_interval, label)
    history = frame.clear()
    if since is not None:
        since_ms = int(since.timestamp() * 1000)
        first_ms = int((since - warmup).timestamp() * 1000)
        history = frame.filter((pl.col("open_time_ms") >= first_ms) & (pl.col("open_time_ms") < since_ms))
        frame = frame.filter(pl.col("open_time_ms") >= since_ms)
    if options.until is not None:
        frame = frame.filter(pl.col("open_time_ms") < int(options.until.timestamp() * 1000))
    if frame.is_empty():
        raise ValueError("no candles to replay in the chosen range")
    return Candles(history, frame, label, truth)


def _check_interval(frame: pl.DataFrame, base_interval: str, label: str) -> None:
    """Refuse candles of another interval than the pipeline's base (a 1h file replayed as 1m)."""
    from kstrade.ingest.replay import interval_of

    interval = interval_of(frame.select("open_time_ms", "symbol", "open", "high", "low", "close", "volume"))
    if interval != base_interval:
        raise ValueError(
            f"{label} holds {interval} candles, the pipeline runs on {base_interval} candles: set base_interval = "
            f'"{interval}" in the config (KSTRADE_BASE_INTERVAL={interval})'
            + (", with models trained on them" if interval in BASE_INTERVAL_MS else "")
            + f", or use {base_interval} data"
        )


def warm_up(stages: Sequence[Stage], history: pl.DataFrame) -> int:
    """Replay `history` into the features stage's engines and the inference stages' windows
    (nothing is emitted, nothing is decided or traded), so the period's first minute is decided
    like any other. Returns the candles replayed."""
    features = next((s for s in stages if isinstance(s, FeatureStage)), None)
    if features is None or history.is_empty():
        return 0
    models = [s for s in stages if isinstance(s, InferenceStage)]
    for symbol in sorted(history["symbol"].unique().to_list()):
        if symbol not in features.engines:
            continue
        rows = history.filter(pl.col("symbol") == symbol).sort("open_time_ms")
        prices = [rows[c].cast(pl.Float64).to_numpy() for c in ("open", "high", "low", "close", "volume")]
        times, vectors = features.warm_up(symbol, rows["open_time_ms"].to_numpy(), prices)
        for model in models:
            model.warm_up(symbol, times, vectors, features.engines[symbol].names, FeatureEngine.version)
    return history.height


class _Progress:
    """A live terminal view while the replay runs (rich), or nothing when not on a terminal."""

    def __init__(self, bus: Bus, pipeline: Pipeline, total: int, enabled: bool) -> None:
        self.bus, self.pipeline, self.total = bus, pipeline, total
        self.enabled = enabled and sys.stdout.isatty()
        self.started = time.perf_counter()
        self.last = 0.0
        self._live: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.live import Live

            self._live = Live(self._render(0), refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def __call__(self, batches: int) -> None:
        now = time.perf_counter()
        if self._live is not None and now - self.last > 0.25:
            self.last = now
            self._live.update(self._render(batches))

    def _render(self, batches: int) -> Any:
        from rich.table import Table

        stats = self.pipeline.stats
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        admin = self.bus.admin()
        table = Table(title=f"kstrade: {batches:,}/{self.total:,} minutes replayed, {batches / elapsed:,.0f}/s")
        for col in ("stage", "records", "produced", "dead letters", "p50 us", "p99 us"):
            table.add_column(col, justify="right" if col != "stage" else "left")
        for name in stats.polled:
            samples = sorted(stats.processing_us.get(name, [])[-2000:])
            p50 = samples[len(samples) // 2] if samples else 0.0
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] if samples else 0.0
            table.add_row(
                name, f"{stats.polled[name]:,}", f"{stats.produced.get(name, 0):,}",
                f"{stats.dead_lettered.get(name, 0):,}", f"{p50:,.0f}", f"{p99:,.0f}",
            )  # fmt: skip
        topics = set(admin.list_topics(1.0))
        for label, topic in (("final signals", signals("final")), ("orders", ORDERS_PENDING), ("fills", EXECUTIONS)):
            if topic in topics:
                table.add_row(label, f"{sum(admin.end_offsets(topic, 1.0)):,}", "", "", "", "")
        return table


def _isolated(settings: Settings, out: Path) -> Settings:
    """A replay keeps its state to itself: a fresh order journal and paper account inside the
    run directory (a journal shared with an earlier run would see its signals as already
    traded), not synced to disk on every write (a backtest is run again, never recovered), its
    own metrics database, no Prometheus port and no consumer-lag watch."""
    state = out / "state"
    if state.exists():
        raise ValueError(f"{out} already holds a run; choose another --out")
    return settings.model_copy(
        update={
            "execution": settings.execution.model_copy(
                update={
                    "journal_path": state / "orders.sqlite3",
                    "paper_state_path": state / "paper-account.json",
                    "durable_state": False,
                    "prometheus_port": 0,
                }
            ),
            "features": settings.features.model_copy(update={"state_dir": None}),  # one process: no restart
            "inference": settings.inference.model_copy(update={"state_dir": None}),
            # No lag watch: in a replay the stages that run ahead are up to a chunk of instants
            # ahead of the others by design (`Pipeline`); that is scheduling, not a stage in trouble.
            "metrics": settings.metrics.model_copy(
                update={
                    "prometheus_port": 0,
                    "database_url": f"sqlite:///{state / 'metrics.sqlite3'}",
                    "lag_groups": [],
                }
            ),
        }
    )


def run(settings: Settings, options: RunOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Replay the candles through every stage and write the run directory. Returns the summary."""
    from kstrade.ingest.replay import ReplaySource

    candles = load_candles(settings, options)
    history, frame, label = candles.history, candles.period, candles.label
    symbols = sorted(frame["symbol"].unique().to_list())
    missing = [s for s in symbols if s not in settings.symbols]
    if missing:
        raise ValueError(f"the data holds {', '.join(missing)}, which the config's symbols do not list")
    settings = _isolated(settings, options.out)
    bus = Bus.from_settings(settings.bus)
    ensure_topics(bus, settings)
    board = _dashboard(bus, settings, options.dashboard_port, log) if options.dashboard_port is not None else None
    stages = pipeline_stages(settings, bus)
    ahead = [s.name for s in stages[: len(RUN_AHEAD)]]
    if not options.batched or bus.transport != "memory" or ahead != list(RUN_AHEAD):
        ahead = []
    # On the memory bus, memory bounded however long the replay: what every reader has read is
    # deleted after each chunk; the report reads its topics as the run goes, keeping only what
    # the run directory is written from. (A Kafka cluster has its own retention.)
    recorder = RunRecorder(bus) if bus.transport == "memory" else None
    keep: list[str] | None = [] if recorder is not None else None
    pipeline = Pipeline(bus, stages, ahead=ahead, chunk=options.chunk, batched=options.batched, keep=keep)
    minutes = frame["open_time_ms"].n_unique()
    warmed = warm_up(stages, history)
    bar = timedelta(milliseconds=BASE_INTERVAL_MS[settings.base_interval])
    if warmed:
        hours = history["open_time_ms"].n_unique() * bar / timedelta(hours=1)
        log(f"warm-up: {warmed:,} candles ({hours:,.0f} hours before the period) into the indicators and the "
            "models' windows (nothing traded)")  # fmt: skip
    else:
        log("no history before the period: its first ~34 hours warm the indicators (no decision before)")
    unit = "minutes" if settings.base_interval == "1m" else f"{settings.base_interval} bars"
    log(f"replaying {frame.height:,} candles ({minutes:,} {unit}, {', '.join(symbols)}) from {label}")
    log(f"stages: {', '.join(s.name for s in stages)} on the {bus.transport} bus")
    started = time.perf_counter()
    source = ReplaySource(frame, interval=settings.base_interval)
    with _Progress(bus, pipeline, minutes, options.live_view) as progress:
        pipeline.run(source, on_batch=progress, on_chunk=recorder.read if recorder is not None else None)
    wall = time.perf_counter() - started
    times: list[int] = frame["open_time_ms"].to_list()
    for stage in stages:
        stage.close()
    meta = {
        "data": label,
        "symbols": symbols,
        "start": datetime.fromtimestamp(min(times) / 1000, UTC).isoformat(),
        "end": datetime.fromtimestamp(max(times) / 1000, UTC).isoformat(),
        "candles": frame.height,
        "warmup_candles": warmed,
        "warmup_start": (
            datetime.fromtimestamp(min(history["open_time_ms"].to_list()) / 1000, UTC).isoformat() if warmed else None
        ),
        "bus": bus.transport,
        "wall_seconds": wall,
        "candles_per_second": frame.height / wall if wall > 0 else None,
    }
    if settings.base_interval != "1m":  # a 1m run's summary reads as it always has
        meta["base_interval"] = settings.base_interval
    summary = write_run_directory(
        options.out,
        bus,
        pipeline.stats,
        meta,
        frame.select("symbol", "open_time_ms", "close"),
        candles.truth,
        settings.execution.guardrails,
        period=(datetime.fromtimestamp(min(times) / 1000, UTC), datetime.fromtimestamp(max(times) / 1000, UTC) + bar),
        recorder=recorder,
    )
    if recorder is not None:
        recorder.close()
    log(f"done in {wall:.1f} s ({frame.height / wall:,.0f} candles/s)")
    if board is not None:
        try:
            if options.dashboard_hold is not None:
                options.dashboard_hold(board.url)
        finally:
            board.stop()
    return summary


def _dashboard(bus: Bus, settings: Settings, port: int, log: Callable[[str], None]) -> DashboardServer:
    try:
        from kstrade.dashboard.web import operator_token, serve_in_background
    except ImportError as exc:
        raise ValueError(f"the dashboard needs the optional extra: pip install 'kstrade[dashboard]' ({exc})") from exc
    board = serve_in_background(bus, settings, port=port, token=operator_token())
    log(f"dashboard: {board.url}")
    return board
