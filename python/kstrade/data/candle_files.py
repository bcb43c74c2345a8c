"""`python -m kstrade data import`: candles from the files traders keep, detected, validated and
turned into the package's candle frame (`kstrade.ingest.replay.COLUMNS`).

The layouts read (the format is found from the file's content, not its name):

- `binance-klines` (data.binance.vision kline CSV): 12 comma-separated columns, no header (the
  USD-M futures files have one: `open_time,open,high,low,close,volume,close_time,quote_volume,
  count,taker_buy_volume,taker_buy_quote_volume,ignore`, also read): open time, open, high,
  low, close, volume, close time, quote asset volume, number of trades, taker buy base volume,
  taker buy quote volume, ignore. Open time in ms since the epoch; the spot files from 2025 on
  use microseconds: a value of 10**14 or more is read as microseconds, row by row. Only the
  first six columns are used.
- `mt5-bars` (MetaTrader 5 "Export bars"): a header `<DATE> <TIME> <OPEN> <HIGH> <LOW>
  <CLOSE> <TICKVOL> <VOL> <SPREAD>`, tab-separated (a comma or a semicolon also read), date
  `2026.01.05`, time `00:00:00` or `00:00` (no `<TIME>` column: midnight, as daily bars are
  exported). UTF-8, or UTF-16 with a byte-order mark. Times are the trade server's wall clock,
  not UTC: pass `timezone` (an IANA name) unless the server runs on UTC. Volume: `<VOL>` where
  any row has a non-zero one (exchange-traded symbols), else `<TICKVOL>` (forex and CFDs).
- `dukascopy` (Dukascopy / JForex CSV export): header `Gmt time,Open,High,Low,Close,Volume`,
  time `05.01.2026 00:00:00.000` (dd.mm.yyyy, UTC); `Local time` with a ` GMT+0200` suffix on
  each time is read with that offset; a header `Time` with the same time layout (the file
  bundled as `eurusd_1h_ask.csv`) too.
- `freqtrade-json`: a JSON array `[[ms, open, high, low, close, volume], ...]`, as Freqtrade's
  `json` data format writes it (gzip-compressed, `jsongz`, also read).
- `freqtrade-feather`: an Arrow IPC (feather v2) file with columns `date` (a UTC datetime),
  `open`, `high`, `low`, `close`, `volume`, as Freqtrade's default `feather` data format.
- `table` (CSV or Parquet, or feather without a `date` column): a header naming a time column
  (`open_time_ms`, or `timestamp`, `date`, `datetime`, `time`: an ISO 8601 text, a datetime, or
  an integer in s, ms or us since the epoch, told apart by size), `open`, `high`, `low`,
  `close`, `volume`, and optionally `symbol`; names in any case, other columns ignored. A
  time without an offset is in `timezone` (UTC by default). The store's files, `data synth`'s
  output and Freqtrade's `parquet` data format are such tables.

Every row is checked (`kstrade.data.validation`): no NaN or missing value, positive prices,
high >= max(open, close), low <= min(open, close), volume >= 0, time increasing and no duplicate
timestamp per symbol. The interval is the most common step between a symbol's candles among
`INTERVAL_MS` (the smaller on a tie; or `interval` when given); for intervals up to 1h every open
time must lie on the interval's UTC boundary, for longer ones every step must be a whole number
of intervals. A file with bad rows is refused whole, with each bad row's number and rule.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from kstrade.data.store import (
    COVERED,
    DATA,
    FETCHED_AT,
    INTERVAL,
    SOURCE,
    CandleStore,
    StoreError,
    iso,
    months,
    write_atomic,
)
from kstrade.data.validation import VALUES, CandleFileError, Problem, Rule, check_rows
from kstrade.ingest.replay import COLUMNS

#: The intervals a file may hold, by name; those up to 1h start on their UTC boundary.
INTERVAL_MS = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
    "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000,
    "1d": 86_400_000, "1w": 604_800_000,
}  # fmt: skip
ALIGNED_UP_TO_MS = 3_600_000
FORMATS = ("binance-klines", "mt5-bars", "dukascopy", "freqtrade-json", "freqtrade-feather", "table")
TIME_COLUMNS = ("open_time_ms", "timestamp", "date", "datetime", "time")
KNOWN = (
    "kstrade reads Binance kline CSV, MT5 'Export bars' CSV, Dukascopy CSV, Freqtrade JSON and feather, "
    "and timestamp/open/high/low/close/volume tables (CSV, Parquet)"
)


@dataclass(frozen=True)
class ImportedCandles:
    """A validated candle file: the package's candle frame, sorted by time then symbol."""

    path: Path
    format: str
    interval: str
    frame: pl.DataFrame

    @property
    def symbols(self) -> list[str]:
        return self.frame.get_column("symbol").unique(maintain_order=True).to_list()

    @property
    def span(self) -> tuple[int, int]:
        """The first and the last open time (ms)."""
        times = self.frame.get_column("open_time_ms")
        return int(times.item(0)), int(times.item(-1))

    def metadata(self) -> dict[str, str]:
        """Provenance for the Parquet metadata: an imported file is not vouched for as REAL."""
        return {
            SOURCE: f"import:{self.format}",
            DATA: "IMPORTED",
            "kstrade.synthetic": "unknown",
            "kstrade.file": self.path.name,
            FETCHED_AT: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            INTERVAL: self.interval,
            "kstrade.note": f"imported by kstrade from {self.path.name} ({self.format}); kstrade does not know "
            "whether it is real market data",
        }


@dataclass
class _Read:
    """A file as read: `row`, `open_time_ms`, `symbol` (may be null), the VALUES, and the rows
    that could not be read at all."""

    format: str
    frame: pl.DataFrame
    problems: list[Problem]


def import_file(
    path: Path | str, *, symbol: str | None = None, interval: str | None = None, timezone: str | None = None
) -> ImportedCandles:
    """Read, detect and validate a candle file. Raises CandleFileError naming the file, and each
    bad row's number and rule."""
    path = Path(path)
    if interval is not None and interval not in INTERVAL_MS:
        raise ValueError(f"unknown interval {interval!r}: use one of {', '.join(INTERVAL_MS)}")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {timezone!r}: use an IANA name such as Europe/Athens") from exc
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CandleFileError(path, message=f"cannot read: {exc.strerror or exc}") from exc
    read = _read(path, raw, timezone or "UTC")
    frame = read.frame
    if symbol is not None:
        frame = frame.with_columns(pl.lit(symbol).alias("symbol"))
    elif frame.get_column("symbol").null_count():
        raise CandleFileError(path, message=f"holds no symbol ({read.format}): say which with --symbol")
    skip = {p.row for p in read.problems}
    problems = read.problems + check_rows(frame, skip)
    if problems:
        raise CandleFileError(path, problems)
    frame = frame.with_columns(pl.col("open_time_ms").cast(pl.Int64))
    chosen = interval or _detect_interval(path, frame)
    problems = _grid_problems(frame, INTERVAL_MS[chosen], chosen)
    if problems:
        raise CandleFileError(path, problems)
    out = frame.select(COLUMNS).sort(["open_time_ms", "symbol"], maintain_order=True)
    return ImportedCandles(path, read.format, chosen, out)


def _read(path: Path, raw: bytes, tz: str) -> _Read:
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:4] == b"PAR1":
        return _table(path, pl.read_parquet(io.BytesIO(raw)), tz, "table")
    if raw[:6] == b"ARROW1":
        frame = pl.read_ipc(io.BytesIO(raw))
        kind = "freqtrade-feather" if "date" in frame.columns else "table"
        return _table(path, frame, tz, kind)
    text = _decode(path, raw)
    if text.lstrip()[:1] == "[":
        return _freqtrade_json(path, text)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "<DATE>" in first.upper():
        return _mt5(path, text, tz)
    delimiter = max("\t,;", key=first.count)
    head = [f.strip().lower() for f in first.split(delimiter)]
    if len(head) == 12 and (head[0].isdigit() or head[0] == "open_time"):
        return _binance(path, text)
    if head[:6] in (
        ["gmt time", "open", "high", "low", "close", "volume"],
        ["local time", "open", "high", "low", "close", "volume"],
    ) or (head[:6] == ["time", "open", "high", "low", "close", "volume"] and _dukascopy_time(text)):
        return _dukascopy(path, text)
    if any(c in head for c in TIME_COLUMNS) and {"open", "high", "low", "close", "volume"} <= set(head):
        return _csv_table(path, text, delimiter, tz)
    raise CandleFileError(path, message=f"not a candle file kstrade knows (first line {first[:80]!r}); {KNOWN}")


def _decode(path: Path, raw: bytes) -> str:
    if raw[:3] == b"\xef\xbb\xbf":
        return raw[3:].decode("utf-8")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    if len(raw) > 1 and raw[1:2] == b"\x00" and raw[0:1] != b"\x00":  # UTF-16 LE without a mark
        return raw.decode("utf-16-le")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CandleFileError(path, message=f"neither a Parquet/feather file nor UTF-8/UTF-16 text ({exc})") from exc


def _lines(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number from 1, fields) of each non-blank record."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    out = []
    for fields in reader:
        if any(f.strip() for f in fields):
            out.append((reader.line_num, [f.strip() for f in fields]))
    return out


def _strings(
    records: list[tuple[int, list[str]]], columns: dict[str, int], width: int
) -> tuple[pl.DataFrame, list[Problem]]:
    """A frame of `row` and each named column as text, from the records that have `width` fields;
    the others are LAYOUT problems."""
    problems = []
    data: dict[str, list[Any]] = {"row": [], **{name: [] for name in columns}}
    for line, fields in records:
        if len(fields) != width:
            problems.append(Problem(line, Rule.LAYOUT, f"{len(fields)} fields, expected {width}"))
            continue
        data["row"].append(line)
        for name, i in columns.items():
            data[name].append(fields[i])
    schema = {"row": pl.Int64, **{name: pl.String for name in columns}}
    return pl.DataFrame(data, schema=schema), problems


def _numbers(frame: pl.DataFrame, problems: list[Problem]) -> pl.DataFrame:
    """The VALUES columns from text to Float64 (nulls where empty); unreadable ones are problems."""
    out = frame
    for name in VALUES:
        if name not in frame.columns:
            continue
        text = pl.col(name)
        number = text.replace("", None).cast(pl.Float64, strict=False)
        out = out.with_columns(number.alias(name))
        bad = frame.with_columns(number.alias("_n")).filter(pl.col("_n").is_null() & (text != ""))
        for row, value in bad.select("row", name).iter_rows():
            problems.append(Problem(row, Rule.UNREADABLE, f"{name} {value!r} is not a number"))
    return out


def _times_from_text(frame: pl.DataFrame, column: str, fmt: str | None, tz: str, problems: list[Problem],
                     expected: str) -> pl.Series:  # fmt: skip
    """`column` (text) as open times in ms, UTC; `fmt` None: ISO 8601 (an offset, if any, is kept)."""
    text = frame.get_column(column)
    parsed = text.str.to_datetime(fmt, strict=False, time_unit="ms") if fmt else _iso_times(text)
    ms = _utc_ms(parsed, tz, frame.get_column("row"), problems)
    for row, value, got in zip(frame.get_column("row"), text, parsed, strict=True):
        if got is None and value:
            problems.append(Problem(row, Rule.UNREADABLE, f"time {value!r} is not {expected}"))
    return ms


def _iso_times(text: pl.Series) -> pl.Series:
    """ISO 8601 texts as datetimes (aware where they carry an offset); polars reads one layout per
    column, so a row in another layout is unreadable (reported by the caller)."""
    return text.str.to_datetime(strict=False, time_unit="ms")


def _utc_ms(times: pl.Series, tz: str, rows: pl.Series, problems: list[Problem]) -> pl.Series:
    """Datetimes (UTC-aware, other-zone-aware, or naive wall-clock in `tz`) as UTC ms."""
    dtype = times.dtype
    assert isinstance(dtype, pl.Datetime)
    if dtype.time_zone is None:
        local = times.dt.replace_time_zone(tz, ambiguous="null", non_existent="null")
        for row, before, after in zip(rows, times, local, strict=True):
            if before is not None and after is None:
                problems.append(Problem(row, Rule.UNREADABLE, f"time {before} is ambiguous or does not exist in {tz}"))
        times = local
    return times.dt.convert_time_zone("UTC").dt.epoch("ms")


def _binance(path: Path, text: str) -> _Read:
    records = _lines(text, ",")
    if records and not records[0][1][0].isdigit():
        records = records[1:]  # the futures files' header
    columns = {"t": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5}
    frame, problems = _strings(records, columns, 12)
    frame = _numbers(frame, problems)
    t = pl.col("t").cast(pl.Int64, strict=False)
    frame = frame.with_columns(pl.when(t >= 10**14).then(t // 1000).otherwise(t).alias("open_time_ms"))
    for row, value in frame.filter(t.is_null() & (pl.col("t") != "")).select("row", "t").iter_rows():
        problems.append(Problem(row, Rule.UNREADABLE, f"open time {value!r} is not an integer (ms or us)"))
    return _Read("binance-klines", _finish(frame), problems)


def _mt5(path: Path, text: str, tz: str) -> _Read:
    first = next(line for line in text.splitlines() if line.strip())
    delimiter = max("\t,;", key=first.count)
    records = _lines(text, delimiter)
    header = [f.strip("<>").lower() for f in records[0][1]]
    need = ["date", "open", "high", "low", "close"]
    lacking = [n for n in need if n not in header]
    if lacking:
        raise CandleFileError(path, message=f"row {records[0][0]}: MT5 header lacks <{'>, <'.join(lacking).upper()}>")
    columns = {n: header.index(n) for n in [*need, "time", "tickvol", "vol"] if n in header}
    frame, problems = _strings(records[1:], columns, len(header))
    time = pl.col("time") if "time" in columns else pl.lit("00:00:00")
    # 00:00 or 00:00:00: pad to seconds
    frame = frame.with_columns((pl.col("date") + " " + time.str.replace(r"^(\d\d:\d\d)$", "$1:00")).alias("stamp"))
    ms = _times_from_text(frame, "stamp", "%Y.%m.%d %H:%M:%S", tz, problems, "YYYY.MM.DD HH:MM[:SS]")
    frame = frame.with_columns(ms.alias("open_time_ms"))
    volume = "vol" if "vol" in columns else "tickvol"
    if "vol" in columns and "tickvol" in columns:
        real = frame.get_column("vol").cast(pl.Float64, strict=False).fill_null(0.0)
        volume = "vol" if (real != 0).any() else "tickvol"
    if volume not in columns:
        raise CandleFileError(path, message="MT5 header has neither <VOL> nor <TICKVOL>")
    frame = _numbers(frame.with_columns(pl.col(volume).alias("volume")), problems)
    return _Read("mt5-bars", _finish(frame), problems)


_DUKASCOPY_TIME = re.compile(r"^\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d(\.\d+)?( GMT[+-]\d{4})?$")


def _dukascopy_time(text: str) -> bool:
    lines = [line for line in text.splitlines()[1:3] if line.strip()]
    return bool(lines) and bool(_DUKASCOPY_TIME.match(lines[0].split(",")[0].strip()))


def _dukascopy(path: Path, text: str) -> _Read:
    records = _lines(text, ",")
    columns = {"stamp": 0, "open": 1, "high": 2, "low": 3, "close": 4, "volume": 5}
    frame, problems = _strings(records[1:], columns, 6)
    stamp = pl.col("stamp")
    # Local time: "05.01.2026 02:00:00.000 GMT+0200" -> an offset strptime reads.
    frame = frame.with_columns(
        pl.when(stamp.str.contains(" GMT"))
        .then(stamp.str.replace(r" GMT([+-]\d{4})$", " $1"))
        .otherwise(stamp + " +0000")
        .str.replace(r"^(\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d) ", "$1.000 ")
        .alias("stamp_utc")
    )
    parsed = frame.get_column("stamp_utc").str.to_datetime("%d.%m.%Y %H:%M:%S%.3f %z", strict=False, time_unit="ms")
    ms = _utc_ms(parsed, "UTC", frame.get_column("row"), problems)
    for row, value, got in zip(frame.get_column("row"), frame.get_column("stamp"), parsed, strict=True):
        if got is None and value:
            problems.append(Problem(row, Rule.UNREADABLE, f"time {value!r} is not dd.mm.yyyy HH:MM:SS.fff"))
    frame = _numbers(frame.with_columns(ms.alias("open_time_ms")), problems)
    return _Read("dukascopy", _finish(frame), problems)


def _freqtrade_json(path: Path, text: str) -> _Read:
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise CandleFileError(path, message=f"not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise CandleFileError(path, message="Freqtrade JSON is an array of [ms, open, high, low, close, volume]")
    problems: list[Problem] = []
    data: dict[str, list[Any]] = {"row": [], "open_time_ms": [], **{name: [] for name in VALUES}}
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, list) or len(entry) < 6:
            shown = json.dumps(entry)[:60]
            problems.append(Problem(i, Rule.LAYOUT, f"{shown} is not [ms, open, high, low, close, volume]"))
            continue
        try:
            t = None if entry[0] is None else int(entry[0])
            values = [None if v is None else float(v) for v in entry[1:6]]
        except (TypeError, ValueError):
            problems.append(Problem(i, Rule.UNREADABLE, f"{json.dumps(entry)[:60]} holds a value that is not a number"))
            continue
        data["row"].append(i)
        data["open_time_ms"].append(t)
        for name, v in zip(VALUES, values, strict=True):
            data[name].append(v)
    schema = {"row": pl.Int64, "open_time_ms": pl.Int64, **{name: pl.Float64 for name in VALUES}}
    return _Read("freqtrade-json", _finish(pl.DataFrame(data, schema=schema)), problems)


def _csv_table(path: Path, text: str, delimiter: str, tz: str) -> _Read:
    records = _lines(text, delimiter)
    header = [f.lower() for f in records[0][1]]
    time_column = next(c for c in TIME_COLUMNS if c in header)
    wanted = [time_column, *VALUES, *(["symbol"] if "symbol" in header else [])]
    frame, problems = _strings(records[1:], {n: header.index(n) for n in wanted}, len(header))
    frame = _numbers(frame, problems)
    column = frame.get_column(time_column)
    if time_column == "open_time_ms" or column.str.contains(r"^\d+$").fill_null(True).all():
        ms = _integer_times(column.cast(pl.Int64, strict=False), time_column == "open_time_ms")
    else:
        ms = _times_from_text(frame, time_column, None, tz, problems, "an ISO 8601 time")
    return _Read("table", _finish(frame.with_columns(ms.alias("open_time_ms"))), problems)


def _table(path: Path, frame: pl.DataFrame, tz: str, kind: str) -> _Read:
    frame = frame.rename({c: c.lower() for c in frame.columns})
    time_column = next((c for c in TIME_COLUMNS if c in frame.columns), None)
    lacking = [c for c in VALUES if c not in frame.columns]
    if time_column is None or lacking:
        what = ", ".join([*([] if time_column else ["a time column (" + "/".join(TIME_COLUMNS) + ")"]), *lacking])
        raise CandleFileError(path, message=f"table lacks {what}; {KNOWN}")
    frame = frame.with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    problems: list[Problem] = []
    column = frame.get_column(time_column)
    if isinstance(column.dtype, pl.Datetime):
        ms = _utc_ms(column, tz, frame.get_column("row"), problems)
    elif isinstance(column.dtype, pl.Date):
        ms = _utc_ms(column.cast(pl.Datetime("ms")), tz, frame.get_column("row"), problems)
    elif column.dtype.is_integer():
        ms = _integer_times(column.cast(pl.Int64), time_column == "open_time_ms")
    elif column.dtype == pl.String:
        ms = _times_from_text(frame, time_column, None, tz, problems, "an ISO 8601 time")
    else:
        raise CandleFileError(path, message=f"time column {time_column!r} is {column.dtype}, not a time")
    values = []
    for name in VALUES:
        if not frame.schema[name].is_numeric():
            text = frame.get_column(name).cast(pl.String)
            number = text.cast(pl.Float64, strict=False)
            for row, value, got in zip(frame.get_column("row"), text, number, strict=True):
                if got is None and value is not None:
                    problems.append(Problem(row, Rule.UNREADABLE, f"{name} {value!r} is not a number"))
            values.append(number.alias(name))
        else:
            values.append(frame.get_column(name).cast(pl.Float64))
    symbol = frame.get_column("symbol").cast(pl.String) if "symbol" in frame.columns else None
    out = pl.DataFrame([frame.get_column("row"), ms.alias("open_time_ms"), *values])
    if symbol is not None:
        out = out.with_columns(symbol)
    return _Read(kind, _finish(out), problems)


def _integer_times(values: pl.Series, exact_ms: bool) -> pl.Series:
    """Epoch integers as ms: `open_time_ms` is ms; otherwise s, ms or us by size."""
    if exact_ms:
        return values
    return (
        pl.select(
            pl.when(values < 10**11).then(values * 1000).when(values < 10**14).then(values).otherwise(values // 1000)
        )
        .to_series()
        .alias(values.name)
    )


def _finish(frame: pl.DataFrame) -> pl.DataFrame:
    """The columns `check_rows` reads, in file order."""
    if "symbol" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("symbol"))
    return frame.select(
        pl.col("row").cast(pl.Int64),
        pl.col("open_time_ms").cast(pl.Int64),
        pl.col("symbol").cast(pl.String),
        *(pl.col(c).cast(pl.Float64) for c in VALUES),
    )


def _detect_interval(path: Path, frame: pl.DataFrame) -> str:
    """The most common step between a symbol's candles among the known intervals (the smaller on
    a tie): gaps and a stray row do not change it."""
    steps = frame.with_columns(pl.col("open_time_ms").diff().over("symbol").alias("step"))
    steps = steps.filter(pl.col("step").is_not_null())
    if steps.is_empty():
        raise CandleFileError(path, message="one candle per symbol: the interval cannot be detected; pass --interval")
    counts = steps.group_by("step").len().filter(pl.col("step").is_in(list(INTERVAL_MS.values())))
    if counts.is_empty():
        smallest = steps.sort(["step", "row"]).row(0, named=True)
        detail = f"{smallest['step'] / 1000:g} s after the row before: not an interval kstrade knows"
        raise CandleFileError(path, [Problem(smallest["row"], Rule.OFF_GRID, f"{detail} ({', '.join(INTERVAL_MS)})")])
    step = counts.sort(["len", "step"], descending=[True, False]).item(0, "step")
    return next(name for name, ms in INTERVAL_MS.items() if ms == step)


def _grid_problems(frame: pl.DataFrame, step_ms: int, name: str) -> list[Problem]:
    """Up to 1h: each open time on the interval's UTC boundary; longer bars (which may start at an
    exchange's or a server's own hour): each step a whole number of intervals."""
    problems = []
    if step_ms <= ALIGNED_UP_TO_MS:
        for row, t in frame.filter(pl.col("open_time_ms") % step_ms != 0).select("row", "open_time_ms").iter_rows():
            problems.append(Problem(row, Rule.OFF_GRID, f"{iso(t)} is not on a {name} boundary"))
        return problems
    steps = frame.with_columns(pl.col("open_time_ms").diff().over("symbol").alias("step"))
    for row, step in steps.filter(pl.col("step") % step_ms != 0).select("row", "step").iter_rows():
        detail = f"{step / 1000:g} s after the row before, not a whole number of {name}"
        problems.append(Problem(row, Rule.OFF_GRID, detail))
    return problems


def write_file(candles: ImportedCandles, out: Path) -> Path:
    """One candle file for `run --data` / `ingest replay`: Parquet (with the provenance metadata)
    or CSV, by `out`'s suffix."""
    if out.suffix == ".parquet":
        first, last = candles.span
        meta = {**candles.metadata(), "kstrade.first": iso(first), "kstrade.last": iso(last)}
        write_atomic(candles.frame, out, meta)
    elif out.suffix == ".csv":
        out.parent.mkdir(parents=True, exist_ok=True)
        candles.frame.write_csv(out)
    else:
        raise ValueError(f"{out}: write a .parquet or a .csv file")
    return out


def write_store(
    candles: ImportedCandles, store: CandleStore, on_written: Callable[[int, int], None] | None = None
) -> list[Path]:
    """Month files in `store`, one per symbol and month. Refuses (before writing anything) where
    a month's file exists already: the store never mixes two sources in one file.
    `on_written(files written, files to write)` is told after each file (a progress bar)."""
    step = INTERVAL_MS[candles.interval]
    plans = []
    for symbol in candles.symbols:
        rows = candles.frame.filter(pl.col("symbol") == symbol)
        times = rows.get_column("open_time_ms").to_list()
        for month in months(times[0], times[-1] + 1):
            part = rows.filter((pl.col("open_time_ms") >= month.start_ms) & (pl.col("open_time_ms") < month.end_ms))
            if part.is_empty():
                continue
            path = store.path(symbol, month)
            if path.exists():
                raise StoreError(f"{path} exists already: import into another store, or remove that file first")
            t = part.get_column("open_time_ms").to_list()
            covered = [[t[0], min(month.end_ms, t[-1] + step)]]
            plans.append((symbol, month, part, covered))
    written = []
    for symbol, month, part, covered in plans:
        written.append(store.write_month(symbol, month, part, {**candles.metadata(), COVERED: json.dumps(covered)}))
        if on_written is not None:
            on_written(len(written), len(plans))
    return written


def describe(candles: ImportedCandles) -> str:
    first, last = candles.span
    return (f"{candles.path.name}: {candles.format}, {candles.interval}, {candles.frame.height:,} candles of "
            f"{', '.join(candles.symbols)}, {iso(first)} to {iso(last)}")  # fmt: skip
