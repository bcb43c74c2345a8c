//! The embedded transport: an in-process, append-only log per partition with Kafka's semantics.
//!
//! One [`MemoryBroker`] plays the cluster. Producers append under a lock and wake waiting
//! consumers; consumer groups keep committed offsets and split partitions among their members
//! (round-robin over the sorted partitions, recomputed when a member joins or leaves or a
//! topic appears), so stages written for Kafka run unchanged in one process and backtests
//! replay through exactly the live code.
//!
//! What it does not model: replication, time or size retention and session time-outs (a member
//! leaves when it is closed or dropped). Offsets, keys, headers and the partitioner are Kafka's.
//! A long replay bounds its memory with [`Admin::purge_consumed`] instead: records every
//! reading group has committed are deleted, as Kafka Streams deletes its repartition records.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use regex::Regex;

use crate::error::{BusError, BusResult};
use crate::partitioner::partition_for_key;
use crate::record::{
    OutRecord, RebalanceEvent, Record, RecordRef, SizeLimit, TopicDescription, TopicPartition,
    TopicSpec,
};
use crate::traits::{Admin, Consumer, Producer, Subscription};

pub use crate::record::DEFAULT_MAX_MESSAGE_BYTES;

struct Stored {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: i64,
}

/// One partition: its records from the log start offset `start` on (those before it were
/// deleted, `Admin::purge_consumed`) to the end.
#[derive(Default)]
struct PartitionLog {
    start: i64,
    records: VecDeque<Stored>,
}

impl PartitionLog {
    /// The high watermark: the offset the next record gets.
    fn end(&self) -> i64 {
        self.start + self.records.len() as i64
    }
}

struct TopicLog {
    spec: TopicSpec,
    partitions: Vec<PartitionLog>,
}

enum Matcher {
    Topics(HashSet<String>),
    Pattern(Regex),
}

impl Matcher {
    fn matches(&self, topic: &str) -> bool {
        match self {
            Matcher::Topics(set) => set.contains(topic),
            // Kafka never hands internal topics to a pattern subscription.
            Matcher::Pattern(re) => !topic.starts_with("__") && re.is_match(topic),
        }
    }
}

#[derive(Default)]
struct Group {
    members: BTreeMap<u64, Matcher>,
    generation: u64,
    assignment: HashMap<u64, Vec<TopicPartition>>,
    committed: HashMap<TopicPartition, i64>,
}

impl Group {
    /// Deal the subscribed partitions out round-robin over the members that want them.
    fn rebalance(&mut self, topics: &BTreeMap<String, TopicLog>) {
        self.generation += 1;
        let mut assignment: HashMap<u64, Vec<TopicPartition>> =
            self.members.keys().map(|m| (*m, Vec::new())).collect();
        let mut turn = 0usize;
        for (name, log) in topics {
            let wanting: Vec<u64> = self
                .members
                .iter()
                .filter(|(_, m)| m.matches(name))
                .map(|(id, _)| *id)
                .collect();
            if wanting.is_empty() {
                continue;
            }
            for p in 0..log.partitions.len() as i32 {
                let member = wanting[turn % wanting.len()];
                turn += 1;
                assignment
                    .entry(member)
                    .or_default()
                    .push(TopicPartition::new(name.clone(), p));
            }
        }
        self.assignment = assignment;
    }
}

#[derive(Default)]
struct State {
    topics: BTreeMap<String, TopicLog>,
    /// Bumped by every change to the logs (a record appended, a topic created or deleted): a
    /// consumer that saw everything there was at one version has nothing new while it holds.
    version: u64,
    groups: HashMap<String, Group>,
    next_member: u64,
    round_robin: u64,
}

impl State {
    fn rebalance_all(&mut self) {
        let topics = &self.topics;
        for group in self.groups.values_mut() {
            group.rebalance(topics);
        }
    }
}

/// The in-process cluster. Clone the `Arc` to share it between producers, consumers and admin.
#[derive(Default)]
pub struct MemoryBroker {
    state: Mutex<State>,
    changed: Condvar,
}

impl MemoryBroker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------------------------
// Producer

pub struct MemoryProducer {
    broker: Arc<MemoryBroker>,
    limit: SizeLimit,
}

impl MemoryProducer {
    pub fn new(broker: Arc<MemoryBroker>, config: &HashMap<String, String>) -> BusResult<Self> {
        Ok(Self {
            broker,
            limit: SizeLimit::from_config(config)?,
        })
    }
}

impl Producer for MemoryProducer {
    fn send(&self, record: OutRecord) -> BusResult<()> {
        self.limit.check(&record)?;
        let mut state = self.broker.state.lock();
        let rr = state.round_robin;
        let log = state
            .topics
            .get_mut(&record.topic)
            .ok_or_else(|| BusError::UnknownTopic(record.topic.clone()))?;
        let count = log.partitions.len() as i32;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if (0..count).contains(&p) => p,
            (Some(p), _) => {
                return Err(BusError::InvalidPartition {
                    topic: record.topic,
                    partition: p,
                    count,
                })
            }
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => (rr % count as u64) as i32,
        };
        log.partitions[partition as usize]
            .records
            .push_back(Stored {
                key: record.key,
                value: record.value,
                headers: record.headers,
                timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
            });
        state.round_robin = rr.wrapping_add(1);
        state.version += 1;
        drop(state);
        self.broker.changed.notify_all();
        Ok(())
    }

    fn flush(&self, _timeout: Duration) -> BusResult<()> {
        Ok(()) // appends are synchronous: nothing is ever in flight
    }

    fn in_flight(&self) -> usize {
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer

#[derive(Clone, Copy, PartialEq)]
enum OffsetReset {
    Earliest,
    Latest,
}

/// The broker's topics looked up in ascending name order, as a walk: each `find` moves
/// forward from where the last one stopped (a partition list in topic order costs one pass).
struct TopicWalk<'a> {
    logs: std::iter::Peekable<std::collections::btree_map::Iter<'a, String, TopicLog>>,
}

impl<'a> TopicWalk<'a> {
    fn new(topics: &'a BTreeMap<String, TopicLog>) -> Self {
        Self {
            logs: topics.iter().peekable(),
        }
    }

    /// The log of `topic`, for names asked in ascending order (a repeat finds it again).
    fn find(&mut self, topic: &str) -> Option<&'a TopicLog> {
        while let Some((name, log)) = self.logs.peek() {
            match name.as_str().cmp(topic) {
                std::cmp::Ordering::Less => {
                    self.logs.next();
                }
                std::cmp::Ordering::Equal => return Some(log),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

pub struct MemoryConsumer {
    broker: Arc<MemoryBroker>,
    group_id: String,
    member: Option<u64>,
    generation: u64,
    /// The partitions this consumer owns, each with the next offset to read: in topic order,
    /// so `fetch` walks them beside the broker's topics without a lookup per partition.
    positions: BTreeMap<TopicPartition, i64>,
    /// Partitions whose position moved (or was set) since the last commit of all positions:
    /// what `commit(None)` writes. Committing an unchanged offset again changes nothing, and a
    /// pattern subscriber (the metrics collector) owns hundreds of partitions.
    moved: Vec<TopicPartition>,
    paused: HashSet<TopicPartition>,
    events: Vec<RebalanceEvent>,
    reset: OffsetReset,
    closed: bool,
    /// The event-time fence of [`Consumer::set_read_until`].
    until_ms: Option<i64>,
    /// The log version at which a fetch last took everything it could (not cut short by its
    /// `max`): until the logs change, or this consumer's view of them does (assignment, seek,
    /// resume, fence), a fetch finds nothing and need not visit its partitions. A lockstep
    /// replay polls the metrics collector's hundreds of partitions twice per instant, the
    /// second time for nothing.
    drained_at: Option<u64>,
}

impl MemoryConsumer {
    pub fn new(broker: Arc<MemoryBroker>, config: &HashMap<String, String>) -> BusResult<Self> {
        let group_id = config
            .get("group.id")
            .filter(|g| !g.is_empty())
            .ok_or_else(|| BusError::Config("group.id is required for a consumer".into()))?
            .clone();
        let reset = match config.get("auto.offset.reset").map(String::as_str) {
            None | Some("latest" | "end" | "largest") => OffsetReset::Latest,
            Some("earliest" | "beginning" | "smallest") => OffsetReset::Earliest,
            Some(other) => {
                return Err(BusError::Config(format!(
                    "auto.offset.reset={other:?}: use earliest or latest"
                )))
            }
        };
        Ok(Self {
            broker,
            group_id,
            member: None,
            generation: 0,
            positions: BTreeMap::new(),
            moved: Vec::new(),
            paused: HashSet::new(),
            events: Vec::new(),
            reset,
            closed: false,
            until_ms: None,
            drained_at: None,
        })
    }

    /// Catch up with the group's current generation: revoke what was lost, position what is new.
    fn sync_assignment(&mut self, state: &State) {
        let Some(member) = self.member else { return };
        let Some(group) = state.groups.get(&self.group_id) else {
            return;
        };
        if group.generation == self.generation {
            return;
        }
        self.generation = group.generation;
        self.drained_at = None;
        let now: BTreeSet<TopicPartition> = group
            .assignment
            .get(&member)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        let revoked: Vec<TopicPartition> = self
            .positions
            .keys()
            .filter(|tp| !now.contains(*tp))
            .cloned()
            .collect();
        let assigned: Vec<TopicPartition> = now
            .iter()
            .filter(|tp| !self.positions.contains_key(*tp))
            .cloned()
            .collect();
        for tp in &revoked {
            self.positions.remove(tp);
            self.paused.remove(tp);
        }
        for tp in &assigned {
            let (first, end) = state.topics.get(&tp.topic).map_or((0, 0), |t| {
                let part = &t.partitions[tp.partition as usize];
                (part.start, part.end())
            });
            let start = match (group.committed.get(tp), self.reset) {
                (Some(off), _) => *off,
                (None, OffsetReset::Earliest) => first,
                (None, OffsetReset::Latest) => end,
            };
            self.positions.insert(tp.clone(), start);
            self.moved.push(tp.clone());
        }
        if !revoked.is_empty() {
            self.events.push(RebalanceEvent::Revoked(revoked));
        }
        if !assigned.is_empty() {
            self.events.push(RebalanceEvent::Assigned(assigned));
        }
    }

    /// Hand up to `max` records to `visit`, partition after partition, where the log keeps
    /// them (the visitor copies what it keeps), and move the positions past them.
    fn fetch(&mut self, state: &State, max: usize, visit: &mut dyn FnMut(RecordRef<'_>)) -> usize {
        if self.drained_at == Some(state.version) {
            return 0;
        }
        let mut n = 0;
        let mut headers: Vec<(&str, Option<&[u8]>)> = Vec::new();
        // Owned partitions and the broker's topics are both in topic order: one walk through
        // each, not a lookup per partition (a pattern subscriber like the metrics collector
        // owns hundreds, and a replay polls it at every instant).
        let mut logs = TopicWalk::new(&state.topics);
        for (tp, pos) in self.positions.iter_mut() {
            if n >= max {
                break;
            }
            if !self.paused.is_empty() && self.paused.contains(tp) {
                continue;
            }
            let Some(log) = logs.find(&tp.topic) else {
                continue;
            };
            let part = &log.partitions[tp.partition as usize];
            // A position before the log start (its records were deleted) reads from the start,
            // as Kafka's auto.offset.reset=earliest does after retention.
            let start = ((*pos).clamp(part.start, part.end()) - part.start) as usize;
            let mut take = (max - n).min(part.records.len() - start);
            if let Some(until) = self.until_ms {
                // A partition's records are in production order, and a replay stamps them
                // with the instant that produced them: the fence is the first later stamp.
                take = part
                    .records
                    .range(start..start + take)
                    .position(|s| s.timestamp_ms > until)
                    .unwrap_or(take);
            }
            if take > 0 {
                self.moved.push(tp.clone());
            }
            let first = part.start + start as i64;
            for (i, s) in part.records.range(start..start + take).enumerate() {
                headers.clear();
                headers.extend(s.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
                visit(RecordRef {
                    topic: &tp.topic,
                    partition: tp.partition,
                    offset: first + i as i64,
                    key: s.key.as_deref(),
                    value: s.value.as_deref(),
                    headers: &headers,
                    timestamp_ms: s.timestamp_ms,
                });
            }
            n += take;
            *pos = first + take as i64;
        }
        if self.moved.len() > 2 * self.positions.len() + 64 {
            // A consumer that commits explicit offsets only (`retained`) never drains the list.
            self.moved.sort_unstable();
            self.moved.dedup();
        }
        self.drained_at = (n < max).then_some(state.version);
        n
    }

    /// Whether `fetch` would hand out a record now: a partition with records from its position
    /// on, the first of them within the fence. Moves nothing.
    fn pending(&self, state: &State) -> bool {
        if self.drained_at == Some(state.version) {
            return false;
        }
        let mut logs = TopicWalk::new(&state.topics);
        self.positions.iter().any(|(tp, &pos)| {
            if !self.paused.is_empty() && self.paused.contains(tp) {
                return false;
            }
            let Some(log) = logs.find(&tp.topic) else {
                return false;
            };
            let part = &log.partitions[tp.partition as usize];
            let start = (pos.clamp(part.start, part.end()) - part.start) as usize;
            part.records
                .get(start)
                .is_some_and(|s| self.until_ms.is_none_or(|until| s.timestamp_ms <= until))
        })
    }

    fn check_open(&self) -> BusResult<()> {
        if self.closed {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        if let Some(member) = self.member.take() {
            let mut state = self.broker.state.lock();
            let State { topics, groups, .. } = &mut *state;
            if let Some(group) = groups.get_mut(&self.group_id) {
                group.members.remove(&member);
                group.rebalance(topics);
            }
            drop(state);
            self.broker.changed.notify_all();
        }
    }
}

impl Consumer for MemoryConsumer {
    fn subscribe(&mut self, subscription: Subscription) -> BusResult<()> {
        self.check_open()?;
        let matcher = match subscription {
            Subscription::Topics(list) => Matcher::Topics(list.into_iter().collect()),
            Subscription::Pattern(p) => Matcher::Pattern(
                Regex::new(&p).map_err(|e| BusError::Pattern(format!("{p}: {e}")))?,
            ),
        };
        let broker = Arc::clone(&self.broker);
        let mut state = broker.state.lock();
        let member = *self.member.get_or_insert_with(|| {
            state.next_member += 1;
            state.next_member
        });
        let State { topics, groups, .. } = &mut *state;
        let group = groups.entry(self.group_id.clone()).or_default();
        group.members.insert(member, matcher);
        group.rebalance(topics);
        self.sync_assignment(&state);
        drop(state);
        broker.changed.notify_all();
        Ok(())
    }

    fn poll(&mut self, max: usize, timeout: Duration) -> BusResult<Vec<Record>> {
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        let broker = Arc::clone(&self.broker);
        let mut state = broker.state.lock();
        let mut out = Vec::new();
        let mut keep = |r: RecordRef<'_>| out.push(r.to_record());
        loop {
            self.sync_assignment(&state);
            if self.fetch(&state, max.max(1), &mut keep) > 0 || !self.events.is_empty() {
                return Ok(out);
            }
            if broker.changed.wait_until(&mut state, deadline).timed_out() {
                self.sync_assignment(&state);
                self.fetch(&state, max.max(1), &mut keep);
                return Ok(out);
            }
        }
    }

    fn drain(&mut self, max: usize, visit: &mut dyn FnMut(RecordRef<'_>)) -> BusResult<usize> {
        self.check_open()?;
        let broker = Arc::clone(&self.broker);
        let state = broker.state.lock();
        self.sync_assignment(&state);
        Ok(self.fetch(&state, max, visit))
    }

    fn commit(&mut self, offsets: Option<Vec<(TopicPartition, i64)>>) -> BusResult<()> {
        self.check_open()?;
        let member = self
            .member
            .ok_or_else(|| BusError::Commit("not subscribed to a group".into()))?;
        let all = offsets.is_none();
        let offsets = offsets.unwrap_or_else(|| {
            // Every position that moved since the last such commit (the others are committed).
            let mut moved = std::mem::take(&mut self.moved);
            moved.sort_unstable();
            moved.dedup();
            moved
                .into_iter()
                .filter_map(|tp| self.positions.get(&tp).map(|o| (tp, *o)))
                .collect()
        });
        let mut state = self.broker.state.lock();
        let Some(group) = state.groups.get_mut(&self.group_id) else {
            return Err(BusError::Commit(format!(
                "group '{}' is gone",
                self.group_id
            )));
        };
        // Like Kafka's generation check: a member may only commit partitions it owns now, so a
        // consumer that lost a partition cannot move the new owner's offset. While the group is
        // at the generation this consumer last synced, what it owns is `self.positions`' keys.
        let current = group.generation == self.generation;
        let owned: HashSet<&TopicPartition> = if current {
            HashSet::new()
        } else {
            group
                .assignment
                .get(&member)
                .map(|v| v.iter().collect())
                .unwrap_or_default()
        };
        let owns = |tp: &TopicPartition| {
            if current {
                self.positions.contains_key(tp)
            } else {
                owned.contains(tp)
            }
        };
        if let Some((tp, _)) = offsets.iter().find(|(tp, _)| !owns(tp)) {
            let err = BusError::NotAssigned {
                topic: tp.topic.clone(),
                partition: tp.partition,
            };
            if all {
                // Not committed: still to be written by the next commit of all positions.
                self.moved.extend(offsets.into_iter().map(|(tp, _)| tp));
            }
            return Err(err);
        }
        for (tp, off) in offsets {
            group.committed.insert(tp, off);
        }
        Ok(())
    }

    fn committed(
        &mut self,
        partitions: &[TopicPartition],
        _timeout: Duration,
    ) -> BusResult<Vec<(TopicPartition, Option<i64>)>> {
        let state = self.broker.state.lock();
        let group = state.groups.get(&self.group_id);
        Ok(partitions
            .iter()
            .map(|tp| (tp.clone(), group.and_then(|g| g.committed.get(tp).copied())))
            .collect())
    }

    fn seek(&mut self, tp: &TopicPartition, offset: i64) -> BusResult<()> {
        self.check_open()?;
        if !self.positions.contains_key(tp) {
            return Err(BusError::NotAssigned {
                topic: tp.topic.clone(),
                partition: tp.partition,
            });
        }
        self.positions.insert(tp.clone(), offset.max(0));
        self.moved.push(tp.clone());
        self.drained_at = None;
        Ok(())
    }

    fn pause(&mut self, partitions: &[TopicPartition]) -> BusResult<()> {
        self.paused.extend(partitions.iter().cloned());
        Ok(())
    }

    fn resume(&mut self, partitions: &[TopicPartition]) -> BusResult<()> {
        for tp in partitions {
            self.paused.remove(tp);
        }
        self.drained_at = None;
        Ok(())
    }

    fn assignment(&mut self) -> BusResult<Vec<TopicPartition>> {
        let broker = Arc::clone(&self.broker);
        let state = broker.state.lock();
        self.sync_assignment(&state);
        Ok(self.positions.keys().cloned().collect())
    }

    fn position(&mut self) -> BusResult<Vec<(TopicPartition, i64)>> {
        Ok(self
            .positions
            .iter()
            .map(|(tp, pos)| (tp.clone(), *pos))
            .collect())
    }

    fn lag(&mut self, _timeout: Duration) -> BusResult<BTreeMap<TopicPartition, i64>> {
        let state = self.broker.state.lock();
        Ok(self
            .positions
            .iter()
            .map(|(tp, pos)| {
                let end = state
                    .topics
                    .get(&tp.topic)
                    .map_or(0, |t| t.partitions[tp.partition as usize].end());
                (tp.clone(), (end - pos).max(0))
            })
            .collect())
    }

    fn take_rebalance_events(&mut self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut self.events)
    }

    fn has_pending(&mut self) -> BusResult<bool> {
        self.check_open()?;
        let broker = Arc::clone(&self.broker);
        let state = broker.state.lock();
        self.sync_assignment(&state);
        Ok(!self.events.is_empty() || self.pending(&state))
    }

    fn set_read_until(&mut self, until_ms: Option<i64>) -> BusResult<()> {
        if until_ms != self.until_ms {
            self.drained_at = None;
        }
        self.until_ms = until_ms;
        Ok(())
    }

    fn close(&mut self) -> BusResult<()> {
        self.leave();
        self.closed = true;
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        self.leave();
    }
}

// ---------------------------------------------------------------------------------------------
// Admin

pub struct MemoryAdmin {
    broker: Arc<MemoryBroker>,
}

impl MemoryAdmin {
    pub fn new(broker: Arc<MemoryBroker>) -> Self {
        Self { broker }
    }
}

impl Admin for MemoryAdmin {
    fn create_topics(
        &self,
        specs: &[TopicSpec],
        _timeout: Duration,
    ) -> BusResult<Vec<(String, bool)>> {
        for spec in specs {
            if spec.partitions < 1 {
                return Err(BusError::Config(format!(
                    "topic '{}': partitions must be >= 1",
                    spec.name
                )));
            }
            if spec.name.is_empty()
                || spec.name.len() > 249
                || !spec
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(BusError::Config(format!(
                    "invalid topic name {:?}: use 1-249 characters from [a-zA-Z0-9._-]",
                    spec.name
                )));
            }
        }
        let mut state = self.broker.state.lock();
        let mut results = Vec::with_capacity(specs.len());
        for spec in specs {
            let created = !state.topics.contains_key(&spec.name);
            if created {
                let partitions = (0..spec.partitions)
                    .map(|_| PartitionLog::default())
                    .collect();
                state.topics.insert(
                    spec.name.clone(),
                    TopicLog {
                        spec: spec.clone(),
                        partitions,
                    },
                );
            }
            results.push((spec.name.clone(), created));
        }
        if results.iter().any(|(_, created)| *created) {
            state.version += 1;
            state.rebalance_all(); // a new topic may match a pattern subscription
        }
        drop(state);
        self.broker.changed.notify_all();
        Ok(results)
    }

    fn delete_topics(&self, names: &[String], _timeout: Duration) -> BusResult<()> {
        let mut state = self.broker.state.lock();
        for name in names {
            if state.topics.remove(name).is_none() {
                return Err(BusError::UnknownTopic(name.clone()));
            }
            for group in state.groups.values_mut() {
                group.committed.retain(|tp, _| &tp.topic != name);
            }
        }
        state.version += 1;
        state.rebalance_all();
        drop(state);
        self.broker.changed.notify_all();
        Ok(())
    }

    fn describe_topics(
        &self,
        names: &[String],
        _timeout: Duration,
    ) -> BusResult<Vec<TopicDescription>> {
        let state = self.broker.state.lock();
        names
            .iter()
            .map(|name| {
                let log = state
                    .topics
                    .get(name)
                    .ok_or_else(|| BusError::UnknownTopic(name.clone()))?;
                Ok(TopicDescription {
                    name: name.clone(),
                    partitions: log.partitions.len() as i32,
                    replication_factor: log.spec.replication_factor,
                    configs: log.spec.configs.clone(),
                })
            })
            .collect()
    }

    fn list_topics(&self, _timeout: Duration) -> BusResult<Vec<String>> {
        Ok(self.broker.state.lock().topics.keys().cloned().collect())
    }

    fn end_offsets(&self, topic: &str, _timeout: Duration) -> BusResult<Vec<i64>> {
        let state = self.broker.state.lock();
        let log = state
            .topics
            .get(topic)
            .ok_or_else(|| BusError::UnknownTopic(topic.to_string()))?;
        Ok(log.partitions.iter().map(PartitionLog::end).collect())
    }

    fn purge_consumed(&self, keep: &[String]) -> BusResult<u64> {
        let mut state = self.broker.state.lock();
        let State { topics, groups, .. } = &mut *state;
        let mut deleted = 0u64;
        for (name, log) in topics.iter_mut() {
            if keep.contains(name) {
                continue;
            }
            // The groups that read the topic now: a group none of whose members subscribes
            // to it (one that read it once, and left) holds nothing back.
            let readers: Vec<&Group> = groups
                .values()
                .filter(|g| g.members.values().any(|m| m.matches(name)))
                .collect();
            if readers.is_empty() {
                continue; // nobody reads it yet: it is kept for whoever comes
            }
            for (p, part) in log.partitions.iter_mut().enumerate() {
                let tp = TopicPartition::new(name.clone(), p as i32);
                let Some(upto) = readers
                    .iter()
                    .map(|g| g.committed.get(&tp).copied().unwrap_or(part.start))
                    .min()
                else {
                    continue;
                };
                while part.start < upto.min(part.end()) {
                    part.records.pop_front();
                    part.start += 1;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(partitions: i32) -> (Arc<MemoryBroker>, MemoryProducer, MemoryAdmin) {
        let broker = MemoryBroker::new();
        let admin = MemoryAdmin::new(Arc::clone(&broker));
        let spec = TopicSpec {
            name: "t".into(),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        };
        admin.create_topics(&[spec], Duration::ZERO).unwrap();
        let producer = MemoryProducer::new(Arc::clone(&broker), &HashMap::new()).unwrap();
        (broker, producer, admin)
    }

    fn consumer(broker: &Arc<MemoryBroker>, group: &str) -> MemoryConsumer {
        let config: HashMap<String, String> =
            [("group.id", group), ("auto.offset.reset", "earliest")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let mut c = MemoryConsumer::new(Arc::clone(broker), &config).unwrap();
        c.subscribe(Subscription::Topics(vec!["t".into()])).unwrap();
        c
    }

    fn send(p: &MemoryProducer, key: &str, value: &str) {
        let rec = OutRecord {
            topic: "t".into(),
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            ..Default::default()
        };
        p.send(rec).unwrap();
    }

    #[test]
    fn a_pattern_consumer_reads_every_partition_in_topic_order_around_gaps_and_pauses() {
        let (broker, p, admin) = setup(2);
        let names = ["b", "a", "b.x", "ab", "c"];
        let specs: Vec<TopicSpec> = names
            .iter()
            .map(|n| TopicSpec {
                name: (*n).into(),
                partitions: 2,
                replication_factor: 1,
                configs: BTreeMap::new(),
            })
            .collect();
        admin.create_topics(&specs, Duration::ZERO).unwrap();
        let send_all = |round: &str, topics: &[&str]| {
            for name in topics {
                for partition in 0..2 {
                    p.send(OutRecord {
                        topic: (*name).into(),
                        value: Some(format!("{round}{name}/{partition}").into_bytes()),
                        partition: Some(partition),
                        ..Default::default()
                    })
                    .unwrap();
                }
            }
        };
        send_all("1:", &["t", "b", "a", "b.x", "ab", "c"]);
        let config: HashMap<String, String> =
            [("group.id", "all"), ("auto.offset.reset", "earliest")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let mut c = MemoryConsumer::new(Arc::clone(&broker), &config).unwrap();
        c.subscribe(Subscription::Pattern(".*".into())).unwrap();
        let read = |c: &mut MemoryConsumer| -> Vec<String> {
            c.poll(1000, Duration::ZERO)
                .unwrap()
                .into_iter()
                .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
                .collect()
        };
        let mut expected: Vec<String> = ["a", "ab", "b", "b.x", "c", "t"]
            .iter()
            .flat_map(|n| (0..2).map(move |q| format!("1:{n}/{q}")))
            .collect();
        assert_eq!(read(&mut c), expected);
        // A paused partition and a topic that is gone are stepped over; the rest is read.
        let paused = TopicPartition::new("b", 1);
        c.pause(std::slice::from_ref(&paused)).unwrap();
        admin.delete_topics(&["ab".into()], Duration::ZERO).unwrap();
        send_all("2:", &["t", "b", "a", "b.x", "c"]);
        expected = [
            "a/0", "a/1", "b/0", "b.x/0", "b.x/1", "c/0", "c/1", "t/0", "t/1",
        ]
        .iter()
        .map(|s| format!("2:{s}"))
        .collect();
        assert_eq!(read(&mut c), expected);
        c.resume(&[paused]).unwrap();
        assert_eq!(read(&mut c), vec!["2:b/1".to_string()]);
    }

    #[test]
    fn keyed_records_keep_order_within_their_partition() {
        let (broker, p, _) = setup(3);
        for i in 0..30 {
            send(&p, &format!("k{}", i % 4), &i.to_string());
        }
        let mut c = consumer(&broker, "g");
        let recs = c.poll(100, Duration::from_millis(10)).unwrap();
        assert_eq!(recs.len(), 30);
        for r in &recs {
            assert_eq!(r.partition, partition_for_key(r.key.as_ref().unwrap(), 3));
        }
        let mut last: HashMap<i32, i64> = HashMap::new();
        for r in &recs {
            let prev = last.insert(r.partition, r.offset);
            assert!(prev.is_none_or(|o| o + 1 == r.offset));
        }
    }

    #[test]
    fn the_read_until_fence_hides_later_stamps_until_it_moves() {
        let (broker, p, _) = setup(1);
        for ts in [10, 20, 20, 30] {
            let rec = OutRecord {
                topic: "t".into(),
                value: Some(ts.to_string().into_bytes()),
                timestamp_ms: Some(ts),
                ..Default::default()
            };
            p.send(rec).unwrap();
        }
        let mut c = consumer(&broker, "g");
        c.set_read_until(Some(20)).unwrap();
        let first = c.poll(100, Duration::ZERO).unwrap();
        assert_eq!(
            first.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>(),
            [10, 20, 20]
        );
        assert!(c.poll(100, Duration::ZERO).unwrap().is_empty());
        c.set_read_until(Some(30)).unwrap();
        let rest = c.poll(100, Duration::ZERO).unwrap();
        assert_eq!((rest.len(), rest[0].offset), (1, 3));
        c.set_read_until(None).unwrap();
        assert!(c.poll(100, Duration::ZERO).unwrap().is_empty());
    }

    #[test]
    fn has_pending_says_whether_a_poll_would_return_a_record_within_the_fence() {
        let (broker, p, _) = setup(1);
        let send = |ts: i64| {
            p.send(OutRecord {
                topic: "t".into(),
                value: Some(ts.to_string().into_bytes()),
                timestamp_ms: Some(ts),
                ..Default::default()
            })
            .unwrap();
        };
        let mut c = consumer(&broker, "g");
        c.take_rebalance_events();
        assert!(!c.has_pending().unwrap());
        send(10);
        send(30);
        c.set_read_until(Some(20)).unwrap();
        assert!(c.has_pending().unwrap());
        assert!(c.has_pending().unwrap(), "asking takes nothing");
        assert_eq!(c.poll(100, Duration::ZERO).unwrap().len(), 1);
        assert!(!c.has_pending().unwrap(), "30 lies beyond the fence");
        send(20); // behind the record of 30 in the log: the fence stops at 30 first
        assert!(!c.has_pending().unwrap());
        assert!(c.poll(100, Duration::ZERO).unwrap().is_empty());
        c.set_read_until(Some(30)).unwrap();
        assert!(c.has_pending().unwrap());
        assert_eq!(c.poll(100, Duration::ZERO).unwrap().len(), 2);
        assert!(!c.has_pending().unwrap());
        c.pause(&[TopicPartition::new("t", 0)]).unwrap();
        send(25);
        assert!(
            !c.has_pending().unwrap(),
            "a paused partition is not polled"
        );
        c.resume(&[TopicPartition::new("t", 0)]).unwrap();
        assert!(c.has_pending().unwrap());
    }

    #[test]
    fn members_split_partitions_and_take_over_on_leave() {
        let (broker, _, _) = setup(3);
        let mut a = consumer(&broker, "g");
        let mut b = consumer(&broker, "g");
        let (aa, bb) = (a.assignment().unwrap(), b.assignment().unwrap());
        assert_eq!(aa.len() + bb.len(), 3);
        assert!(!aa.is_empty() && !bb.is_empty());
        b.close().unwrap();
        assert_eq!(a.assignment().unwrap().len(), 3);
    }

    #[test]
    fn purge_deletes_only_what_every_reading_group_committed() {
        let (broker, p, admin) = setup(1);
        for i in 0..10 {
            send(&p, "k", &i.to_string());
        }
        let mut fast = consumer(&broker, "fast");
        let mut slow = consumer(&broker, "slow");
        assert_eq!(fast.poll(8, Duration::ZERO).unwrap().len(), 8);
        fast.commit(None).unwrap();
        assert_eq!(slow.poll(3, Duration::ZERO).unwrap().len(), 3);
        slow.commit(None).unwrap();
        // The slow group holds the log at its commit: 3 deleted, offsets and ends unchanged.
        assert_eq!(admin.purge_consumed(&[]).unwrap(), 3);
        assert_eq!(admin.end_offsets("t", Duration::ZERO).unwrap(), vec![10]);
        let rest = slow.poll(100, Duration::ZERO).unwrap();
        let offsets: Vec<i64> = rest.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (3..10).collect::<Vec<_>>());
        assert_eq!(rest[0].value.as_deref(), Some(b"3".as_slice()));
        // A kept topic is never purged; a group whose members left holds nothing back.
        slow.commit(None).unwrap();
        assert_eq!(admin.purge_consumed(&["t".into()]).unwrap(), 0);
        drop(fast);
        assert_eq!(admin.purge_consumed(&[]).unwrap(), 7);
        // A new group reads from the log start; a reading group with no commit holds it there.
        send(&p, "k", "10");
        let mut late = consumer(&broker, "late");
        let got = late.poll(100, Duration::ZERO).unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![10]);
        assert_eq!(admin.purge_consumed(&[]).unwrap(), 0);
    }

    #[test]
    fn commit_survives_restart_and_is_fenced_after_revocation() {
        let (broker, p, _) = setup(1);
        for i in 0..5 {
            send(&p, "k", &i.to_string());
        }
        let mut a = consumer(&broker, "g");
        assert_eq!(a.poll(3, Duration::ZERO).unwrap().len(), 3);
        a.commit(None).unwrap();
        drop(a);
        let mut b = consumer(&broker, "g");
        let recs = b.poll(10, Duration::ZERO).unwrap();
        assert_eq!(recs.first().map(|r| r.offset), Some(3));
        // A second member takes nothing (one partition), but the first one stays the owner.
        let mut c = consumer(&broker, "g");
        let tp = TopicPartition::new("t", 0);
        assert!(c.assignment().unwrap().is_empty());
        assert!(matches!(
            c.commit(Some(vec![(tp, 0)])),
            Err(BusError::NotAssigned { .. })
        ));
    }

    #[test]
    fn a_commit_of_all_positions_writes_each_partition_as_far_as_it_was_read() {
        let (broker, p, _) = setup(3);
        for i in 0..30 {
            send(&p, &format!("k{}", i % 5), &i.to_string());
        }
        let config: HashMap<String, String> = [("group.id", "l"), ("auto.offset.reset", "latest")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let mut latest = MemoryConsumer::new(Arc::clone(&broker), &config).unwrap();
        latest
            .subscribe(Subscription::Topics(vec!["t".into()]))
            .unwrap();
        latest.commit(None).unwrap(); // never polled: the reset position (the end) is committed
        latest.close().unwrap();
        let mut after = consumer(&broker, "l"); // an earliest-reset member starts from the commit
        assert!(after.poll(100, Duration::ZERO).unwrap().is_empty());
        let mut c = consumer(&broker, "g");
        let tps: Vec<TopicPartition> = (0..3).map(|i| TopicPartition::new("t", i)).collect();
        let committed = |c: &mut MemoryConsumer| -> Vec<Option<i64>> {
            let got = c.committed(&tps, Duration::ZERO).unwrap();
            got.into_iter().map(|(_, o)| o).collect()
        };
        let mut read: HashMap<i32, i64> = HashMap::new();
        for round in 0..4 {
            for r in c.poll(4, Duration::ZERO).unwrap() {
                read.insert(r.partition, r.offset + 1);
            }
            c.commit(None).unwrap();
            let want: Vec<Option<i64>> =
                (0..3).map(|i| Some(*read.get(&i).unwrap_or(&0))).collect();
            assert_eq!(committed(&mut c), want, "round {round}");
        }
    }

    #[test]
    fn oversized_and_unknown_are_errors() {
        let (_, p, _) = setup(1);
        let big = OutRecord {
            topic: "t".into(),
            value: Some(vec![0; DEFAULT_MAX_MESSAGE_BYTES + 1]),
            ..Default::default()
        };
        assert_eq!(p.send(big).unwrap_err().code(), "MESSAGE_TOO_LARGE");
        let unknown = OutRecord {
            topic: "nope".into(),
            ..Default::default()
        };
        assert_eq!(p.send(unknown).unwrap_err().code(), "UNKNOWN_TOPIC");
    }
}
