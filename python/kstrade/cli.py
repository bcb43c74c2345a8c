"""The `python -m kstrade` command line.

python -m kstrade broker start [--nodes 3]    a local Kafka cluster on 127.0.0.1 (no Docker)
python -m kstrade broker start --secure        the same, clients on SASL_SSL with a user per service
python -m kstrade broker status | stop          the node count comes from the cluster directory
python -m kstrade broker reset [--yes]          deletes the (stopped) cluster directory: topics, data
python -m kstrade topics create [--bootstrap HOST:PORT] [--symbols ...] [--replication-factor N]
python -m kstrade topics list | describe NAME...
python -m kstrade ingest replay FILE [--speed max|realtime|xN] [--interval 1m] [--symbol S]
python -m kstrade ingest coinbase [--symbols BTC-USD,...]   the live feed (URLs from the config)
python -m kstrade data synth | download | import   SYNTHETIC candles, Coinbase's into a store, your own files
python -m kstrade train [--out models] [--seed 7] [--days 21] [--market edge]   (needs the `train` extra: torch)
python -m kstrade train --data eurusd --interval 1h   REAL candles (a file, a store, the bundled EURUSD 1h)
python -m kstrade models check [DIR]            the checks inference runs at start-up, on each model
python -m kstrade bench [--bootstrap HOST:PORT] [--quick]   benchmarks vs the anchors, BENCHMARKS.md
python -m kstrade acl show [--config FILE] [--service NAME]   each service principal's ACLs
python -m kstrade acl apply --bootstrap HOST:PORT [--config FILE]   as an admin (KSTRADE_BUS__SASL_*)
python -m kstrade control halt|resume|flatten --reason TEXT [--account A] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kstrade.broker.local import Cluster
    from kstrade.broker.secure import SecureCluster


def _cmd_broker(args: argparse.Namespace) -> int:
    from kstrade.broker import BrokerError, cluster, reset
    from kstrade.broker.local import Cluster, default_cluster_dir
    from kstrade.broker.secure import SecureCluster

    directory = Path(args.dir) if args.dir else default_cluster_dir()
    try:
        if args.action == "reset":
            return _broker_reset(directory, args.yes, reset)
        # status and stop read the node count and ports from the directory; --nodes is for start.
        nodes = args.nodes if args.action == "start" else None
        if args.action != "start" and Cluster.load(directory) is None:
            if args.action == "stop":
                print(f"no cluster in {directory}: nothing to stop")
                return 0
            print(f"no cluster in {directory}: stopped")
            return 3
        if args.action == "start" and args.secure:
            c = _secure_cluster(directory, nodes, args.port)
        else:
            c = cluster(directory, nodes=nodes, base_port=args.port)
        if args.action == "start":
            c.start()
            bootstrap = c.secure_bootstrap if isinstance(c, SecureCluster) else c.bootstrap
            print(f"kafka {c.version} running: {len(c.nodes)} node(s), bootstrap {bootstrap}")
            print(f"data and logs in {c.directory}")
            if isinstance(c, SecureCluster):
                _print_secure(c)
        elif args.action == "stop":
            c.stop()
            print(f"kafka stopped ({len(c.nodes)} node(s) in {c.directory})")
        else:
            states = c.status()
            for i, (node, alive) in enumerate(states):
                state = f"running (pid {node.pid})" if alive else "stopped"
                if isinstance(c, SecureCluster):
                    print(f"node {node.node_id}: INTERNAL 127.0.0.1:{node.port} (the brokers' own), "
                          f"SASL_SSL 127.0.0.1:{c.secure_ports[i]} {state}")  # fmt: skip
                else:
                    print(f"node {node.node_id}: 127.0.0.1:{node.port} {state}")
            return 0 if states and all(alive for _, alive in states) else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _secure_cluster(directory: Path, nodes: int | None, port: int | None) -> Cluster:
    """`broker start --secure`: the secure cluster in `directory`, or a new one with a password
    file per user; never a plaintext cluster turned secure in place (its data has no ACLs)."""
    from kstrade.broker import BrokerError, cluster
    from kstrade.broker.local import Cluster
    from kstrade.broker.secure import SecureCluster, new_local_secure_cluster

    existing = Cluster.load(directory)
    if existing is None:
        return new_local_secure_cluster(directory, nodes or 1, port)
    if not isinstance(existing, SecureCluster):
        raise BrokerError(
            f"{directory} holds a plaintext cluster: start it without --secure, or delete it first with "
            f"`python -m kstrade broker reset --dir {directory}`"
        )
    return cluster(directory, nodes=nodes)


def _print_secure(c: SecureCluster) -> None:
    """How to reach a secure cluster, as the administrator and as a service."""
    from kstrade.broker.secure import ADMIN, MECHANISM

    tls = json.dumps({"security.protocol": "SASL_SSL", "sasl.mechanisms": MECHANISM,
                      "ssl.ca.location": str(c.ca_file)}, separators=(",", ":"))  # fmt: skip
    users = ", ".join(sorted(c.users))
    print(f"clients: SASL_SSL ({MECHANISM} over TLS) on {c.secure_bootstrap}; CA {c.ca_file}")
    print(f"users: {users}; one password file each in {c.secrets_dir}/ (mode 0600)")
    print(f"the brokers' own listeners (INTERNAL {c.bootstrap}, and CONTROLLER) take only a client that")
    print("  presents the brokers' certificate (TLS both ways): give clients the SASL_SSL address")
    print("as the administrator (create the topics, then apply the ACLs):")
    print(f"  export KSTRADE_BUS__PROPERTIES='{tls}'")
    print(f"  export KSTRADE_BUS__SASL_USERNAME={ADMIN} KSTRADE_BUS__SASL_PASSWORD_FILE={c.password_file(ADMIN)}")
    print(f"  python -m kstrade topics create --bootstrap {c.secure_bootstrap}")
    print(f"  python -m kstrade acl apply --bootstrap {c.secure_bootstrap}")
    print("a service: the same properties, KSTRADE_BUS__SASL_USERNAME=kstrade-<service> and its password file")


def _broker_reset(directory: Path, yes: bool, reset: Callable[[Path], Path]) -> int:
    """The one command that deletes a cluster: only with --yes or a 'y' typed at a terminal."""
    if not yes:
        if not sys.stdin.isatty():
            print(f"error: refusing to delete {directory} without --yes (no terminal to confirm on)", file=sys.stderr)
            return 2
        answer = input(f"delete {directory}: the cluster's topics, data and logs? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    print(f"deleted {reset(directory)}")
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from kstrade.bus import Bus, BusError
    from kstrade.bus.reach import ClusterUnreachable, check_reachable
    from kstrade.bus.topics import catalogue, create_all
    from kstrade.config import ConfigError, discover, load

    # The bus settings (TOML, KSTRADE_BUS__*) give the security properties and credentials, so an
    # administrator reaches a SASL_SSL cluster the way the services do; the flag or
    # $KSTRADE_BOOTSTRAP still wins for the address.
    explicit = args.bootstrap or os.environ.get("KSTRADE_BOOTSTRAP")
    try:
        settings = load(discover(args.config), bus={"transport": "kafka", "bootstrap": explicit})
        bus = Bus.from_settings(settings.bus)
        check_reachable(bus, settings.bus.protocol)
    except (ConfigError, BusError, ClusterUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    admin = bus.admin()
    try:
        if args.action == "create":
            symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else settings.symbols
            specs = catalogue(
                symbols,
                replication_factor=args.replication_factor or settings.bus.replication_factor,
                min_insync_replicas=args.min_insync_replicas or settings.bus.min_insync_replicas,
            )
            results = create_all(admin, specs)
            made = sum(1 for _, created in results if created)
            print(f"{made} topic(s) created, {len(results) - made} already existed, on {bus.bootstrap}")
        elif args.action == "list":
            for name in admin.list_topics(10.0):
                print(name)
        else:
            for d in admin.describe_topics(args.names, 10.0):
                print(f"{d['name']}: partitions={d['partitions']} replication_factor={d['replication_factor']}")
                for key in ("retention.ms", "compression.type", "cleanup.policy", "min.insync.replicas"):
                    print(f"  {key}={d['configs'].get(key)}")
    except (BusError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    import json

    from kstrade.config import ConfigError, discover, load, redacted
    from kstrade.toml_text import dumps

    try:
        path = discover(args.config)
        settings = load(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(redacted(settings), indent=2))
        return 0
    source = f"from {path}" if path is not None else "no config file"
    print(dumps(redacted(settings), f"kstrade's effective configuration ({source}, then KSTRADE_* variables);\n"
                "secrets are redacted and never read from a file."), end="")  # fmt: skip
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    if args.action == "download":
        return _data_download(args)
    if args.action == "import":
        return _data_import(args)
    from datetime import UTC, datetime

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from kstrade.ingest import synthetic
    from kstrade.progress import ProgressBars

    symbols = [s.strip() for s in (args.symbols or "BTC-USD,ETH-USD,SOL-USD").split(",") if s.strip()]
    try:
        start = datetime.strptime(args.start, "%Y-%m-%d").replace(tzinfo=UTC)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("symbols"),
                   TextColumn("{task.fields[done]}"), TimeElapsedColumn())  # fmt: skip
        with ProgressBars(*columns) as bars:
            task = bars.add(f"SYNTHETIC {args.market} market, {args.days} days", total=len(symbols), done="")
            path = synthetic.write(symbols, start, args.days, args.seed, Path(args.out or "data"), args.market,
                                   on_generated=lambda s: bars.update(task, advance=1, done=s))  # fmt: skip
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote SYNTHETIC 1m candles ({args.market} market) for {', '.join(symbols)} ({args.days} days, "
          f"seed {args.seed}): {path}")  # fmt: skip
    return 0


def _data_download(args: argparse.Namespace) -> int:
    import time

    from kstrade.config import ConfigError, discover, load
    from kstrade.data.download import (
        Download,
        DownloadProgress,
        format_gap_report,
        gap_report,
        parse_instant,
        plan,
        settled_end,
    )
    from kstrade.data.store import CandleStore, StoreError, iso
    from kstrade.ingest.coinbase.rest import CandlesRest, RestError

    symbols = [s.strip() for s in (args.symbols or "").split(",") if s.strip()]
    try:
        if not symbols or not args.since:
            raise ValueError("data download needs --symbols and --from")
        if args.interval not in (None, "1m"):
            raise ValueError(f"data download fetches 1m candles only (higher timeframes are built from them), "
                             f"not {args.interval}")  # fmt: skip
        start = parse_instant(args.since)
        wanted_end = parse_instant(args.until) if args.until else time.time_ns() // 1_000_000
        end = settled_end(wanted_end, time.time_ns() // 1_000_000)
        if end <= start:
            raise ValueError(f"nothing to download: {iso(start)} is not before {iso(end)}")
        settings = load(discover(args.config))
        store = CandleStore(args.store)
        pages = plan(store, symbols, start, end)
    except (ConfigError, StoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    url = settings.ingest.coinbase.rest_url
    print(f"{len(pages)} page(s) to fetch from {url} for {', '.join(symbols)}, {iso(start)} to {iso(end)} "
          f"(end exclusive), into {store.root}")  # fmt: skip
    rest = CandlesRest(url)
    download = Download(store, rest, url, requests_per_s=args.rate or None)
    try:
        with DownloadProgress(pages, (start, end), symbols) as progress:
            download.on_page = progress
            download.run(pages)
    except (RestError, StoreError, OSError, KeyboardInterrupt) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"error: {reason}\n{download.pages} page(s) ({download.candles:,} candles) are written; run the same "
              "command again to fetch the rest", file=sys.stderr)  # fmt: skip
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        rest.close()
    print(f"fetched {download.candles:,} candle(s) in {download.requests} request(s); gaps (minutes without trades "
          "have no candle; first .. last missing minute, UTC):")  # fmt: skip
    print(format_gap_report(gap_report(store, symbols, (start, end))))
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from kstrade.data.candle_files import describe, import_file, write_file, write_store
    from kstrade.data.store import CandleStore, StoreError
    from kstrade.progress import ProgressBars

    if not args.file:
        print("error: data import needs the FILE to import", file=sys.stderr)
        return 2
    try:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with ProgressBars(*columns) as bars:
            reading = bars.add(f"reading and checking {Path(args.file).name}", total=None)
            candles = import_file(args.file, symbol=args.symbol, interval=args.interval, timezone=args.timezone)
            bars.finish(reading, f"read and checked {Path(args.file).name}: {candles.frame.height:,} candles")
            if args.out:
                written = [write_file(candles, Path(args.out))]
            else:
                writing = bars.add(f"writing month files into {args.store}", total=None)
                written = write_store(
                    candles, CandleStore(args.store), on_written=lambda _, of: bars.update(writing, advance=1, total=of)
                )
    except (StoreError, ValueError, OSError) as exc:  # CandleFileError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(candles))
    if candles.format == "mt5-bars" and args.timezone is None:
        print("note: MT5 exports bars in the trade server's time; they were read as UTC (see --timezone)")
    print(f"wrote {len(written)} file(s): {', '.join(str(p) for p in written)}")
    return 0


def _cmd_service(args: argparse.Namespace) -> int:
    from kstrade.bus.reach import ClusterUnreachable
    from kstrade.config import ConfigError, discover, load
    from kstrade.services import serve

    try:
        settings = load(discover(args.config), bus={"transport": args.bus, "bootstrap": args.bootstrap})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.bus.transport != "kafka":
        print("error: a service shares work through Kafka; use --bus kafka (or bus.transport = 'kafka')",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        return serve(args.name, settings)
    except (ValueError, ClusterUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_ingest(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from kstrade.bus import Bus, BusError
    from kstrade.bus.reach import ClusterUnreachable, check_reachable
    from kstrade.config import ConfigError, discover, load
    from kstrade.ingest.replay import ReplaySource, Speed, eurusd_1h_candles, interval_of, read_candles
    from kstrade.ingest.resume import resume_points
    from kstrade.ingest.service import ensure_candle_topics, run_ingest
    from kstrade.stage import Source

    stop = threading.Event()

    def on_sigterm(*_: object) -> None:
        logging.getLogger("kstrade.ingest").info("ingest: SIGTERM: finishing the batch in hand, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        # --bootstrap names the address only; security and credentials still come from the settings.
        settings = load(
            discover(args.config), bus={"transport": "kafka", "bootstrap": args.bootstrap} if args.bootstrap else {}
        )
        bus = Bus.from_settings(settings.bus)
        check_reachable(bus, settings.bus.protocol)
        source: Source
        if args.action == "replay":
            frame = eurusd_1h_candles() if args.file == "eurusd" else read_candles(args.file, args.symbol)
            symbols = frame.get_column("symbol").unique(maintain_order=True).to_list()
            ensure_candle_topics(bus, symbols, settings.bus.replication_factor)
            interval = args.interval or interval_of(frame)
            source = ReplaySource(
                frame, interval=interval, speed=Speed.parse(args.speed), resume=resume_points(bus, symbols)
            )
        else:
            from kstrade.ingest.coinbase.feed import CoinbaseSource

            symbols = [s.strip() for s in (args.symbols or ",".join(settings.symbols)).split(",") if s.strip()]
            ensure_candle_topics(bus, symbols, settings.bus.replication_factor)
            source = CoinbaseSource(symbols, settings.ingest.coinbase, resume=resume_points(bus, symbols))
        try:
            batches = run_ingest(bus, source, stop)
        except KeyboardInterrupt:
            batches = -1
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
    except (ConfigError, BusError, ClusterUnreachable, ValueError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    health = getattr(source, "health", None)
    print(f"ingest {args.action}: {batches} batch(es); {_health_line(health)}")
    return 0


def _health_line(health: object) -> str:
    """The ingest health counters as one readable line: `name value`, non-zero ones only."""
    snapshot = getattr(health, "snapshot", None)
    if snapshot is None:
        return "no health counters"
    parts = []
    for name, value in snapshot().items():
        if name == "last_message_ns" or not value:
            continue
        shown = f"{value:.1f} s" if isinstance(value, float) else f"{value:,}"
        parts.append(f"{name.replace('_', ' ')} {shown}")
    return "health: " + (", ".join(parts) if parts else "all counters zero")


def _hold_dashboard(url: str) -> None:
    """After `run --dashboard`: the page stays up until Ctrl-C."""
    print(f"dashboard: {url}  (the finished run; Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


def _cmd_run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from kstrade.app import RunOptions, bundled, run
    from kstrade.config import ConfigError, discover, load
    from kstrade.ingest import synthetic

    def day(text: str | None) -> datetime | None:
        return None if text is None else datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)

    try:
        shipped = bundled(args.data)  # `--data eurusd`: the data set decides its symbols and interval
        preset = shipped.settings if shipped is not None else {}
        if args.models:
            preset = {**preset, "inference": {"models_dir": args.models}}
        settings = load(discover(args.config), bus={"transport": args.bus, "bootstrap": args.bootstrap}, **preset)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else Path("runs") / f"{args.command}-{stamp}"
        options = RunOptions(
            out=out,
            data=Path(args.data) if args.data else None,
            days=getattr(args, "days", 7),
            seed=getattr(args, "seed", 7),
            market=getattr(args, "market", synthetic.DEFAULT_MARKET),
            since=day(getattr(args, "since", None)),
            until=day(getattr(args, "until", None)),
            live_view=not args.no_live,  # shown on a terminal only
            dashboard_port=getattr(args, "dashboard", None),
            dashboard_hold=_hold_dashboard,
        )
        summary = run(settings, options)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{summary['signals_final']:,} final signals, {summary['orders']:,} orders, "
        f"{summary['trades_closed']:,} trades closed, realized P&L {summary['realized_pnl']:,.2f}"
    )
    if "planted_edge" in str(summary.get("data", "")):
        print("(SYNTHETIC market with a planted edge, put there on purpose: real markets are much harder)")
    if str(summary.get("data", "")).startswith("REAL"):
        print(f"({summary['data']}; {summary['start'][:10]} .. {summary['end'][:10]})")
    tables = "signals/orders/executions/pnl/trades/equity.parquet"
    print(f"run directory: {options.out}  (report.html, summary.json, {tables})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.evaluate:
        return _evaluate(args)
    try:
        from kstrade.training.trainer import TrainOptions, train
    except ImportError as exc:
        print(f"error: training needs the optional extra: pip install 'kstrade[train]' ({exc})", file=sys.stderr)
        return 2
    from dataclasses import replace

    if args.data is not None:
        return _train_on_candles(args)
    if args.interval not in (None, "1m"):
        print("error: SYNTHETIC training data is 1m: pass --data with candles of that interval (e.g. --data eurusd "
              "--interval 1h)", file=sys.stderr)  # fmt: skip
        return 2
    options = TrainOptions(out=Path(args.out or "models"), seed=args.seed)
    options = replace(options, data=replace(options.data, days=args.days, market=args.market))
    train(options)
    return 0


def _train_on_candles(args: argparse.Namespace) -> int:
    """train --data FILE|eurusd [--interval 1h] [--symbols ...]: REAL candles, into --out (default models/INTERVAL)."""
    from kstrade.ingest.replay import interval_of
    from kstrade.training.on_candles import options_for, read_training_candles, train_on_candles

    symbols = [s.strip() for s in (args.symbols or "").split(",") if s.strip()] or None
    try:
        data = read_training_candles(args.data, symbols)
        interval = interval_of(data.frame)
        if args.interval is not None and args.interval != interval:
            raise ValueError(f"{args.data} holds {interval} candles, not {args.interval}")
        default_out = f"models/{interval}"  # beside the shipped 1m models, never over them
        out = Path(args.out or default_out)
        opts = options_for(out, interval, args.seed)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train_on_candles(data, opts)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from kstrade.inference.check import check_models_dir, report

    results = check_models_dir(Path(args.dir) if args.dir else None, args.interval)
    print(report(results))
    return 0 if all(r.ok for r in results) else 1


def _evaluate(args: argparse.Namespace) -> int:
    """train --evaluate: the models in --out on a fresh SYNTHETIC period (no torch needed)."""
    from dataclasses import replace

    from kstrade.inference.manifest import ModelRefused
    from kstrade.training import dataset as ds
    from kstrade.training.reevaluate import FRESH_START, reevaluate, report

    if args.seed == 7:
        print("error: --evaluate needs a seed the models were not trained on (not 7): e.g. --seed 11", file=sys.stderr)
        return 2
    data = replace(ds.DataSpec(), seed=args.seed, start=FRESH_START, days=args.days, market=args.market)
    try:
        checks = reevaluate(Path(args.out or "models"), data)
    except (ValueError, ModelRefused, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"the models in {args.out or 'models'} on {args.days} fresh days of the SYNTHETIC {args.market} market from "
          f"{FRESH_START:%Y-%m-%d}, seed {args.seed}:")  # fmt: skip
    print(report(checks))
    held = sum(c.holds for c in checks)
    print(f"{held} of {len(checks)} figures in the card's replicate intervals")
    return 0 if held == len(checks) else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    from kstrade.benchmarks import main as bench

    return bench(args.bootstrap, Path(args.out) if args.out else None, args.quick, args.pytest_args)


def _cmd_acl(args: argparse.Namespace) -> int:
    from kstrade.bus import Bus, BusError, acl
    from kstrade.bus.reach import ClusterUnreachable, check_reachable
    from kstrade.config import ConfigError, discover, load

    try:
        settings = load(discover(args.config), bus={"transport": "kafka", "bootstrap": args.bootstrap})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    by_service = acl.pipeline_acls(
        settings.symbols, lag_groups=settings.metrics.lag_groups, base_interval=settings.base_interval
    )
    if args.service is not None and args.service not in by_service:
        print(f"error: unknown service {args.service!r}: choose from {', '.join(sorted(by_service))}", file=sys.stderr)
        return 2
    chosen = [a for name, acls in by_service.items() if args.service in (None, name) for a in acls]
    if args.action == "show":
        for binding in chosen:
            print(binding)
        return 0
    try:
        check_reachable(Bus.from_settings(settings.bus), settings.bus.protocol)
    except (BusError, ClusterUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        applied = acl.apply(chosen, settings.bus.client_properties())
    except (ConfigError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the admin client's KafkaException: refused, unreachable
        print(f"error: applying ACLs on {settings.bus.bootstrap} failed: {exc}", file=sys.stderr)
        return 1
    principals = len({a.principal for a in chosen})
    print(f"{applied} ACL binding(s) in place for {principals} principal(s) on {settings.bus.bootstrap}")
    return 0


def _cmd_control(args: argparse.Namespace) -> int:
    from kstrade.bus import Bus, BusError
    from kstrade.bus.reach import ClusterUnreachable, check_reachable
    from kstrade.config import ConfigError, discover, load
    from kstrade.execution.control import AckWatch, make_command, operator_name, publish

    try:
        settings = load(discover(args.config), bus={"transport": "kafka", "bootstrap": args.bootstrap})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    account = args.account or settings.execution.account
    if args.action == "flatten" and not args.yes:
        if not sys.stdin.isatty():
            print("error: flatten closes every open position at market: confirm with --yes", file=sys.stderr)
            return 2
        answer = input(f"Close every open position of account {account} at market, then halt? Type FLATTEN: ")
        if answer.strip() != "FLATTEN":
            print("not confirmed: nothing sent", file=sys.stderr)
            return 1
    command = make_command(args.action, account=account, issued_by=args.by or operator_name(), reason=args.reason)
    bus = Bus.from_settings(settings.bus)
    try:
        check_reachable(bus, settings.bus.protocol)
    except ClusterUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        watch = AckWatch(bus) if args.wait > 0 else None
        publish(bus, command)
    except BusError as exc:
        print(f"error: {args.action} not sent to {settings.bus.bootstrap}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.action} for account {account} on control.execution: command {command.command_id}")
    if watch is None:
        return 0
    try:
        ack = watch.wait(command, args.wait)
    finally:
        watch.close()
    if ack is None:
        print(f"warning: no execution service acknowledged it within {args.wait:g} s: check that one runs for "
              f"account {account} (execution.account) and reads control.execution", file=sys.stderr)  # fmt: skip
        return 1
    print(f"acknowledged: {ack.message}")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from kstrade.dashboard.web import serve_command  # the `dashboard` extra (fastapi, uvicorn)

    return serve_command(config=args.config, bus=args.bus, bootstrap=args.bootstrap, host=args.host, port=args.port,
                         runs=args.runs, run=args.run)  # fmt: skip


#: The built-in stages `service NAME` runs (kstrade.stages.BUILT_IN, which a test holds this to; not
#: imported here: it loads every stage's settings, and `--help` should answer at once).
#: `kstrade.ingest.synthetic.MARKETS`, named here so that --help does not import numpy (a test
#: holds the two equal).
MARKET_CHOICES = ("edge", "control")
SERVICE_NAMES = ("features", "inference.lstm", "inference.transformer", "signals", "execution", "metrics")

#: The level each command logs at unless --log-level says otherwise.
_COMMAND_LOG_LEVEL = {"ingest": "INFO"}


def program_name() -> str:
    """The command as the user typed it: `kstrade` (the installed script) or `python -m kstrade`."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m kstrade" if name in ("", "-c", "__main__.py") else name


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help pages that keep the examples' lines as written and show each option's default
    (where it has one to show and its text does not already name it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def build_parser() -> argparse.ArgumentParser:
    from kstrade import __version__, logs

    prog = program_name()
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=_Help,
        description="kstrade: real-time ML trading on Kafka (or on an embedded bus: no broker needed)",
        epilog=f"examples:\n  {prog} run --days 1          the whole pipeline on SYNTHETIC candles, no broker\n"
        f"  {prog} service --help        the stages that run as services\n"
        f"  {prog} COMMAND --help        what a command does, its options and defaults",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"kstrade {__version__}")
    # The logging options, before or after the command: given after it, they win.
    logging_options = argparse.ArgumentParser(add_help=False)
    for target, default in ((parser, None), (logging_options, argparse.SUPPRESS)):
        target.add_argument("--log-level", choices=logs.LEVELS, type=str.upper, default=default,
                            help="default: INFO for ingest, WARNING for the others")  # fmt: skip
        target.add_argument("--log-format", choices=logs.FORMATS, default=default,
                            help="text lines or one JSON object per line, on stderr (default: text)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, summary: str, examples: list[str], *, description: str | None = None,
            parents: list[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:  # fmt: skip
        """A command's page: its summary in the command list, a description and its examples."""
        lines = "\n".join(f"  {prog} {example}" for example in examples)
        return sub.add_parser(
            name, help=summary, description=textwrap.fill(description or summary[0].upper() + summary[1:] + ".", 88),
            epilog=f"examples:\n{lines}", formatter_class=_Help, parents=[logging_options, *(parents or [])],
        )  # fmt: skip

    broker = add(
        "broker",
        "a local Apache Kafka cluster for development and tests (KRaft, no Docker)",
        ["broker start", "broker start --nodes 3", "broker start --secure", "broker status", "broker stop"],
    )
    broker.add_argument("action", choices=["start", "stop", "status", "reset"], help="reset deletes the directory")
    broker.add_argument(
        "--nodes", type=int, default=None, help="start: 1 (default), or 3 for replication factor 3 / min ISR 2"
    )
    broker.add_argument("--port", type=int, default=None, help="start: first client port (9092); node i: port + 2i")
    broker.add_argument("--dir", help="cluster directory (default ~/.cache/kstrade/cluster)")
    broker.add_argument("--yes", action="store_true", help="reset: delete without asking")
    broker.add_argument(
        "--secure",
        action="store_true",
        help="start: clients on SASL_SSL (SCRAM-SHA-512 over TLS, a local CA), one user per service, ACLs enforced",
    )
    broker.set_defaults(func=_cmd_broker)

    topics = add(
        "topics",
        "create and inspect the pipeline's topics",
        ["topics create --bootstrap 127.0.0.1:9092", "topics list", "topics describe market.candles.BTC-USD.1m"],
    )
    on_kafka = argparse.ArgumentParser(add_help=False)
    on_kafka.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default $KSTRADE_BOOTSTRAP, then bus.bootstrap)"
    )
    on_kafka.add_argument(
        "--config",
        help="TOML file (bus: security, credentials, replication); default: $KSTRADE_CONFIG, else ./kstrade.toml",
    )
    actions = topics.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[on_kafka], help="create every topic of the catalogue")
    create.add_argument("--symbols", help="comma-separated (default: the configured symbols)")
    create.add_argument("--replication-factor", type=int, default=None, help="default: bus.replication_factor")
    create.add_argument("--min-insync-replicas", type=int, default=None)
    actions.add_parser("list", parents=[on_kafka], help="list the cluster's topics")
    describe = actions.add_parser("describe", parents=[on_kafka], help="partitions, replication and settings")
    describe.add_argument("names", nargs="+")
    topics.set_defaults(func=_cmd_topics)

    data = add(
        "data",
        "market data: SYNTHETIC, downloaded from Coinbase, or imported from your files",
        [
            "data synth --days 7 --seed 7 --out data",
            "data download --symbols BTC-USD,ETH-USD --from 2026-01-01 --to 2026-03-01",
            "data import BTCUSDT-1m-2026-01.csv --symbol BTC-USD",
            "data import EURUSD_M1.csv --symbol EURUSD --timezone Europe/Athens --out eurusd.parquet",
        ],
        description="synth: SYNTHETIC candles into one Parquet file. download: Coinbase's public 1m candles "
        "into a candle store (STORE/symbol=S/YYYY-MM.parquet), resumable: a second run fetches only what "
        "the store lacks. import: a Binance kline CSV, MT5 'Export bars' CSV, Dukascopy CSV, Freqtrade "
        "JSON/feather or timestamp/open/high/low/close/volume table, validated, into the store or one "
        "file.",
    )
    data.add_argument("action", choices=["synth", "download", "import"])
    data.add_argument("file", nargs="?", metavar="FILE", help="import: the candle file")
    data.add_argument("--symbols", default=None, help="synth: default BTC-USD,ETH-USD,SOL-USD; download: required")
    synth = data.add_argument_group("synth")
    synth.add_argument("--start", default="2026-01-05", help="first UTC day, YYYY-MM-DD")
    synth.add_argument("--days", type=int, default=30)
    synth.add_argument("--seed", type=int, default=7, help="seeds the generator: same seed, same candles")
    synth.add_argument(
        "--market",
        choices=MARKET_CHOICES,
        default="edge",
        help="SYNTHETIC market: edge (a planted, documented edge) or control (none)",
    )
    data.add_argument("--out", help="synth: directory for the Parquet file (default: data); import: write this "
                      "one .parquet or .csv file instead of the store")  # fmt: skip
    data.add_argument("--store", default="data/candles", help="download, import: the candle store directory")
    data.add_argument("--interval", default=None, help="download: 1m only (default); import: default detected")
    download = data.add_argument_group("download")
    download.add_argument("--from", dest="since", metavar="DATE", help="first UTC day (YYYY-MM-DD) or ISO time")
    download.add_argument("--to", dest="until", metavar="DATE", help="end, exclusive (default: now)")
    download.add_argument("--rate", type=float, default=10.0, help="requests per second at most")
    download.add_argument(
        "--config",
        help="TOML file for ingest.coinbase.rest_url ($KSTRADE_COINBASE_REST_URL wins); default: "
        "$KSTRADE_CONFIG, else ./kstrade.toml",
    )
    imports = data.add_argument_group("import")
    imports.add_argument("--symbol", help="the symbol the file holds (unless it has a symbol column)")
    imports.add_argument(
        "--timezone", help="IANA zone of times written without an offset (MT5: the trade server's), default UTC"
    )
    data.set_defaults(func=_cmd_data)

    service = add("service", "run one stage as its own process (its own consumer group)",
                  ["service features --bootstrap 127.0.0.1:9092 --bus kafka", "service signals --config prod.toml"],
                  description="Runs one stage as its own process, in consumer group kstrade.NAME, until SIGTERM. "
                  f"Stages: {', '.join(SERVICE_NAMES)}, and your own ([pipeline] extra_stages in the config, or "
                  "an entry point in group kstrade.stages).")  # fmt: skip
    # Not argparse choices: an unknown name is one line naming the stages (kstrade.stages.stage_class).
    service.add_argument("name", metavar="NAME", help=f"one of: {', '.join(SERVICE_NAMES)}, or your own stage's name")
    service.add_argument(
        "--config",
        help="TOML file (then KSTRADE_* variables override it); default: $KSTRADE_CONFIG, else ./kstrade.toml",
    )
    service.add_argument("--bus", choices=["memory", "kafka"], default=None, help="kafka (a service needs it)")
    service.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers")
    service.set_defaults(func=_cmd_service)
    ingest = add("ingest", "market data into market.candles.* (replay or live Coinbase)",
                 ["ingest replay eurusd --bootstrap 127.0.0.1:9092", "ingest replay data/candles.parquet --speed x60",
                  "ingest coinbase --symbols BTC-USD,ETH-USD"])  # fmt: skip
    ingest.add_argument("action", choices=["replay", "coinbase"])
    ingest.add_argument("file", nargs="?", default="eurusd", help="replay: CSV/Parquet candles, or 'eurusd'")
    ingest.add_argument("--speed", default="max", help="replay: max, realtime or xN")
    ingest.add_argument("--interval", default=None, help="replay: interval of the rows (default: inferred)")
    ingest.add_argument("--symbol", default=None, help="replay: symbol of a file without a symbol column")
    ingest.add_argument("--symbols", default=None, help="coinbase: products (default: the config's symbols)")
    ingest.add_argument("--bootstrap", default=None, help="Kafka bootstrap (default: the config's bus)")
    ingest.add_argument("--config", help="TOML file; default: $KSTRADE_CONFIG, else ./kstrade.toml")
    ingest.set_defaults(func=_cmd_ingest)

    on_bus = argparse.ArgumentParser(add_help=False)
    on_bus.add_argument(
        "--config",
        help="TOML file (then KSTRADE_* variables override it); default: $KSTRADE_CONFIG, else ./kstrade.toml",
    )
    on_bus.add_argument("--bus", choices=["memory", "kafka"], default=None, help="default: memory (embedded)")
    on_bus.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (with --bus kafka)")
    on_bus.add_argument("--out", help="run directory (default ./runs/<command>-<UTC time>)")
    on_bus.add_argument(
        "--models", help="models directory (default: inference.models_dir: models, or models/1h on a 1h base)"
    )
    run_p = add(
        "run",
        "the whole pipeline in one process, replaying data",
        ["run", "run --days 1 --no-live", "run --data candles.parquet", "run --bus kafka --bootstrap 127.0.0.1:9092"],
        parents=[on_bus],
    )
    run_p.add_argument(
        "--data", help="candle file (CSV/Parquet) or a candle store (data download); default: SYNTHETIC minutes"
    )
    run_p.add_argument("--days", type=int, default=7, help="days of synthetic data (without --data)")
    run_p.add_argument("--seed", type=int, default=7, help="seeds the SYNTHETIC candles (without --data)")
    run_p.add_argument(
        "--market",
        choices=MARKET_CHOICES,
        default="edge",
        help="SYNTHETIC market: edge (a planted, documented edge) or control (none)",
    )
    run_p.add_argument("--no-live", action="store_true", help="no live terminal view")
    run_p.add_argument(
        "--dashboard",
        type=int,
        nargs="?",
        const=8050,
        metavar="PORT",
        help="serve the dashboard on 127.0.0.1:PORT (8050 without a number) while it replays, and after it until "
        "Ctrl-C (the dashboard extra)",
    )
    run_p.set_defaults(func=_cmd_run)
    backtest = add(
        "backtest",
        "the live code path over a file, deterministic",
        ["backtest --data candles.parquet --from 2026-01-05 --to 2026-01-12", "backtest --data eurusd"],
        parents=[on_bus],
    )
    backtest.add_argument(
        "--data", required=True, help="candle file (CSV or Parquet), a store (data download), or 'eurusd' (REAL, 1h)"
    )
    backtest.add_argument("--from", dest="since", help="first UTC day, YYYY-MM-DD")
    backtest.add_argument("--to", dest="until", help="UTC day to stop before, YYYY-MM-DD")
    backtest.add_argument("--no-live", action="store_true", help="no live terminal view (progress and stages)")
    backtest.set_defaults(func=_cmd_run)
    training = add(
        "train",
        "train the LSTM and Transformer on SYNTHETIC data or your candles (--data), export ONNX",
        [
            "train --out models --days 21 --seed 7",
            "train --evaluate --seed 11 --days 6",
            "train --market control --out /tmp/control-models",
            "train --data eurusd --interval 1h",
        ],
    )
    training.add_argument(
        "--out", default=None, help="models directory to (re)write (default: models; with --data: models/INTERVAL)"
    )
    training.add_argument(
        "--data", default=None, help="train on these candles: a CSV/Parquet file, a store, or 'eurusd' (REAL, 1h)"
    )
    training.add_argument("--interval", default=None, help="with --data: the candles' interval (default: detected)")
    training.add_argument("--symbols", default=None, help="with --data: only these symbols (comma-separated)")
    training.add_argument("--seed", type=int, default=7, help="seeds the data, the weights and the batches")
    training.add_argument("--days", type=int, default=21, help="days of SYNTHETIC 1m candles per symbol")
    training.add_argument(
        "--evaluate",
        action="store_true",
        help="no training: check the models in --out on --days fresh days of --seed (needs no torch)",
    )
    training.add_argument(
        "--market",
        choices=MARKET_CHOICES,
        default="edge",
        help="SYNTHETIC market: edge (a planted, documented edge) or control (none)",
    )
    training.set_defaults(func=_cmd_train)

    models = add(
        "models",
        "check models: manifests, features against the engine, ONNX load, reference outputs",
        ["models check", "models check models/1h", "models check /tmp/my-models --interval 1h"],
        description="check: every model of DIR (default: the shipped 1m and 1h models) through the checks the "
        "inference stage runs at start-up: the manifest, its feature version and names against the running "
        "engine on the models' base interval, the ONNX file's sha256, that onnxruntime loads it with the "
        "manifest's shapes and reproduces the stored reference outputs, and the lstm/{symbol}/, transformer/ "
        "layout. Exit status 1 when any check fails.",
    )  # fmt: skip
    models.add_argument("action", choices=["check"])
    models.add_argument("dir", nargs="?", metavar="DIR", help="a models directory (default: the shipped ones)")
    models.add_argument("--interval", choices=["1m", "1h"], default=None,
                        help="the base interval to check against (default: the manifests' own)")  # fmt: skip
    models.set_defaults(func=_cmd_models)

    bench = add(
        "bench",
        "benchmarks beside the anchors and design targets; writes BENCHMARKS.md",
        ["bench --quick", "bench --out /tmp/bench.md"],
    )
    bench.add_argument("--bootstrap", default=None, help="Kafka to use (default: the suite starts its own)")
    bench.add_argument("--out", default=None, help="where to write the report (default: BENCHMARKS.md)")
    bench.add_argument("--quick", action="store_true", help="fewer messages and a shorter end-to-end run")
    bench.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    bench.set_defaults(func=_cmd_bench)

    acls = add(
        "acl",
        "per-service principals and the ACLs derived from the stages",
        ["acl show", "acl show --service features", "acl apply --config secure.toml"],
    )
    acls.add_argument("action", choices=["show", "apply"])
    acls.add_argument(
        "--config",
        help="TOML file: symbols, metrics.lag_groups, and bus for apply; default: $KSTRADE_CONFIG, else ./kstrade.toml",
    )
    acls.add_argument("--bootstrap", default=None, help="apply: the cluster (default: the config's bus)")
    acls.add_argument("--service", default=None, help="only this service's principal (e.g. features)")
    acls.set_defaults(func=_cmd_acl)

    control = add(
        "control", "operator commands to the execution stage: halt, resume, flatten (over Kafka)",
        ['control halt --reason "news at 14:30"', 'control resume --reason "news out"',
         'control flatten --reason "end of week" --yes'],
        description="Writes a command to control.execution and waits for the execution stage to acknowledge it "
        "on metrics.alerts. halt: no new orders (positions keep their stops); flatten: close every open position "
        "at market, then halt; resume: lift an operator's halt (a loss limit's halt stands).",
    )  # fmt: skip
    control.add_argument("action", choices=["halt", "resume", "flatten"])
    control.add_argument("--reason", required=True, help="why, in your words (journaled with the command)")
    control.add_argument("--account", default=None, help="default: execution.account; '*' for every account")
    control.add_argument("--by", default=None, help="who (default: cli:<user>@<host>)")
    control.add_argument("--wait", type=float, default=15.0,
                         help="seconds to wait for the acknowledgement, 0 not to wait (default 15)")  # fmt: skip
    control.add_argument("--yes", action="store_true", help="flatten without the confirmation prompt")
    control.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: the config's bus)")
    control.add_argument(
        "--config", help="TOML file (bus security, execution.account); default: $KSTRADE_CONFIG, else ./kstrade.toml"
    )
    control.set_defaults(func=_cmd_control)

    dashboard = add(
        "dashboard", "the trading dashboard in the browser (the `dashboard` extra)",
        ["dashboard --bus kafka --bootstrap 127.0.0.1:9092", "dashboard --bus kafka --port 8050 --host 127.0.0.1",
         "dashboard --run runs/run-20260105-120000"],
        description="Serves a web page and a JSON API (/api, documented at /api/openapi.json) over the pipeline's "
        "topics, read from their start in a consumer group of its own that never commits: account and FTMO floors, "
        "positions, orders, signals on candle charts, tier calibration, model accuracy against the naive baselines "
        "and feature drift, pipeline counts, latency and dead letters; and a page per finished run directory "
        "(/runs/NAME: report.html's figures, interactive). "
        "Operator controls (halt, resume, flatten) need the bearer token from $KSTRADE_DASHBOARD_TOKEN or the file "
        "$KSTRADE_DASHBOARD_TOKEN_FILE names; without one they are disabled.",
    )  # fmt: skip
    dashboard.add_argument(
        "--config",
        help="TOML file (then KSTRADE_* variables override it); default: $KSTRADE_CONFIG, else ./kstrade.toml",
    )
    dashboard.add_argument("--bus", choices=["memory", "kafka"], default=None, help="default: the config's bus")
    dashboard.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (with --bus kafka)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8050, help="port to listen on")
    dashboard.add_argument("--runs", default=None, help="the directory of run directories the run pages list "
                           "(default: ./runs, where `run` writes them)")  # fmt: skip
    dashboard.add_argument("--run", default=None, help="a run directory: its page is announced (its parent is "
                           "the runs directory)")  # fmt: skip
    dashboard.set_defaults(func=_cmd_dashboard)

    config = add("config", "the effective configuration (secrets redacted)", ["config show --config prod.toml"])
    config.add_argument("action", choices=["show"])
    config.add_argument("--format", choices=["toml", "json"], default="toml", help="toml loads back as a config file")
    config.add_argument(
        "--config",
        help="TOML file (then KSTRADE_* variables override it); default: $KSTRADE_CONFIG, else ./kstrade.toml",
    )
    config.set_defaults(func=_cmd_config)
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """An option without a help text still shows its default (`_Help` adds it to the others)."""
    for action in parser._actions:
        if action.help is None and action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            action.help = "default: %(default)s"
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _show_defaults(child)


def main(argv: list[str] | None = None) -> int:
    from kstrade import logs

    args = build_parser().parse_args(argv)
    logs.configure(args.log_level or _COMMAND_LOG_LEVEL.get(args.command, "WARNING"), args.log_format or "text")
    try:
        return int(args.func(args))
    except ModuleNotFoundError as exc:  # an optional extra not installed: say which, in one line
        from kstrade.extras import missing_extra_message

        message = missing_extra_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
