//! The interface every stage is written against. Both transports implement it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{BusError, BusResult};
use crate::record::{
    OutRecord, RebalanceEvent, Record, RecordRef, TopicDescription, TopicPartition, TopicSpec,
};

/// Topics to follow: an explicit list or a regular expression over topic names (Kafka's `^...`).
#[derive(Debug, Clone, PartialEq)]
pub enum Subscription {
    Topics(Vec<String>),
    Pattern(String),
}

pub trait Producer: Send + Sync {
    /// Enqueue one record. Errors that are known at once (unknown topic, too large, bad
    /// partition) are returned here; delivery failures are returned by [`Producer::flush`].
    fn send(&self, record: OutRecord) -> BusResult<()>;
    /// Wait until every enqueued record is acknowledged. Fails if any delivery since the last
    /// flush failed, naming the first failure: nothing is dropped silently.
    fn flush(&self, timeout: Duration) -> BusResult<()>;
    /// Records enqueued and not yet acknowledged (or failed).
    fn in_flight(&self) -> usize;
    /// The records the producer gave up on since the last call (those a failed flush counted),
    /// as they were sent, in the order their failures came: for the caller to send again.
    fn take_failed(&self) -> Vec<OutRecord> {
        Vec::new()
    }
    /// Start over with a new client of the same settings (a fresh connection to every broker,
    /// a new producer id), once nothing is in flight. A client that gave up on records after
    /// a whole-cluster restart can stay stuck on their partition; its successor is not.
    fn renew(&self) -> BusResult<()> {
        Ok(())
    }
}

pub trait Consumer: Send {
    fn subscribe(&mut self, subscription: Subscription) -> BusResult<()>;
    /// Up to `max` records, waiting at most `timeout` for the first one.
    fn poll(&mut self, max: usize, timeout: Duration) -> BusResult<Vec<Record>>;
    /// Up to `max` records that are already here, each handed to `visit` where the transport
    /// keeps it (no copy on the way), without waiting; positions move as with `poll`. Returns
    /// how many were visited. A binding builds its own objects straight from the client's
    /// buffers this way; the default goes through `poll`.
    fn drain(&mut self, max: usize, visit: &mut dyn FnMut(RecordRef<'_>)) -> BusResult<usize> {
        let records = self.poll(max, Duration::ZERO)?;
        for r in &records {
            r.with_ref(&mut *visit);
        }
        Ok(records.len())
    }
    /// Commit the given next-offsets, or, with `None`, the position after every record polled
    /// so far on the partitions still owned. Synchronous: returns once the commit is durable.
    fn commit(&mut self, offsets: Option<Vec<(TopicPartition, i64)>>) -> BusResult<()>;
    fn committed(
        &mut self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> BusResult<Vec<(TopicPartition, Option<i64>)>>;
    fn seek(&mut self, tp: &TopicPartition, offset: i64) -> BusResult<()>;
    fn pause(&mut self, partitions: &[TopicPartition]) -> BusResult<()>;
    fn resume(&mut self, partitions: &[TopicPartition]) -> BusResult<()>;
    fn assignment(&mut self) -> BusResult<Vec<TopicPartition>>;
    /// Next offset to read on each owned partition (after the last polled record).
    fn position(&mut self) -> BusResult<Vec<(TopicPartition, i64)>>;
    /// Messages behind the end of log on each owned partition: high watermark - position.
    fn lag(&mut self, timeout: Duration) -> BusResult<BTreeMap<TopicPartition, i64>>;
    /// Rebalance events since the last call, oldest first.
    fn take_rebalance_events(&mut self) -> Vec<RebalanceEvent>;
    /// Event-time fence for replays: from now on `poll` returns, on each partition, only the
    /// records up to the first one stamped later than `until_ms` (none: no fence). A replay
    /// runs a stage over many instants at once and reads the stages after it instant by
    /// instant; the fence keeps them from reading their future. Only the memory transport has
    /// it: a live cluster has no future to hide.
    fn set_read_until(&mut self, until_ms: Option<i64>) -> BusResult<()> {
        let _ = until_ms;
        Err(crate::error::BusError::Config(
            "read_until (an event-time fence) exists only on the memory transport".into(),
        ))
    }
    /// Whether a `poll` now would return a record (or rebalance events), without taking any:
    /// a replay asks it of each stage behind the fence, instead of a round of empty polls, to
    /// know that an instant is done. Only the memory transport answers it.
    fn has_pending(&mut self) -> BusResult<bool> {
        Err(crate::error::BusError::Config(
            "has_pending exists only on the memory transport".into(),
        ))
    }
    /// Leave the group. Uncommitted progress is not committed: callers commit first.
    fn close(&mut self) -> BusResult<()>;
}

pub trait Admin: Send + Sync {
    /// Create topics. Returns, per spec, `true` if created and `false` if it already existed.
    fn create_topics(
        &self,
        specs: &[TopicSpec],
        timeout: Duration,
    ) -> BusResult<Vec<(String, bool)>>;
    fn delete_topics(&self, names: &[String], timeout: Duration) -> BusResult<()>;
    fn describe_topics(
        &self,
        names: &[String],
        timeout: Duration,
    ) -> BusResult<Vec<TopicDescription>>;
    fn list_topics(&self, timeout: Duration) -> BusResult<Vec<String>>;
    /// High watermark (next offset to be written) of each partition of a topic.
    fn end_offsets(&self, topic: &str, timeout: Duration) -> BusResult<Vec<i64>>;
    /// Delete, from every topic but `keep`, the records that every group reading the topic now
    /// has committed (what Kafka Streams does to its repartition topics with DeleteRecords):
    /// a replay's memory then stays bounded however long it runs. Returns records deleted.
    /// Only the embedded transport does it; a Kafka cluster has its own retention.
    fn purge_consumed(&self, keep: &[String]) -> BusResult<u64> {
        let _ = keep;
        Err(BusError::Config(
            "purge_consumed: only the memory transport deletes consumed records (Kafka has retention)".into(),
        ))
    }
}
