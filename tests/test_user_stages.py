"""A user's own stage joins `run` and `service NAME` through the config alone (`[pipeline]
extra_stages`, or an entry point in group `kstrade.stages`), and a bad entry is refused with a
line that names it and what is wrong (`kstrade.stages`). The stages come from a package outside
kstrade (tests/userstages) and from kstrade's own example (kstrade.examples.wide_bars)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from kstrade import stages
from kstrade.app import PIPELINE_ORDER, RunOptions, load_candles
from kstrade.bus import Bus
from kstrade.bus.topics import METRICS_ALERTS
from kstrade.config import ConfigError, load
from kstrade.examples.wide_bars import WideBars
from kstrade.ingest.synthetic import generate
from kstrade.schemas import Alert, Codec

from .helpers import send_minutes
from .userstages import HOUR_MARK, HourMarks

ROOT = Path(__file__).resolve().parents[1]
#: The replays' outputs that a stage which only observes must leave as they were.
OUTPUTS = ("signals.parquet", "orders.parquet", "executions.parquet", "pnl.parquet", "trades.parquet", "equity.parquet")
EXTRA = ["kstrade.examples.wide_bars:WideBars", "tests.userstages:HourMarks"]


def _env() -> dict[str, str]:
    """The environment of a `python -m kstrade` child that can import the test package."""
    path = [str(ROOT / "python"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}


def _kstrade(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kstrade", *args], capture_output=True, text=True, timeout=600, env=_env(), cwd=cwd
    )


def _config(path: Path, extra: list[str]) -> Path:
    path.write_text("[pipeline]\nextra_stages = [" + ", ".join(json.dumps(e) for e in extra) + "]\n")
    return path


def test_user_stages_join_run_behind_execution_and_change_nothing_else(tmp_path: Path) -> None:
    config = _config(tmp_path / "extra.toml", EXTRA)
    with_extra = _kstrade("run", "--days", "1", "--no-live", "--config", str(config), "--out", "a", cwd=tmp_path)
    assert with_extra.returncode == 0, with_extra.stderr
    plain = _kstrade("run", "--days", "1", "--no-live", "--out", "b", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr

    # They run after execution and before metrics, in the config's order.
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert list(summary["stages"]) == [*PIPELINE_ORDER[:-1], "wide_bars", "hour_marks", PIPELINE_ORDER[-1]]
    # What they raised reached the collector, which stored it: one alert per bar that closes an
    # hour, and one per bar wider than WideBars.max_range, counted here from the replayed candles.
    period = load_candles(load(), RunOptions(out=tmp_path / "unused", days=1)).period
    hours = period.filter(pl.col("timestamp").dt.minute() == 59).height
    wide = period.filter((pl.col("high") - pl.col("low")) > WideBars.max_range * pl.col("close")).height
    assert hours == 24 * len(load().symbols) and wide > 0
    with sqlite3.connect(tmp_path / "a" / "state" / "metrics.sqlite3") as db:
        query = "SELECT source, code, COUNT(*) FROM alerts WHERE source IN (?, ?) GROUP BY source, code"
        stored = {(source, code): n for source, code, n in db.execute(query, ("hour_marks", "wide_bars"))}
    assert stored == {("hour_marks", HOUR_MARK): hours, ("wide_bars", "WIDE_BAR"): wide}
    assert summary["stages"]["hour_marks"]["records"] == period.height  # every base candle, read once
    # Stages that only observe leave every trading output as it was, byte for byte.
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("nopkg.stages:Mine", "no module named 'nopkg'"),
        ("tests.userstages.broken:Mine", "importing tests.userstages.broken failed: RuntimeError"),
        ("tests.userstages:Missing", "module tests.userstages has no 'Missing'"),
        ("tests.userstages:NotAStage", "is not a kstrade.stage.Stage subclass"),
        ("tests.userstages:NoConstructor", "has no from_settings(settings, bus) classmethod"),
        ("tests.userstages:TakenName", "is named 'signals', which is a built-in stage's name"),
        ("no_such_stage", "no entry point in group kstrade.stages has that name"),
    ],
)
def test_a_bad_extra_stage_is_refused_naming_the_entry_and_the_fault(entry: str, says: str) -> None:
    settings = load(pipeline={"extra_stages": [entry]})
    with pytest.raises(ConfigError) as refused:
        stages.stage_classes(settings)
    assert str(refused.value).startswith("pipeline.extra_stages[0]: ") and says in str(refused.value)


def test_extra_stages_are_checked_as_the_config_loads() -> None:
    with pytest.raises(ConfigError, match=r"pipeline\.extra_stages: .*'mypkg\.stages:' is neither module:Class"):
        load(pipeline={"extra_stages": ["mypkg.stages:"]})
    with pytest.raises(ConfigError, match="extra_stages repeat"):
        load(pipeline={"extra_stages": EXTRA[:1] * 2})
    with pytest.raises(ConfigError, match="an earlier extra stage has"):
        stages.stage_classes(load(pipeline={"extra_stages": ["tests.userstages:HourMarks", "tests.userstages:Twin"]}))


def test_the_command_line_refuses_a_bad_extra_stage_in_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path / "bad.toml", ["nopkg.stages:Mine"])
    run = _kstrade("run", "--days", "1", "--no-live", "--config", str(config), "--out", "r", cwd=tmp_path)
    assert run.returncode == 2
    assert "error: pipeline.extra_stages[0]: 'nopkg.stages:Mine': no module named 'nopkg'" in run.stderr
    service = _kstrade("service", "hour_marks", "--config", str(config), "--bus", "kafka", cwd=tmp_path)
    assert service.returncode == 2 and "no module named 'nopkg'" in service.stderr
    unknown = _kstrade("service", "hour_marks", "--bus", "kafka", cwd=tmp_path)  # not in the config, not installed
    assert unknown.returncode == 2 and "unknown stage 'hour_marks'" in unknown.stderr


def test_an_entry_point_names_a_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution (its .dist-info, as pip leaves it) registering two stages."""
    info = tmp_path / "userstages_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userstages-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[kstrade.stages]\nhour_marks = tests.userstages:HourMarks\nmisnamed = tests.userstages:HourMarks\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = load()
    assert stages.installed()["hour_marks"] == "tests.userstages:HourMarks"
    assert stages.stage_class("hour_marks", settings) is HourMarks  # `service hour_marks`, with no config
    assert "hour_marks" in stages.names(settings)
    assert HourMarks not in stages.stage_classes(settings)  # installed alone, it stays out of a replay
    named = load(pipeline={"extra_stages": ["hour_marks"]})
    assert stages.stage_classes(named)[-2] is HourMarks  # named in the config, it joins, before metrics
    with pytest.raises(ConfigError, match="the class is named 'hour_marks'; name the entry point as the stage"):
        stages.stage_class("misnamed", settings)


@pytest.mark.kafka
def test_a_user_stage_runs_as_a_service_through_the_config_alone(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    symbol = f"T{unique}"
    config = _config(tmp_path / "extra.toml", ["tests.userstages:HourMarks"])
    env = {**_env(), "KSTRADE_SYMBOLS": f'["{symbol}"]'}
    command = [sys.executable, "-m", "kstrade", "service", "hour_marks", "--config", str(config)]
    proc = subprocess.Popen(
        [*command, "--bus", "kafka", "--bootstrap", kafka_bootstrap], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        assert "consuming as kstrade.hour_marks" in proc.stderr.readline()  # topics exist from here on
        bus = Bus.kafka(kafka_bootstrap)
        minutes = generate("BTC-USD", datetime(2026, 1, 5, tzinfo=UTC), 1, seed=9).head(150)  # SYNTHETIC
        send_minutes(bus.producer(), minutes, symbol)
        expected = minutes.filter(pl.col("timestamp").dt.minute() == 59).height
        check = bus.consumer(f"check-{unique}")
        check.subscribe([METRICS_ALERTS])
        alerts = Codec(Alert)
        mine: list[Alert] = []
        deadline = time.monotonic() + 60
        while len(mine) < expected and time.monotonic() < deadline:
            for record in check.poll(max_records=500, timeout=0.2):
                if record.header("stage") != b"hour_marks":
                    continue  # the topic is shared with the session's other tests: some write bare bytes
                alert = alerts.decode_record(record)
                if alert.source == "hour_marks" and alert.message.startswith(f"{symbol} "):
                    mine.append(alert)
        assert expected == 2 and [a.code for a in mine] == [HOUR_MARK] * expected
        assert [a.timestamp.minute for a in mine] == [59, 59]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopped cleanly" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
