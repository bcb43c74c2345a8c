"""Is the Kafka cluster there, and does it speak our protocol? Asked once, before a command or a
service starts working, so that a wrong address or a security mismatch ends in one line that
names the cause within seconds, instead of a client that retries for a minute and a traceback.

Two steps, both bounded:

1. TCP: can any bootstrap address be connected to? No: the address is wrong or no broker runs
   there (the error names each address and what the OS said).
2. Kafka: does the cluster answer a metadata request with this client's settings (security
   protocol, TLS, SASL credentials)? A listener that accepts the connection but never answers
   is almost always a protocol mismatch (TLS or SASL on one side only) or credentials the
   broker refused: librdkafka then closes and retries without returning an error.

Once a service runs, an unreachable cluster is an outage to ride out, not an error
(`kstrade.bus.runner`): this check is for the start only.
"""

from __future__ import annotations

import socket
import time

from kstrade.bus.core import Bus, BusError

#: The whole check's budget: the issue's bar is one line within 15 s.
DEFAULT_TIMEOUT_S = 10.0
#: At most this long for one TCP connection attempt.
_CONNECT_S = 3.0


class ClusterUnreachable(Exception):
    """The cluster cannot be used with these settings; the message is the one line to print."""


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for part in (p.strip() for p in bootstrap.split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise ClusterUnreachable(f"bus.bootstrap: {part!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ClusterUnreachable("bus.bootstrap is empty: give host:port[,host:port...]")
    return out


def _connects(host: str, port: int, timeout_s: float) -> str | None:
    """None when a TCP connection opens; else what the OS said."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer within {timeout_s:.0f} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def check_reachable(bus: Bus, protocol: str = "PLAINTEXT", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Raise `ClusterUnreachable` unless `bus` (a Kafka bus) answers a metadata request within
    `timeout_s`. `protocol` is the client's `security.protocol`, for the message. A memory bus
    is always there."""
    if bus.transport != "kafka":
        return
    started = time.monotonic()
    bootstrap = bus.bootstrap or ""
    failures = []
    for host, port in _addresses(bootstrap):
        left = timeout_s - (time.monotonic() - started)
        why = _connects(host, port, max(0.1, min(_CONNECT_S, left)))
        if why is None:
            break
        failures.append(f"{host}:{port}: {why}")
    else:
        raise ClusterUnreachable(
            f"cannot reach the Kafka cluster at {bootstrap} ({'; '.join(failures)}): check the address "
            "(--bootstrap, bus.bootstrap) and that the brokers are running"
        )
    left = max(1.0, timeout_s - (time.monotonic() - started))
    try:
        bus.probe(left)
    except BusError as exc:
        raise ClusterUnreachable(_refused(bootstrap, protocol, left, str(exc), bus.properties)) from None


#: What librdkafka said, read for its cause: (words in the line, what is wrong, what to check).
_CAUSES = [
    ("invalid credentials", "refused the credentials of user {user!r}",
     "bus.sasl_username and bus.sasl_password (or sasl_password_file)"),
    ("mechanism handshake failed", "does not accept SASL {mechanism} on this listener",
     "that the listener's protocol is {protocol} and bus.properties.\"sasl.mechanisms\""),
    ("connecting to a PLAINTEXT broker listener", "answers in plain text, not TLS",
     "the address (the cluster's TLS listener?) and bus.properties.\"security.protocol\""),
    ("certificate verify failed", "presents a certificate this client does not trust",
     "bus.properties.\"ssl.ca.location\" (the CA that signed the brokers' certificates)"),
    ("SSL handshake failed", "refused the TLS handshake", "bus.properties.\"security.protocol\" and the TLS settings"),
]  # fmt: skip


def _refused(bootstrap: str, protocol: str, waited: float, error: str, properties: dict[str, str]) -> str:
    """The one line for a cluster that took the connection but did not answer."""
    _, _, said = error.partition("; the client said: ")
    heard = [line for line in said.split(" | ") if line and not line.startswith("AllBrokersDown")]
    for words, wrong, check in _CAUSES:
        line = next((h for h in heard if words in h), None)
        if line is None:
            continue
        values = {
            "user": properties.get("sasl.username", ""),
            "mechanism": properties.get("sasl.mechanisms", properties.get("sasl.mechanism", "GSSAPI")),
            "protocol": protocol,
        }
        _, _, detail = line.partition(": ")
        return (
            f"the Kafka cluster at {bootstrap} {wrong.format(**values)}: check {check.format(**values)} "
            f"(librdkafka: {detail})"
        )
    return (
        f"the Kafka cluster at {bootstrap} accepts connections but did not answer as {protocol} within "
        f"{waited:.0f} s ({error.partition('; the client said: ')[0]}): check that the listener's protocol is "
        f"{protocol} (TLS or SASL on one side only?) and that the broker accepts the credentials "
        "(bus.sasl_username, bus.sasl_password)"
    )
