"""Sending one order safely: retries with exponential backoff for retryable outcomes only, a
reconciliation with the broker after a timeout or lost connection before anything is resent,
and the circuit breaker that stops all sending after repeated failures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kstrade.clock import Clock
from kstrade.codes import BrokerCode
from kstrade.execution.broker import LINK_ERRORS, Broker, BrokerReply, OrderRequest, Outcome
from kstrade.execution.circuit import CircuitBreaker
from kstrade.retry import Backoff, retry


class _TryAgain(Exception):
    def __init__(self, reply: BrokerReply) -> None:
        super().__init__(reply.code)
        self.reply = reply


@dataclass(slots=True)
class RouteResult:
    reply: BrokerReply
    sends: int = 0
    #: True when a failure during this order opened the breaker (raise an alert).
    breaker_opened: bool = False
    notes: list[str] = field(default_factory=list)


class OrderRouter:
    def __init__(self, broker: Broker, breaker: CircuitBreaker, backoff: Backoff, clock: Clock) -> None:
        self.broker = broker
        self.breaker = breaker
        self.backoff = backoff
        self.clock = clock

    def submit(self, request: OrderRequest) -> RouteResult:
        result = RouteResult(BrokerReply(Outcome.UNKNOWN, BrokerCode.NOT_SENT))

        def attempt() -> BrokerReply:
            now = self.clock.now_ns()
            if result.sends > 0 and result.reply.outcome is Outcome.UNKNOWN:
                # The last send timed out or lost the connection: it may have been filled. Look for
                # our deal before sending again, or a retry would open a second position.
                try:
                    found = self.broker.find(request.client_order_id, now)
                except LINK_ERRORS as exc:
                    # Cannot tell whether it was filled: sending again could open a second position.
                    self.breaker.failure(now)
                    raise _TryAgain(BrokerReply(Outcome.UNKNOWN, BrokerCode.RECONCILE_FAILED, str(exc))) from exc
                if found is not None:
                    result.notes.append("reconciled: the earlier send was filled")
                    self.breaker.success()
                    return BrokerReply(Outcome.FILLED, BrokerCode.RECONCILED, fill=found)
            if not self.breaker.allows(now):
                return BrokerReply(Outcome.REJECTED, BrokerCode.CIRCUIT_OPEN, "circuit breaker open: not sending")
            result.sends += 1
            try:
                reply = self.broker.send(request, now)
            except LINK_ERRORS as exc:
                reply = BrokerReply(Outcome.UNKNOWN, BrokerCode.CONNECTION, str(exc))
            result.reply = reply
            if reply.outcome is Outcome.FILLED:
                self.breaker.success()
                return reply
            if reply.outcome is Outcome.REJECTED:
                # A business refusal (NO_MONEY, INVALID_STOPS...) says the link works.
                self.breaker.success()
                return reply
            if self.breaker.failure(now):
                result.breaker_opened = True
            raise _TryAgain(reply)

        try:
            final = retry(attempt, self.backoff, retry_on=(_TryAgain,), clock=self.clock)
        except _TryAgain as exc:
            final = exc.reply
            if final.outcome is Outcome.UNKNOWN:
                try:
                    found = self.broker.find(request.client_order_id, self.clock.now_ns())
                except LINK_ERRORS:
                    found = None  # stays UNKNOWN: journaled UNCERTAIN, reconciled later, never resent
                if found is not None:
                    final = BrokerReply(Outcome.FILLED, BrokerCode.RECONCILED, fill=found)
        result.reply = final
        return result
