"""`python -m kstrade.metrics [--config FILE]`: the collector as its own service, in consumer
group `kstrade.metrics` on the configured bus, until SIGINT or SIGTERM (then it flushes the
database, commits and leaves the group)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from kstrade import logs
from kstrade.bus import Bus
from kstrade.config import ConfigError, load
from kstrade.metrics.collector import build_collector
from kstrade.stage import run_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kstrade.metrics", description=__doc__)
    parser.add_argument("--config", help="TOML file (then KSTRADE_* variables override it)")
    args = parser.parse_args(argv)
    logs.configure("INFO")
    try:
        settings = load(args.config)
        bus = Bus.from_settings(settings.bus)
        collector = build_collector(settings.metrics, bus)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    port = settings.metrics.prometheus_port
    logging.getLogger("kstrade.metrics").info(
        "collector running on %s; Prometheus on %s", settings.bus.transport, f":{port}" if port else "off"
    )
    run_service(bus, collector, stop)  # closes the collector (database flush, servers) on the way out
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
