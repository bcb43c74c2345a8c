"""Ingest: market data into `market.candles.*` from Coinbase, a file replay, or synthetic data."""
