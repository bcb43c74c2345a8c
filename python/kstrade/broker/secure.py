"""A local cluster with a SASL_SSL listener: SCRAM-SHA-512 over TLS, users and ACLs.

`SecureCluster` is a `Cluster` whose nodes also listen on a SASL_SSL port (`secure_bootstrap`):
TLS with a throwaway CA made here with openssl (the CA file is `ca_file`, for clients), SCRAM-SHA-512
users created at format time (`StorageTool format --add-scram`), and the StandardAuthorizer with
`allow.everyone.if.no.acl.found=false`, so a SCRAM user can do only what an ACL grants it.

The brokers' own listeners, replication between brokers (INTERNAL, on `port`) and the KRaft
quorum (CONTROLLER), speak TLS and want the client's certificate: the brokers present theirs
(the server certificate, signed by the CA), and their principal `User:CN=127.0.0.1` and
`User:admin` are the super users. A local process without the brokers' key (a 0600 file) gets
nothing there; clients use the SASL_SSL address. Every listener is bound to 127.0.0.1 like
everything else here: a local set-up, not a deployment (see deploy/acls.md for one).
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kstrade.broker.local import HOST, BrokerError, Cluster, Node, _random_cluster_id, fetch_jars

MECHANISM = "SCRAM-SHA-512"
ADMIN = "admin"
#: The brokers' principal on their own listeners: the subject of their certificate.
BROKER_PRINCIPAL = "User:CN=127.0.0.1"
#: How long the certificates of `broker start --secure` are valid (tests make 2-day ones).
CLI_CERT_DAYS = 365


def make_ca_and_server_cert(directory: Path, days: int = 2) -> tuple[Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it, valid `days`. Returns
    (the CA certificate for clients, the broker's PEM keystore: its key and certificate chain).
    The private keys are readable by this user only."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"openssl {args[0]} failed: {done.stderr}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days), "-subj", "/CN=kstrade-local-ca",
        "-keyout", str(ca_key), "-out", str(ca_crt))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", str(days), "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    pkcs8 = directory / "server.pk8"
    run("pkcs8", "-topk8", "-nocrypt", "-in", str(key), "-out", str(pkcs8))
    keystore = directory / "server.pem"
    keystore.touch(mode=0o600, exist_ok=True)
    keystore.write_text(pkcs8.read_text() + crt.read_text() + ca_crt.read_text())
    for private in (ca_key, key, pkcs8, keystore):
        private.chmod(0o600)
    return ca_crt, keystore


@dataclass
class SecureCluster(Cluster):
    """A `Cluster` with a SASL_SSL listener per node on `secure_ports`, SCRAM users and ACLs."""

    state_marker: ClassVar[str | None] = "secure_ports"

    secure_ports: list[int] = field(default_factory=list)
    #: SCRAM-SHA-512 users created at format time (name -> password); `admin` is a super user.
    users: dict[str, str] = field(default_factory=dict)

    @property
    def secure_bootstrap(self) -> str:
        return ",".join(f"{HOST}:{p}" for p in self.secure_ports)

    @property
    def ca_file(self) -> Path:
        return self.directory / "tls" / "ca.crt"

    def client_properties(self, user: str) -> dict[str, str]:
        """librdkafka properties for `user` on the SASL_SSL listener (password included)."""
        return {
            "bootstrap.servers": self.secure_bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": MECHANISM,
            "sasl.username": user,
            "sasl.password": self.users[user],
            "ssl.ca.location": str(self.ca_file),
        }

    @property
    def secrets_dir(self) -> Path:
        """Where `broker start --secure` keeps each user's password, one 0600 file per user."""
        return self.directory / "secrets"

    def password_file(self, user: str) -> Path:
        return self.secrets_dir / f"{user}.password"

    def write_secrets(self) -> None:
        """Each user's password in its own file, readable by this user only (never cluster.json)."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        for user, password in self.users.items():
            path = self.password_file(user)
            path.touch(mode=0o600, exist_ok=True)
            path.chmod(0o600)
            path.write_text(password + "\n")

    def _extra_state(self) -> dict[str, object]:
        return {"secure_ports": self.secure_ports, "users": sorted(self.users)}

    @classmethod
    def restore(cls, directory: Path, nodes: list[Node], state: dict[str, Any]) -> SecureCluster:
        """The secure cluster saved in `directory`; passwords from its secrets/ files where it
        has them (a cluster made in code keeps them in memory only: then "" for each user)."""
        made = cls(directory, nodes, state["version"], secure_ports=list(state["secure_ports"]))
        for user in state.get("users", []):
            path = made.password_file(user)
            made.users[user] = path.read_text().strip() if path.exists() else ""
        return made

    def start(self, timeout: float = 90.0) -> None:
        if len(self.secure_ports) != len(self.nodes):
            raise BrokerError("one secure port per node")
        if ADMIN not in self.users:
            raise BrokerError(f"users must include {ADMIN!r}")
        if not self.ca_file.exists():
            make_ca_and_server_cert(self.directory / "tls")
        self._format_with_scram()
        super().start(timeout)  # formatted already: it only starts the nodes and waits

    def _format_with_scram(self) -> None:
        """Format each node's storage with the SCRAM users, as `Cluster.start` would format it
        (same cluster id and properties), which then skips its own formatting."""
        libs = fetch_jars(self.version)
        self.directory.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self.nodes)
        id_file = self.directory / "cluster.id"
        if not id_file.exists():
            id_file.write_text(_random_cluster_id())  # never one starting with '-' (an option to StorageTool)
        scram = [
            a
            for name, pw in sorted(self.users.items())
            for a in ("--add-scram", f"{MECHANISM}=[name={name},password={pw}]")
        ]
        for node in self.nodes:
            node_dir = self.directory / f"node-{node.node_id}"
            data = node_dir / "data"
            if (data / "meta.properties").exists():
                continue
            node_dir.mkdir(parents=True, exist_ok=True)
            props = node_dir / "server.properties"
            props.write_text(self._server_properties(node, voters, data))
            fmt = subprocess.run(
                ["java", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format", "-t", id_file.read_text().strip(),
                 "-c", str(props), *scram],
                capture_output=True, text=True,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise BrokerError(f"formatting node {node.node_id} failed:\n{fmt.stdout}{fmt.stderr}")

    def _server_properties(self, node: Node, voters: str, data: Path) -> str:
        base = super()._server_properties(node, voters, data)
        port = self.secure_ports[self.nodes.index(node)]
        lines = []
        for line in base.splitlines():
            if line.startswith(("listeners=", "advertised.listeners=")):
                line = line.replace("PLAINTEXT://", "INTERNAL://") + f",SASL_SSL://{HOST}:{port}"
            elif line.startswith("inter.broker.listener.name="):
                line = "inter.broker.listener.name=INTERNAL"
            elif line.startswith("listener.security.protocol.map="):
                line = "listener.security.protocol.map=CONTROLLER:SSL,INTERNAL:SSL,SASL_SSL:SASL_SSL"
            lines.append(line)
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        lines += [
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={jaas}",
            # One key and certificate for every listener, and as the client of the others.
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.keystore_file}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca_file}",
            # The brokers' own listeners take only a client with a certificate the CA signed.
            "listener.name.internal.ssl.client.auth=required",
            "listener.name.controller.ssl.client.auth=required",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users={BROKER_PRINCIPAL};User:{ADMIN}",
            "allow.everyone.if.no.acl.found=false",
            "",
        ]
        return "\n".join(lines)

    @property
    def keystore_file(self) -> Path:
        """The brokers' key and certificate chain (PEM, 0600)."""
        return self.directory / "tls" / "server.pem"

    def _ready_tls(self) -> ssl.SSLContext:
        """The readiness check on INTERNAL: TLS, the CA checked, the brokers' own certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.keystore_file))
        return context


def secure_cluster(directory: Path, base_port: int, users: dict[str, str], nodes: int = 1) -> SecureCluster:
    """A new secure cluster description: node i takes base_port + 2i (INTERNAL) and
    base_port + 2i + 1 (controller), and base_port + 2 * nodes + i (SASL_SSL); use
    `free_port_block(nodes + (nodes + 1) // 2)` or more for base_port."""
    made = [Node(i + 1, base_port + 2 * i, base_port + 2 * i + 1) for i in range(nodes)]
    secure = [base_port + 2 * nodes + i for i in range(nodes)]
    return SecureCluster(Path(directory), made, secure_ports=secure, users=dict(users))


def service_users() -> list[str]:
    """The SCRAM users of a pipeline: `admin`, one per service (`kstrade-features`, ...), the
    operator's (`kstrade-operator`) and the dashboard's, as `acl show` names their principals."""
    from kstrade.bus import acl
    from kstrade.symbols import DEFAULT_SYMBOLS

    return [ADMIN, *(acl.username(name) for name in acl.pipeline_acls(DEFAULT_SYMBOLS))]


def new_local_secure_cluster(directory: Path, nodes: int = 1, base_port: int | None = None) -> SecureCluster:
    """What `broker start --secure` makes: a secure cluster with a fresh random password for
    each of `service_users()`, kept in `directory/secrets/` (0600 files)."""
    import secrets

    from kstrade.broker.local import DEFAULT_BASE_PORT

    users = {user: secrets.token_urlsafe(18) for user in service_users()}
    made = secure_cluster(directory, DEFAULT_BASE_PORT if base_port is None else base_port, users, nodes)
    directory.mkdir(parents=True, exist_ok=True)
    made.write_secrets()
    make_ca_and_server_cert(made.ca_file.parent, days=CLI_CERT_DAYS)
    return made
