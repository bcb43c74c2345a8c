"""The front door: backtests are deterministic and leave a complete run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

OUTPUTS = ("signals.parquet", "orders.parquet", "executions.parquet", "pnl.parquet", "trades.parquet", "equity.parquet")


def _kstrade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kstrade", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def minutes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    done = _kstrade("data", "synth", "--symbols", "BTC-USD,ETH-USD", "--days", "3", "--seed", "21", "--out", str(out))
    assert done.returncode == 0, done.stderr
    [path] = out.glob("synthetic*.parquet")
    return path


def test_two_backtests_of_the_same_input_are_byte_identical(minutes: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        done = _kstrade("backtest", "--data", str(minutes), "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        assert f"run directory: {tmp_path / name}" in done.stdout
        runs.append(tmp_path / name)
    for file in OUTPUTS:
        assert (runs[0] / file).read_bytes() == (runs[1] / file).read_bytes(), file
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["candles"] == 2 * 3 * 1440 and summary["symbols"] == ["BTC-USD", "ETH-USD"]
    assert summary["topics"]["market.candles.BTC-USD.1m"] == 3 * 1440
    assert summary["topics"]["market.candles.ETH-USD.1h"] == 3 * 24
    assert summary["stages"]["features"]["records"] == 2 * 3 * 1440
    assert summary["signals_final"] == pl.read_parquet(runs[0] / "signals.parquet").height
    report = (runs[0] / "report.html").read_text()
    assert report.index("<table>") < report.index("<svg")  # the summary table opens the report
    assert "SYNTHETIC" in report


def test_a_window_and_bad_input_are_handled(minutes: Path, tmp_path: Path) -> None:
    done = _kstrade(
        "backtest", "--data", str(minutes), "--from", "2026-01-06", "--to", "2026-01-07", "--out", str(tmp_path / "w")
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["candles"] == 2 * 1440 and summary["start"].startswith("2026-01-06T00:00")
    empty = _kstrade("backtest", "--data", str(minutes), "--from", "2030-01-01", "--out", str(tmp_path / "e"))
    assert empty.returncode == 2 and "no candles" in empty.stderr
    missing = _kstrade("backtest", "--data", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "m"))
    assert missing.returncode == 2 and "nope.parquet" in missing.stderr
