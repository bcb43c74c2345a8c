"""A real Apache Kafka (KRaft) cluster on 127.0.0.1 for developers and tests, without Docker.

The broker jars come from Maven Central through `mvn dependency:copy-dependencies` (see
`pom.xml` beside this file) into a cache directory; each node is a `java kafka.Kafka` process
that is both broker and controller. A cluster directory holds the node configs, data, logs and
a `cluster.json` with the pids, so `status` and `stop` work from any later process, and read
the node count from it. Only `reset` deletes a cluster directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

KAFKA_VERSION = "4.1.0"
DEFAULT_BASE_PORT = 9092
HOST = "127.0.0.1"

log = logging.getLogger("kstrade.broker")


class BrokerError(RuntimeError):
    """The local cluster could not be fetched, started, or reached."""


def cache_dir() -> Path:
    """Where the broker jars are kept: $KSTRADE_CACHE or ~/.cache/kstrade."""
    root = os.environ.get("KSTRADE_CACHE") or os.path.join(Path.home(), ".cache", "kstrade")
    return Path(root)


def default_cluster_dir() -> Path:
    return cache_dir() / "cluster"


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """Resolve the broker and its runtime dependencies from Maven Central (once per version),
    showing on a terminal what is being fetched (`kstrade.progress`)."""
    libs = cache_dir() / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("mvn not found: install Maven (apt-get install maven) to fetch the broker")
    if shutil.which("java") is None:
        raise BrokerError("java not found: install a JDK >= 17 (apt-get install openjdk-17-jre-headless)")
    libs.mkdir(parents=True, exist_ok=True)
    pom = resources.files("kstrade.broker").joinpath("pom.xml")
    with resources.as_file(pom) as pom_path:
        # Not -q: the transfer lines of batch mode (-B, no bars of its own) are what the progress shows.
        cmd = [
            "mvn",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom_path),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ]
        returncode, fetch, tail = _run_maven(cmd, version)
    if returncode != 0:
        errors = [line for line in tail if line.startswith("[ERROR]")]
        shown = "\n".join(errors) if errors else "\n".join(tail)[-2000:]
        raise BrokerError(f"mvn could not resolve kafka {version}:\n{shown[-4000:]}")
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"mvn finished but no kafka_2.13 jar is in {libs}")
    log.info("kafka %s: %s, in %s", version, fetch.summary(), libs)
    marker.write_text(version)
    return libs


#: What `mvn -B` prints per transfer and per jar copied (Maven 3.x; a line may carry `[INFO] `):
#: `Downloaded from central: https://.../kafka_2.13-4.1.0.jar (6.8 MB at 3.1 MB/s)`,
#: `Copying kafka_2.13-4.1.0.jar to /.../libs/kafka_2.13-4.1.0.jar`.
_TRANSFER = re.compile(r"^(?:\[INFO\] )?Download(ing|ed) from [^:]+: (\S+)(?: \(([\d.]+) (B|kB|MB|GB))?")
_COPY = re.compile(r"^(?:\[INFO\] )?Copying (\S+) to ")
_UNITS = {"B": 1, "kB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000}


@dataclass
class MavenFetch:
    """What mvn has reported so far while it resolves the broker: files downloaded (POMs and
    jars) and their bytes, the file in flight, and the jars copied into the cache."""

    downloaded: int = 0
    downloaded_bytes: int = 0
    copied: int = 0
    current: str = ""

    def read(self, line: str) -> bool:
        """Take one line of mvn's output; True where it said something the progress shows."""
        line = line.rstrip()
        if m := _TRANSFER.match(line):
            name = m.group(2).rsplit("/", 1)[-1]
            if m.group(1) == "ing":
                self.current = name
            else:
                self.downloaded += 1
                if m.group(3) is not None:
                    self.downloaded_bytes += round(float(m.group(3)) * _UNITS[m.group(4)])
                self.current = ""
            return True
        if m := _COPY.match(line):
            self.copied += 1
            self.current = m.group(1)
            return True
        return False

    def summary(self) -> str:
        """`12 files downloaded (6.9 MB), 3 jars copied: kafka_2.13-4.1.0.jar`."""
        parts = []
        if self.downloaded:
            parts.append(f"{self.downloaded} file(s) downloaded ({self.downloaded_bytes / 1e6:.1f} MB)")
        if self.copied:
            parts.append(f"{self.copied} jar(s) copied")
        text = ", ".join(parts) or "resolving"
        return f"{text}: {self.current}" if self.current else text


def _run_maven(cmd: list[str], version: str) -> tuple[int, MavenFetch, list[str]]:
    """Run mvn, its output read line by line into a progress bar (on a terminal), keeping the
    last lines for an error message: (exit status, what it fetched, the tail of its output)."""
    from collections import deque

    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from kstrade.progress import ProgressBars

    fetch = MavenFetch()
    tail: deque[str] = deque(maxlen=400)
    bars = ProgressBars(SpinnerColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                        TextColumn("{task.fields[fetched]}"))  # fmt: skip
    with bars:
        task = bars.add(f"fetching Apache Kafka {version} from Maven Central (once)", total=None, fetched="")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace")  # fmt: skip
        assert proc.stdout is not None
        with proc:
            for line in proc.stdout:
                tail.append(line.rstrip())
                if fetch.read(line):
                    bars.update(task, fetched=fetch.summary())
        fetch.current = ""
        done = "fetched" if proc.returncode == 0 else "failed to fetch"
        bars.finish(task, f"{done} Apache Kafka {version} from Maven Central", fetched=fetch.summary())
    return proc.returncode, fetch, list(tail)


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    pid: int | None = None


@dataclass
class Cluster:
    """One local cluster: its directory, nodes and the jars it runs.

    A subclass that saves more in cluster.json names the key that marks its state
    (`state_marker`) and restores itself from it (`restore`): `load` finds it by that key, so
    a restart keeps what the subclass is (`SecureCluster`, kstrade.broker.secure, which the
    package imports beside this module)."""

    directory: Path
    nodes: list[Node] = field(default_factory=list)
    version: str = KAFKA_VERSION

    #: The cluster.json key that marks a subclass's saved state (None: a plain cluster).
    state_marker: ClassVar[str | None] = None
    _kinds: ClassVar[list[type[Cluster]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.state_marker is not None:
            Cluster._kinds.append(cls)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    # -- persistence -------------------------------------------------------------------------
    def save(self) -> None:
        state = {"version": self.version, "nodes": [asdict(n) for n in self.nodes], **self._extra_state()}
        (self.directory / "cluster.json").write_text(json.dumps(state, indent=2))

    def _extra_state(self) -> dict[str, object]:
        """What a subclass adds to cluster.json (never a secret)."""
        return {}

    @classmethod
    def load(cls, directory: Path) -> Cluster | None:
        """The cluster saved in `directory`: a `SecureCluster` when it was made secure, so that
        a restart keeps its TLS, SASL and ACL settings."""
        path = directory / "cluster.json"
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        nodes = [Node(**n) for n in state["nodes"]]
        for kind in Cluster._kinds:
            if kind.state_marker in state:
                return kind.restore(directory, nodes, state)
        if "secure_ports" in state:  # never restarted as a plain cluster (plaintext configs)
            raise BrokerError(f"{directory} holds a secure cluster, but kstrade.broker.secure is not loaded")
        return Cluster(directory, nodes, state["version"])

    @classmethod
    def restore(cls, directory: Path, nodes: list[Node], state: dict[str, Any]) -> Cluster:
        """The cluster saved in `directory` as `state` (cluster.json)."""
        return cls(directory, nodes, state["version"])

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        libs = fetch_jars(self.version)
        self.directory.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes)
        cluster_id_file = self.directory / "cluster.id"
        if not cluster_id_file.exists():
            cluster_id_file.write_text(_random_cluster_id())
        cluster_id = cluster_id_file.read_text().strip()
        log4j = self.directory / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        classpath = f"{libs}/*"
        for node in self.nodes:
            if node.pid is not None and _alive(node.pid):
                continue
            node_dir = self.directory / f"node-{node.node_id}"
            data = node_dir / "data"
            node_dir.mkdir(parents=True, exist_ok=True)
            props = node_dir / "server.properties"
            props.write_text(self._server_properties(node, voters, data))
            if not (data / "meta.properties").exists():
                fmt = subprocess.run(
                    [
                        "java",
                        "-cp",
                        classpath,
                        "kafka.tools.StorageTool",
                        "format",
                        "-t",
                        cluster_id,
                        "-c",
                        str(props),
                        "--ignore-formatted",
                    ],
                    capture_output=True,
                    text=True,
                )
                if fmt.returncode != 0:
                    raise BrokerError(f"formatting node {node.node_id} failed:\n{fmt.stdout}{fmt.stderr}")
            log = open(node_dir / "server.log", "ab")
            proc = subprocess.Popen(
                [
                    "java",
                    "-Xms256m",
                    "-Xmx768m",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={log4j}",
                    f"-Dkafka.logs.dir={node_dir}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(props),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the caller's terminal must not kill it
            )
            node.pid = proc.pid
        self.save()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Wait until every node answers a Metadata request that lists all the brokers."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        tls = self._ready_tls()
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.pid is not None and not _alive(node.pid):
                    tail = _tail(self.directory / f"node-{node.node_id}" / "server.log")
                    raise BrokerError(f"kafka node {node.node_id} exited during start-up:\n{tail}")
            try:
                counts = [metadata_broker_count(HOST, n.port, tls=tls) for n in self.nodes]
                if all(c == len(self.nodes) for c in counts):
                    return
                last = f"brokers registered per node: {counts}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise BrokerError(f"kafka cluster not ready after {timeout:.0f}s ({last})")

    def _ready_tls(self) -> ssl.SSLContext | None:
        """How the readiness check reaches the nodes' `port` (None: plaintext)."""
        return None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node (a controlled shutdown), then SIGKILL what is left."""
        for node in self.nodes:
            if node.pid is not None and _alive(node.pid):
                os.kill(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while node.pid is not None and _alive(node.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if node.pid is not None and _alive(node.pid):
                os.kill(node.pid, signal.SIGKILL)
            node.pid = None
        self.save()

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would (fault-injection tests)."""
        node = next(n for n in self.nodes if n.node_id == node_id)
        if node.pid is not None and _alive(node.pid):
            os.kill(node.pid, signal.SIGKILL)
            _reap(node.pid)
        node.pid = None
        self.save()

    def status(self) -> list[tuple[Node, bool]]:
        return [(n, n.pid is not None and _alive(n.pid)) for n in self.nodes]

    def _server_properties(self, node: Node, voters: str, data: Path) -> str:
        n = len(self.nodes)
        rf = min(3, n)
        min_isr = min(2, n)
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={node.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data}",
                f"offsets.topic.replication.factor={rf}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={rf}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={rf}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                f"default.replication.factor={rf}",
                "num.partitions=3",
                "auto.create.topics.enable=false",
                "group.initial.rebalance.delay.ms=0",
                # Let tests see a consumer that died without leaving within seconds, not 45 s.
                "group.consumer.min.session.timeout.ms=1000",
                "group.min.session.timeout.ms=1000",
                "",
            ]
        )


def cluster(
    directory: Path | None = None,
    nodes: int | None = None,
    base_port: int | None = None,
    version: str = KAFKA_VERSION,
) -> Cluster:
    """The cluster in `directory`, as last saved (its node count and ports are the directory's),
    or a new description of one (`nodes` default 1, `base_port` default 9092).

    Never deletes anything: a `nodes` that differs from the saved cluster is an error that names
    `reset`, the one way to delete a cluster directory."""
    directory = Path(directory) if directory is not None else default_cluster_dir()
    existing = Cluster.load(directory)
    if existing is not None:
        if nodes is not None and nodes != len(existing.nodes):
            raise BrokerError(
                f"{directory} holds a {len(existing.nodes)}-node cluster, not {nodes}: leave out --nodes to use "
                f"it, or delete it first with `python -m kstrade broker reset --dir {directory}`"
            )
        return existing
    count = 1 if nodes is None else nodes
    if count < 1:
        raise BrokerError(f"a cluster needs at least one node, not {count}")
    port = DEFAULT_BASE_PORT if base_port is None else base_port
    made = [Node(i + 1, port + 2 * i, port + 2 * i + 1) for i in range(count)]
    return Cluster(directory, made, version)


#: What a cluster directory holds (`start`, and the secure cluster's `tls/`): `reset` deletes a
#: directory only when it holds nothing else, so a mistyped `--dir ~` deletes nothing.
_CLUSTER_ENTRIES = ("cluster.json", "cluster.id", "log4j2.properties", "tls", "secrets")


def reset(directory: Path | None = None) -> Path:
    """Delete a stopped cluster's directory: its configs, logs, topics and data. Refuses a
    running cluster and a directory that is not (only) a cluster directory."""
    directory = Path(directory) if directory is not None else default_cluster_dir()
    if not directory.exists():
        raise BrokerError(f"no cluster directory at {directory}: nothing to delete")
    entries = list(directory.iterdir())
    names = {e.name for e in entries}
    if not names & {"cluster.json", "cluster.id"}:
        raise BrokerError(f"{directory} is not a cluster directory (no cluster.json or cluster.id): not deleting it")
    foreign = sorted(n for n in names if n not in _CLUSTER_ENTRIES and not n.startswith("node-"))
    if foreign:
        raise BrokerError(f"{directory} holds more than a cluster ({', '.join(foreign[:5])}): not deleting it")
    existing = Cluster.load(directory)
    if existing is not None and any(alive for _, alive in existing.status()):
        raise BrokerError(f"a {len(existing.nodes)}-node cluster is running in {directory}; stop it first")
    shutil.rmtree(directory)
    return directory


def _ephemeral_low(default: int = 32768) -> int:
    """The lowest port the OS hands out as a connection's source port (Linux:
    net.ipv4.ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def free_port_block(nodes: int = 1) -> int:
    """A base port p (even) with p .. p + 2*nodes - 1 all free on 127.0.0.1: node i takes
    p + 2i for clients and p + 2i + 1 for its controller.

    Below the OS's ephemeral range: while a node is down, a client reconnecting to its port can
    be given that very port as its source port (a TCP self-connect, which succeeds) and hold
    it, and the node then fails to start with "Address already in use" (seen in outage tests)."""
    import random

    rng = random.Random()
    top = _ephemeral_low() - 2 * nodes
    low, high = (10000, top) if top > 12000 else (20000, 60000)
    for _ in range(500):
        base = rng.randrange(low, high, 2)
        socks = []
        try:
            for port in range(base, base + 2 * nodes):
                s = socket.socket()
                socks.append(s)
                s.bind((HOST, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise BrokerError("no block of free ports on 127.0.0.1")


def metadata_broker_count(host: str, port: int, timeout: float = 2.0, *, tls: ssl.SSLContext | None = None) -> int:
    """Send a Metadata v4 request (all topics) and return the number of brokers it lists.

    Raw Kafka protocol so readiness needs neither librdkafka nor a JVM client: request header v1
    (api_key, api_version, correlation_id, client_id), Metadata v4 body (topics = null,
    allow_auto_topic_creation = false); response header v0, then throttle_time_ms and the
    brokers array length. With `tls`, over TLS (a listener that wants the client's certificate).
    """
    client_id = b"kstrade-ready"
    body = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id + struct.pack(">ib", -1, 0)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        sock.sendall(struct.pack(">i", len(body)) + body)
        head = _recv_exact(sock, 4)
        (size,) = struct.unpack(">i", head)
        payload = _recv_exact(sock, size)
    correlation, _throttle, brokers = struct.unpack(">iii", payload[:12])
    if correlation != 7:
        raise OSError(f"unexpected correlation id {correlation}")
    return int(brokers)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _random_cluster_id() -> str:
    """KRaft cluster ids are 16 random bytes, URL-safe base64 without padding. One in 64 would
    start with '-', which StorageTool's `-t` takes for an option: draw again."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall back to signal 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers signal 0; /proc tells the truth on Linux.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        for _ in range(100):
            if not _alive(pid):
                return
            time.sleep(0.05)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
"""
