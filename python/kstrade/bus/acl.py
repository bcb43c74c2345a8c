"""Per-service principals and the ACLs each one needs, derived from the pipeline itself.

Every service runs as its own SCRAM user, `kstrade-{service}` (`inference.lstm` ->
`kstrade-inference-lstm`), and the broker's authorizer denies what no ACL allows. What each
principal is allowed comes from the stages' own declarations (`inputs_for` / `outputs_for` on the
stage classes) and the topic catalogue, so adding a topic to a stage changes its ACLs with it:

- READ on every input topic (READ implies DESCRIBE: metadata, offsets, committed offsets),
  and READ on its consumer group `kstrade.{name}` (join, commit);
- WRITE on every output topic and on the dead-letter topic of every input (WRITE implies
  DESCRIBE), except for an observer that never dead-letters (the metrics collector);
- WRITE on `metrics.alerts` for every stage: each service raises its own NO_PROGRESS alert
  when it stalls (`kstrade.liveness`);
- the metrics collector also gets DESCRIBE (not READ) on the groups whose lag it reports: it can
  read their committed offsets but cannot join them;
- ingest writes and re-reads (to resume) the candle topics, with throwaway groups under
  `kstrade.ingest.resume.`;
- the operator (`python -m kstrade control`) writes `control.execution` and reads
  `metrics.alerts` for the acknowledgement, in throwaway groups under `kstrade.operator.`. The
  metrics collector also writes `control.execution` (the Telegram commands); nobody else may
  (but the dashboard below, for its operator controls).
- the dashboard (`python -m kstrade dashboard`, `dashboard_acls`: not one of the services above,
  `acl show` leaves it out) reads the topics its pattern follows, DESCRIBEs the rest of the
  catalogue (it shows every topic's message count: end offsets), joins throwaway groups under
  `kstrade.dashboard.` (it never commits), and writes `control.execution` only when its operator
  controls are wanted.

Nothing on the cluster resource: since Kafka 3.0 (KIP-679) WRITE on a topic is enough for an
idempotent producer, so no IDEMPOTENT_WRITE, and no service creates topics (an administrator creates
the catalogue and runs `acl apply`: deploy/acls.md). Topic patterns are LITERAL: a principal is allowed the topics of
the configured symbols, no more; adding a symbol means `topics create` and `acl apply` again,
which go together anyway. A stage that subscribes by regular expression (metrics) is granted
the catalogue topics the expression matches, also literally. The two PREFIXED patterns are the
ingest resume group and the operator's group, whose names are random on each start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from kstrade.bus.topics import (
    CONTROL_EXECUTION,
    INGEST_RESUME_GROUPS,
    INTERVALS,
    METRICS_ALERTS,
    METRICS_INGEST_HEALTH,
    OPERATOR_GROUPS,
    candles,
    dlq_topic,
    pipeline_topics,
)

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._acl import AclBinding

USER_PREFIX = "kstrade-"
INGEST = "ingest"
OPERATOR = "operator"
DASHBOARD = "dashboard"


class Operation(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    DESCRIBE = "DESCRIBE"


class Resource(StrEnum):
    TOPIC = "TOPIC"
    GROUP = "GROUP"


class Pattern(StrEnum):
    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: `principal` may do `operation` on the resource (from any host)."""

    principal: str
    resource: Resource
    name: str
    operation: Operation
    pattern: Pattern = Pattern.LITERAL

    def __str__(self) -> str:
        return f"{self.principal} ALLOW {self.operation} {self.resource} {self.pattern} {self.name}"


class DeclaredStage(Protocol):
    """What a stage class declares about its topics, without being built."""

    name: ClassVar[str]

    @classmethod
    def inputs_for(cls, symbols: Sequence[str], base_interval: str = "1m") -> Sequence[str] | str: ...

    @classmethod
    def outputs_for(cls, symbols: Sequence[str]) -> Sequence[str]: ...


def username(service: str) -> str:
    """The SCRAM user a service connects as."""
    return USER_PREFIX + service.replace(".", "-")


def principal(service: str) -> str:
    return f"User:{username(service)}"


def declared_stages() -> dict[str, type[DeclaredStage]]:
    """The six built-in stage classes that run as services, by service name (the registry,
    `kstrade.stages`: imported here, not at the top, since the bus package sits below the stages)."""
    from kstrade.stages import BUILT_IN, load_class

    return {name: cast(type[DeclaredStage], load_class(reference)) for name, reference in BUILT_IN.items()}


def catalogue_topics(symbols: Sequence[str]) -> list[str]:
    """Every catalogue topic for `symbols`, dead-letter topics included."""
    return [t for name in pipeline_topics(list(symbols)) for t in (name, dlq_topic(name))]


def topics_read(inputs: Sequence[str] | str, symbols: Sequence[str]) -> list[str]:
    """The topics a stage reads: its list, or the catalogue topics its pattern matches."""
    if isinstance(inputs, str):
        pattern = re.compile(inputs)
        return [t for t in catalogue_topics(symbols) if pattern.search(t)]
    return list(dict.fromkeys(inputs))


def stage_acls(
    stage: type[DeclaredStage], symbols: Sequence[str], *, lag_groups: Iterable[str] = (), base_interval: str = "1m"
) -> list[Acl]:
    """What the principal of `stage` needs, and nothing else (its candle topics: `base_interval`'s)."""
    user = principal(stage.name)
    reads = topics_read(stage.inputs_for(symbols, base_interval), symbols)
    writes = [*stage.outputs_for(symbols), METRICS_ALERTS]  # NO_PROGRESS (kstrade.liveness)
    if getattr(stage, "writes_dead_letters", True):
        writes += [dlq_topic(t) for t in reads]
    acls = [Acl(user, Resource.TOPIC, t, Operation.READ) for t in reads]
    acls.append(Acl(user, Resource.GROUP, f"kstrade.{stage.name}", Operation.READ))
    acls += [Acl(user, Resource.TOPIC, t, Operation.WRITE) for t in dict.fromkeys(writes)]
    acls += [Acl(user, Resource.GROUP, g, Operation.DESCRIBE) for g in lag_groups]
    return acls


def ingest_acls(symbols: Sequence[str]) -> list[Acl]:
    """Ingest writes every candle topic of its symbols and reads them back to resume; it reports
    its health and its alerts (a 5m cross-check mismatch) to the metrics topics."""
    user = principal(INGEST)
    topics = [candles(s, i) for s in symbols for i in INTERVALS]
    acls = [Acl(user, Resource.TOPIC, t, op) for t in topics for op in (Operation.WRITE, Operation.READ)]
    acls += [Acl(user, Resource.TOPIC, t, Operation.WRITE) for t in (METRICS_INGEST_HEALTH, METRICS_ALERTS)]
    acls.append(Acl(user, Resource.GROUP, INGEST_RESUME_GROUPS, Operation.READ, Pattern.PREFIXED))
    return acls


def operator_acls() -> list[Acl]:
    """The operator's tooling: commands to the execution stage, and its acknowledgements."""
    user = principal(OPERATOR)
    return [
        Acl(user, Resource.TOPIC, CONTROL_EXECUTION, Operation.WRITE),
        Acl(user, Resource.TOPIC, METRICS_ALERTS, Operation.READ),
        Acl(user, Resource.GROUP, OPERATOR_GROUPS, Operation.READ, Pattern.PREFIXED),
    ]


def dashboard_acls(symbols: Sequence[str], *, controls: bool = True) -> list[Acl]:
    """The dashboard's principal (`kstrade-dashboard`): READ on the catalogue topics its pattern
    follows, DESCRIBE on the others, READ on its groups; WRITE on `control.execution` with
    `controls` (halt, resume, flatten behind its token)."""
    from kstrade.dashboard.follower import DASHBOARD_GROUPS  # above the bus package: imported here
    from kstrade.dashboard.view import FOLLOWED

    user = principal(DASHBOARD)
    reads = topics_read(FOLLOWED, symbols)
    acls = [Acl(user, Resource.TOPIC, t, Operation.READ) for t in reads]
    acls += [Acl(user, Resource.TOPIC, t, Operation.DESCRIBE) for t in catalogue_topics(symbols) if t not in reads]
    acls.append(Acl(user, Resource.GROUP, DASHBOARD_GROUPS, Operation.READ, Pattern.PREFIXED))
    if controls:
        acls.append(Acl(user, Resource.TOPIC, CONTROL_EXECUTION, Operation.WRITE))
    return acls


def pipeline_acls(
    symbols: Sequence[str], *, lag_groups: Iterable[str] = (), base_interval: str = "1m"
) -> dict[str, list[Acl]]:
    """Every service's ACLs, by service name: ingest, the six stages, the operator and the
    dashboard; the stages read the candle topics of `base_interval`."""
    lag = list(lag_groups)
    out = {INGEST: ingest_acls(symbols), OPERATOR: operator_acls(), DASHBOARD: dashboard_acls(symbols)}
    for name, stage in declared_stages().items():
        out[name] = stage_acls(stage, symbols, lag_groups=lag if name == "metrics" else (), base_interval=base_interval)
    return out


# -- on a cluster (confluent-kafka's admin client: the native bus has no ACL API) -----------------
def _admin(client_config: Mapping[str, str]) -> AdminClient:
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError as exc:
        raise RuntimeError(
            "applying ACLs needs confluent-kafka (pip install 'kstrade[acl]'), or give `acl show` to kafka-acls.sh"
        ) from exc
    return AdminClient(dict(client_config))


def _binding(acl: Acl) -> AclBinding:
    # The public module re-exports these without declaring it; mypy wants their home modules.
    from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
    from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

    return AclBinding(
        ResourceType[acl.resource.value],
        acl.name,
        ResourcePatternType[acl.pattern.value],
        acl.principal,
        "*",
        AclOperation[acl.operation.value],
        AclPermissionType.ALLOW,
    )


def apply(acls: Iterable[Acl], client_config: Mapping[str, str], timeout: float = 30.0) -> int:
    """Create the bindings (an existing one is left as it is). Returns how many were asked for.
    `client_config`: librdkafka properties of a principal allowed to alter ACLs (a super user)."""
    bindings = [_binding(a) for a in acls]
    if not bindings:
        return 0
    admin = _admin(client_config)  # held until the futures resolve: its destruction cancels them
    futures = admin.create_acls(bindings, request_timeout=timeout)
    refused = None
    for future in futures.values():
        try:
            future.result(timeout=timeout)
        except Exception as exc:
            refused = _refusal(exc, client_config)
            break
    if refused is not None:  # raised out here: no traceback keeps the client (and its retries) alive
        raise refused
    return len(bindings)


class AclRefused(RuntimeError):
    """The cluster would not create (or delete) ACLs for this principal; the message says why."""


def _refusal(exc: Exception, client_config: Mapping[str, str]) -> Exception:
    """An `AclRefused` naming the principal and the fix when the broker denied the request,
    else `exc` itself. (The broker's own message repeats the whole Java request: not kept.)"""
    error = exc.args[0] if exc.args else None
    name = getattr(error, "name", lambda: "")()
    principal = f"User:{client_config.get('sasl.username') or 'ANONYMOUS'}"
    if name == "CLUSTER_AUTHORIZATION_FAILED":
        return AclRefused(
            f"the cluster refused to change ACLs for {principal} (CLUSTER_AUTHORIZATION_FAILED: it may not ALTER "
            "the cluster): run `acl apply` as an administrator, a principal in the brokers' super.users "
            "(KSTRADE_BUS__SASL_USERNAME / KSTRADE_BUS__SASL_PASSWORD), not with a service's credentials"
        )
    if name == "SECURITY_DISABLED":
        return AclRefused(
            "the cluster has no authorizer (SECURITY_DISABLED): set authorizer.class.name on the brokers "
            "(deploy/acls.md) before applying ACLs"
        )
    return exc


def revoke(acls: Iterable[Acl], client_config: Mapping[str, str], timeout: float = 30.0) -> int:
    """Delete exactly these bindings. Returns how many bindings the broker deleted."""
    from confluent_kafka.admin._acl import AclBindingFilter

    filters = []
    for acl in acls:
        b = _binding(acl)
        filters.append(
            AclBindingFilter(
                b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
            )
        )
    if not filters:
        return 0
    admin = _admin(client_config)
    futures = admin.delete_acls(filters, request_timeout=timeout)
    refused = None
    try:
        return sum(len(future.result(timeout=timeout)) for future in futures.values())
    except Exception as exc:
        refused = _refusal(exc, client_config)
    raise refused
