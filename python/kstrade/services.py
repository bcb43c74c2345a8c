"""Running one stage as its own process: `python -m kstrade service NAME` (the stages by name:
`kstrade.stages`, the built-in ones and the user's).

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
from contextlib import ExitStack
from types import FrameType

from kstrade import stages
from kstrade.bus import Bus, BusError
from kstrade.bus.reach import check_reachable
from kstrade.bus.topics import catalogue, create_all
from kstrade.config import Settings
from kstrade.liveness import Liveness, watching
from kstrade.stage import Stage, run_service
from kstrade.stages import BUILT_IN

#: The built-in stages, by name (the registry's `kstrade.stages.BUILT_IN`, under the name the
#: tests and the deploy checks know).
STAGES = BUILT_IN


def build(name: str, settings: Settings, bus: Bus) -> Stage:
    """The stage `name` for a service (`kstrade.stages.build`), with the live door's limits on
    market time from `[bus]` (`Stage.max_future_skew_ns`, `max_past_jump_ns`)."""
    stage = stages.build(name, settings, bus)
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
    stages.stage_class(name, settings)  # an unknown name or a bad extra stage: one line, before any connection
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
