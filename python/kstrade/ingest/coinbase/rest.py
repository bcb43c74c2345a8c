"""Coinbase Advanced Trade REST candles (the public market endpoint), for backfill.

Windows are split into pages of `PAGE_MINUTES` (< 300; the endpoint allows 350) asked for so
that either reading of the range's `end` covers them (see `_page`), each page is
retried with the one backoff helper on HTTP 429, 5xx and network errors, `Retry-After` and
`x-ratelimit-remaining` / `x-ratelimit-reset` are honoured, and the candles come back as
validated native candles in time order.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from kstrade.clock import Clock, WallClock
from kstrade.features import Candle as NativeCandle
from kstrade.ingest.health import FeedHealth
from kstrade.retry import Backoff, retry

log = logging.getLogger("kstrade.ingest.coinbase")

PAGE_MINUTES = 290
MINUTE_MS = 60_000
#: Longest wait the client accepts from a rate-limit header before it retries anyway.
MAX_RATE_WAIT_S = 30.0


class RestError(RuntimeError):
    """A REST request failed for good (after retries, or with a 4xx that retrying cannot fix)."""


class _Retryable(Exception):
    pass


class CandlesRest:
    """GET /api/v3/brokerage/market/products/{product_id}/candles, paged and rate-limit aware."""

    def __init__(
        self,
        base_url: str,
        *,
        backoff: Backoff | None = None,
        timeout_s: float = 10.0,
        clock: Clock | None = None,
        health: FeedHealth | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.backoff = backoff or Backoff(initial=0.5, max_delay=10.0, attempts=6)
        self.clock = clock or WallClock()  # only for waiting, never for market time
        self.health = health or FeedHealth()
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def candles(self, product: str, start_ms: int, end_ms: int) -> list[NativeCandle]:
        """The exchange's 1m candles with open time in [start_ms, end_ms), oldest first."""
        out: dict[int, NativeCandle] = {}
        page = start_ms
        while page < end_ms:
            page_end = min(end_ms, page + PAGE_MINUTES * MINUTE_MS)
            for c in self._page(product, page, page_end):
                if start_ms <= c.open_time_ms < end_ms:
                    out[c.open_time_ms] = c
            page = page_end
        return [out[t] for t in sorted(out)]

    def _page(self, product: str, start_ms: int, end_ms: int) -> list[NativeCandle]:
        params = {
            "start": str(start_ms // 1000),
            # `end` is the first minute not wanted: the docs do not say whether the candle that
            # starts at `end` is in the answer. Read as exclusive, that is exactly the page; read
            # as inclusive, one minute more (dropped by `candles`). Asking for the last wanted
            # minute instead lost it under the exclusive reading (issue 20).
            "end": str(end_ms // 1000),
            "granularity": "ONE_MINUTE",
            "limit": str(PAGE_MINUTES + 1),  # room for that one more under either reading
        }
        path = f"/api/v3/brokerage/market/products/{product}/candles"

        def attempt() -> list[NativeCandle]:
            try:
                response = self._http.get(path, params=params)
            except httpx.TransportError as exc:
                raise _Retryable(f"network: {exc}") from exc
            self._respect_rate_limit(response)
            if response.status_code == 429:
                self.health.rate_limited += 1
                wait = _float(response.headers.get("retry-after"))
                log.warning("coinbase REST %s: HTTP 429 rate limited (retry-after %s)", product, wait)
                if wait:
                    self.clock.sleep(min(wait, MAX_RATE_WAIT_S))
                raise _Retryable("HTTP 429")
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise RestError(f"coinbase REST {product}: HTTP {response.status_code}: {_error(response)}")
            return _parse(response, product)

        def on_retry(n: int, exc: BaseException, delay: float) -> None:
            log.warning("coinbase REST %s: %s; retry %d in %.2fs", product, exc, n, delay)

        try:
            return retry(attempt, self.backoff, retry_on=(_Retryable,), clock=self.clock, on_retry=on_retry)
        except _Retryable as exc:
            raise RestError(f"coinbase REST {product}: gave up after retries: {exc}") from exc

    def _respect_rate_limit(self, response: httpx.Response) -> None:
        remaining = _float(response.headers.get("x-ratelimit-remaining"))
        reset = _float(response.headers.get("x-ratelimit-reset"))
        if remaining is not None and remaining <= 0 and reset:
            # `reset` is seconds until the window resets, or an epoch time in seconds.
            now_s = self.clock.now_ns() / 1e9
            wait = reset - now_s if reset > 1e9 else reset
            if wait > 0:
                log.info("coinbase REST: rate limit window exhausted, waiting %.2fs", min(wait, MAX_RATE_WAIT_S))
                self.clock.sleep(min(wait, MAX_RATE_WAIT_S))


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _error(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)
    return str(body)[:200]


def _parse(response: httpx.Response, product: str) -> list[NativeCandle]:
    try:
        body = response.json()
        rows = body["candles"]
        out = []
        for row in rows:
            out.append(
                NativeCandle(
                    int(row["start"]) * 1000,
                    float(row["open"]),
                    float(row["high"]),
                    float(row["low"]),
                    float(row["close"]),
                    float(row["volume"]),
                )
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise RestError(f"coinbase REST {product}: unusable candles response: {exc}") from exc
    return sorted(out, key=lambda c: c.open_time_ms)  # the endpoint answers newest first
