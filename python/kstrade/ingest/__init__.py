"""Ingest: market data into `market.candles.{symbol}.{1m,5m,15m,1h}` (closed candles, keyed by
symbol, `origin_ns` = the candle's close time) from Coinbase, a file replay, or synthetic data.

    bus = Bus.kafka("127.0.0.1:9092")
    ensure_candle_topics(bus, ["BTC-USD"])
    source = ReplaySource(read_candles("candles.parquet"), speed=Speed.parse("x60"),
                          resume=resume_points(bus, ["BTC-USD"]))     # or CoinbaseSource(...)
    run_ingest(bus, source, stop_event)

Higher timeframes come from the native `CandleAggregator`; where a restart picks up is read from
the candle topics themselves (`resume_points`), so a restart never duplicates or skips a candle.
Command line: `python -m kstrade ingest replay FILE|eurusd [--speed ...]`, `... ingest coinbase`.
"""
