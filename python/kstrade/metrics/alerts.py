"""Threshold rules that turn metrics into alerts for `metrics.alerts`: each condition alerts once
when it starts, again only after `repeat_after_s` while it lasts, and once more when it clears.
The codes themselves live in `kstrade.codes` (`Alert`, `CONDITIONS`, `RESOLVED_SUFFIX`)."""

from __future__ import annotations

from dataclasses import dataclass

from kstrade.codes import RESOLVED_SUFFIX
from kstrade.schemas.models import Severity


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    severity: Severity
    code: str
    subject: str
    message: str


class AlertRules:
    """Remembers which (code, subject) conditions are firing, so a condition that holds for an
    hour gives a handful of alerts, not one per evaluation."""

    def __init__(self, *, repeat_after_s: float = 900.0) -> None:
        self.repeat_after_ns = int(repeat_after_s * 1e9)
        self._firing: dict[tuple[str, str], int] = {}  # -> when last announced
        self._seen: set[tuple[str, str]] = set()

    def check(
        self, now_ns: int, code: str, subject: str, firing: bool, severity: Severity, message: str
    ) -> RaisedAlert | None:
        key = (code, subject)
        last = self._firing.get(key)
        if firing:
            if last is None or now_ns - last >= self.repeat_after_ns:
                self._firing[key] = now_ns
                return RaisedAlert(severity, code, subject, message)
            return None
        if last is not None:
            del self._firing[key]
            return RaisedAlert(Severity.INFO, code + RESOLVED_SUFFIX, subject, f"{subject}: back to normal")
        return None

    def event(self, code: str, subject: str, severity: Severity, message: str) -> RaisedAlert:
        """A one-off event (a detector firing): always announced."""
        return RaisedAlert(severity, code, subject, message)

    @property
    def firing(self) -> list[tuple[str, str]]:
        return sorted(self._firing)
