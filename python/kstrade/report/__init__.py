"""The run directory: what `python -m kstrade run` and `backtest` leave behind.

    report.html         summary table first, then equity, drawdown, tier hit rate vs confidence,
                        per-stage processing time
    signals.parquet     the `signals.final` records
    orders.parquet      `trades.orders.pending` and `trades.orders.confirmed`
    executions.parquet  `trades.executions`
    pnl.parquet         `trades.pnl` (realized on close)
    summary.json        counts per topic, processing-time percentiles per stage, P&L, guardrail events

The Parquet files are sorted and written from the bus's records only, so two backtests of the
same input give byte-identical files; summary.json and report.html also hold wall-clock
timings, which differ run to run.
"""

from __future__ import annotations

import html
import json
import math
import types
import typing
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from kstrade.bus import Bus, Record
from kstrade.bus.topics import EXECUTIONS, METRICS_ALERTS, ORDERS_CONFIRMED, ORDERS_PENDING, PNL, signals
from kstrade.config import GuardrailSettings
from kstrade.execution.guardrails import DailyLossGuard, MaxLossGuard
from kstrade.report.calibration import calibrated_signals, reliability_of, wilson
from kstrade.report.recorder import RunRecorder, reject_reason
from kstrade.report.statistics import equity_frame, statistics, trades_frame
from kstrade.report.svg import bar_chart, histogram, line_chart
from kstrade.schemas import Alert, Codec, Execution, Message, Order, PnlEvent, Signal
from kstrade.stage import PipelineStats


@dataclass
class RunOutputs:
    signals: pl.DataFrame
    orders: pl.DataFrame
    executions: pl.DataFrame
    pnl: pl.DataFrame
    alerts: pl.DataFrame
    topic_counts: dict[str, int] = field(default_factory=dict)
    #: Why candidates did not become final signals: reason code -> count (signals.filtered).
    rejections: dict[str, int] = field(default_factory=dict)


def _records(bus: Bus, topic: str, group: str) -> list[Record]:
    """Every record `topic` holds now (none if it does not exist), read from the start."""
    admin = bus.admin()
    if topic not in admin.list_topics(10.0):
        return []
    total = sum(admin.end_offsets(topic, 10.0))
    if total == 0:
        return []
    consumer = bus.consumer(group, {"auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    records: list[Record] = []
    for _ in range(10_000):
        records += consumer.poll(5000, 0.5)
        if len(records) >= total:
            break
    consumer.close()
    return records


def _rows(bus: Bus, topic: str, model: type[Message], recorder: RunRecorder | None) -> list[dict[str, Any]]:
    """Every record of `topic` (as the recorder read it, else read now), decoded, as plain rows
    (enums as values, ids as text)."""
    codec = Codec(model)
    rows: list[dict[str, Any]] = []
    records = recorder.records[topic] if recorder is not None else _records(bus, topic, "kstrade.report")
    for record in records:
        message = codec.decode_record(record)
        row = message.model_dump(mode="json")
        row["timestamp"] = message.timestamp
        row["_partition"], row["_offset"] = record.partition, record.offset
        rows.append(row)
    return rows


def _dtype(annotation: Any) -> Any:
    """The column type a field of `model` gets in a run's Parquet (as `_frame` writes rows)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = args[0]
    origin = typing.get_origin(annotation) or annotation
    if origin is bool:
        return pl.Boolean
    if origin is int:
        return pl.Int64
    if origin is float:
        return pl.Float64
    return pl.String  # text, enums, ids, times but `timestamp` (JSON mode), maps or lists (as JSON)


def _empty(model: type[Message]) -> pl.DataFrame:
    """No records: still the columns a file with records has, so a reader's code works on both."""
    return pl.DataFrame(
        schema={
            name: pl.Datetime("us", "UTC") if name == "timestamp" else _dtype(f.annotation)
            for name, f in model.model_fields.items()
        }
    )


def _frame(rows: list[dict[str, Any]], sort: Sequence[str], model: type[Message]) -> pl.DataFrame:
    if not rows:
        return _empty(model)
    flat = []
    for row in rows:
        flat.append({k: (json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v) for k, v in row.items()})
    frame = pl.DataFrame(flat, infer_schema_length=None)
    keys = [c for c in sort if c in frame.columns] + ["_partition", "_offset"]
    return frame.sort(keys).drop(["_partition", "_offset"])


def _rejections(bus: Bus) -> Counter[str]:
    return Counter(reject_reason(r) for r in _records(bus, signals("filtered"), "kstrade.report.rejections"))


def _by_count(counts: Mapping[str, int]) -> dict[str, int]:
    """Most frequent first; a tie in code order (whatever order the records were read in)."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def collect(bus: Bus, recorder: RunRecorder | None = None) -> RunOutputs:
    """The run's outputs: from what `recorder` read while it ran, else read from the bus now."""
    admin = bus.admin()
    counts = {t: sum(admin.end_offsets(t, 10.0)) for t in admin.list_topics(10.0) if not t.startswith("__")}
    orders = _rows(bus, ORDERS_PENDING, Order, recorder) + _rows(bus, ORDERS_CONFIRMED, Order, recorder)
    rejections = _by_count(_rejections(bus) if recorder is None else recorder.rejections)
    return RunOutputs(
        signals=_frame(_rows(bus, signals("final"), Signal, recorder), ["timestamp", "symbol", "signal_id"], Signal),
        orders=_frame(orders, ["timestamp", "symbol", "order_id", "status"], Order),
        executions=_frame(
            _rows(bus, EXECUTIONS, Execution, recorder), ["timestamp", "symbol", "execution_id"], Execution
        ),
        pnl=_frame(_rows(bus, PNL, PnlEvent, recorder), ["timestamp", "symbol", "order_id"], PnlEvent),
        alerts=_frame(_rows(bus, METRICS_ALERTS, Alert, recorder), ["timestamp"], Alert),
        topic_counts={k: v for k, v in sorted(counts.items()) if v},
        rejections=rejections,
    )


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)]

    return {"p50_us": q(0.50), "p99_us": q(0.99), "max_us": ordered[-1], "samples": float(len(ordered))}


def _equity(pnl: pl.DataFrame) -> list[float]:
    return [] if pnl.is_empty() or "balance" not in pnl.columns else pnl["balance"].to_list()


def _drawdown(equity: Sequence[float]) -> list[float]:
    peak, out = -math.inf, []
    for e in equity:
        peak = max(peak, e)
        out.append((e / peak - 1.0) if peak > 0 else 0.0)
    return out


def headroom(pnl: pl.DataFrame, rules: GuardrailSettings) -> dict[str, list[float]]:
    """After each closed trade: how far the balance stands above the FTMO daily-loss floor
    (balance at Prague midnight - the daily limit) and the maximum-loss floor, in % of the
    initial balance, as the execution stage's guards compute them (the same classes). Closed
    balances only: the guard also watches floating P&L, which the run's files do not keep."""
    out: dict[str, list[float]] = {"daily_loss_pct": [], "max_loss_pct": []}
    if pnl.is_empty() or "balance" not in pnl.columns:
        return out
    times = [int(at.timestamp() * 1e9) for at in pnl["timestamp"].to_list()]
    daily = DailyLossGuard(rules, times[0])  # the first trade's day starts from the initial balance
    total = MaxLossGuard(rules)
    balance = rules.initial_balance
    for now_ns, after in zip(times, pnl["balance"].to_list(), strict=True):
        if daily.roll(now_ns, balance):  # the balance at midnight: before this trade
            total.end_of_day(balance)
        balance = after
        out["daily_loss_pct"].append(100 * (balance - daily.floor) / rules.initial_balance)
        out["max_loss_pct"].append(100 * (balance - total.floor) / rules.initial_balance)
    return out


def _tier_table(outputs: RunOutputs) -> list[dict[str, Any]]:
    """Per tier: signals, mean predicted confidence, trades closed and their realized hit rate."""
    s, p = outputs.signals, outputs.pnl
    if s.is_empty() or "tier" not in s.columns:
        return []
    table = []
    won: dict[str, bool] = {}
    if not p.is_empty():
        for sid, realized in zip(p["signal_id"].to_list(), p["realized_pnl"].to_list(), strict=True):
            won[sid] = realized > 0
    for tier in ("A", "B", "C", "D"):
        rows = s.filter(pl.col("tier") == tier)
        if rows.is_empty():
            continue
        closed = [won[sid] for sid in rows["signal_id"].to_list() if sid in won]
        table.append(
            {
                "tier": tier,
                "signals": rows.height,
                "mean_confidence": sum(rows["confidence"].to_list()) / rows.height,
                "closed": len(closed),
                "hit_rate": (sum(closed) / len(closed)) if closed else None,
                "hit_rate_interval": list(wilson(sum(closed), len(closed))) if closed else None,
            }
        )
    return table


def summarize(
    outputs: RunOutputs,
    stats: PipelineStats,
    meta: dict[str, Any],
    calibration: dict[str, Any] | None = None,
    figures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's summary.json. `figures` (`kstrade.report.statistics.statistics`) become its
    `statistics`, and its max_drawdown theirs (measured from the initial balance)."""
    equity = _equity(outputs.pnl)
    realized = float(sum(outputs.pnl["realized_pnl"].to_list())) if not outputs.pnl.is_empty() else 0.0
    wins = int((outputs.pnl["realized_pnl"] > 0).sum()) if not outputs.pnl.is_empty() else 0
    guardrails = (
        outputs.alerts.filter(pl.col("code").str.contains("GUARDRAIL|CIRCUIT|HALT")).height
        if not outputs.alerts.is_empty() and "code" in outputs.alerts.columns
        else 0
    )
    return {
        **meta,
        "topics": outputs.topic_counts,
        "stages": {
            name: {
                "records": stats.polled.get(name, 0),
                "produced": stats.produced.get(name, 0),
                "dead_lettered": stats.dead_lettered.get(name, 0),
                "processing": _percentiles(stats.processing_us.get(name, [])),
            }
            for name in stats.polled
        },
        "signals_final": outputs.signals.height,
        "signals_rejected": outputs.rejections,
        "orders": outputs.orders.height,
        "executions": outputs.executions.height,
        "trades_closed": outputs.pnl.height,
        "wins": wins,
        "realized_pnl": realized,
        "final_balance": equity[-1] if equity else None,
        "max_drawdown": figures["max_drawdown"] if figures else (min(_drawdown(equity)) if equity else 0.0),
        "tiers": _tier_table(outputs),
        "guardrail_events": guardrails,
        "calibration": calibration,
        "statistics": figures,
    }


def _ece_text(calibration: dict[str, Any] | None) -> str:
    if not calibration or not calibration["signals"]:
        return "no decided candle with a known outcome"
    text = f"{calibration['ece_vs_outcomes']:.3f} against outcomes"
    if calibration["ece_vs_truth"] is not None:
        text += f", {calibration['ece_vs_truth']:.3f} against the true probabilities"
    return text + f" ({calibration['signals']:,} calibrated signals)"


def _reliability_chart(calibration: dict[str, Any] | None) -> str:
    """Per confidence bin: the mean stated confidence, how often it came true, and (where the
    data knows it) the true probability: on a calibrated model the three bars are level."""
    bins = calibration["bins"] if calibration else []
    series: dict[str, Sequence[float]] = {
        "mean confidence": [b["mean_confidence"] for b in bins],
        "came true": [b["hit_rate"] for b in bins],
    }
    if bins and all(b["true_probability"] is not None for b in bins):
        series["true probability"] = [b["true_probability"] for b in bins]
    return bar_chart(
        "Reliability: calibrated confidence (bin, signals) vs how often the 5-minute move came true",
        [f"{b['bin']} ({b['signals']:,})" for b in bins],
        series,
        y_max=1.0,
    )


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _statistics_rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    """`kstrade.report.statistics.statistics` as the report's rows."""
    rows = [
        ("total return", _number(f["total_return"], ".2%")),
        ("CAGR", _number(f["cagr"], ".2%") if f["cagr"] is None or abs(f["cagr"]) < 1e6 else f"{f['cagr']:.3g}"),
        ("Sharpe / Sortino (daily, x sqrt 365)", f"{_number(f['sharpe'], '.2f')} / {_number(f['sortino'], '.2f')}"),
        ("Calmar", _number(f["calmar"], ".3g")),
        ("max drawdown / longest", f"{f['max_drawdown']:.2%} / {f['max_drawdown_days']:.2f} days"),
        ("profit factor", _number(f["profit_factor"], ".2f")),
        ("expectancy per trade", _number(f["expectancy"], ",.2f")),
        ("win rate", _number(f["win_rate"], ".1%")),
        ("exposure (time with a position open)", f"{f['exposure']:.1%}"),
        ("trades per day", _number(f["trades_per_day"], ".1f")),
    ]
    for kind in ("by_symbol", "by_tier"):
        for name, g in f[kind].items():
            rows.append((
                f"{'symbol' if kind == 'by_symbol' else 'tier'} {name}",
                f"{g['trades']} trades, P&L {g['realized_pnl']:,.2f}, win rate {_number(g['win_rate'], '.1%')}, "
                f"profit factor {_number(g['profit_factor'], '.2f')}",
            ))  # fmt: skip
    return rows


def render_html(
    summary: dict[str, Any], outputs: RunOutputs, stats: PipelineStats, room: dict[str, list[float]] | None = None
) -> str:
    equity = _equity(outputs.pnl)
    figures = summary.get("statistics")
    if figures and equity:  # from the initial balance: a first losing trade is a drawdown too
        equity = [figures["initial_balance"], *equity]
    money = "n/a" if summary["final_balance"] is None else f"{summary['final_balance']:,.2f}"
    closed = summary["trades_closed"]
    rows = [
        ("data", str(summary.get("data", ""))),
        ("symbols", ", ".join(summary.get("symbols", []))),
        ("period", f"{summary.get('start', '')} to {summary.get('end', '')}"),
        ("candles replayed", f"{summary.get('candles', 0):,}"),
        (
            "warm-up",
            f"{summary['warmup_candles']:,} candles from {summary['warmup_start']} into the indicators and the "
            "models' windows (nothing traded)"
            if summary.get("warmup_candles")
            else "none: the period's first ~34 hours warm the indicators",
        ),
        ("final signals", f"{summary['signals_final']:,}"),
        (
            "candidates rejected",
            ", ".join(f"{code} {n:,}" for code, n in summary["signals_rejected"].items()) or "none",
        ),
        ("orders / executions", f"{summary['orders']:,} / {summary['executions']:,}"),
        (
            "trades closed / won",
            f"{closed:,} / {summary['wins']:,}" + (f" ({summary['wins'] / closed:.1%})" if closed else ""),
        ),
        ("realized P&L", f"{summary['realized_pnl']:,.2f}"),
        ("final balance", money),
        ("max drawdown", f"{summary['max_drawdown']:.2%}"),
        ("guardrail events", str(summary["guardrail_events"])),
        ("calibration (ECE of the stated confidence)", _ece_text(summary.get("calibration"))),
        ("wall time", f"{summary.get('wall_seconds', 0):.1f} s"),
    ]
    for name, st in summary["stages"].items():
        proc = st["processing"]
        if proc:
            rows.append((f"{name}: p50 / p99 per record", f"{proc['p50_us']:,.0f} / {proc['p99_us']:,.0f} us"))
    tiers = summary["tiers"]
    statistics_table = f"<h2>Statistics</h2>{_table(_statistics_rows(figures))}" if figures else ""
    charts = [
        line_chart("Equity (balance after each closed trade)", equity, "trades"),
        line_chart("Drawdown from peak", _drawdown(equity), "trades", color="#f85149"),
        line_chart(
            "FTMO daily-loss headroom: balance above today's floor, % of the initial balance",
            (room or {}).get("daily_loss_pct", []),
            "trades",
            color="#d29922",
        ),
        line_chart(
            "FTMO maximum-loss headroom: balance above the floor, % of the initial balance",
            (room or {}).get("max_loss_pct", []),
            "trades",
            color="#d29922",
        ),
        bar_chart(
            "Tier: predicted confidence vs realized hit rate of its closed trades (count)",
            [f"{t['tier']} ({t['closed']})" for t in tiers],
            {
                "mean confidence": [t["mean_confidence"] for t in tiers],
                "hit rate": [t["hit_rate"] or 0.0 for t in tiers],
            },
            y_max=1.0,
        ),
    ]
    charts.append(_reliability_chart(summary.get("calibration")))
    for name, samples in stats.processing_us.items():
        # The tail beyond p99 (GC pauses, first calls) would squash every bar into the first bin.
        cut = sorted(samples)[max(0, math.ceil(0.99 * len(samples)) - 1)] if samples else 0.0
        shown = [v for v in samples if v <= cut]
        charts.append(histogram(f"{name}: processing time per record (up to p99)", shown, x_label="microseconds"))
    data = str(summary.get("data", ""))
    warning = ""
    if "SYNTHETIC" in data.upper():
        warning = (
            "<p class='warn'>The input is SYNTHETIC data from a seeded generator, not market data: these results "
            "say nothing about real markets.</p>"
        )
    if data.startswith("REAL"):
        warning = (
            f"<p class='warn'>{html.escape(data)}. One period of one market: what a backtest finds here is a "
            "measurement, with its noise, not a promise about the next period.</p>"
        )
    if "planted_edge" in data:
        warning = (
            "<p class='warn'>The input is SYNTHETIC data from a market with a planted edge (kstrade.ingest.planted), "
            "put there on purpose so the pipeline has something to find: these profits say nothing about real "
            "markets, which are much harder.</p>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>kstrade run report</title><style>"
        "body{font-family:sans-serif;max-width:720px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}"
        "th{background:#f6f8fa;font-weight:normal}.warn{color:#9a6700;font-weight:bold}"
        "</style></head><body><h1>kstrade run report</h1>"
        f"{warning}{_table(rows)}{statistics_table}<h2>Charts</h2>{''.join(charts)}</body></html>"
    )


def write_run_directory(
    out: Path,
    bus: Bus,
    stats: PipelineStats,
    meta: dict[str, Any],
    candles: pl.DataFrame | None = None,
    truth: pl.DataFrame | None = None,
    rules: GuardrailSettings | None = None,
    period: tuple[datetime, datetime] | None = None,
    recorder: RunRecorder | None = None,
) -> dict[str, Any]:
    """Collect the run's outputs (from what `recorder` read while the run went, else from the
    bus) and write the run directory. Returns the summary.
    `candles` (symbol, open_time_ms, close) give the outcomes the calibration is judged by,
    `truth` (symbol, open_time_ms, p_down, p_up) the true probabilities where they are known;
    with the guardrail `rules` (the initial balance) and the `period` [start, end) replayed, the
    trades, the equity curve and their statistics (`kstrade.report.statistics`) too."""
    out.mkdir(parents=True, exist_ok=True)
    if recorder is not None:
        recorder.read()  # the last chunk's
    outputs = collect(bus, recorder)
    calibration = None
    if candles is not None:
        stated = (
            recorder.calibrated()
            if recorder is not None
            else calibrated_signals(_records(bus, signals("calibrated"), "kstrade.report.calibration"))
        )
        calibration = reliability_of(stated, candles, truth)
    outputs.signals.write_parquet(out / "signals.parquet")
    outputs.orders.write_parquet(out / "orders.parquet")
    outputs.executions.write_parquet(out / "executions.parquet")
    outputs.pnl.write_parquet(out / "pnl.parquet")
    figures = None
    if rules is not None and period is not None:
        trades = trades_frame(outputs.pnl, outputs.executions, outputs.orders, outputs.signals)
        trades.write_parquet(out / "trades.parquet")
        equity_frame(trades, rules.initial_balance, period[0]).write_parquet(out / "equity.parquet")
        figures = statistics(trades, rules.initial_balance, *period)
    summary = summarize(outputs, stats, meta, calibration, figures)
    room = headroom(outputs.pnl, rules) if rules is not None else None
    if room is not None:
        summary["headroom"] = {
            "daily_loss_limit_pct": rules.max_daily_loss_pct if rules else None,
            "max_loss_limit_pct": rules.max_loss_pct if rules else None,
            "lowest_daily_loss_headroom_pct": min(room["daily_loss_pct"], default=None),
            "lowest_max_loss_headroom_pct": min(room["max_loss_pct"], default=None),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "report.html").write_text(render_html(summary, outputs, stats, room))
    return summary
