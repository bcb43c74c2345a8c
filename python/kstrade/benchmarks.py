"""`python -m kstrade bench`: runs the benchmark suite (bench/, pytest-benchmark) of a source
checkout in a subprocess, prints one table (each kstrade figure beside its anchor, the ratio,
and the design document's targets met or not) and regenerates BENCHMARKS.md.

The suite's session starts its own Kafka broker (the root conftest.py) unless a bootstrap is
given. The figures come back through the JSON file bench/figures.py writes at session end.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Figure:
    group: str
    contender: str
    value: float
    unit: str
    higher_is_better: bool


@dataclass(frozen=True)
class Target:
    """A design-document target checked against one figure (kstrade's value in `group`), or,
    with `anchor`, against kstrade's ratio to that contender in the same group."""

    what: str
    group: str
    limit: float
    below: bool  # met when the value is below the limit (else at or above it)
    anchor: str | None = None


#: The design targets (shared/seed/kafka-architecture.md, product.md), each on the figure that
#: measures it. Units are the figure's.
TARGETS = [
    Target("end-to-end < 150 ms (p99, candle -> trades.orders.pending)",
           "end-to-end candle -> trades.orders.pending p99", 150.0, True),
    Target("end-to-end < 150 ms (p99, candle -> signals.final)", "end-to-end candle -> signals.final p99", 150.0, True),
    Target("end-to-end < 150 ms (p99, candle -> signals.filtered)",
           "end-to-end candle -> signals.filtered p99", 150.0, True),
    Target("product: p99 < 10 ms through the broker (candle -> signals.final)",
           "end-to-end candle -> signals.final p99", 10.0, True),
    Target("> 10k msg/s (bus produce, 100 B)", "produce 100 B (msg/s)", 10_000.0, False),
    Target("> 10k msg/s (bus consume, 100 B)", "consume 100 B (msg/s)", 10_000.0, False),
    Target("> 10k msg/s (whole pipeline, 1m candles held)",
           "sustained 1m candle rate (features, models, signals keep up)", 10_000.0, False),
    Target("feature engineering < 20 ms (per candle, in process)",
           "feature vector update per candle (1m + 5m/15m/1h)", 20_000.0, True),
    Target("feature engineering < 20 ms (p99, candle -> features.aggregated via broker)",
           "end-to-end candle -> features.aggregated p99", 20.0, True),
    Target("inference < 30 ms (transformer stage per vector, p99)",
           "transformer stage per feature vector p99", 30_000.0, True),
    Target("signal aggregation < 10 ms (stage per candle, median)",
           "signal aggregation per candle (median)", 10_000.0, True),
    # The market engine's issue (3): under 2 us per candle, >= 5x TA-Lib stream, >= 100x talipp.
    Target("feature vector < 2 us per candle (from Python)",
           "feature vector update per candle (1m + 5m/15m/1h)", 2.0, True),
    Target(">= 5x TA-Lib stream handles (same indicator set)",
           "feature vector update per candle (1m + 5m/15m/1h)", 5.0, False, "TA-Lib stream"),
    Target(">= 100x talipp (same indicator set)",
           "feature vector update per candle (1m + 5m/15m/1h)", 100.0, False, "talipp"),
    # The throughput issue (17): the default run's candles replayed through the whole pipeline.
    Target("replay >= 0.35x NautilusTrader (same candles, 7 days x 3 symbols)",
           "replay 1m candles, 7d x 3 symbols (candles/s)", 0.35, False, "NautilusTrader"),
    Target("replay >= 10,000 candles/s (7 days x 3 symbols, whole pipeline)",
           "replay 1m candles, 7d x 3 symbols (candles/s)", 10_000.0, False),
]  # fmt: skip


def load_figures(path: Path) -> list[Figure]:
    raw: list[dict[str, Any]] = json.loads(path.read_text())
    return [Figure(**f) for f in raw]


def best_by_group(figures: list[Figure]) -> dict[str, dict[str, Figure]]:
    """Per group, each contender's best figure (several rounds record several)."""
    out: dict[str, dict[str, Figure]] = {}
    for f in figures:
        group = out.setdefault(f.group, {})
        cur = group.get(f.contender)
        if cur is None or (f.value > cur.value if f.higher_is_better else f.value < cur.value):
            group[f.contender] = f
    return out


def _fmt(value: float, unit: str) -> str:
    if unit in ("us", "ms", "x") and value < 100:
        return f"{value:,.2f} {unit}"
    return f"{value:,.0f} {unit}"


def ratio(ours: Figure, anchor: Figure) -> float | None:
    if ours.value <= 0 or anchor.value <= 0:
        return None
    return ours.value / anchor.value if ours.higher_is_better else anchor.value / ours.value


def comparison_rows(figures: list[Figure]) -> list[list[str]]:
    rows = []
    for group, by in best_by_group(figures).items():
        ours = by.get("kstrade")
        anchors = [f for name, f in by.items() if name != "kstrade"]
        if ours is None:
            continue
        if not anchors:
            rows.append([group, _fmt(ours.value, ours.unit), "", "", ""])
        for a in anchors:
            r = ratio(ours, a)
            rows.append([group, _fmt(ours.value, ours.unit), a.contender, _fmt(a.value, a.unit),
                         "" if r is None else f"{r:.2f}x"])  # fmt: skip
    return rows


def target_rows(figures: list[Figure]) -> list[list[str]]:
    best = best_by_group(figures)
    rows = []
    for t in TARGETS:
        f = best.get(t.group, {}).get("kstrade")
        if f is None:
            rows.append([t.what, "not measured", ""])
            continue
        shown, value = _fmt(f.value, f.unit), f.value
        if t.anchor is not None:
            anchor = best[t.group].get(t.anchor)
            r = None if anchor is None else ratio(f, anchor)
            if r is None:
                rows.append([t.what, f"{t.anchor} not measured", ""])
                continue
            shown, value = f"{r:.2f}x", r
        met = value < t.limit if t.below else value >= t.limit
        rows.append([t.what, shown, "met" if met else "NOT met"])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


COMPARISON = ["figure", "kstrade", "anchor", "anchor's", "kstrade vs anchor"]
TARGET_HEADER = ["design target", "kstrade", ""]


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict[str, str]:
    cpu = ""
    for line in _run(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "cpus (nproc)": _run(["nproc"]).strip() or str(os.cpu_count()),
        "cpu": cpu or platform.processor() or "unknown",
        "memory": mem or "unknown",
        "os": platform.platform(),
        "python": platform.python_version(),
        "load average at the end (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


METHOD = """\
`python -m kstrade bench` runs `pytest bench` (pytest-benchmark) in one session on one machine,
against one local Kafka broker (KRaft, loopback) that the session starts unless a bootstrap is
given. Every comparison runs both sides in the same run, on the same data; each contender keeps
its best round. The market data is SYNTHETIC (seeded random walks); only speed is measured here,
correctness is in tests/.

- Feature update: `FeatureEngine.update` per 1m candle (aggregation into 5m/15m/1h, the
  indicator set on 4 timeframes, 90 normalized features) vs the same indicator set on TA-Lib
  stream handles and on talipp (higher bars aggregated for them outside the timing).
- Bus: produce and consume of 100-byte messages, the native bus vs confluent-kafka-python, same
  client settings (acks=all, idempotence, lz4), same broker, fresh topic each round.
- Codec: candle encode+decode, native vs fastavro vs orjson.
- Inference: ONNX model call with kstrade's session options vs onnxruntime's defaults; the
  transformer stage per feature vector (decode + window + run + encode).
- Signals: the signals stage per candle (decode + join + decide + encode).
- Replay: the default run's SYNTHETIC candles (7 days x 3 symbols) through `python -m kstrade
  run`'s whole pipeline (replay start to last output), NautilusTrader's `BacktestEngine.run()`
  and Backtrader's `cerebro.run()` with an RSI/MACD/EMA strategy per symbol, one after the other
  (bench/bench_replay.py; the two engines are the `bench` extra).
- End-to-end: every stage its own process and consumer group (`python -m kstrade service NAME`
  for features, inference.lstm, inference.transformer, signals, execution with the paper
  broker), 3 symbols x 4 timeframes (1m rolled up to 5m/15m/1h as `ingest replay` does), two
  days of minutes replayed first to warm indicators and model windows, then candles at a fixed
  rate with `origin_ns` = wall clock at produce; latency = time the measuring consumer reads a
  record minus its `origin_ns`. Tier bands lowered to A/B/C = 0.50/0.45/0.38
  (KSTRADE_SIGNALS__TIERS__*) so that orders flow with the shipped models.
- Sustained rate: the fixed rate is then doubled step by step (6 s each) until the feature
  stage's lag grows; the last rate held is reported. Memory: resident set of the five stage
  processes after the run, per symbol (mostly a fixed cost per process).
- Sample sizes: in 20 s at 20 instants/s every 1m candle ends in one signal (1,200, nearly all
  `signals.filtered`), but only a handful are final and fewer become orders (6 and 3 in the
  latest run), so their p99 is close to their max: `signals.filtered` is the robust
  end-to-end figure. The machine is shared: the load average below says how busy it was, and
  the end-to-end figures are mostly scheduling on 2 cores shared by 5 stage processes, the
  broker, the source and other work (in process, features take < 1 us and a model call
  < 1 ms).
"""


def render(figures: list[Figure], info: dict[str, str], when: datetime) -> str:
    parts = [
        "# Benchmarks",
        "",
        "Regenerated by `python -m kstrade bench` (do not edit by hand).",
        "",
        f"Date: {when.strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "## Method",
        "",
        METHOD,
        "## Latest numbers",
        "",
        markdown_table(COMPARISON, comparison_rows(figures)),
        "",
        "## Design targets",
        "",
        markdown_table(TARGET_HEADER, target_rows(figures)),
        "",
        "## CI gates",
        "",
        "`KSTRADE_BENCH_GATE=1 python -m pytest bench/bench_gates.py -q` gates on ratios measured in",
        "the same process (best of alternating rounds) and on the design's absolute targets: feature",
        "update >= 3x TA-Lib stream; consume + decode of Avro candles, native bus with batch decode",
        ">= 2x confluent-kafka-python with fastavro; the consume transport alone (100 B, no decode)",
        ">= 0.4x confluent-kafka-python, a regression guard (about half of what is measured here:",
        "0.75-1.0x); feature engineering < 20 ms, signal aggregation < 10 ms, inference < 30 ms",
        "(medians).",
        "",
        "The native consume transport is 0.75-1.0x confluent-kafka-python (the `consume 100 B` row),",
        "short of the issue's 2x; with decoding, the native path is well ahead (the `consume +",
        "decode` row) because the batch decode into columns beats fastavro per message. Per record,",
        "the binding copies key, value and headers once, from librdkafka's buffer into one buffer",
        "per poll and then into Python bytes (`Consumer::drain`); positions move once per partition",
        "run. What is left is librdkafka's per-message queue poll: rust-rdkafka's `BaseConsumer`",
        "takes events one at a time (each with its own clock reads and allocation), and",
        "`rd_kafka_consume_batch_queue` cannot be used beside it (with rebalance events on, that call",
        "unassigns on a rebalance instead of handing it over). A consumer of our own on librdkafka's",
        "batch call, with a rebalance callback, would close it.",
        "",
    ]
    return "\n".join(parts)


def run_suite(figures_path: Path, bootstrap: str | None, quick: bool, extra: list[str]) -> int:
    env = dict(os.environ, KSTRADE_BENCH_FIGURES=str(figures_path))
    if bootstrap:
        env["KSTRADE_TEST_BOOTSTRAP"] = bootstrap
    cmd = [sys.executable, "-m", "pytest", str(BENCH), "-q", "-s", "-p", "no:cacheprovider", "--rootdir", str(ROOT)]
    if quick:
        env.setdefault("KSTRADE_BENCH_MESSAGES", "20000")
        env.setdefault("KSTRADE_BENCH_E2E_SECONDS", "8")
        env.setdefault("KSTRADE_BENCH_E2E_RAMP", "50,100")
    return subprocess.run([*cmd, *extra], cwd=ROOT, env=env, check=False).returncode


def main(bootstrap: str | None, out: Path | None, quick: bool, extra: list[str],
         echo: Callable[[str], None] = print) -> int:  # fmt: skip
    if not (BENCH / "figures.py").exists():
        echo(f"error: no bench/ next to this package ({BENCH}): run from a source checkout")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "figures.json"
        rc = run_suite(path, bootstrap, quick, extra)
        if not path.exists():
            echo(f"error: the benchmark run wrote no figures (pytest exit {rc})")
            return rc or 1
        figures = load_figures(path)
    echo("")
    echo(text_table(COMPARISON, comparison_rows(figures)))
    echo("")
    echo(text_table(TARGET_HEADER, target_rows(figures)))
    target = out or ROOT / "BENCHMARKS.md"
    target.write_text(render(figures, machine(), datetime.now(UTC)))
    echo(f"\nwrote {target}" + ("" if rc == 0 else f" (pytest exit {rc}: some benchmarks failed)"))
    return rc
