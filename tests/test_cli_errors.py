"""Operator mistakes end in one line that names the cause and what to do, exit 2, no traceback."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import kstrade.services
from kstrade.broker.local import free_port_block
from kstrade.bus import Bus
from kstrade.bus.reach import ClusterUnreachable, check_reachable
from kstrade.cli import main
from kstrade.config import BusSettings
from kstrade.extras import extra_for


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KSTRADE_BUS__PROPERTIES", '{"security.protocol": "SSL", "ssl.key.password": "hunter2"'),
        ("KSTRADE_SYMBOLS", "BTC-USD,ETH-USD"),
    ],
)
def test_bad_json_in_an_environment_variable_names_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    for argv in (["config", "show"], ["service", "features", "--bus", "kafka"]):
        assert main(argv) == 2  # was: a SettingsError traceback
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {variable} is not valid JSON (")
        assert "hunter2" not in err  # the value is never echoed: it may be a secret


def test_mt5linux_without_rpyc_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rpyc", None)  # as if not installed: import raises ModuleNotFoundError
    monkeypatch.setattr(kstrade.services, "ensure_topics", lambda bus, settings: None)  # no broker needed
    monkeypatch.setattr(kstrade.services, "check_reachable", lambda bus, protocol: None)
    monkeypatch.setenv("KSTRADE_EXECUTION__BROKER", "mt5linux")
    monkeypatch.setenv("KSTRADE_EXECUTION__JOURNAL_PATH", str(tmp_path / "orders.sqlite3"))
    monkeypatch.setenv("KSTRADE_EXECUTION__PAPER_STATE_PATH", str(tmp_path / "paper.json"))
    assert main(["service", "execution", "--bus", "kafka", "--bootstrap", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'kstrade[mt5linux]'" in err and "rpyc" in err


def test_the_extras_come_from_the_package_metadata() -> None:
    assert extra_for("rpyc") == "mt5linux"  # not `dev`, which lists it too
    assert extra_for("confluent_kafka") == "acl" and extra_for("torch") == "train"
    assert extra_for("numpy") is None  # a core dependency: a broken install, not a missing extra


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "list"],
        ["topics", "create"],
        ["service", "features", "--bus", "kafka"],
        ["ingest", "replay", "eurusd"],
        ["control", "halt", "--reason", "test", "--wait", "0"],
    ],
)
def test_an_unreachable_bootstrap_is_one_line_naming_the_address_within_seconds(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port_block(1)}"  # nothing listens there
    started = time.monotonic()
    assert main([*argv, "--bootstrap", address]) == 2  # was: 60 s, then a traceback or a bare "timed out"
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot reach the Kafka cluster at {address} (")
    assert "refused" in err.lower() and "--bootstrap" in err
    assert elapsed < 15.0


@pytest.mark.kafka
def test_a_tls_client_against_a_plaintext_listener_is_one_line_naming_the_protocol(kafka_bootstrap: str) -> None:
    """The check the commands above make (they give it 10 s; 3 here, to keep CI short)."""
    bus = Bus.from_settings(BusSettings(transport="kafka", bootstrap=kafka_bootstrap,
                                        properties={"security.protocol": "SSL"}))  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as raised:
        check_reachable(bus, "SSL", timeout_s=3.0)
    assert time.monotonic() - started < 6.0
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"the Kafka cluster at {kafka_bootstrap} answers in plain text, not TLS: check ")
    assert '"security.protocol"' in message and "PLAINTEXT broker listener" in message
