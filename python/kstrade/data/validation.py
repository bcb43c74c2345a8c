"""The rules an imported candle file must keep, and the error that names the file, the row and the
rule of each row that breaks one.

Rows are numbered as a user sees them in the file, from 1: a CSV's line number (the header, when
there is one, is row 1), a JSON array's entry, a Parquet or feather table's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl

from kstrade.data.store import iso

PRICES = ("open", "high", "low", "close")
VALUES = (*PRICES, "volume")


class Rule(StrEnum):
    """A rule of a candle file, as the error names it."""

    LAYOUT = "not a candle row of this format"
    UNREADABLE = "unreadable value"
    MISSING = "missing or NaN value"
    NOT_POSITIVE = "price not positive"
    HIGH = "high below max(open, close)"
    LOW = "low above min(open, close)"
    NEGATIVE_VOLUME = "negative volume"
    OUT_OF_ORDER = "time not increasing"
    DUPLICATE = "duplicate timestamp"
    OFF_GRID = "time off the interval's grid"


@dataclass(frozen=True, order=True)
class Problem:
    row: int
    rule: Rule
    detail: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.rule}: {self.detail}"


class CandleFileError(ValueError):
    """A candle file that cannot be imported: `problems` are its bad rows (empty when the file as
    a whole is wrong, e.g. of no known format)."""

    SHOWN = 20

    def __init__(self, path: Path | str, problems: Sequence[Problem] = (), message: str | None = None) -> None:
        self.path = Path(path)
        self.problems = sorted(problems)
        if message is None:
            if len(self.problems) == 1:
                message = str(self.problems[0])
            else:
                lines = [str(p) for p in self.problems[: self.SHOWN]]
                more = len(self.problems) - self.SHOWN
                if more > 0:
                    lines.append(f"... and {more} more")
                message = f"{len(self.problems)} bad rows:\n  " + "\n  ".join(lines)
        super().__init__(f"{self.path}: {message}")


def check_rows(frame: pl.DataFrame, skip: set[int]) -> list[Problem]:
    """The problems of each row on its own, and of each row against the symbol's earlier rows.

    `frame`: `row`, `open_time_ms` (Int64), `symbol`, the `VALUES` (Float64), in file order, as
    read (nulls where a value was missing). Rows in `skip` were found bad already (unreadable)
    and are left out. Vectorised: only the bad rows are looked at one by one."""
    frame = frame.filter(~pl.col("row").is_in(sorted(skip)))
    incomplete = pl.any_horizontal(
        pl.col("open_time_ms").is_null(), *(pl.col(c).is_null() | pl.col(c).is_nan() for c in VALUES)
    )
    broken = (
        pl.any_horizontal(*(pl.col(c) <= 0 for c in PRICES))
        | (pl.col("high") < pl.max_horizontal("open", "close"))
        | (pl.col("low") > pl.min_horizontal("open", "close"))
        | (pl.col("volume") < 0)
    )
    flagged = frame.with_columns(incomplete.alias("incomplete"), broken.fill_null(False).alias("broken"))
    problems: list[Problem] = []
    for r in flagged.filter(pl.col("incomplete") | pl.col("broken")).iter_rows(named=True):
        problems += _row_problems(r)
    ordered = flagged.filter(~pl.col("incomplete") & ~pl.col("broken")).with_columns(
        pl.col("row").first().over("symbol", "open_time_ms").alias("first_row"),
        pl.col("open_time_ms").cum_max().shift(1).over("symbol").alias("latest"),
    )
    duplicates = ordered.filter(pl.col("row") != pl.col("first_row"))
    for row, t, first_row in duplicates.select("row", "open_time_ms", "first_row").iter_rows():
        problems.append(Problem(row, Rule.DUPLICATE, f"{_iso(t)} is also row {first_row}"))
    late = ordered.filter((pl.col("row") == pl.col("first_row")) & (pl.col("open_time_ms") < pl.col("latest")))
    rows_of = ordered.select("symbol", pl.col("open_time_ms").alias("latest"), pl.col("row").alias("latest_row"))
    late = late.join(rows_of.unique(["symbol", "latest"], keep="first"), on=["symbol", "latest"], how="left")
    for row, t, latest, latest_row in late.select("row", "open_time_ms", "latest", "latest_row").iter_rows():
        problems.append(Problem(row, Rule.OUT_OF_ORDER, f"{_iso(t)} comes after {_iso(latest)} (row {latest_row})"))
    return problems


def _row_problems(r: dict[str, Any]) -> list[Problem]:
    row = int(r["row"])
    if r["open_time_ms"] is None:
        return [Problem(row, Rule.MISSING, "the time is missing")]
    for name in VALUES:
        v = r[name]
        if v is None:
            return [Problem(row, Rule.MISSING, f"{name} is missing")]
        if v != v:
            return [Problem(row, Rule.MISSING, f"{name} is NaN")]
    values: dict[str, float] = {name: float(r[name]) for name in VALUES}
    out = []
    not_positive = [f"{name} is {values[name]:.12g}" for name in PRICES if values[name] <= 0]
    if not_positive:
        out.append(Problem(row, Rule.NOT_POSITIVE, ", ".join(not_positive)))
    o, h, low, c = (values[n] for n in PRICES)
    if h < max(o, c):
        out.append(Problem(row, Rule.HIGH, f"high {h:.12g}, open {o:.12g}, close {c:.12g}"))
    if low > min(o, c):
        out.append(Problem(row, Rule.LOW, f"low {low:.12g}, open {o:.12g}, close {c:.12g}"))
    if values["volume"] < 0:
        out.append(Problem(row, Rule.NEGATIVE_VOLUME, f"volume is {values['volume']:.12g}"))
    return out


def _iso(ms: int) -> str:
    return iso(ms)
