//! Kafka consumer: poll-driven (`BaseConsumer`), explicit commits, rebalance events queued for
//! the caller instead of calling back into foreign code from inside librdkafka.

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::config::{client_config, CONSUMER_DEFAULTS};
use crate::error::{BusError, BusResult};
use crate::record::{RebalanceEvent, Record, RecordRef, TopicPartition};
use crate::traits::{Consumer, Subscription};

/// Commits that hit a rebalance in progress are retried this many times.
const COMMIT_ATTEMPTS: u32 = 3;
/// How long one commit waits for its result unless `kstrade.commit.timeout.ms` says otherwise.
/// librdkafka's synchronous commit waits without limit for the group coordinator, and after a
/// whole-cluster restart a client can stay without one: a service's loop then blocked in
/// commit for good (no progress, deaf to SIGTERM; issue 18). A timed-out commit is a failed
/// one: the runner leaves the batch uncommitted and goes on.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Our own consumer setting (not passed to librdkafka): the bound above, in milliseconds.
pub const COMMIT_TIMEOUT_PROPERTY: &str = "kstrade.commit.timeout.ms";

/// Why a bounded commit did not succeed.
enum CommitFailure {
    Kafka(RDKafkaErrorCode),
    TimedOut,
}

/// Commit `tpl` and wait at most `timeout` for the result: `rd_kafka_commit_queue` with a
/// queue of our own, polled with a timeout (rust-rdkafka's sync commit waits forever).
fn commit_bounded(
    consumer: &BaseConsumer<RebalanceLog>,
    tpl: &TopicPartitionList,
    timeout: Duration,
) -> Result<(), CommitFailure> {
    use rdkafka::bindings as rd;
    use rdkafka::types::RDKafkaRespErr;

    let rk = consumer.client().native_ptr();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `rk` and `tpl` outlive every call below; the queue and the event are created
    // and destroyed here exactly once. librdkafka counts references to the queue, so a result
    // that arrives after our timeout goes to a queue only librdkafka still holds.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let started = rd::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        if started != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            rd::rd_kafka_queue_destroy(queue);
            return Err(CommitFailure::Kafka(started.into()));
        }
        let event = rd::rd_kafka_queue_poll(queue, ms);
        if event.is_null() {
            rd::rd_kafka_queue_destroy(queue);
            return Err(CommitFailure::TimedOut);
        }
        let mut err = rd::rd_kafka_event_error(event);
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            // The request went through; a partition may still have been refused.
            let parts = rd::rd_kafka_event_topic_partition_list(event);
            if !parts.is_null() {
                let list = &*parts;
                for i in 0..usize::try_from(list.cnt).unwrap_or(0) {
                    let e = (*list.elems.add(i)).err;
                    if e != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                        err = e;
                        break;
                    }
                }
            }
        }
        rd::rd_kafka_event_destroy(event);
        rd::rd_kafka_queue_destroy(queue);
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(CommitFailure::Kafka(err.into()))
        }
    }
}

#[derive(Default)]
struct RebalanceLog {
    events: Mutex<Vec<RebalanceEvent>>,
}

fn tpl_to_vec(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    // Runs inside poll(), on the polling thread, with the GIL released: record only.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = tpl_to_vec(tpl);
            let event = if consumer.assignment_lost() {
                RebalanceEvent::Lost(parts)
            } else {
                RebalanceEvent::Revoked(parts)
            };
            self.events.lock().push(event);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if tpl.count() > 0 {
                self.events
                    .lock()
                    .push(RebalanceEvent::Assigned(tpl_to_vec(tpl)));
            }
        }
    }
}

pub struct KafkaConsumer {
    inner: Option<BaseConsumer<RebalanceLog>>,
    /// Next offset after the last record handed out, per partition still owned.
    positions: HashMap<TopicPartition, i64>,
    events: Vec<RebalanceEvent>,
    /// The last non-fatal client error seen while polling (broker down, ...), for diagnostics.
    pub last_error: Option<String>,
    /// How long a commit waits for its result (`COMMIT_TIMEOUT`).
    commit_timeout: Duration,
}

impl KafkaConsumer {
    pub fn new(config: &HashMap<String, String>) -> BusResult<Self> {
        if config.get("group.id").is_none_or(String::is_empty) {
            return Err(BusError::Config(
                "group.id is required for a consumer".into(),
            ));
        }
        let mut config = config.clone();
        let commit_timeout = match config.remove(COMMIT_TIMEOUT_PROPERTY) {
            None => COMMIT_TIMEOUT,
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| {
                BusError::Config(format!(
                    "{COMMIT_TIMEOUT_PROPERTY}: {ms:?} is not a number of milliseconds"
                ))
            })?),
        };
        let inner: BaseConsumer<RebalanceLog> = client_config(CONSUMER_DEFAULTS, &config)
            .create_with_context(RebalanceLog::default())
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(Self {
            commit_timeout,
            inner: Some(inner),
            positions: HashMap::new(),
            events: Vec::new(),
            last_error: None,
        })
    }

    fn client(&self) -> BusResult<&BaseConsumer<RebalanceLog>> {
        self.inner.as_ref().ok_or(BusError::Closed)
    }

    /// Move rebalance events from the context to the caller's queue and forget positions of
    /// partitions this consumer no longer owns (their progress belongs to the new owner).
    fn absorb_rebalance_events(&mut self) {
        if let Some(inner) = self.inner.as_ref() {
            absorb(inner, &mut self.positions, &mut self.events);
        }
    }

    /// Poll the client once, waiting at most `wait`; a record is handed to `visit` straight
    /// from librdkafka's buffers and its position noted in `run`. Whether one came.
    fn visit_next(
        &mut self,
        wait: Duration,
        run: &mut PositionRun,
        visit: &mut dyn FnMut(RecordRef<'_>),
    ) -> BusResult<bool> {
        let client = self.inner.as_ref().ok_or(BusError::Closed)?;
        let got = match client.poll(wait) {
            // Also after a rebalance, which rust-rdkafka serves inside poll and reports as none.
            None => false,
            Some(Ok(msg)) => {
                let headers: Vec<(&str, Option<&[u8]>)> =
                    msg.headers().map_or_else(Vec::new, |h| {
                        h.iter().map(|hd| (hd.key, hd.value)).collect()
                    });
                let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
                visit(RecordRef {
                    topic,
                    partition,
                    offset,
                    key: msg.key(),
                    value: msg.payload(),
                    headers: &headers,
                    timestamp_ms: msg.timestamp().to_millis().unwrap_or(-1),
                });
                run.note(&mut self.positions, topic, partition, offset + 1);
                true
            }
            Some(Err(err)) if is_fatal(&err) => {
                run.flush(&mut self.positions);
                return Err(err.into());
            }
            Some(Err(err)) => {
                self.last_error = Some(err.to_string());
                false
            }
        };
        if !client.context().events.lock().is_empty() {
            // Positions of what was handed out first, then the revocations may remove them.
            run.flush(&mut self.positions);
            absorb(client, &mut self.positions, &mut self.events);
        }
        Ok(got)
    }

    fn to_tpl(offsets: &[(TopicPartition, i64)]) -> BusResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (tp, off) in offsets {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*off))?;
        }
        Ok(tpl)
    }
}

/// Move rebalance events from `inner`'s context to `events`, forgetting the positions of
/// partitions revoked or lost.
fn absorb(
    inner: &BaseConsumer<RebalanceLog>,
    positions: &mut HashMap<TopicPartition, i64>,
    events: &mut Vec<RebalanceEvent>,
) {
    let drained: Vec<RebalanceEvent> = std::mem::take(&mut *inner.context().events.lock());
    for event in &drained {
        if let RebalanceEvent::Revoked(parts) | RebalanceEvent::Lost(parts) = event {
            for tp in parts {
                positions.remove(tp);
            }
        }
    }
    events.extend(drained);
}

/// The next offset of the partition whose records are being handed out, written to the
/// position map once its run ends: librdkafka hands out a fetched partition's records one
/// after another, so this is one map update (and one key) per run instead of per record.
#[derive(Default)]
struct PositionRun(Option<(TopicPartition, i64)>);

impl PositionRun {
    fn note(
        &mut self,
        positions: &mut HashMap<TopicPartition, i64>,
        topic: &str,
        partition: i32,
        next: i64,
    ) {
        match &mut self.0 {
            Some((tp, at)) if tp.partition == partition && tp.topic == topic => *at = next,
            _ => {
                self.flush(positions);
                self.0 = Some((TopicPartition::new(topic, partition), next));
            }
        }
    }

    fn flush(&mut self, positions: &mut HashMap<TopicPartition, i64>) {
        if let Some((tp, next)) = self.0.take() {
            positions.insert(tp, next);
        }
    }
}

fn is_fatal(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
        )
    )
}

impl Consumer for KafkaConsumer {
    fn subscribe(&mut self, subscription: Subscription) -> BusResult<()> {
        let topics = match subscription {
            Subscription::Topics(list) => list,
            Subscription::Pattern(p) if p.starts_with('^') => vec![p],
            // librdkafka treats a subscription as a regex only when it starts with '^'.
            Subscription::Pattern(p) => vec![format!("^{p}")],
        };
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.client()?.subscribe(&refs)?;
        Ok(())
    }

    fn poll(&mut self, max: usize, timeout: Duration) -> BusResult<Vec<Record>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut run = PositionRun::default();
        let mut keep = |r: RecordRef<'_>| out.push(r.to_record());
        // Wait for the first record up to the deadline (a rebalance or a transient error can
        // wake the client early: keep waiting); then take what is already fetched.
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let got = self.visit_next(wait, &mut run, &mut keep);
            if got.is_err() || got == Ok(true) || Instant::now() >= deadline {
                run.flush(&mut self.positions);
                if got? {
                    break;
                }
                return Ok(out);
            }
        }
        self.drain(max.max(1) - 1, &mut keep)?;
        Ok(out)
    }

    fn drain(&mut self, max: usize, visit: &mut dyn FnMut(RecordRef<'_>)) -> BusResult<usize> {
        let mut run = PositionRun::default();
        let mut n = 0;
        while n < max {
            match self.visit_next(Duration::ZERO, &mut run, visit) {
                Ok(true) => n += 1,
                Ok(false) => break,
                Err(e) => return Err(e),
            }
        }
        run.flush(&mut self.positions);
        Ok(n)
    }

    fn commit(&mut self, offsets: Option<Vec<(TopicPartition, i64)>>) -> BusResult<()> {
        self.absorb_rebalance_events();
        let offsets = offsets.unwrap_or_else(|| {
            self.positions
                .iter()
                .map(|(tp, o)| (tp.clone(), *o))
                .collect()
        });
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = Self::to_tpl(&offsets)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match commit_bounded(self.client()?, &tpl, self.commit_timeout) {
                Ok(()) => return Ok(()),
                Err(CommitFailure::Kafka(RDKafkaErrorCode::RebalanceInProgress))
                    if attempt < COMMIT_ATTEMPTS =>
                {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(CommitFailure::Kafka(code)) => {
                    return Err(BusError::Commit(format!(
                        "Consumer commit error: {code:?} ({code})"
                    )))
                }
                Err(CommitFailure::TimedOut) => {
                    return Err(BusError::Commit(format!(
                        "no answer within {} ms (no group coordinator?)",
                        self.commit_timeout.as_millis()
                    )))
                }
            }
        }
    }

    fn committed(
        &mut self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> BusResult<Vec<(TopicPartition, Option<i64>)>> {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for tp in partitions {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let got = self.client()?.committed_offsets(tpl, timeout)?;
        Ok(got
            .elements()
            .iter()
            .map(|e| {
                let off = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (TopicPartition::new(e.topic(), e.partition()), off)
            })
            .collect())
    }

    fn seek(&mut self, tp: &TopicPartition, offset: i64) -> BusResult<()> {
        self.client()?.seek(
            &tp.topic,
            tp.partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        )?;
        self.positions.insert(tp.clone(), offset);
        Ok(())
    }

    fn pause(&mut self, partitions: &[TopicPartition]) -> BusResult<()> {
        let tpl = Self::to_tpl(
            &partitions
                .iter()
                .map(|tp| (tp.clone(), 0))
                .collect::<Vec<_>>(),
        )?;
        Ok(self.client()?.pause(&tpl)?)
    }

    fn resume(&mut self, partitions: &[TopicPartition]) -> BusResult<()> {
        let tpl = Self::to_tpl(
            &partitions
                .iter()
                .map(|tp| (tp.clone(), 0))
                .collect::<Vec<_>>(),
        )?;
        Ok(self.client()?.resume(&tpl)?)
    }

    fn assignment(&mut self) -> BusResult<Vec<TopicPartition>> {
        let mut parts = tpl_to_vec(&self.client()?.assignment()?);
        parts.sort();
        Ok(parts)
    }

    fn position(&mut self) -> BusResult<Vec<(TopicPartition, i64)>> {
        let mut out: Vec<_> = self
            .positions
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        out.sort();
        Ok(out)
    }

    fn lag(&mut self, timeout: Duration) -> BusResult<BTreeMap<TopicPartition, i64>> {
        let owned = self.assignment()?;
        let committed: HashMap<TopicPartition, Option<i64>> =
            self.committed(&owned, timeout)?.into_iter().collect();
        let client = self.client()?;
        let mut lag = BTreeMap::new();
        for tp in owned {
            let (low, high) = client.fetch_watermarks(&tp.topic, tp.partition, timeout)?;
            let position = self
                .positions
                .get(&tp)
                .copied()
                .or_else(|| committed.get(&tp).copied().flatten())
                .unwrap_or(low);
            lag.insert(tp, (high - position).max(0));
        }
        Ok(lag)
    }

    fn take_rebalance_events(&mut self) -> Vec<RebalanceEvent> {
        self.absorb_rebalance_events();
        std::mem::take(&mut self.events)
    }

    fn close(&mut self) -> BusResult<()> {
        if let Some(inner) = self.inner.take() {
            inner.unsubscribe();
            drop(inner); // rd_kafka_consumer_close: leaves the group at once
        }
        self.positions.clear();
        Ok(())
    }
}
