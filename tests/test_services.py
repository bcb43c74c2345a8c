"""A stage as its own process over the real broker: it creates its topics, works, and on
SIGTERM finishes its batch, commits and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import METRICS_ALERTS, ORDERS_PENDING, candles, features_aggregated, signals
from kstrade.ingest.synthetic import generate

from .conftest import drain
from .helpers import send_minutes
from .pipeline_services import (
    SERVICES,
    TRADE_TOPICS,
    TopicReader,
    data_topics,
    feed,
    judge,
    missing,
    prepare,
    undecided_finals,
    wait_until,
)


def test_unknown_stage_and_memory_bus_are_refused() -> None:
    run = [sys.executable, "-m", "kstrade", "service"]
    bad = subprocess.run([*run, "nope", "--bus", "kafka"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown stage 'nope'" in bad.stderr
    alone = subprocess.run([*run, "features", "--bus", "memory"], capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and "--bus kafka" in alone.stderr


@pytest.mark.kafka
def test_features_service_works_stops_cleanly_and_restarts_warm(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    symbol = f"T{unique}"
    env = {
        **os.environ,
        "KSTRADE_SYMBOLS": f'["{symbol}"]',
        "PYTHONUNBUFFERED": "1",
        "KSTRADE_FEATURES__STATE_DIR": str(tmp_path / "features"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kstrade", "service", "features", "--bus", "kafka", "--bootstrap", kafka_bootstrap],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "consuming as kstrade.features" in proc.stderr.readline()  # topics exist from here on
        bus = Bus.kafka(kafka_bootstrap)
        minutes = generate("BTC-USD", datetime(2026, 1, 5, tzinfo=UTC), 2, seed=9)  # SYNTHETIC
        producer = bus.producer()
        send_minutes(producer, minutes, symbol)
        check = bus.consumer(f"check-{unique}")
        check.subscribe([features_aggregated(symbol)])
        assert len(drain(check, 100, timeout=60)) == 100  # vectors flow once the 1h timeframe is warm
        deadline = time.monotonic() + 60
        ends = bus.admin().end_offsets(candles(symbol, "1m"))
        probe = bus.consumer("kstrade.features")  # only reads committed offsets; never subscribes
        while time.monotonic() < deadline:
            committed = probe.committed([(candles(symbol, "1m"), p) for p in range(3)])
            if [c or 0 for _, _, c in committed] == ends:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        rest = proc.stderr.read()
        assert "stopped cleanly" in rest
        committed = probe.committed([(candles(symbol, "1m"), p) for p in range(3)])
        assert [c or 0 for _, _, c in committed] == ends  # every candle processed and committed (empty: none)
        before = sum(bus.admin().end_offsets(features_aggregated(symbol)))
        assert (tmp_path / "features" / "features-state.json").exists()

        # Restarted, it continues warm from its checkpoint: one vector per new candle at once.
        proc = subprocess.Popen(
            [sys.executable, "-m", "kstrade", "service", "features", "--bus", "kafka", "--bootstrap", kafka_bootstrap],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        later = generate("BTC-USD", datetime(2026, 1, 7, tzinfo=UTC), 1, seed=10).head(30)  # the next 30 minutes
        send_minutes(producer, later, symbol)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(bus.admin().end_offsets(features_aggregated(symbol))) < before + 30:
            time.sleep(0.5)
        assert sum(bus.admin().end_offsets(features_aggregated(symbol))) == before + 30
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.kafka
def test_every_service_stopped_and_restarted_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Issue 8: all six stages as their own processes over the broker, SYNTHETIC candles for two
    symbols streaming in; each service in turn is stopped with SIGTERM at a different minute and
    started again. At the end every data topic holds exactly what the same stages write in one
    uninterrupted process (ids and contents), nothing twice, and execution decided each final
    signal once (an order or a dropped-signal alert). Printed: counts per topic and durations."""
    aliases = {f"B{unique}": "BTC-USD", f"E{unique}": "ETH-USD"}
    started = time.monotonic()
    setup = prepare(aliases, tmp_path, 150)
    symbols, stream, want = setup.symbols, setup.stream, setup.want
    assert all(want[signals(s)] for s in ("filtered", "final"))  # orders flow, and some are filtered
    prepared = time.monotonic() - started
    services, bus = setup.services({"transport": "kafka", "bootstrap": kafka_bootstrap})
    restarts = {15 + 20 * i: name for i, name in enumerate(SERVICES)}  # minute -> service
    reader: TopicReader | None = None
    try:
        for name in SERVICES:
            services.start(name)
        services.wait_ready()

        def restart(minute: int) -> None:
            name = restarts.get(minute)
            if name is not None:
                services.stop(name)
                services.start(name)

        fed = feed(bus, stream, per_second=2.0, on_minute=restart)
        services.wait_ready()
        reader = TopicReader(bus, [*data_topics(symbols), *TRADE_TOPICS, METRICS_ALERTS], symbols, unique)
        finals = list(want[signals("final")])

        def drained() -> bool:
            return not missing(reader, want) and not undecided_finals(reader, finals)

        waited = time.monotonic()
        assert wait_until(drained, 120, reader.poll), f"not drained: missing {missing(reader, want)}"
        reader.poll(3.0)  # anything late (a duplicate) arrives too
        drain_s = time.monotonic() - waited
        for name in SERVICES:
            services.stop(name)
        verdict = judge(reader, want)
        print(f"\nprepared {prepared:.1f}s, fed {len(stream.tail)} minutes in {fed:.1f}s, drained {drain_s:.1f}s")
        print(verdict.table())
        assert not verdict.problems, "\n".join(verdict.problems)
        assert verdict.counts[ORDERS_PENDING][1] > 0  # execution traded: its one-order check is not empty
        assert not any(verdict.repeats.values()), verdict.repeats  # graceful stops: no repeat at all
        assert services.starts == dict.fromkeys(SERVICES, 2)
        assert not services.errors(), "\n".join(services.errors())
    finally:
        if reader is not None:
            reader.close()
        services.close()
