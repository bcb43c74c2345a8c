//! The values that cross the bus: records in and out, topic specs and rebalance events.

use std::collections::{BTreeMap, HashMap};

use crate::error::{BusError, BusResult};

/// librdkafka's default `message.max.bytes`, so an oversized message fails alike on both buses.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The producer-side size limit (`message.max.bytes`), checked before a record is queued on
/// either transport, so an oversized message is refused at once with the same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit(pub usize);

impl SizeLimit {
    pub fn from_config(config: &HashMap<String, String>) -> BusResult<Self> {
        match config.get("message.max.bytes") {
            None => Ok(Self(DEFAULT_MAX_MESSAGE_BYTES)),
            Some(v) => v.parse().map(Self).map_err(|_| {
                BusError::Config(format!(
                    "message.max.bytes={v:?} is not a non-negative integer"
                ))
            }),
        }
    }

    /// The record's size, or `MessageTooLarge` naming the topic.
    pub fn check(&self, record: &OutRecord) -> BusResult<usize> {
        let size = Record::payload_size(&record.key, &record.value, &record.headers);
        if size > self.0 {
            return Err(BusError::MessageTooLarge {
                topic: record.topic.clone(),
                size,
                max: self.0,
            });
        }
        Ok(size)
    }
}

/// A Kafka header. Kafka allows a null value, distinct from an empty one.
pub type Header = (String, Option<Vec<u8>>);

/// A record to produce. `partition = None` lets the partitioner choose (murmur2 of the key,
/// as Kafka's Java client does, so a key lands on the same partition on every transport).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub partition: Option<i32>,
    /// Milliseconds since the epoch; `None` means "now" (CreateTime).
    pub timestamp_ms: Option<i64>,
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub timestamp_ms: i64,
}

impl Record {
    /// Size as Kafka counts it against `message.max.bytes`, near enough: key + value + headers.
    pub fn payload_size(
        key: &Option<Vec<u8>>,
        value: &Option<Vec<u8>>,
        headers: &[Header],
    ) -> usize {
        let h: usize = headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len) + h
    }
}

/// A consumed record where the transport keeps it, borrowed rather than copied: what
/// [`crate::Consumer::drain`] hands its visitor, which copies only what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    pub timestamp_ms: i64,
}

impl Record {
    /// Call `f` with this record as a [`RecordRef`].
    pub fn with_ref<T>(&self, f: impl FnOnce(RecordRef<'_>) -> T) -> T {
        let headers: Vec<(&str, Option<&[u8]>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        f(RecordRef {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: &headers,
            timestamp_ms: self.timestamp_ms,
        })
    }
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.map(<[u8]>::to_vec)))
                .collect(),
            timestamp_ms: self.timestamp_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// What to create: name, partitions, replication factor and topic configs.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub configs: BTreeMap<String, String>,
}

/// What a topic is: partitions with their leaders and replicas, and its effective configs.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub configs: BTreeMap<String, String>,
}

/// A change of the partitions a consumer owns, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum RebalanceEvent {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
    /// The partitions were taken away without a chance to commit (session lost).
    Lost(Vec<TopicPartition>),
}
