"""`data import`: the same SYNTHETIC candles in every format traders keep them in
(tests/data_files/candles, layouts in its README) give identical candles; the format and the
interval are detected; each kind of bad row is refused with the file, the row as the user sees it
and the rule; the store and `--out` get the candles with their provenance."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from kstrade.data import DATA_DIR, eurusd_1h
from kstrade.data.candle_files import import_file, write_store
from kstrade.data.download import plan
from kstrade.data.store import CandleStore, StoreError, read_candles, read_metadata
from kstrade.data.validation import CandleFileError, Rule

FIXTURES = Path(__file__).resolve().parent / "data_files" / "candles"
T0 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
#: The README's table: minute, open, high, low, close, volume (no candle at minute 4).
ROWS = [
    (0, 42000.5, 42010.25, 41990.0, 42005.75, 12.0),
    (1, 42005.75, 42020.0, 42001.5, 42018.0, 7.0),
    (2, 42018.0, 42018.0, 41980.25, 41985.5, 30.0),
    (3, 41985.5, 41999.0, 41970.0, 41990.0, 3.0),
    (5, 41992.0, 42003.5, 41992.0, 42001.25, 18.0),
    (6, 42001.25, 42001.25, 41960.75, 41962.0, 25.0),
    (7, 41962.0, 41975.5, 41955.0, 41970.5, 9.0),
]
EXPECTED = pl.DataFrame(
    {
        "open_time_ms": [T0 + r[0] * MIN for r in ROWS],
        "symbol": ["BTC-USD"] * len(ROWS),
        **{name: [r[i] for r in ROWS] for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1)},
    }
)
FORMATS = {
    "synthetic_binance_klines_ms.csv": "binance-klines",
    "synthetic_binance_klines_us.csv": "binance-klines",
    "synthetic_mt5_bars.csv": "mt5-bars",
    "synthetic_dukascopy.csv": "dukascopy",
    "synthetic_freqtrade_BTC_USD-1m.json": "freqtrade-json",
    "synthetic_freqtrade_BTC_USD-1m.feather": "freqtrade-feather",
    "synthetic_table.csv": "table",
    "synthetic_table.parquet": "table",
}


def test_every_fixture_is_there() -> None:
    assert sorted(p.name for p in FIXTURES.iterdir() if p.name != "README.md") == sorted(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_gives_the_same_candles(name: str) -> None:
    symbol = None if name.endswith(".parquet") else "BTC-USD"  # the Parquet table has a symbol column
    candles = import_file(FIXTURES / name, symbol=symbol)
    assert (candles.format, candles.interval) == (FORMATS[name], "1m")
    assert candles.frame.equals(EXPECTED), candles.frame


def test_mt5_in_utf16_and_in_server_time(tmp_path: Path) -> None:
    text = (FIXTURES / "synthetic_mt5_bars.csv").read_text()
    utf16 = tmp_path / "EURUSD_M1.csv"
    utf16.write_bytes(text.encode("utf-16"))  # with a byte-order mark
    assert import_file(utf16, symbol="BTC-USD").frame.equals(EXPECTED)
    athens = import_file(utf16, symbol="BTC-USD", timezone="Europe/Athens")  # UTC+2 in January
    assert athens.frame.equals(EXPECTED.with_columns(pl.col("open_time_ms") - 2 * 3_600_000))


def test_dukascopy_local_time_and_freqtrade_jsongz(tmp_path: Path) -> None:
    lines = (FIXTURES / "synthetic_dukascopy.csv").read_text().splitlines()
    local = ["Local time,Open,High,Low,Close,Volume"]
    for line in lines[1:]:
        stamp, rest = line.split(",", 1)
        hour = int(stamp[11:13]) + 2
        local.append(f"{stamp[:11]}{hour:02d}{stamp[13:]} GMT+0200,{rest}")
    path = tmp_path / "local.csv"
    path.write_text("\n".join(local) + "\n")
    assert import_file(path, symbol="BTC-USD").frame.equals(EXPECTED)
    gz = tmp_path / "BTC_USD-1m.json.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "synthetic_freqtrade_BTC_USD-1m.json").read_bytes()))
    assert import_file(gz, symbol="BTC-USD").frame.equals(EXPECTED)


def test_the_bundled_eurusd_file_is_read_as_dukascopy_1h() -> None:
    candles = import_file(DATA_DIR / "eurusd_1h_ask.csv", symbol="EURUSD")
    assert (candles.format, candles.interval) == ("dukascopy", "1h")
    assert candles.frame.drop("symbol").equals(eurusd_1h())


def test_the_interval_is_detected_and_a_single_candle_needs_it(tmp_path: Path) -> None:
    five = tmp_path / "five.json"
    five.write_text(json.dumps([[T0 + i * 5 * MIN, 1.0, 2.0, 0.5, 1.5, 1.0] for i in (0, 1, 3, 4)]))
    assert import_file(five, symbol="X").interval == "5m"
    one = tmp_path / "one.json"
    one.write_text(json.dumps([[T0, 1.0, 2.0, 0.5, 1.5, 1.0]]))
    with pytest.raises(CandleFileError, match="pass --interval"):
        import_file(one, symbol="X")
    assert import_file(one, symbol="X", interval="1h").interval == "1h"


GOOD = (FIXTURES / "synthetic_table.csv").read_text().splitlines()
#: (rule, line to replace (1-based, the header is line 1), its new text, what the message says)
BAD_ROWS = [
    (Rule.MISSING, 3, "2026-01-05T00:01:00Z,nan,42020.0,42001.5,42018.0,7", "open is NaN"),
    (Rule.MISSING, 3, "2026-01-05T00:01:00Z,42005.75,42020.0,42001.5,,7", "close is missing"),
    (Rule.UNREADABLE, 3, "2026-01-05T00:01:00Z,abc,42020.0,42001.5,42018.0,7", "open 'abc' is not a number"),
    (Rule.UNREADABLE, 3, "yesterday,42005.75,42020.0,42001.5,42018.0,7", "time 'yesterday'"),
    (Rule.LAYOUT, 3, "2026-01-05T00:01:00Z,42005.75,42020.0", "3 fields, expected 6"),
    (Rule.HIGH, 3, "2026-01-05T00:01:00Z,42005.75,42010.0,42001.5,42018.0,7", "high 42010, open 42005.75, close 42018"),
    (Rule.LOW, 3, "2026-01-05T00:01:00Z,42005.75,42020.0,42006.0,42018.0,7", "low 42006, open 42005.75"),
    (Rule.NOT_POSITIVE, 3, "2026-01-05T00:01:00Z,0,42020.0,0,42018.0,7", "open is 0, low is 0"),
    (Rule.NEGATIVE_VOLUME, 3, "2026-01-05T00:01:00Z,42005.75,42020.0,42001.5,42018.0,-7", "volume is -7"),
    (Rule.DUPLICATE, 4, "2026-01-05T00:01:00Z,42018.0,42018.0,41980.25,41985.5,30", "is also row 3"),
    (Rule.OUT_OF_ORDER, 5, "2026-01-04T23:59:00Z,41985.5,41999.0,41970.0,41990.0,3", "after 2026-01-05T00:02:00Z"),
    (Rule.OFF_GRID, 3, "2026-01-05T00:01:30Z,42005.75,42020.0,42001.5,42018.0,7", "not on a 1m boundary"),
]


@pytest.mark.parametrize(("rule", "line", "text", "detail"), BAD_ROWS, ids=[f"{r[0].name}-{r[3]}" for r in BAD_ROWS])
def test_each_bad_row_is_named_with_its_row_and_rule(
    tmp_path: Path, rule: Rule, line: int, text: str, detail: str
) -> None:
    lines = list(GOOD)
    lines[line - 1] = text
    path = tmp_path / "candles.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CandleFileError) as caught:
        import_file(path, symbol="BTC-USD")
    message = str(caught.value)
    assert message.startswith(f"{path}: row {line}: {rule}: "), message
    assert detail in message and "\n" not in message, message
    assert [(p.row, p.rule) for p in caught.value.problems] in ([(line, rule)], [(line, rule)] * 2)


def test_rows_are_numbered_as_each_format_shows_them(tmp_path: Path) -> None:
    """Binance (no header): the line; JSON: the entry; Parquet: the row; blank lines count."""
    lines = (FIXTURES / "synthetic_binance_klines_ms.csv").read_text().splitlines()
    lines[2] = lines[2].replace("42018.0,42018.0", "42018.0,41000.0", 1)  # high below open
    binance = tmp_path / "binance.csv"
    binance.write_text("\n".join([lines[0], "", *lines[1:]]) + "\n")  # a blank line 2
    with pytest.raises(CandleFileError, match=f"^{re.escape(f'{binance}: row 4: {Rule.HIGH}')}"):
        import_file(binance, symbol="BTC-USD")
    entries = json.loads((FIXTURES / "synthetic_freqtrade_BTC_USD-1m.json").read_text())
    entries[5][4] = None
    freqtrade = tmp_path / "f.json"
    freqtrade.write_text(json.dumps(entries))
    expected = f"{freqtrade}: row 6: {Rule.MISSING}: close is missing"
    with pytest.raises(CandleFileError, match=f"^{re.escape(expected)}$"):
        import_file(freqtrade, symbol="BTC-USD")
    table = tmp_path / "t.parquet"
    EXPECTED.with_columns(pl.when(pl.int_range(pl.len()) == 6).then(-1.0).otherwise("low").alias("low")).write_parquet(
        table
    )
    with pytest.raises(CandleFileError, match=f"^{re.escape(f'{table}: row 7: {Rule.NOT_POSITIVE}: low is -1')}$"):
        import_file(table)


def test_several_bad_rows_are_all_listed(tmp_path: Path) -> None:
    lines = list(GOOD)
    lines[2] = lines[2].replace("42020.0", "1.0")
    lines[5] = lines[5].replace(",18", ",-18")
    path = tmp_path / "two.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CandleFileError) as caught:
        import_file(path, symbol="BTC-USD")
    assert str(caught.value).splitlines() == [
        f"{path}: 2 bad rows:",
        f"  row 3: {Rule.HIGH}: high 1, open 42005.75, close 42018",
        f"  row 6: {Rule.NEGATIVE_VOLUME}: volume is -18",
    ]


def test_an_unknown_file_or_a_missing_symbol_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("price,when\n1,today\n")
    with pytest.raises(CandleFileError, match=f"^{re.escape(str(odd))}: not a candle file kstrade knows"):
        import_file(odd)
    with pytest.raises(CandleFileError, match=r"holds no symbol .* --symbol"):
        import_file(FIXTURES / "synthetic_dukascopy.csv")


def test_the_store_gets_month_files_with_provenance_and_never_mixes(tmp_path: Path) -> None:
    store = CandleStore(tmp_path / "store")
    candles = import_file(FIXTURES / "synthetic_binance_klines_us.csv", symbol="BTC-USD")
    (path,) = write_store(candles, store)
    assert path == store.root / "symbol=BTC-USD" / "2026-01.parquet"
    meta = read_metadata(path)
    assert meta["kstrade.source"] == "import:binance-klines" and meta["kstrade.data"] == "IMPORTED"
    assert meta["kstrade.interval"] == "1m" and meta["kstrade.file"] == "synthetic_binance_klines_us.csv"
    assert json.loads(meta["kstrade.covered"]) == [[T0, T0 + 8 * MIN]]
    assert read_candles(store.root).equals(EXPECTED)
    with pytest.raises(StoreError, match="exists already"):
        write_store(candles, store)
    with pytest.raises(StoreError, match="not Coinbase 1m candles"):  # a download would mix sources
        plan(store, ["BTC-USD"], T0, T0 + 60 * MIN)


def kstrade(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSTRADE_")}
    return subprocess.run([sys.executable, "-m", "kstrade", "data", "import", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_command_writes_the_store_or_one_file_and_names_a_bad_row(tmp_path: Path) -> None:
    mt5 = str(FIXTURES / "synthetic_mt5_bars.csv")
    done = kstrade(mt5, "--symbol", "BTC-USD", "--store", "store", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mt5-bars, 1m, 7 candles of BTC-USD, 2026-01-05T00:00:00Z to 2026-01-05T00:07:00Z" in done.stdout
    assert "trade server's time" in done.stdout
    assert read_candles(tmp_path / "store").equals(EXPECTED)
    again = kstrade(mt5, "--symbol", "BTC-USD", "--store", "store", cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr
    done = kstrade(str(FIXTURES / "synthetic_table.parquet"), "--out", "one.parquet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_candles(tmp_path / "one.parquet").equals(EXPECTED)
    assert read_metadata(tmp_path / "one.parquet")["kstrade.source"] == "import:table"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*GOOD[:3], GOOD[3].replace(",30", ",-30"), *GOOD[4:]]) + "\n")
    done = kstrade(str(bad), "--symbol", "BTC-USD", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"error: {bad}: row 4: {Rule.NEGATIVE_VOLUME}: volume is -30\n"
    assert not (tmp_path / "data").exists()  # nothing written
