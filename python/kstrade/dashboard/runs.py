"""Finished run directories (what `python -m kstrade run` and `backtest` write: summary.json and
the Parquet files, `kstrade.report`) as the dashboard's run pages show them: the same figures as
report.html, from the same code. The statistics are summary.json's (`kstrade.report.statistics`
wrote them); the trades and the equity curve are trades.parquet and equity.parquet, or, in a run
directory from before they were written, `trades_frame` and `equity_frame` over the other files;
the FTMO headroom is `kstrade.report.headroom`. Pure logic: no web framework.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from kstrade.config import GuardrailSettings
from kstrade.report import headroom
from kstrade.report.statistics import daily_returns, equity_frame, trades_frame

from . import api

#: A run directory's name: one path segment, no hidden or parent directory.
RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
#: Run pages read and kept at once (each a few hundred kB; re-read when summary.json changes).
RUNS_CACHED = 8
#: The runs listed, newest first.
RUNS_LISTED = 500


class RunNotFound(LookupError):
    """No such run directory (or not one: it has no summary.json); the message says which."""


def _seconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def _iso(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _read(path: Path) -> pl.DataFrame | None:
    return pl.read_parquet(path) if path.is_file() else None


class RunDirectories:
    """The run directories directly under `root`, each one with a summary.json."""

    def __init__(self, root: Path, rules: GuardrailSettings) -> None:
        self.root = root
        self.rules = rules
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, api.RunDetail]] = OrderedDict()

    def _directory(self, name: str) -> Path:
        if not RUN_NAME.match(name):
            raise RunNotFound(f"{name!r} is not a run directory's name (letters, digits, '.', '_', '-')")
        path = self.root / name
        if not (path / "summary.json").is_file():
            raise RunNotFound(f"no run directory {name!r} under {self.root} (one with a summary.json)")
        return path

    def listing(self) -> api.Runs:
        found = []
        if self.root.is_dir():
            for path in self.root.iterdir():
                summary = path / "summary.json"
                if RUN_NAME.match(path.name) and summary.is_file():
                    found.append((summary.stat().st_mtime, path))
        runs = []
        for mtime, path in sorted(found, key=lambda f: (-f[0], f[1].name))[:RUNS_LISTED]:
            try:
                summary = json.loads((path / "summary.json").read_text())
            except (OSError, ValueError) as exc:
                runs.append(api.RunRow(name=path.name, written=_written(mtime), error=f"summary.json: {exc}"))
                continue
            figures = summary.get("statistics") or {}
            runs.append(api.RunRow(
                name=path.name, written=_written(mtime), data=str(summary.get("data", "")),
                symbols=list(summary.get("symbols", [])), start=summary.get("start"), end=summary.get("end"),
                trades_closed=summary.get("trades_closed"), final_balance=summary.get("final_balance"),
                total_return=figures.get("total_return"), max_drawdown=summary.get("max_drawdown"),
                report=(path / "report.html").is_file(),
            ))  # fmt: skip
        return api.Runs(root=str(self.root), runs=runs)

    def detail(self, name: str) -> api.RunDetail:
        """The run page's data, read once per summary.json write."""
        path = self._directory(name)
        mtime = (path / "summary.json").stat().st_mtime
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == mtime:
                self._cache.move_to_end(name)
                return cached[1]
        detail = self._load(path)
        with self._lock:
            self._cache[name] = (mtime, detail)
            while len(self._cache) > RUNS_CACHED:
                self._cache.popitem(last=False)
        return detail

    def report(self, name: str) -> Path:
        path = self._directory(name) / "report.html"
        if not path.is_file():
            raise RunNotFound(f"run {name!r} has no report.html")
        return path

    def _rules(self, summary: dict[str, Any]) -> GuardrailSettings:
        """The run's FTMO rules: its initial balance and limits from summary.json, the rest
        (preset, max-loss mode) from this dashboard's configuration."""
        figures = summary.get("statistics") or {}
        room = summary.get("headroom") or {}
        update: dict[str, Any] = {}
        if figures.get("initial_balance") is not None:
            update["initial_balance"] = float(figures["initial_balance"])
        if room.get("daily_loss_limit_pct") is not None:
            update["max_daily_loss_pct"] = float(room["daily_loss_limit_pct"])
        if room.get("max_loss_limit_pct") is not None:
            update["max_loss_pct"] = float(room["max_loss_limit_pct"])
        return self.rules.model_copy(update=update)

    def _load(self, path: Path) -> api.RunDetail:
        try:
            summary: dict[str, Any] = json.loads((path / "summary.json").read_text())
        except (OSError, ValueError) as exc:
            raise RunNotFound(f"run {path.name!r}: summary.json does not read ({exc})") from exc
        rules = self._rules(summary)
        start, end = _iso(summary.get("start")), _iso(summary.get("end"))
        pnl = _read(path / "pnl.parquet")
        trades = _read(path / "trades.parquet")
        if trades is None and pnl is not None:
            parts = [_read(path / f"{n}.parquet") for n in ("executions", "orders", "signals")]
            trades = trades_frame(pnl, *(p if p is not None else pl.DataFrame() for p in parts))
        equity = _read(path / "equity.parquet")
        if equity is None and trades is not None and start is not None:
            equity = equity_frame(trades, rules.initial_balance, start)
        curve: list[api.RunEquityPoint] = []
        if equity is not None and not equity.is_empty():
            peak = equity["balance"].cum_max()
            frame = equity.with_columns((100 * (pl.col("balance") / peak - 1)).alias("drawdown_pct"))
            curve = [
                api.RunEquityPoint(time=int(t.timestamp()), balance=b, drawdown_pct=d)
                for t, b, d in frame.select("timestamp", "balance", "drawdown_pct").iter_rows()
            ]
        returns: list[api.TimeValue] = []
        days = (summary.get("statistics") or {}).get("period_days")
        finish = start + timedelta(days=days) if start is not None and days else (end and end + timedelta(minutes=1))
        if equity is not None and not equity.is_empty() and start is not None and finish is not None and finish > start:
            returns = [
                api.TimeValue(time=int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()), value=100 * r)
                for d, r in daily_returns(equity, start, finish).select("date", "return").iter_rows()
            ]
        room = headroom(pnl, rules) if pnl is not None else {"daily_loss_pct": [], "max_loss_pct": []}
        closes = [int(t.timestamp()) for t in pnl["timestamp"].to_list()] if pnl is not None else []
        rows = []
        if trades is not None:
            for t in trades.iter_rows(named=True):
                rows.append(api.RunTrade(**{
                    **t, "entry_time": _seconds(t["entry_time"]), "exit_time": _seconds(t["exit_time"]),
                }))  # fmt: skip
        return api.RunDetail(
            name=path.name, summary=summary, equity=curve, daily_returns=returns,
            headroom=[api.HeadroomPoint(time=t, daily_loss_pct=d, max_loss_pct=m)
                      for t, d, m in zip(closes, room["daily_loss_pct"], room["max_loss_pct"], strict=True)],
            trades=rows, report=(path / "report.html").is_file(),
        )  # fmt: skip


def _written(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).isoformat()
