"""The command line explains itself: its version, every command's page with a description,
examples and the defaults, the stages `service` runs (an unknown one refused in one line), its
name as typed, and logging set up once for every command (level and text or JSON, before or
after the command)."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import kstrade
from kstrade import logs
from kstrade.cli import SERVICE_NAMES, build_parser

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kstrade", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_version_is_the_packages() -> None:
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"kstrade {kstrade.__version__}"


def test_service_lists_exactly_the_stages_it_can_run() -> None:
    from kstrade.services import STAGES

    assert SERVICE_NAMES == tuple(STAGES)
    page = cli("service", "--help").stdout
    assert all(name in page for name in STAGES)
    wrong = cli("service", "feature", "--bus", "kafka")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    assert wrong.stderr.startswith("error: unknown stage 'feature'") and "inference.lstm" in wrong.stderr


def test_every_command_page_has_a_description_examples_and_shows_defaults() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(commands.choices) >= 12
    for name, page in commands.choices.items():
        text = page.format_help()
        assert page.description, name
        assert f"examples:\n  python -m kstrade {name}" in text, name
    run_page = commands.choices["run"].format_help()
    assert "(default: 7)" in run_page and "--seed" in run_page
    assert "default: 30" in commands.choices["data"].format_help()  # an option without a help text too


def test_the_installed_script_is_named_as_typed() -> None:
    script = Path(sys.executable).parent / "kstrade"
    if not script.exists():
        pytest.fail(f"the package's console script is not installed beside {sys.executable}")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("usage: kstrade ")
    assert cli("--help").stdout.startswith("usage: python -m kstrade ")


def test_logging_options_go_before_or_after_the_command_and_after_wins() -> None:
    parser = build_parser()
    assert parser.parse_args(["config", "show", "--log-level", "debug"]).log_level == "DEBUG"
    assert parser.parse_args(["--log-format", "json", "config", "show"]).log_format == "json"
    assert parser.parse_args(["--log-level", "ERROR", "config", "show", "--log-level", "INFO"]).log_level == "INFO"
    assert parser.parse_args(["config", "show"]).log_level is None  # the command's own level then


def test_json_logs_are_one_object_per_line_with_the_exception(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        logs.configure("INFO", "json")
        log = logging.getLogger("kstrade.test")
        log.debug("not shown at INFO")
        log.info("candles: %d", 3)
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("it failed")
        lines = capsys.readouterr().err.strip().splitlines()
        first, second = (json.loads(line) for line in lines)
        assert (first["level"], first["logger"], first["message"]) == ("INFO", "kstrade.test", "candles: 3")
        assert first["ts"].endswith("+00:00")
        assert second["level"] == "ERROR" and "ValueError: bad" in second["exc"]
        with pytest.raises(ValueError, match="unknown log level"):
            logs.configure("LOUD")
    finally:
        logs.configure("WARNING")


def test_every_command_sets_logging_up_from_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    """What a command's code logs reaches stderr at the level and in the format given (the
    command here is `config show`; every command goes through the same `main`)."""
    from kstrade.cli import main

    try:
        assert main(["--log-format", "json", "config", "show", "--log-level", "info"]) == 0
        capsys.readouterr()
        logging.getLogger("kstrade.ingest").info("a minute closed")
        logging.getLogger("kstrade.ingest").debug("not at INFO")
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert json.loads(line)["message"] == "a minute closed"
        assert main(["config", "show"]) == 0  # its own level: WARNING, as text
        capsys.readouterr()
        logging.getLogger("kstrade.ingest").info("not at WARNING")
        logging.getLogger("kstrade.ingest").warning("a gap")
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.endswith(" WARNING kstrade.ingest: a gap")
    finally:
        logs.configure("WARNING")
