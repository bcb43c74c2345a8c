//! Client defaults that differ from librdkafka's, each with its reason. Anything the caller
//! passes overrides these; anything not listed keeps librdkafka's own default.

use std::collections::HashMap;

use rdkafka::ClientConfig;

/// Producer defaults: no loss, no duplicates, Java-compatible key placement, low latency.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    // Producer retries must not duplicate or reorder: idempotence implies acks=all.
    ("enable.idempotence", "true"),
    ("acks", "all"),
    // The same key must land on the same partition as on the memory bus and Java clients
    // (librdkafka's own default, consistent_random, hashes with CRC32 instead).
    ("partitioner", "murmur2_random"),
    // Hot path: send at once instead of waiting 5 ms to fill a batch.
    ("linger.ms", "0"),
    ("compression.type", "lz4"),
];

/// Consumer defaults: at-least-once with explicit commits after processing, small fetch waits.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("session.timeout.ms", "30000"),
    ("max.poll.interval.ms", "300000"),
    // librdkafka waits up to 500 ms for a fetch to fill and backs off 1 s on an empty queue:
    // both are latency on a sparse candle stream.
    ("fetch.wait.max.ms", "5"),
    ("fetch.min.bytes", "1"),
    ("fetch.queue.backoff.ms", "1"),
    ("fetch.error.backoff.ms", "50"),
];

/// Build a librdkafka config: our defaults first, then every caller property verbatim.
pub fn client_config(
    defaults: &[(&str, &str)],
    overrides: &HashMap<String, String>,
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in defaults {
        cfg.set(*k, *v);
    }
    for (k, v) in overrides {
        cfg.set(k.as_str(), v.as_str());
    }
    cfg
}
