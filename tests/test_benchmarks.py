"""The `python -m kstrade bench` report: ratios, design targets and BENCHMARKS.md from figures
(the suite itself runs in scripts/test's benchmark step)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from kstrade.benchmarks import Figure, comparison_rows, load_figures, render, target_rows
from kstrade.cli import build_parser

FIGURES = [
    Figure("feature vector update per candle (1m + 5m/15m/1h)", "kstrade", 0.6, "us", False),
    Figure("feature vector update per candle (1m + 5m/15m/1h)", "kstrade", 0.5, "us", False),
    Figure("feature vector update per candle (1m + 5m/15m/1h)", "TA-Lib stream", 5.0, "us", False),
    Figure("consume 100 B (msg/s)", "kstrade", 300_000.0, "msg/s", True),
    Figure("consume 100 B (msg/s)", "confluent-kafka", 1_200_000.0, "msg/s", True),
    Figure("end-to-end candle -> signals.final p99", "kstrade", 200.0, "ms", False),
]


def test_ratios_use_each_contenders_best_round() -> None:
    rows = {(r[0], r[2]): r for r in comparison_rows(FIGURES)}
    assert rows[("feature vector update per candle (1m + 5m/15m/1h)", "TA-Lib stream")][4] == "10.00x"
    assert rows[("consume 100 B (msg/s)", "confluent-kafka")][4] == "0.25x"
    assert rows[("end-to-end candle -> signals.final p99", "")][1] == "200 ms"


def test_targets_are_marked_met_or_not() -> None:
    rows = {r[0]: r for r in target_rows(FIGURES)}
    assert rows["feature engineering < 20 ms (per candle, in process)"][2] == "met"
    assert rows["end-to-end < 150 ms (p99, candle -> signals.final)"][2] == "NOT met"
    assert rows["> 10k msg/s (bus consume, 100 B)"][2] == "met"
    assert rows["> 10k msg/s (bus produce, 100 B)"][1] == "not measured"
    # Ratio targets use each contender's best round: 5.0 / 0.5 = 10x TA-Lib, talipp not run.
    assert rows[">= 5x TA-Lib stream handles (same indicator set)"][1:] == ["10.00x", "met"]
    assert rows[">= 100x talipp (same indicator set)"][1] == "talipp not measured"
    slow = [*FIGURES, Figure("feature vector update per candle (1m + 5m/15m/1h)", "talipp", 40.0, "us", False)]
    assert {r[0]: r for r in target_rows(slow)}[">= 100x talipp (same indicator set)"][1:] == ["80.00x", "NOT met"]


def test_report_round_trips_through_the_figures_file(tmp_path: Path) -> None:
    path = tmp_path / "figures.json"
    path.write_text(json.dumps([f.__dict__ for f in FIGURES]))
    text = render(load_figures(path), {"cpus (nproc)": "2"}, datetime(2026, 1, 5, tzinfo=UTC))
    assert "| feature vector update per candle (1m + 5m/15m/1h) | 0.50 us | TA-Lib stream | 5.00 us | 10.00x |" in text
    assert "- cpus (nproc): 2" in text and "2026-01-05 00:00 UTC" in text


def test_bench_command_is_on_the_cli() -> None:
    args = build_parser().parse_args(["bench", "--quick", "--", "-k", "features"])
    assert args.quick and args.pytest_args == ["-k", "features"]
