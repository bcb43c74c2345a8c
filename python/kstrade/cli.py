"""The `python -m kstrade` command line.

python -m kstrade broker start [--nodes 3]    a local Kafka cluster on 127.0.0.1 (no Docker)
python -m kstrade broker status | stop
python -m kstrade topics create [--bootstrap HOST:PORT] [--symbols ...] [--replication-factor N]
python -m kstrade topics list | describe NAME...
python -m kstrade train [--out models] [--seed 7] [--days 14]   (needs the `train` extra: torch)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def _bootstrap(args: argparse.Namespace) -> str:
    return str(args.bootstrap or os.environ.get("KSTRADE_BOOTSTRAP") or DEFAULT_BOOTSTRAP)


def _cmd_broker(args: argparse.Namespace) -> int:
    from kstrade.broker import BrokerError, cluster

    directory = Path(args.dir) if args.dir else None
    try:
        c = cluster(directory, nodes=args.nodes, base_port=args.port)
        if args.action == "start":
            c.start()
            print(f"kafka {c.version} running: {len(c.nodes)} node(s), bootstrap {c.bootstrap}")
            print(f"data and logs in {c.directory}")
        elif args.action == "stop":
            c.stop()
            print("kafka stopped")
        else:
            states = c.status()
            for node, alive in states:
                state = f"running (pid {node.pid})" if alive else "stopped"
                print(f"node {node.node_id}: 127.0.0.1:{node.port} {state}")
            return 0 if states and all(alive for _, alive in states) else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from kstrade.bus import Bus, BusError
    from kstrade.bus.topics import catalogue, create_all

    bus = Bus.kafka(_bootstrap(args))
    admin = bus.admin()
    try:
        if args.action == "create":
            symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
            specs = catalogue(
                symbols,
                replication_factor=args.replication_factor,
                min_insync_replicas=args.min_insync_replicas,
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

    from kstrade.config import ConfigError, load, redacted

    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(redacted(settings), indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from kstrade.ingest import synthetic

    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    try:
        start = datetime.strptime(args.start, "%Y-%m-%d").replace(tzinfo=UTC)
        path = synthetic.write(symbols, start, args.days, args.seed, Path(args.out))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote SYNTHETIC 1m candles for {', '.join(symbols)} ({args.days} days, seed {args.seed}): {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        from kstrade.training.trainer import TrainOptions, train
    except ImportError as exc:
        print(f"error: training needs the optional extra: pip install 'kstrade[train]' ({exc})", file=sys.stderr)
        return 2
    from dataclasses import replace

    options = TrainOptions(out=Path(args.out), seed=args.seed)
    options = replace(options, data=replace(options.data, days=args.days))
    train(options)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kstrade", description="kstrade: real-time ML trading on Kafka")
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser("broker", help="a local Apache Kafka cluster for development and tests")
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument("--nodes", type=int, default=1, help="1, or 3 for replication factor 3 / min ISR 2")
    broker.add_argument("--port", type=int, default=9092, help="first client port; node i uses port + 2i")
    broker.add_argument("--dir", help="cluster directory (default ~/.cache/kstrade/cluster)")
    broker.set_defaults(func=_cmd_broker)

    topics = sub.add_parser("topics", help="create and inspect the pipeline's topics")
    on_kafka = argparse.ArgumentParser(add_help=False)
    on_kafka.add_argument(
        "--bootstrap", help=f"Kafka bootstrap servers (default $KSTRADE_BOOTSTRAP or {DEFAULT_BOOTSTRAP})"
    )
    actions = topics.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[on_kafka], help="create every topic of the catalogue")
    create.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD", help="comma-separated")
    create.add_argument("--replication-factor", type=int, default=1)
    create.add_argument("--min-insync-replicas", type=int, default=None)
    actions.add_parser("list", parents=[on_kafka], help="list the cluster's topics")
    describe = actions.add_parser("describe", parents=[on_kafka], help="partitions, replication and settings")
    describe.add_argument("names", nargs="+")
    topics.set_defaults(func=_cmd_topics)

    data = sub.add_parser("data", help="bundled and synthetic market data")
    data.add_argument("action", choices=["synth"])
    data.add_argument("--symbols", default="BTC-USD,ETH-USD,SOL-USD")
    data.add_argument("--start", default="2026-01-05", help="first UTC day, YYYY-MM-DD")
    data.add_argument("--days", type=int, default=30)
    data.add_argument("--seed", type=int, default=7)
    data.add_argument("--out", default="data", help="directory for the Parquet file")
    data.set_defaults(func=_cmd_data)

    training = sub.add_parser("train", help="train the LSTM and Transformer on the bundled data, export ONNX")
    training.add_argument("--out", default="models", help="models directory to (re)write")
    training.add_argument("--seed", type=int, default=7, help="seeds the data, the weights and the batches")
    training.add_argument("--days", type=int, default=14, help="days of SYNTHETIC 1m candles per symbol")
    training.set_defaults(func=_cmd_train)

    config = sub.add_parser("config", help="the effective configuration")
    config.add_argument("action", choices=["show"])
    config.add_argument("--config", help="TOML file (then KSTRADE_* variables override it)")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
