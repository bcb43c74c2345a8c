"""Symbols: the defaults, and the one rule a symbol follows (it becomes part of topic names).

A leaf module (it imports nothing of kstrade): the settings and the topic catalogue both need
it, and the bus package must not need the settings to name a topic."""

from __future__ import annotations

import re

#: The symbols a fresh configuration trades (SYNTHETIC data unless a file or Coinbase says otherwise).
DEFAULT_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")

_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_symbol(symbol: str) -> str:
    """`symbol` if it can name topics (letters, digits, '-' and '_', at most 64), else ValueError."""
    if not _SYMBOL.match(symbol):
        raise ValueError(
            f"invalid symbol {symbol!r} for a topic name: use letters, digits, '-' and '_' (e.g. BTC-USD, EURUSD)"
        )
    return symbol
