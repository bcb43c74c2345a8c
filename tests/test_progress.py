"""Progress bars of the long commands (`data synth`, `data download`, `data import`, the broker's
first fetch): drawn on stderr when it is a terminal (here a real pseudo-terminal), and nothing at
all, no control code and no bar text, when stderr is a pipe as in a log file or CI."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from kstrade.broker.local import MavenFetch
from kstrade.progress import ProgressBars

from .test_data_download import CandlesServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "data_files" / "candles"
#: A control sequence (CSI) or a bare carriage return redrawing a line: what a bar writes.
CONTROL = re.compile(r"\x1b\[|\r(?!\n)")


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str

    @property
    def shown(self) -> str:
        """stderr as the terminal shows it: the text without the control sequences (colours)."""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.stderr)


def kstrade(
    args: list[str], cwd: Path, *, terminal: bool, env: dict[str, str] | None = None, module: bool = True
) -> Done:
    """`python -m kstrade ARGS` (`python ARGS` without `module`) with stderr on a pseudo-terminal
    (`terminal`) or a pipe; stdout is a pipe either way (what a script reads stays clean)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KSTRADE_", "FORCE_COLOR", "TTY_"))}
    environ |= {"COLUMNS": "200", **(env or {})}
    command = [sys.executable, *(["-m", "kstrade"] if module else []), *args]
    cwd.mkdir(parents=True, exist_ok=True)
    if not terminal:
        done = subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)
        return Done(done.returncode, done.stdout, done.stderr)
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with subprocess.Popen(command, cwd=cwd, env=environ, stdout=subprocess.PIPE, stderr=slave,
                          stdin=subprocess.DEVNULL, text=True) as proc:  # fmt: skip
        os.close(slave)
        out, _ = proc.communicate(timeout=300)
    reader.join(30)
    os.close(master)
    return Done(proc.returncode, out, b"".join(chunks).decode(errors="replace"))


def assert_no_progress(done: Done, *texts: str) -> None:
    assert done.returncode == 0, done.stderr
    assert not CONTROL.search(done.stderr), repr(done.stderr[:300])
    for text in texts:
        assert text not in done.stderr


def test_data_synth_shows_its_bar_on_a_terminal_only(tmp_path: Path) -> None:
    args = ["data", "synth", "--days", "1", "--symbols", "BTC-USD,ETH-USD", "--out", "out"]
    shown = kstrade(args, tmp_path, terminal=True)
    assert shown.returncode == 0, shown.stderr
    assert "SYNTHETIC edge market, 1 days" in shown.shown and "2/2 symbols" in shown.shown
    assert CONTROL.search(shown.stderr)
    assert shown.stdout.startswith("wrote SYNTHETIC 1m candles") and not CONTROL.search(shown.stdout)
    piped = kstrade(args, tmp_path / "again", terminal=False)
    assert_no_progress(piped, "SYNTHETIC edge market", "symbols")
    assert piped.stderr == ""
    assert piped.stdout.startswith("wrote SYNTHETIC 1m candles")


def test_data_import_shows_reading_and_writing_on_a_terminal_only(tmp_path: Path) -> None:
    args = ["data", "import", str(FIXTURES / "synthetic_mt5_bars.csv"), "--symbol", "BTC-USD", "--store", "store"]
    shown = kstrade(args, tmp_path / "a", terminal=True)
    assert shown.returncode == 0, shown.stderr
    assert "read and checked synthetic_mt5_bars.csv: 7 candles" in shown.shown
    assert "writing month files into store" in shown.shown and "1/1" in shown.shown
    piped = kstrade(args, tmp_path / "b", terminal=False)
    assert_no_progress(piped, "reading and checking", "month files")
    assert piped.stderr == "" and "wrote 1 file(s)" in piped.stdout


def test_data_download_shows_a_bar_per_symbol_on_a_terminal_only(tmp_path: Path) -> None:
    args = ["data", "download", "--symbols", "BTC-USD,ETH-USD", "--from", "2025-12-31", "--to", "2026-01-03",
            "--store", "store", "--rate", "1000"]  # fmt: skip
    server = CandlesServer()
    try:
        env = {"KSTRADE_COINBASE_REST_URL": server.url}
        shown = kstrade(args, tmp_path / "a", terminal=True, env=env)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"BTC-USD .*4320/4320 min .*candles fetched", shown.shown)
        assert re.search(r"ETH-USD .*4320/4320 min .*candles fetched", shown.shown)
        piped = kstrade(args, tmp_path / "b", terminal=False, env=env)
    finally:
        server.close()
    assert_no_progress(piped, "candles fetched", " min ")
    assert piped.stderr == "" and "30 page(s) to fetch" in piped.stdout


#: One line of each kind `mvn -B` printed while it fetched the broker into an empty repository.
MAVEN_LINES = """\
[INFO] Scanning for projects...
[INFO] Downloading from central: https://repo.maven.apache.org/maven2/org/apache/kafka/kafka_2.13/4.1.0/kafka_2.13-4.1.0.pom
[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/apache/kafka/kafka_2.13/4.1.0/kafka_2.13-4.1.0.pom (24 kB at 1.2 MB/s)
[INFO] Downloading from central: https://repo.maven.apache.org/maven2/org/apache/kafka/kafka_2.13/4.1.0/kafka_2.13-4.1.0.jar
[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/apache/kafka/kafka_2.13/4.1.0/kafka_2.13-4.1.0.jar (6.8 MB at 3.1 MB/s)
[INFO] Downloading from central: https://repo.maven.apache.org/maven2/org/apache/kafka/kafka-clients/4.1.0/kafka-clients-4.1.0.jar
[INFO] --- dependency:2.8:copy-dependencies (default-cli) @ kstrade-local-broker ---
[INFO] Copying jose4j-0.9.6.jar to /tmp/libs/jose4j-0.9.6.jar
[INFO] BUILD SUCCESS
"""  # noqa: E501


def test_maven_lines_are_read_as_files_bytes_and_jars() -> None:
    fetch = MavenFetch()
    told = [fetch.read(line) for line in MAVEN_LINES.splitlines()]
    assert told == [False, True, True, True, True, True, False, True, False]
    assert (fetch.downloaded, fetch.downloaded_bytes, fetch.copied) == (2, 6_824_000, 1)
    assert fetch.summary() == "2 file(s) downloaded (6.8 MB), 1 jar(s) copied: jose4j-0.9.6.jar"
    half = MavenFetch()
    for line in MAVEN_LINES.splitlines()[:6]:
        half.read(line)
    assert half.summary() == "2 file(s) downloaded (6.8 MB): kafka-clients-4.1.0.jar"  # the one in flight


def test_the_broker_fetch_shows_what_it_fetches_on_a_terminal_only(tmp_path: Path) -> None:
    """The real `mvn` into an empty kstrade cache (from the local Maven repository where the test
    machine has one, else from Maven Central)."""
    fetch = ["-c", "from kstrade.broker.local import fetch_jars; print(fetch_jars())"]
    shown = kstrade(fetch, tmp_path / "a", terminal=True, env={"KSTRADE_CACHE": str(tmp_path / "a")}, module=False)
    assert shown.returncode == 0, shown.stderr
    assert "fetching Apache Kafka 4.1.0 from Maven Central (once)" in shown.shown
    assert re.search(r"fetched Apache Kafka 4\.1\.0 from Maven Central .*\d+ jar\(s\) copied", shown.shown)
    assert list((tmp_path / "a" / "kafka-4.1.0" / "libs").glob("kafka_2.13-4.1.0.jar"))
    piped = kstrade(fetch, tmp_path / "b", terminal=False, env={"KSTRADE_CACHE": str(tmp_path / "b")}, module=False)
    assert_no_progress(piped, "Maven Central", "jar(s)")
    assert piped.stderr == "" and piped.stdout.strip() == str(tmp_path / "b" / "kafka-4.1.0" / "libs")


def test_the_bars_are_off_where_stderr_is_no_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    with ProgressBars() as bars:
        assert not bars.shown
        task = bars.add("nothing to see", total=3)
        bars.update(task, advance=1)
        bars.finish(task)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's switch for a terminal it cannot detect
    assert ProgressBars().shown
