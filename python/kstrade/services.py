"""Stages by name, and running one as its own process: `python -m kstrade service NAME`.

Each service is one member of the consumer group `kstrade.{name}`: start more processes with
the same name to split the partitions among them (stages that join several topics per symbol
ask for range assignment so a symbol's partitions stay together).

Shutdown: the first SIGINT/SIGTERM stops intake; the batch in hand is finished, its outputs
delivered and its offsets committed, and the process leaves the group and exits 0. A second
signal exits at once (what was not committed is redelivered to the group).

Liveness (`kstrade.liveness`): each process serves /healthz, /readyz and /progress on loopback
(`[service]` settings; a free port by default, logged at start) and raises NO_PROGRESS when
records wait and none is handled for `service.no_progress_s`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from kstrade.bus import Bus, BusError
from kstrade.bus.reach import check_reachable
from kstrade.bus.topics import catalogue, create_all
from kstrade.config import Settings
from kstrade.liveness import Liveness, watching
from kstrade.stage import Stage, run_service


def _features(settings: Settings, bus: Bus) -> Stage:
    from kstrade.features.stage import FeatureStage

    return FeatureStage(settings.symbols, settings.features.state_dir, base_interval=settings.base_interval)


def _signals(settings: Settings, bus: Bus) -> Stage:
    from kstrade.signals.aggregator import SignalAggregator

    return SignalAggregator.from_settings(settings)


def _models_dir(settings: Settings) -> Settings:
    """A relative models_dir that does not exist here means the models shipped inside the package
    (kstrade/models, also reached as models/ in a checkout), so `run` works from any directory,
    from a checkout or from an installed wheel."""
    configured = settings.inference.models_dir
    if configured.is_absolute() or configured.exists():
        return settings
    shipped = Path(__file__).resolve().parent / configured
    if not shipped.exists():
        return settings
    return settings.model_copy(update={"inference": settings.inference.model_copy(update={"models_dir": shipped})})


def resolved_models_dir(settings: Settings) -> Path:
    """The models directory the inference stages load from (`_models_dir`)."""
    return _models_dir(settings).inference.models_dir


def _lstm(settings: Settings, bus: Bus) -> Stage:
    from kstrade.inference.stage import LSTMInference, inference_stage

    return inference_stage(LSTMInference, _models_dir(settings))


def _transformer(settings: Settings, bus: Bus) -> Stage:
    from kstrade.inference.stage import TransformerInference, inference_stage

    return inference_stage(TransformerInference, _models_dir(settings))


def _metrics(settings: Settings, bus: Bus) -> Stage:
    from kstrade.metrics.collector import build_collector

    return build_collector(settings.metrics, bus)


def _execution(settings: Settings, bus: Bus) -> Stage:
    from kstrade.execution.stage import build as build_execution

    return build_execution(settings)


#: Every stage that can run as a service, by name.
STAGES: dict[str, Callable[[Settings, Bus], Stage]] = {
    "features": _features,
    "inference.lstm": _lstm,
    "inference.transformer": _transformer,
    "signals": _signals,
    "execution": _execution,
    "metrics": _metrics,
}


def build(name: str, settings: Settings, bus: Bus) -> Stage:
    try:
        factory = STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}: choose from {', '.join(sorted(STAGES))}") from None
    stage = factory(settings, bus)
    stage.max_future_skew_ns = int(settings.bus.max_future_skew_s * 1e9)
    stage.max_past_jump_ns = int(settings.bus.max_past_jump_s * 1e9)
    return stage


def ensure_topics(bus: Bus, settings: Settings) -> None:
    """Create the catalogue's topics that are missing (idempotent), with the configured
    replication, so a service can start on an empty cluster."""
    specs = catalogue(
        settings.symbols,
        replication_factor=settings.bus.replication_factor,
        min_insync_replicas=settings.bus.min_insync_replicas,
    )
    try:
        create_all(bus.admin(), specs)
    except BusError as exc:
        if "TopicAuthorizationFailed" not in str(exc):  # code KAFKA; the broker's reason in the text
            raise
        # A service principal under ACLs (kstrade.bus.acl) may not create topics: the operator
        # creates the catalogue (`topics create`) as an administrator.
        print("not allowed to create topics: using the ones the administrator created", file=sys.stderr)


def serve(name: str, settings: Settings) -> int:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}: choose from {', '.join(sorted(STAGES))}")
    bus = Bus.from_settings(settings.bus)
    check_reachable(bus, settings.bus.protocol)  # a wrong address or protocol: one line, in seconds
    ensure_topics(bus, settings)
    stage = build(name, settings, bus)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            print(f"{name}: second signal, exiting now", file=sys.stderr, flush=True)
            os._exit(130)
        print(f"{name}: stopping: finishing the batch in hand, then committing", file=sys.stderr, flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"{name}: consuming as {stage.group} on {bus}", file=sys.stderr, flush=True)
    liveness = Liveness.from_settings(name, settings.service)
    with ExitStack() as watch:
        try:
            watch.enter_context(watching(bus, liveness, settings.service))
        except OSError as exc:  # the health port is taken, or the address is not this host's
            where = f"{settings.service.health_addr}:{settings.service.health_port}"
            print(f"error: {name}: cannot serve health on {where}: {exc} (service.health_port)", file=sys.stderr)
            return 2
        run_service(bus, stage, stop, liveness=liveness, commit_interval_s=settings.service.commit_interval_s)
    print(f"{name}: stopped cleanly", file=sys.stderr, flush=True)
    return 0
