"""The deployment examples say only true things: every config loads, every service they start
is a stage this build has, every environment variable is a real setting."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from kstrade.bus import Bus
from kstrade.cli import build_parser
from kstrade.config import load
from kstrade.services import STAGES, build

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CONFIGS = sorted((DEPLOY / "config").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    settings = load(path)
    assert settings.symbols
    if "ftmo-1step" in path.name:
        assert settings.execution.guardrails.preset == "ftmo_1step"
    if settings.bus.transport == "kafka":
        assert settings.bus.replication_factor == 3 and settings.bus.min_insync_replicas == 2


def test_there_are_the_three_promised_examples() -> None:
    assert {p.name for p in CONFIGS} >= {"development.toml", "ftmo-2step.toml", "ftmo-1step.toml"}


def _check_command(argv: list[str]) -> None:
    assert argv[:3] == ["python", "-m", "kstrade"], argv
    args = build_parser().parse_args(argv[3:])  # exits (SystemExit) on an unknown command or flag
    if args.command == "service":
        assert args.name in STAGES, f"no stage {args.name!r}"


def test_compose_services_are_real_stages_with_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    kstrade = {name: svc for name, svc in compose["services"].items() if svc.get("image") == "kstrade"}
    started = {svc["command"][4] for svc in kstrade.values() if svc["command"][3] == "service"}
    assert started == set(STAGES)  # every stage runs, and nothing that is not a stage
    for svc in kstrade.values():
        _check_command(svc["command"])
        # A service exits non-zero when the producer gives up on an output (RELIABILITY.md): only a
        # restart policy brings it back to have the batch redelivered.
        assert svc.get("restart") in ("on-failure", "always", "unless-stopped"), svc["command"]
        with monkeypatch.context() as m:
            for key, value in svc.get("environment", {}).items():
                m.setenv(key, str(value))
            load()  # an unknown KSTRADE_ variable or a bad value fails here, naming the key


def test_systemd_units_run_real_commands() -> None:
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(unit)
        assert parser["Service"].get("Restart") in ("on-failure", "always"), unit.name
        argv = parser["Service"]["ExecStart"].split()
        argv[0] = "python"
        argv = [a.replace("%i", "features") for a in argv]
        _check_command(argv)


def test_the_default_lag_groups_are_the_groups_the_stages_really_join() -> None:
    """The collector watches the lag of every stage's consumer group but its own; a name that no
    service joins (as `kstrade.inference` once was) reports nothing, silently."""
    watched = set(load().metrics.lag_groups)
    assert watched == {build(name, load(), Bus.memory()).group for name in STAGES if name != "metrics"}
