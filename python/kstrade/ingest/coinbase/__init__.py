"""Coinbase Advanced Trade: WebSocket trades and heartbeats to closed 1m candles, with every gap
filled from the REST candles endpoint."""
