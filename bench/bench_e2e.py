"""End-to-end latency and sustained rate through a real Kafka broker, every stage its own
process and consumer group, as in production: `python -m kstrade service NAME --bus kafka`
for features, inference.lstm, inference.transformer, signals and execution (paper broker).

The candles are SYNTHETIC (seeded random walk), 3 symbols; the source (this process) rolls
each symbol's 1m candles up into 5m/15m/1h exactly as `ingest replay` does, so 4 timeframes
reach the broker. Two days of minutes are replayed first, as fast as possible, to warm every
timeframe's indicators and the models' windows; then candles are replayed at a fixed rate and
each one's `origin_ns` header is set to the wall clock at the moment it is produced. A
measuring consumer reads the stages' outputs and takes `now - origin_ns` for each record
descended from a timed candle: p50/p99/max to features.aggregated, to the predictions, to
signals.final and signals.filtered, and to trades.orders.pending.

The shipped models' calibrated confidence sits mostly below the default tier bands (every
signal TIER_D, filtered, no orders); so that orders flow, this benchmark lowers the bands to
A/B/C = 0.50/0.45/0.38 through KSTRADE_SIGNALS__TIERS__* (the latency, not the trading, is
measured here).

Between the warm-up and the timed candles, a short ramp: the rate is doubled step by step until
the lag grows (1m candles produced minus signals decided, final or filtered: each candle ends in
exactly one, after features and both models); the last rate held is reported, and its backlog
cleared before the timed candles start.
Memory: resident set of each stage process after the run, divided by the 3 symbols.

    python -m pytest bench/bench_e2e.py -q -s     # about 1.5 to 2.5 minutes; loopback only
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from figures import record
from kstrade.bus import Bus
from kstrade.bus.topics import (
    ORDERS_PENDING,
    PREDICTIONS_TRANSFORMER,
    features_aggregated,
    predictions_lstm,
    signals,
)
from kstrade.features import Candle as NativeCandle
from kstrade.ingest.rollup import MultiTimeframeCandles
from kstrade.stage import Stage

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
SERVICES = ["features", "inference.lstm", "inference.transformer", "signals", "execution"]
WARMUP_MINUTES = 60 * 48
#: The smoke run's warm-up: the first feature vector comes after ~34 h of minutes and the models'
#: windows fill half an hour later; 36 h is enough to see predictions (a quarter less to replay).
SMOKE_WARMUP_MINUTES = 60 * 36
RATE = float(os.environ.get("KSTRADE_BENCH_E2E_RATE", "20"))  # instants/s (x3 symbols 1m candles)
TIMED_SECONDS = float(os.environ.get("KSTRADE_BENCH_E2E_SECONDS", "20"))
RAMP = [int(r) for r in os.environ.get("KSTRADE_BENCH_E2E_RAMP", "50,100,200,400,800").split(",") if r]
RAMP_STEP_SECONDS = 6.0
TIERS = {"A": "0.5", "B": "0.45", "C": "0.38"}
HEADER = "origin_ns"


class Measure(threading.Thread):
    """Reads the stages' outputs and keeps, per topic group, the latency of each record whose
    origin is a timed candle (origin_ns at or after `since_ns`)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bus = Bus.kafka(bootstrap)
        self.groups = {features_aggregated(s): "features.aggregated" for s in SYMBOLS}
        self.groups |= {predictions_lstm(s): "predictions.lstm" for s in SYMBOLS}
        self.groups[PREDICTIONS_TRANSFORMER] = "predictions.transformer"
        self.groups[signals("final")] = "signals.final"
        self.groups[signals("filtered")] = "signals.filtered"
        self.groups[ORDERS_PENDING] = "trades.orders.pending"
        self.since_ns = 1 << 62
        self.until_ns = 1 << 62
        self.latency: dict[str, list[float]] = defaultdict(list)
        #: Per group, origin -> the record's own timestamp (the producing stage's create time,
        #: whole ms: the middle of the ms is taken): when the last stage emitted it.
        self.emitted: dict[str, list[float]] = defaultdict(list)
        self.count: dict[str, int] = defaultdict(int)  # every record, timed or not
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        consumer = self.bus.consumer(f"bench-e2e-{uuid.uuid4().hex[:8]}",
                                     {"auto.offset.reset": "earliest", "fetch.wait.max.ms": "1"})  # fmt: skip
        consumer.subscribe(list(self.groups))
        self.ready.set()
        while not self.stop.is_set():
            batch = consumer.poll(10_000, 0.05)
            now = time.time_ns()
            for r in batch:
                group = self.groups.get(r.topic)
                if group is None:
                    continue
                self.count[group] += 1
                origin = Stage.origin_ns(r)
                if self.since_ns <= origin < self.until_ns:
                    self.latency[group].append((now - origin) / 1e6)
                    self.emitted[group].append((r.timestamp_ms * 1_000_000 + 500_000 - origin) / 1e6)
        consumer.close()


class Feed:
    """SYNTHETIC 1m candles for the symbols, rolled up to 4 timeframes, produced to the broker."""

    def __init__(self, bootstrap: str, start_ms: int, seed: int = 11) -> None:
        self.producer = Bus.kafka(bootstrap).producer({"linger.ms": "0"})
        self.rollups = {s: MultiTimeframeCandles(s, "bench-synthetic") for s in SYMBOLS}
        self.rng = np.random.default_rng(seed)
        self.noise = self._noise()
        self.price = dict.fromkeys(SYMBOLS, 100.0)
        self.t_ms = start_ms
        self.produced_1m = 0

    def _noise(self) -> Iterator[tuple[float, float, float, float]]:
        """Random steps drawn 100k at a time: the source must not be what limits the ramp."""
        while True:
            n = 100_000
            cols = (np.exp(self.rng.normal(0, 0.001, n)), 1 + np.abs(self.rng.normal(0, 0.0005, n)),
                    1 - np.abs(self.rng.normal(0, 0.0005, n)), self.rng.gamma(2.0, 5.0, n))  # fmt: skip
            yield from zip(*(c.tolist() for c in cols), strict=True)

    def instant(self, stamp_now: bool) -> None:
        for s in SYMBOLS:
            step, up, down, volume = next(self.noise)
            o = self.price[s]
            c = o * step
            self.price[s] = c
            outs = self.rollups[s].push(NativeCandle(self.t_ms, o, max(o, c) * up, min(o, c) * down, c, volume, "1m"))
            for out in outs:
                headers = out.headers
                if stamp_now:
                    origin = str(time.time_ns()).encode()
                    headers = [(k, origin if k == HEADER else v) for k, v in out.headers]
                self.producer.send(out.topic, out.value, out.key, headers)
            self.produced_1m += 1
        self.t_ms += 60_000

    def flush(self) -> None:
        self.producer.flush()


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@pytest.fixture(scope="module")
def services(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    state = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ)
    env |= {f"KSTRADE_SIGNALS__TIERS__{k}": v for k, v in TIERS.items()}
    env["KSTRADE_EXECUTION__JOURNAL_PATH"] = str(state / "orders.sqlite3")
    env["KSTRADE_EXECUTION__PAPER_STATE_PATH"] = str(state / "paper.json")
    env["KSTRADE_SYMBOLS"] = '["' + '","'.join(SYMBOLS) + '"]'
    # The timed phase replays TIMED_SECONDS * RATE minutes from about now in seconds: its market
    # times run hours ahead of the wall clock, which the door check allows up to a day.
    env["KSTRADE_BUS__MAX_FUTURE_SKEW_S"] = str(86_400)
    procs = []
    for name in SERVICES:
        log = (state / f"{name}.log").open("w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kstrade", "service", name, "--bus", "kafka", "--bootstrap", kafka_bootstrap],
            env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        logs = [state / f"{n}.log" for n in SERVICES]
        while not all("consuming as" in p.read_text() for p in logs):
            dead = [n for n, p in zip(SERVICES, procs, strict=True) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail(f"stages did not start ({dead}): " + " | ".join(p.read_text()[-400:] for p in logs))
            time.sleep(0.5)
        yield {n: p.pid for n, p in zip(SERVICES, procs, strict=True)}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    a = np.asarray(values)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def _wait_for(cond: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.kafka
def test_end_to_end_latency_and_sustained_rate(
    kafka_bootstrap: str, services: dict[str, int], request: pytest.FixtureRequest
) -> None:
    # The smoke run (--benchmark-disable, scripts/test) only checks that the path works: a few
    # seconds of timed candles and no ramp.
    smoke = bool(request.config.getoption("benchmark_disable", False))
    timed_seconds, ramp = (3.0, []) if smoke else (TIMED_SECONDS, RAMP)
    warmup_minutes = SMOKE_WARMUP_MINUTES if smoke else WARMUP_MINUTES
    began = time.monotonic()
    measure = Measure(kafka_bootstrap)
    measure.start()
    assert measure.ready.wait(30)
    now_ms = int(time.time() * 1000)
    # Market time: the warm-up and the ramp replay minutes far faster than real time, so they lie
    # in the past and end before now; the timed candles follow, from about now on (their signals
    # must not be STALE, so that final signals and orders are timed too). A candle more than
    # bus.max_future_skew_s ahead of the wall clock is dead-lettered FUTURE_TIMESTAMP at the door:
    # the services allow the timed phase's span (`services`). With the ramp after the timed
    # phase, every ramp candle lay hours ahead, was dead-lettered, and the sustained rate read 0.
    ramp_minutes = sum(int(RAMP_STEP_SECONDS * r) for r in ramp)
    start_ms = ((now_ms - (warmup_minutes + ramp_minutes) * 60_000) // 3_600_000) * 3_600_000
    feed = Feed(kafka_bootstrap, start_ms)
    # 1. warm-up: two days of minutes, as fast as the producer takes them
    for _ in range(warmup_minutes):
        feed.instant(stamp_now=False)
    feed.flush()
    warmed = _wait_for(lambda: measure.count["predictions.transformer"] >= len(SYMBOLS), 90)
    expected = warmup_minutes * len(SYMBOLS)
    _wait_for(lambda: measure.count["features.aggregated"] >= expected - 2_000 * len(SYMBOLS), 60)
    assert warmed, f"the models never predicted during warm-up: {dict(measure.count)}"
    time.sleep(2.0)  # let the tail of the warm-up drain
    warm_seconds = time.monotonic() - began

    # 2. ramp: the highest rate at which the chain keeps up: every 1m candle ends in one signal
    # (final or filtered), so lag = 1m candles produced - signals decided, and it must not grow.
    # (Its candles are old: their signals are STALE, filtered, which is as decided as final.)
    def decided() -> int:
        return measure.count["signals.final"] + measure.count["signals.filtered"]

    held = 0.0
    ramp_lines: list[str] = []
    for rate in ramp:
        lag_start = feed.produced_1m - decided()
        period = 1.0 / rate
        steps = int(RAMP_STEP_SECONDS * rate)
        t0 = time.perf_counter()
        for i in range(steps):
            feed.instant(stamp_now=False)  # linger.ms=0: sent at once; flushed (acks) at the end
            delay = t0 + (i + 1) * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        feed.flush()
        achieved = steps / (time.perf_counter() - t0)
        time.sleep(1.0)  # one second of grace: lag that a second clears is not growing
        lag_end = feed.produced_1m - decided()
        keeps_up = achieved >= 0.9 * rate and lag_end - lag_start <= 0.05 * steps * len(SYMBOLS) + 10
        verdict = "held" if keeps_up else "NOT held"
        ramp_lines.append(f"  ramp {rate:5d} instants/s ({achieved * len(SYMBOLS):7.0f} 1m candles/s offered): "
                          f"lag (candles not yet decided) {lag_start} -> {lag_end}: {verdict}")  # fmt: skip
        if not keeps_up:
            break
        held = achieved * len(SYMBOLS)
    if ramp:
        record("sustained 1m candle rate (features, models, signals keep up)", "kstrade", held, "candles/s", True)
        # The step that was not held left a backlog: the timed candles wait for it to clear.
        baseline = feed.produced_1m - decided()
        cleared = _wait_for(lambda: feed.produced_1m - decided() <= lag_start, 120)
        outcome = "cleared before the timed phase" if cleared else "NOT cleared in 120 s: timed candles queued after it"
        ramp_lines.append(f"  (backlog after the ramp: {baseline - lag_start} candles, {outcome})")

    # 3. timed: candles at a fixed rate, origin_ns = wall clock at produce
    measure.since_ns = time.time_ns()
    period = 1.0 / RATE
    n = int(timed_seconds * RATE)
    t0 = time.perf_counter()
    for i in range(n):
        feed.instant(stamp_now=True)
        feed.flush()
        delay = t0 + (i + 1) * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    measure.until_ns = time.time_ns()
    _wait_for(lambda: len(measure.latency["signals.final"]) + len(measure.latency["signals.filtered"]) >= n * 3, 15)
    time.sleep(1.0)
    lines = [f"\nend-to-end, {n} instants x {len(SYMBOLS)} symbols at {RATE:g}/s "
             f"({RATE * len(SYMBOLS):g} 1m candles/s + rollups), stages as processes "
             f"(warm-up of {warmup_minutes} minutes took {warm_seconds:.0f} s):"]  # fmt: skip
    for group in ("features.aggregated", "predictions.lstm", "predictions.transformer",
                  "signals.final", "signals.filtered", "trades.orders.pending"):  # fmt: skip
        values = measure.latency.get(group, [])
        if not values:
            lines.append(f"  {group:26s} no records")
            continue
        p50, p99, mx = _percentiles(values)
        e50, e99, _ = _percentiles(measure.emitted[group])
        lines.append(f"  {group:26s} n={len(values):6d} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  max {mx:8.2f} ms"
                     f"  (emitted by its stage: p50 {e50:6.2f} ms, p99 {e99:6.2f} ms after the candle)")  # fmt: skip
        for label, v in (("p50", p50), ("p99", p99), ("max", mx)):
            record(f"end-to-end candle -> {group} {label}", "kstrade", v, "ms", False)
    lines += ramp_lines

    rss = {name: _rss_mb(pid) for name, pid in services.items()}
    total = sum(rss.values())
    lines.append("  resident memory: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items()))
    lines.append(f"  total {total:.0f} MB for {len(SYMBOLS)} symbols: {total / len(SYMBOLS):.0f} MB per symbol "
                 "(includes each process's Python, onnxruntime and models: a fixed cost, not per symbol)")  # fmt: skip
    record("memory: 5 stage processes, per symbol (3 symbols)", "kstrade", total / len(SYMBOLS), "MB", False)
    measure.stop.set()
    measure.join(5)
    print("\n".join(lines))
    assert measure.latency["features.aggregated"], "no feature vector came out of the timed candles"
