"""Benchmark figures: a results table printed at the end of the run, with ratios.

Each benchmark records `(group, contender, value, unit)`; the summary prints every group's
figures side by side and kstrade's ratio to the anchor (the tool a user would otherwise pick).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass

import pytest


@dataclass
class Figure:
    group: str
    contender: str
    value: float
    unit: str
    higher_is_better: bool


FIGURES: list[Figure] = []


def record(group: str, contender: str, value: float, unit: str, higher_is_better: bool = True) -> None:
    FIGURES.append(Figure(group, contender, value, unit, higher_is_better))


def dump(path: str | None = None) -> None:
    """Writes every figure as JSON to `path` (default $KSTRADE_BENCH_FIGURES; nothing if unset):
    `python -m kstrade bench` reads it to print its table and regenerate BENCHMARKS.md."""
    path = path or os.environ.get("KSTRADE_BENCH_FIGURES")
    if path:
        with open(path, "w") as f:
            json.dump([asdict(fig) for fig in FIGURES], f, indent=1)


def print_summary(terminalreporter: pytest.TerminalReporter) -> None:
    dump()
    if not FIGURES:
        return
    by_group: dict[str, list[Figure]] = defaultdict(list)
    for f in FIGURES:
        by_group[f.group].append(f)
    tr = terminalreporter
    tr.section("kstrade vs the anchors (same run, same broker, same data)")
    for group, figures in by_group.items():
        best: dict[str, Figure] = {}
        for f in figures:  # several rounds: keep each contender's best
            cur = best.get(f.contender)
            better = cur is None or (f.value > cur.value if f.higher_is_better else f.value < cur.value)
            if better:
                best[f.contender] = f
        ours = best.get("kstrade")
        tr.write_line(f"{group}:")
        for name, f in best.items():
            ratio = ""
            if ours is not None and name != "kstrade" and f.value > 0 and ours.value > 0:
                r = ours.value / f.value if f.higher_is_better else f.value / ours.value
                ratio = f"   kstrade is {r:.2f}x"
            tr.write_line(f"  {name:<24} {f.value:>14,.1f} {f.unit}{ratio}")
