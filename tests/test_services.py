"""A stage as its own process over the real broker: it creates its topics, works, and on
SIGTERM finishes its batch, commits and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import candles, features_aggregated
from kstrade.ingest.synthetic import generate
from kstrade.schemas import Candle, Codec

from .conftest import drain


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
        codec = Codec(Candle)
        producer = bus.producer()
        for row in minutes.iter_rows(named=True):
            c = Candle(
                timestamp=row["timestamp"], symbol=symbol, interval="1m", open=row["open"], high=row["high"],
                low=row["low"], close=row["close"], volume=row["volume"], source="synthetic",
            )  # fmt: skip
            close_ns = int((row["timestamp"] + timedelta(minutes=1)).timestamp() * 1e9)
            producer.send(
                candles(symbol, "1m"), codec.encode(c), key=symbol.encode(), headers=codec.headers(close_ns, "t")
            )
        producer.flush()
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
        for row in later.iter_rows(named=True):
            c = Candle(
                timestamp=row["timestamp"], symbol=symbol, interval="1m", open=row["open"], high=row["high"],
                low=row["low"], close=row["close"], volume=row["volume"], source="synthetic",
            )  # fmt: skip
            close_ns = int((row["timestamp"] + timedelta(minutes=1)).timestamp() * 1e9)
            producer.send(
                candles(symbol, "1m"), codec.encode(c), key=symbol.encode(), headers=codec.headers(close_ns, "t")
            )
        producer.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(bus.admin().end_offsets(features_aggregated(symbol))) < before + 30:
            time.sleep(0.5)
        assert sum(bus.admin().end_offsets(features_aggregated(symbol))) == before + 30
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
