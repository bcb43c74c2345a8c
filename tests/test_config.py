"""The config loader: file < environment < flags, unknown keys and bad values named, secrets kept out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kstrade.bus import Bus
from kstrade.config import ConfigError, load


def test_defaults_run_on_the_embedded_bus() -> None:
    settings = load()
    assert settings.bus.transport == "memory"
    assert Bus.from_settings(settings.bus).transport == "memory"


def test_environment_overrides_the_file_and_flags_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.toml"
    path.write_text(
        'symbols = ["BTC-USD"]\n[bus]\ntransport = "kafka"\nbootstrap = "file:9092"\nreplication_factor = 3\n'
    )
    monkeypatch.setenv("KSTRADE_BUS__BOOTSTRAP", "env:9092")
    settings = load(path)
    assert settings.bus.bootstrap == "env:9092" and settings.bus.replication_factor == 3
    assert settings.symbols == ["BTC-USD"]
    assert load(path, bus={"bootstrap": "flag:9092"}).bus.bootstrap == "flag:9092"


def test_every_bad_key_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'symbols = ["EUR/USD"]\ncolour = "blue"\n[bus]\ntransport = "carrier-pigeon"\nreplication_factor = 0\n'
    )
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    for key in ("symbols", "colour", "bus.transport", "bus.replication_factor"):
        assert key in message


def test_secrets_never_come_from_the_file_and_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leaked = tmp_path / "leak.toml"
    leaked.write_text('[bus]\nsasl_username = "alice"\nsasl_password = "hunter2"\n')
    with pytest.raises(ConfigError, match=r"bus\.sasl_password"):
        load(leaked)
    ok = tmp_path / "ok.toml"
    ok.write_text('[bus]\ntransport = "kafka"\nsasl_username = "alice"\n')
    with pytest.raises(ConfigError, match=r"bus\.sasl_password"):
        load(ok).bus.client_properties()  # a user without a password fails fast, naming the key
    monkeypatch.setenv("KSTRADE_BUS__SASL_PASSWORD", "hunter2")
    assert load(ok).bus.client_properties()["sasl.password"] == "hunter2"
    shown = subprocess.run(
        [sys.executable, "-m", "kstrade", "config", "show", "--config", str(ok)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout
    assert '# sasl_password = "**********"  (a secret: from the environment only)' in shown.stdout


def test_a_password_file_is_read_when_needed(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    settings = load(bus={"transport": "kafka", "sasl_username": "bob", "sasl_password_file": str(secret)})
    assert settings.bus.client_properties()["sasl.password"] == "s3cret"


def test_config_show_fails_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[bus]\nreplication_factor = 'three'\n")
    shown = subprocess.run(
        [sys.executable, "-m", "kstrade", "config", "show", "--config", str(path)], capture_output=True, text=True
    )
    assert shown.returncode == 2 and "bus.replication_factor" in shown.stderr
