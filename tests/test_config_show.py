"""`config show` prints TOML that loads back as the same configuration (secrets redacted, as
comments, never written), and every command finds its config file as documented: --config, else
$KSTRADE_CONFIG, else ./kstrade.toml."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kstrade.config import ConfigError, discover, load, redacted
from kstrade.toml_text import dumps

CUSTOM = """
symbols = ["BTC-USD", "ETH-USD"]
[bus]
properties = {"socket.timeout.ms" = "5000", "ssl.key.location" = "/etc/k/key.pem"}
[signals]
weights = {lstm = 0.7, transformer = 0.3}
blocked_regimes = ["high"]
[signals.tiers]
a = 0.8
b = 0.65
c = 0.5
[signals.calibrators.v1]
method = "isotonic"
x = [0.0, 0.5, 1.0]
y = [0.1, 0.5, 0.9]
[execution]
kelly_fraction = 0.1
"""


def _kstrade(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("KSTRADE_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "kstrade", *args], capture_output=True, text=True, cwd=cwd,
                          env=full, timeout=120)  # fmt: skip


def test_what_config_show_prints_loads_back_as_the_same_configuration(tmp_path: Path) -> None:
    (tmp_path / "kstrade.toml").write_text(CUSTOM)
    secret = {"KSTRADE_BUS__SASL_PASSWORD": "hunter2-not-in-output"}
    shown = _kstrade("config", "show", cwd=tmp_path, env=secret)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout and "# sasl_password = " in shown.stdout  # redacted, as a comment
    assert "from kstrade.toml" in shown.stdout
    saved = tmp_path / "again.toml"
    saved.write_text(shown.stdout)
    tomllib.loads(shown.stdout)  # valid TOML
    original = load(tmp_path / "kstrade.toml")
    again = load(saved)
    assert redacted(again) == redacted(original)
    assert again.signals.tiers.a == 0.8 and again.bus.properties["socket.timeout.ms"] == "5000"


def test_the_writer_keeps_every_kind_of_value() -> None:
    data = {"a": 1, "b": -0.0, "c": 1e-300, "d": "quote \" back\\slash\nnew é", "e": [1, 2.5, "x"],
            "f": {"g.h": True, "i": [{"j": 1}, {"k": "v"}]}, "n": None, "inf": float("inf")}  # fmt: skip
    text = dumps(data)
    back = tomllib.loads(text)
    assert back == {k: v for k, v in data.items() if k != "n"}
    assert "# n = (not set)" in text


def test_config_files_are_found_as_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KSTRADE_CONFIG", raising=False)
    assert discover() is None  # nothing to find: defaults
    (tmp_path / "kstrade.toml").write_text("[signals.tiers]\na = 0.9\n")
    assert discover() == Path("kstrade.toml")
    other = tmp_path / "other.toml"
    other.write_text("[signals.tiers]\na = 0.85\n")
    monkeypatch.setenv("KSTRADE_CONFIG", str(other))
    assert discover() == other  # the environment before the working directory
    assert discover("x.toml") == Path("x.toml")  # --config before both
    monkeypatch.setenv("KSTRADE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"KSTRADE_CONFIG names .*missing\.toml, which is not a file"):
        discover()


def test_a_command_reads_the_discovered_file(tmp_path: Path) -> None:
    (tmp_path / "kstrade.toml").write_text('symbols = ["NOT A SYMBOL"]\n')
    done = _kstrade("config", "show", cwd=tmp_path)
    assert done.returncode == 2 and "symbols" in done.stderr  # the local file was read (and refused)
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    good = tmp_path / "good.toml"
    good.write_text("[signals.tiers]\na = 0.77\n")
    done = _kstrade("config", "show", "--format", "json", cwd=elsewhere, env={"KSTRADE_CONFIG": str(good)})
    assert done.returncode == 0 and '"a": 0.77' in done.stdout
