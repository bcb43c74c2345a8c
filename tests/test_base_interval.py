"""The pipeline on a 1h base interval (issue 22): the engine builds 4h/8h/1d from hourly candles,
the settings follow the base, a model refuses features of another base, a file of the wrong
interval is refused, `models check` checks what ships, and `backtest --data eurusd` runs every
stage on the REAL EURUSD hourly series with the shipped 1h models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kstrade._native import MarketError
from kstrade.app import PIPELINE_ORDER, RunOptions, run
from kstrade.config import load
from kstrade.features import FEATURE_NAMES, Candle, FeatureEngine, feature_names_for
from kstrade.inference.check import check_models_dir
from kstrade.inference.manifest import ModelRefused
from kstrade.inference.runtime import LoadedModel
from kstrade.ingest.replay import eurusd_1h_candles

MODELS = Path(__file__).resolve().parent.parent / "python" / "kstrade" / "models"
HOUR_MS = 3_600_000


def test_an_hourly_engine_builds_4h_8h_and_daily_features_and_refuses_minutes() -> None:
    frame = eurusd_1h_candles()
    engine = FeatureEngine("1h")
    assert list(engine.timeframes) == ["1h", "4h", "8h", "1d"]
    rows = engine.update_frame(frame)
    assert rows.columns[2:] == list(feature_names_for("1h")) and "1d_rsi14" in rows.columns
    assert rows["gap_hours"].max() >= 48  # the FX weekend: Friday 21:00 to Sunday 22:00 UTC
    ready = rows.filter(pl.col("ready"))
    # The daily indicators need ~34 days of bars: nothing is ready in the first month.
    assert ready["open_time_ms"].min() - frame["open_time_ms"].min() > 30 * 24 * HOUR_MS  # type: ignore[operator]
    assert ready.height > 5000
    # A higher bar contributes only once closed: the 1d RSI changes on the day's last hour (23:00
    # UTC), or where that hour never came, on the first candle after the gap (a Friday's bar closes
    # when Sunday's first hour arrives).
    changed = ready.filter(pl.col("1d_rsi14").diff() != 0)
    last_hour = changed["open_time_ms"].to_numpy() % (24 * HOUR_MS) == 23 * HOUR_MS
    after_gap = changed["gap_hours"].to_numpy() > 0
    assert changed.height > 200 and np.all(last_hour | after_gap) and last_hour.sum() > 150
    with pytest.raises(MarketError, match="1m"):
        FeatureEngine("1h").update(Candle(0, 1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(MarketError):
        FeatureEngine("5m")
    assert feature_names_for("1m") == FEATURE_NAMES != feature_names_for("1h")


def test_settings_follow_the_base_interval_unless_set() -> None:
    minute, hour = load(None), load(None, base_interval="1h")
    assert (minute.metrics.bar_seconds, minute.signals.atr_feature, minute.signals.ttl_seconds) == (60, "5m_atr14", 300)
    assert (hour.metrics.bar_seconds, hour.signals.atr_feature, hour.signals.ttl_seconds) == (3600, "4h_atr14", 18000)
    assert hour.signals.atr_feature in feature_names_for("1h")
    assert str(hour.inference.models_dir) == "models/1h"
    assert load(None, base_interval="1h", signals={"ttl_seconds": 7200}).signals.ttl_seconds == 7200
    with pytest.raises(ValueError, match="bar_seconds 60 is not a whole number of 1h bars"):
        load(None, base_interval="1h", metrics={"bar_seconds": 60})


def test_a_model_refuses_the_features_of_another_base_interval() -> None:
    with pytest.raises(ModelRefused, match=r"trained on features of 1m candles, the pipeline runs on 1h") as caught:
        LoadedModel.load(MODELS / "transformer", base_interval="1h")
    assert caught.value.code == "FEATURE_NAMES_MISMATCH"
    with pytest.raises(ModelRefused, match=r"trained on features of 1h candles, the pipeline runs on 1m"):
        LoadedModel.load(MODELS / "1h" / "transformer")


def test_a_file_of_another_interval_is_refused_with_what_to_do(tmp_path: Path) -> None:
    settings = load(None, symbols=["EURUSD"])
    with pytest.raises(
        ValueError, match=r'holds 1h candles, the pipeline runs on 1m candles: set base_interval = "1h"'
    ):
        run(settings, RunOptions(out=tmp_path / "run", data=eurusd_1h_candles(), live_view=False), log=lambda _: None)


def test_models_check_passes_what_ships_and_names_what_is_broken(tmp_path: Path) -> None:
    checks = check_models_dir()
    assert all(c.ok for c in checks), [c.line for c in checks if not c.ok]
    assert sum(c.line.startswith("ok ") and "on 1h candles (REAL data)" in c.line for c in checks) == 2
    copy = tmp_path / "1h"
    shutil.copytree(MODELS / "1h", copy)
    onnx = copy / "lstm" / "EURUSD" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    done = subprocess.run(
        [sys.executable, "-m", "kstrade", "models", "check", str(copy)], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "FAIL lstm/EURUSD: MODEL_SHA256_MISMATCH" in done.stdout and "ok   transformer" in done.stdout


def test_backtest_eurusd_runs_every_stage_on_real_hourly_data(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "kstrade", "backtest", "--data", "eurusd", "--no-live", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"].startswith("REAL market data: EURUSD 1h") and summary["base_interval"] == "1h"
    assert summary["symbols"] == ["EURUSD"]
    for stage in PIPELINE_ORDER:
        assert summary["stages"][stage]["records"] > 0, stage
        assert summary["stages"][stage]["dead_lettered"] == 0, stage
    # Out of sample: the replay starts where the shipped models' test slice starts.
    manifest = json.loads((MODELS / "1h" / "transformer" / "manifest.json").read_text())
    test_start = manifest["data"]["ranges"]["EURUSD"]["test"].split(" .. ")[0]
    assert summary["start"][:16] == test_start.replace("Z", "")[:16]
    predictions = summary["stages"]["inference.transformer"]["produced"]
    assert predictions == summary["candles"]  # warm windows from the warm-up: a prediction per hour
    assert "REAL market data" in (out / "report.html").read_text()
    assert "REAL market data" in done.stdout
