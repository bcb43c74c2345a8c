"""The join's rules and bounds: predictions of every configured model for one (symbol, candle
time), with the candle's close and feature vector, held until complete or until the deadline
passes. The join itself lives in the native core (`kstrade._native.SignalCore`, Rust
`kstrade_codec::signal_core`), with the rest of the signals stage's state.

Rules: predictions of different candle times never mix (the key is the candle time); the
first prediction of a model type for a key is used and repeats are counted; once a key is
decided, later predictions for it (or for any older candle of the symbol) are counted as late
and never used, so a candle yields at most one decision. A symbol's candles are decided in time
order: once a newer candle is complete (or past its deadline) the older pending ones go first.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Candle times of closes and feature vectors kept per symbol once decided: enough to cover a
#: join deadline and a TTL of 1m candles several times over, small enough to stay in cache.
MARKET_MEMORY = 64
#: Candles not yet decided are kept, however far the market topics run ahead of the models
#: (after an outage the candles and features catch up long before the predictions do), up to
#: this many per symbol: a day of 1m candles, about 7 MiB of feature vectors. Beyond it the
#: oldest undecided candle is forgotten, with a warning: its predictions will find no price.
MARKET_BACKLOG = 1440


@dataclass(slots=True)
class JoinStats:
    late: int = 0  # predictions for a candle already decided
    repeated: int = 0  # a second prediction of the same model type for one candle
    ignored: int = 0  # model types without a weight
