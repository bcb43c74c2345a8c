"""`[service]`: liveness and commit cadence of every `python -m kstrade service NAME` process."""

from __future__ import annotations

from pydantic import Field

from kstrade.config.base import _Section


class ServiceSettings(_Section):
    """Liveness of every `python -m kstrade service NAME` process (`kstrade.liveness`): its
    HTTP endpoint (`/healthz`, `/readyz`, `/progress`) and when it calls itself stalled."""

    #: Serve the endpoint. On by default: it only listens on loopback, and without it nothing
    #: outside the process can tell a stalled service from a working one.
    health_endpoint: bool = True
    health_addr: str = "127.0.0.1"
    #: 0 (the default): a free port, logged at start ("NAME: health on http://ADDR:PORT"), so
    #: several services on one host never collide; give each one its own port for systemd or
    #: an orchestrator's probes.
    health_port: int = Field(0, ge=0, le=65535)
    #: Records waiting (lag > 0, or a batch in hand) and none handled for this long: the service
    #: is stalled: `/readyz` answers 503 and one NO_PROGRESS alert goes to metrics.alerts.
    no_progress_s: float = Field(60.0, gt=0)
    #: The loop has not come round for this long: `/healthz` answers 503 (restart me). Longer
    #: than a flush timeout (30 s): a loop waiting out a cluster outage still comes round.
    stuck_s: float = Field(120.0, gt=0)
    #: How often the loop probes its consumer lag (wall seconds; not on every round).
    lag_interval_s: float = Field(5.0, gt=0)
    #: Commit (and checkpoint the stage's state) at most this often, and whenever a poll finds
    #: nothing; outputs are still acknowledged after every batch. A commit costs a round trip and
    #: an fsync that the next records would wait for: after every batch (0), a candle waited
    #: ~10 ms in the features stage behind the two before it. A crash redelivers at most this
    #: much, which every stage skips as repeats.
    commit_interval_s: float = Field(0.1, ge=0)
    #: The loop comes round and records wait, but the consumer has fetched none for this long
    #: (what a consumer that lost its coordinator or its group membership can look like after a
    #: whole-cluster restart): the service replaces its consumer, which rejoins the group and
    #: resumes from the committed offsets. At most once per this interval.
    rejoin_after_s: float = Field(120.0, gt=0)
