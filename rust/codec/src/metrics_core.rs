//! The metrics collector's per-record state and work (`kstrade.metrics.collector`), driven a
//! poll at a time by `kstrade._native.MetricsCore`.
//!
//! A replay's collector reads every record of every topic (about 220,000 in 7 days), and its
//! Python per-record work (latency headers, histograms, the prediction bookkeeping, the scoring
//! of predictions when a bar arrives, the readability check of every signal) was 40 % of the
//! pipeline's GIL time. Here that work is done for the records it can take: well-formed
//! current-version records of the hot topics. A record it cannot take (a header that is not
//! plain, a body the Python codec would refuse or decode otherwise, a rare record type) is left
//! to the collector's Python path, which reads it as it always did and feeds what it read back
//! here (`observe`, `add_bar`, `add_prediction`): the state lives only here, whichever path
//! read a record, so both paths leave it the same.
//!
//! Every rule mirrors the Python code it replaces, operation for operation where floats are
//! involved: `LatencyHistogram` / `LatencyTracker` (kstrade/metrics/latency.py) and
//! `CloseHistory` / `DirectionAccuracy` / `PageHinkley` (kstrade/metrics/drift.py). The tests
//! (tests/test_metrics_core.py) run the Python classes and this core side by side.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

use crate::records::{Candle, Prediction};
use crate::signal::read_signal_fields;
use crate::signal_core::{decode, in_datetime_range, HeaderSpec};

// -- latency -------------------------------------------------------------------------------------

/// Sub-buckets per power of two (`latency.SUB_BITS`): a recorded value is off by < 1/1024.
const SUB_BITS: u32 = 11;
const SUB: u128 = 1 << SUB_BITS;
/// Kafka create timestamps are whole milliseconds.
const RESOLUTION_NS: i128 = 1_000_000;
/// Outputs remembered per market event.
const MAX_OUTPUTS_PER_EVENT: usize = 64;
/// The stages in the order a market event passes them, for timestamp ties (`PIPELINE_ORDER`).
const PIPELINE_ORDER: [&str; 5] = ["ingest", "features", "inference", "signals", "execution"];

/// `LatencyHistogram`: counts of latencies in microsecond buckets whose width grows with the
/// value (HDR-style).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    buckets: BTreeMap<u128, u64>,
    pub count: u64,
    pub max_us: u128,
}

/// (count, p50, p95, p99, max), in milliseconds: `LatencySummary`.
pub type Summary = (u64, f64, f64, f64, f64);

impl Histogram {
    fn index(us: u128) -> u128 {
        if us < SUB {
            return us;
        }
        let shift = (128 - us.leading_zeros()) - SUB_BITS;
        ((shift as u128) << SUB_BITS) + (us >> shift)
    }

    fn midpoint(index: u128) -> f64 {
        let (shift, top) = (index >> SUB_BITS, index & (SUB - 1));
        if shift == 0 {
            return index as f64;
        }
        // Python: (top << shift) + ((1 << shift) - 1) / 2, an int plus a float.
        (top << shift) as f64 + ((1u128 << shift) - 1) as f64 / 2.0
    }

    pub fn record_ns(&mut self, latency_ns: i128) {
        let us = latency_ns.div_euclid(1000).max(0) as u128;
        *self.buckets.entry(Self::index(us)).or_insert(0) += 1;
        self.count += 1;
        if us > self.max_us {
            self.max_us = us;
        }
    }

    /// The value below which a fraction `q` of the recorded latencies lie (nearest rank).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        // int() of a positive float truncates, as `as` does.
        let rank = ((q * self.count as f64 + 0.999_999_999) as u64).clamp(1, self.count);
        let mut seen = 0;
        for (&index, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Self::midpoint(index).min(self.max_us as f64) / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }

    pub fn summary(&self) -> Summary {
        (
            self.count,
            self.quantile_ms(0.50),
            self.quantile_ms(0.95),
            self.quantile_ms(0.99),
            self.max_us as f64 / 1000.0,
        )
    }
}

/// A market event: its origin time and the key of the records that carry it.
type EventKey = (i128, Option<Box<[u8]>>);

/// One event's outputs: (produced_ns, stage id), and the latest produced_ns among them.
#[derive(Debug, Clone)]
struct Event {
    key: EventKey,
    outputs: Vec<(i128, usize)>,
    latest: i128,
}

/// `LatencyTracker._events`, an insertion-ordered map: entries in a queue (taken ones left as
/// holes until they reach the front) and an index from key to position.
#[derive(Debug, Default)]
struct Events {
    queue: VecDeque<Option<Event>>,
    /// Sequence number of `queue[0]`.
    base: u64,
    index: HashMap<EventKey, u64>,
}

impl Events {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn get_or_insert(&mut self, key: EventKey) -> (&mut Event, bool) {
        let (seq, new) = match self.index.get(&key) {
            Some(&seq) => (seq, false),
            None => {
                let seq = self.base + self.queue.len() as u64;
                self.index.insert(key.clone(), seq);
                self.queue.push_back(Some(Event {
                    key,
                    outputs: Vec::new(),
                    latest: i128::MIN,
                }));
                (seq, true)
            }
        };
        let slot = &mut self.queue[(seq - self.base) as usize];
        (slot.as_mut().expect("an indexed event is present"), new)
    }

    fn trim(&mut self) {
        while matches!(self.queue.front(), Some(None)) {
            self.queue.pop_front();
            self.base += 1;
        }
    }

    /// The oldest event, taken out.
    fn pop_oldest(&mut self) -> Option<Event> {
        self.trim();
        let event = self.queue.pop_front()??;
        self.base += 1;
        self.index.remove(&event.key);
        self.trim();
        Some(event)
    }

    /// The events whose every output is older than `horizon`, taken out, oldest first.
    fn take_settled(&mut self, horizon: i128) -> Vec<Event> {
        let mut settled = Vec::new();
        for slot in &mut self.queue {
            if slot.as_ref().is_some_and(|e| e.latest < horizon) {
                let event = slot.take().expect("checked above");
                self.index.remove(&event.key);
                settled.push(event);
            }
        }
        self.trim();
        settled
    }
}

/// An insertion-ordered map from a small key to a histogram (a Python dict's order: the order
/// the metrics records of a window are published in).
#[derive(Debug)]
struct Ordered<K> {
    items: Vec<(K, Histogram)>,
    index: HashMap<K, usize>,
}

impl<K> Default for Ordered<K> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> Ordered<K> {
    fn get(&mut self, key: K) -> &mut Histogram {
        let i = *self.index.entry(key).or_insert_with(|| {
            self.items.push((key, Histogram::default()));
            self.items.len() - 1
        });
        &mut self.items[i].1
    }

    /// The non-empty histograms' summaries, in order; the map starts empty again.
    fn take(&mut self) -> Vec<(K, Summary)> {
        self.index.clear();
        std::mem::take(&mut self.items)
            .into_iter()
            .filter(|(_, h)| h.count > 0)
            .map(|(k, h)| (k, h.summary()))
            .collect()
    }
}

/// `LatencyTracker`: origin -> output latency per (stage, topic), and the time each stage adds
/// for the same market event, in tumbling windows. Stages and topics are ids (`MetricsCore`).
#[derive(Debug)]
pub struct LatencyTracker {
    max_plausible_ns: i128,
    max_events: usize,
    settle_ns: i128,
    outputs: Ordered<(usize, usize)>,
    stages: Ordered<usize>,
    pub implausible: u64,
    events: Events,
}

impl LatencyTracker {
    /// `LatencyTracker()`'s defaults: 1 h plausible at most, 20,000 events, 2 s to settle.
    pub fn new(max_plausible_ns: i128, max_events: usize, settle_ns: i128) -> Self {
        Self {
            max_plausible_ns,
            max_events: max_events.max(1),
            settle_ns,
            outputs: Ordered::default(),
            stages: Ordered::default(),
            implausible: 0,
            events: Events::default(),
        }
    }

    /// One output: `observe_run` for one record.
    pub fn observe(
        &mut self,
        names: &[String],
        topic: usize,
        origin_ns: i128,
        stage: usize,
        key: Option<&[u8]>,
        produced_ns: i128,
    ) {
        let mut latency = produced_ns - origin_ns;
        if -RESOLUTION_NS < latency && latency < 0 {
            latency = 0; // within the origin's millisecond: below the timestamp resolution
        }
        if latency < 0 || latency > self.max_plausible_ns {
            self.implausible += 1;
            return;
        }
        self.outputs.get((stage, topic)).record_ns(latency);
        let (event, new) = self.events.get_or_insert((origin_ns, key.map(Box::from)));
        if event.outputs.len() < MAX_OUTPUTS_PER_EVENT {
            event.outputs.push((produced_ns, stage));
            event.latest = event.latest.max(produced_ns);
        }
        if new && self.events.len() > self.max_events {
            if let Some(oldest) = self.events.pop_oldest() {
                self.split(names, oldest.outputs);
            }
        }
    }

    /// Within one millisecond the timestamps cannot order two stages: the pipeline order can.
    fn split(&mut self, names: &[String], mut outputs: Vec<(i128, usize)>) {
        let rank = |stage: usize| {
            PIPELINE_ORDER
                .iter()
                .position(|s| *s == names[stage])
                .unwrap_or(PIPELINE_ORDER.len())
        };
        outputs.sort_by(|a, b| (a.0, rank(a.1), &names[a.1]).cmp(&(b.0, rank(b.1), &names[b.1])));
        for pair in outputs.windows(2) {
            let ((before, previous), (produced, stage)) = (pair[0], pair[1]);
            if stage != previous {
                self.stages.get(stage).record_ns(produced - before);
            }
        }
    }

    /// Summaries of the window that ends now, per (stage, topic) and per stage; the next
    /// window starts empty.
    #[allow(clippy::type_complexity)]
    pub fn take_window(
        &mut self,
        names: &[String],
        now_ns: i128,
    ) -> (Vec<((usize, usize), Summary)>, Vec<(usize, Summary)>) {
        for event in self.events.take_settled(now_ns - self.settle_ns) {
            self.split(names, event.outputs);
        }
        (self.outputs.take(), self.stages.take())
    }

    fn dump(&self, out: &mut String) {
        let _ = write!(
            out,
            "latency implausible={} outputs={:?} stages={:?} events=",
            self.implausible, self.outputs.items, self.stages.items
        );
        for e in self.events.queue.iter().flatten() {
            let _ = write!(out, "{:?}:{:?};", e.key, e.outputs);
        }
        out.push('\n');
    }
}

// -- direction accuracy --------------------------------------------------------------------------

/// Bars of closes kept per symbol (`drift._KEEP_BARS`).
const KEEP_BARS: i128 = 1440;
/// Predictions waiting for their outcome, per tracker (`DirectionAccuracy.max_pending`).
const MAX_PENDING: usize = 10_000;
/// Predictions before Page-Hinkley may fire (`PageHinkley.min_samples`).
const PH_MIN_SAMPLES: u64 = 30;

/// `CloseHistory`: recent closes of one symbol by candle close time, bounded.
#[derive(Debug)]
struct Closes {
    keep_ns: i128,
    latest_ns: i128,
    closes: HashMap<i128, f64>,
    order: VecDeque<i128>,
}

impl Closes {
    fn new(bar_ns: i128) -> Self {
        Self {
            keep_ns: KEEP_BARS * bar_ns,
            latest_ns: 0,
            closes: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn add(&mut self, close_ns: i128, close: f64) {
        if self.closes.insert(close_ns, close).is_none() {
            self.order.push_back(close_ns);
        }
        self.latest_ns = self.latest_ns.max(close_ns);
        while let Some(&oldest) = self.order.front() {
            if oldest >= self.latest_ns - self.keep_ns {
                break;
            }
            self.order.pop_front();
            self.closes.remove(&oldest);
        }
    }
}

/// `PageHinkley`: a test for an increase in the mean of the error stream.
#[derive(Debug, Clone)]
struct PageHinkley {
    delta: f64,
    threshold: f64,
    n: u64,
    mean: f64,
    cumulative: f64,
    minimum: f64,
}

impl PageHinkley {
    fn statistic(&self) -> f64 {
        self.cumulative - self.minimum
    }

    fn update(&mut self, x: f64) -> bool {
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        self.cumulative += x - self.mean - self.delta;
        if self.cumulative < self.minimum {
            self.minimum = self.cumulative;
        }
        if self.n >= PH_MIN_SAMPLES && self.statistic() > self.threshold {
            (self.n, self.mean, self.cumulative, self.minimum) = (0, 0.0, 0.0, 0.0);
            return true;
        }
        false
    }
}

/// `DirectionAccuracy` of one (model, symbol): predictions scored against the symbol's move
/// `horizon` later, the last `window` hits, and Page-Hinkley on the errors.
#[derive(Debug)]
struct Tracker {
    model: String,
    symbol: usize,
    hits: VecDeque<bool>,
    hit_count: usize,
    detector: PageHinkley,
    drift_detected: bool,
    pending: VecDeque<(i128, i8)>,
}

/// What the trackers share: the settings `MetricsSettings` gives them.
#[derive(Debug, Clone)]
pub struct AccuracySettings {
    pub bar_ns: i128,
    pub horizon_bars: i128,
    /// A move within this fraction counts as FLAT (`flat_band_bps / 10_000`).
    pub flat_band: f64,
    pub window: usize,
    pub delta: f64,
    pub threshold: f64,
}

impl Tracker {
    fn score(&mut self, closes: &Closes, s: &AccuracySettings) {
        let horizon_ns = s.horizon_bars * s.bar_ns;
        let give_up = closes.latest_ns - closes.keep_ns;
        let pending = std::mem::take(&mut self.pending);
        for (origin_ns, direction) in pending {
            let start = closes.closes.get(&origin_ns).copied();
            let end = closes.closes.get(&(origin_ns + horizon_ns)).copied();
            let (Some(start), Some(end)) = (start, end) else {
                if origin_ns + horizon_ns >= give_up {
                    self.pending.push_back((origin_ns, direction));
                }
                continue;
            };
            if start <= 0.0 {
                if origin_ns + horizon_ns >= give_up {
                    self.pending.push_back((origin_ns, direction));
                }
                continue;
            }
            let change = end / start - 1.0;
            let realized = if change.abs() <= s.flat_band {
                0
            } else if change > 0.0 {
                1
            } else {
                -1
            };
            let hit = realized == direction;
            if self.hits.len() == s.window && self.hits.pop_front() == Some(true) {
                self.hit_count -= 1;
            }
            self.hits.push_back(hit);
            self.hit_count += usize::from(hit);
            if self.detector.update(if hit { 0.0 } else { 1.0 }) {
                self.drift_detected = true;
            }
        }
    }

    fn accuracy(&self) -> Option<f64> {
        (!self.hits.is_empty()).then(|| self.hit_count as f64 / self.hits.len() as f64)
    }
}

/// A tracker's state: (model, symbol, accuracy, hits in the window, Page-Hinkley statistic,
/// threshold, whether it fired since its flag was last taken).
pub type AccuracyRow = (String, String, Option<f64>, usize, f64, f64, bool);

// -- records -------------------------------------------------------------------------------------

/// What the collector does with a topic's records (decided in Python, `_route_of`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Python reads them whole (dead letters, ingest reports): no latency here.
    Python,
    /// Latency only.
    Timed,
    /// Latency; the content is Python's (executions, P&L, alerts, features with a drift reference).
    TimedPython,
    /// A candle of another timeframe: latency; ingest is alive.
    Candle,
    /// A candle of the bar interval: its close, and the predictions it settles are scored.
    Bar,
    Prediction,
    /// A signal, read for its readability; `stored`: the stage index whose signals on this
    /// topic the database keeps (those go to Python, as the final ones with a tier do).
    Signal {
        stored: Option<usize>,
    },
}

/// What `take` did with a record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Counted and read here.
    Done,
    /// Counted; the Python path reads it whole (its latency headers too).
    Whole,
    /// Counted and its latency taken; the Python path reads its content.
    Content,
}

/// The parts of a record the core reads: the first value of each header, as `Record.header`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordIn<'a> {
    pub origin: Option<&'a [u8]>,
    pub stage: Option<&'a [u8]>,
    pub schema: Option<&'a [u8]>,
    pub version: Option<&'a [u8]>,
    pub encoding: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp_ms: i64,
}

/// Readers for the hot types (None: those records all go to Python).
#[derive(Debug, Clone, Default)]
pub struct Readers {
    pub candle: Option<HeaderSpec>,
    pub prediction: Option<HeaderSpec>,
    pub signal: Option<HeaderSpec>,
    /// `SignalStage.FINAL`'s index in the schema's enum.
    pub final_stage: usize,
}

#[derive(Debug)]
struct Topic {
    name: String,
    kind: Kind,
    count: u64,
    unexported: u64,
}

/// The collector's per-record state: message counts, latency, closes and direction accuracy.
#[derive(Debug)]
pub struct MetricsCore {
    topics: Vec<Topic>,
    topic_index: HashMap<String, usize>,
    stages: Vec<String>,
    stage_index: HashMap<Vec<u8>, usize>,
    pub latency: LatencyTracker,
    closes: Vec<Closes>,
    symbols: Vec<String>,
    symbol_index: HashMap<String, usize>,
    trackers: Vec<Tracker>,
    tracker_index: HashMap<(String, String), usize>,
    accuracy: AccuracySettings,
    readers: Readers,
    /// One prediction in this many is stored (by the Python path); None: no database.
    sample_every: Option<u64>,
    pub predictions_seen: u64,
    /// The clock's time at the latest candle (`_last_candle_ns`).
    pub last_candle_ns: Option<i64>,
}

/// Plain decimal digits (at most 19) as a number; None for anything else (`latency_headers`).
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A UUID string Python's `UUID()` surely reads: 32 hex digits, hyphens anywhere.
fn plain_uuid(text: &str) -> bool {
    text.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
        && text.bytes().filter(u8::is_ascii_hexdigit).count() == 32
}

impl MetricsCore {
    pub fn new(
        latency: LatencyTracker,
        accuracy: AccuracySettings,
        readers: Readers,
        sample_every: Option<u64>,
    ) -> Self {
        Self {
            topics: Vec::new(),
            topic_index: HashMap::new(),
            stages: Vec::new(),
            stage_index: HashMap::new(),
            latency,
            closes: Vec::new(),
            symbols: Vec::new(),
            symbol_index: HashMap::new(),
            trackers: Vec::new(),
            tracker_index: HashMap::new(),
            accuracy,
            readers,
            sample_every: sample_every.filter(|&n| n > 0),
            predictions_seen: 0,
            last_candle_ns: None,
        }
    }

    // -- topics and counts --

    /// Registers a topic (or changes its kind); its id.
    pub fn topic(&mut self, name: &str, kind: Kind) -> usize {
        if let Some(&i) = self.topic_index.get(name) {
            self.topics[i].kind = kind;
            return i;
        }
        self.topics.push(Topic {
            name: name.to_owned(),
            kind,
            count: 0,
            unexported: 0,
        });
        self.topic_index
            .insert(name.to_owned(), self.topics.len() - 1);
        self.topics.len() - 1
    }

    pub fn topic_id(&self, name: &str) -> Option<usize> {
        self.topic_index.get(name).copied()
    }

    pub fn count(&mut self, topic: usize, n: u64) {
        let t = &mut self.topics[topic];
        t.count += n;
        t.unexported += n;
    }

    /// Records per topic, in the order the topics were first seen.
    pub fn counts(&self) -> Vec<(&str, u64)> {
        self.topics
            .iter()
            .filter(|t| t.count > 0)
            .map(|t| (t.name.as_str(), t.count))
            .collect()
    }

    /// Records per topic not yet exported.
    pub fn unexported(&self) -> Vec<(&str, u64)> {
        self.topics
            .iter()
            .filter(|t| t.unexported > 0)
            .map(|t| (t.name.as_str(), t.unexported))
            .collect()
    }

    /// `unexported`, then zero.
    pub fn take_unexported(&mut self) -> Vec<(String, u64)> {
        self.topics
            .iter_mut()
            .filter(|t| t.unexported > 0)
            .map(|t| (t.name.clone(), std::mem::take(&mut t.unexported)))
            .collect()
    }

    // -- latency --

    pub fn stage(&mut self, name: &[u8]) -> usize {
        if let Some(&i) = self.stage_index.get(name) {
            return i;
        }
        self.stages.push(String::from_utf8_lossy(name).into_owned());
        self.stage_index
            .insert(name.to_vec(), self.stages.len() - 1);
        self.stages.len() - 1
    }

    pub fn stage_name(&self, stage: usize) -> &str {
        &self.stages[stage]
    }

    pub fn topic_name(&self, topic: usize) -> &str {
        &self.topics[topic].name
    }

    pub fn observe(
        &mut self,
        topic: usize,
        origin_ns: i128,
        stage: usize,
        key: Option<&[u8]>,
        produced_ns: i128,
    ) {
        self.latency
            .observe(&self.stages, topic, origin_ns, stage, key, produced_ns);
    }

    #[allow(clippy::type_complexity)]
    pub fn take_window(
        &mut self,
        now_ns: i128,
    ) -> (Vec<((usize, usize), Summary)>, Vec<(usize, Summary)>) {
        self.latency.take_window(&self.stages, now_ns)
    }

    // -- accuracy --

    fn symbol(&mut self, symbol: &str) -> usize {
        if let Some(&i) = self.symbol_index.get(symbol) {
            return i;
        }
        self.closes.push(Closes::new(self.accuracy.bar_ns));
        self.symbols.push(symbol.to_owned());
        self.symbol_index
            .insert(symbol.to_owned(), self.symbols.len() - 1);
        self.symbols.len() - 1
    }

    /// A bar's close at its origin time; the predictions of its symbol it settles are scored.
    pub fn add_bar(&mut self, symbol: &str, origin_ns: i128, close: f64) {
        let s = self.symbol(symbol);
        self.closes[s].add(origin_ns, close);
        for tracker in &mut self.trackers {
            if tracker.symbol == s {
                tracker.score(&self.closes[s], &self.accuracy);
            }
        }
    }

    /// A prediction (direction -1, 0 or 1) of `model` for `symbol`; the predictions seen so far.
    pub fn add_prediction(
        &mut self,
        model: &str,
        symbol: &str,
        origin_ns: i128,
        direction: i8,
    ) -> u64 {
        let key = (model.to_owned(), symbol.to_owned());
        let t = match self.tracker_index.get(&key) {
            Some(&t) => t,
            None => {
                let s = self.symbol(symbol);
                self.trackers.push(Tracker {
                    model: key.0.clone(),
                    symbol: s,
                    hits: VecDeque::new(),
                    hit_count: 0,
                    detector: PageHinkley {
                        delta: self.accuracy.delta,
                        threshold: self.accuracy.threshold,
                        n: 0,
                        mean: 0.0,
                        cumulative: 0.0,
                        minimum: 0.0,
                    },
                    drift_detected: false,
                    pending: VecDeque::new(),
                });
                self.tracker_index.insert(key, self.trackers.len() - 1);
                self.trackers.len() - 1
            }
        };
        let tracker = &mut self.trackers[t];
        tracker.pending.push_back((origin_ns, direction));
        if tracker.pending.len() > MAX_PENDING {
            tracker.pending.pop_front();
        }
        tracker.score(&self.closes[tracker.symbol], &self.accuracy);
        self.predictions_seen += 1;
        self.predictions_seen
    }

    /// Every tracker, sorted by (model, symbol); `take`: its drift flag is reset (an emission).
    pub fn accuracy(&mut self, take: bool) -> Vec<AccuracyRow> {
        let mut rows: Vec<AccuracyRow> = self
            .trackers
            .iter_mut()
            .map(|t| {
                let fired = t.drift_detected;
                t.drift_detected &= !take;
                (
                    t.model.clone(),
                    self.symbols[t.symbol].clone(),
                    t.accuracy(),
                    t.hits.len(),
                    t.detector.statistic(),
                    t.detector.threshold,
                    fired,
                )
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        rows
    }

    // -- records --

    /// Counts a record of `topic` and reads what it can of it (see `Step`).
    pub fn take(&mut self, topic: usize, r: &RecordIn<'_>, now_ns: i64) -> Step {
        self.count(topic, 1);
        let kind = self.topics[topic].kind;
        if kind == Kind::Python {
            return Step::Whole;
        }
        let (Some(origin), Some(stage)) =
            (r.origin.and_then(decimal), r.stage.filter(|s| s.is_ascii()))
        else {
            return Step::Whole;
        };
        let origin = i128::from(origin);
        let stage = self.stage(stage);
        let produced = i128::from(r.timestamp_ms) * 1_000_000 + 500_000;
        self.latency
            .observe(&self.stages, topic, origin, stage, r.key, produced);
        let taken = match kind {
            Kind::Python | Kind::TimedPython => false,
            Kind::Timed => true,
            Kind::Candle => {
                self.last_candle_ns = Some(now_ns);
                true
            }
            Kind::Bar => {
                self.last_candle_ns = Some(now_ns);
                match self.read_bar(r) {
                    Some((symbol, close)) => {
                        self.add_bar(&symbol, origin, close);
                        true
                    }
                    None => false,
                }
            }
            Kind::Prediction => {
                let sampled = self
                    .sample_every
                    .is_some_and(|n| (self.predictions_seen + 1) % n == 0);
                match self.read_prediction(r).filter(|_| !sampled) {
                    Some(p) => {
                        self.add_prediction(
                            p.model_type.symbol(),
                            &p.symbol,
                            origin,
                            p.direction.sign(),
                        );
                        true
                    }
                    None => false, // the Python path reads it (and stores the sampled one)
                }
            }
            Kind::Signal { stored } => self.signal_taken(r, stored),
        };
        if taken {
            Step::Done
        } else {
            Step::Content
        }
    }

    /// The body of a record whose headers are those `_checked` accepts for `spec`, read as
    /// bare Avro of the current version; None where the Python path must judge.
    fn body<'a>(r: &RecordIn<'a>, spec: Option<&HeaderSpec>) -> Option<&'a [u8]> {
        let spec = spec?;
        let bare = matches!(r.encoding, None | Some(b"" | b"avro"));
        let current = r.version.and_then(decimal) == Some(u64::from(spec.version));
        (r.schema == Some(spec.schema.as_bytes()) && bare && current)
            .then_some(r.value)
            .flatten()
    }

    /// (symbol, close) of a bar `_bar` accepts.
    fn read_bar(&self, r: &RecordIn<'_>) -> Option<(String, f64)> {
        let spec = self.readers.candle.as_ref();
        let c: Candle = decode(Self::body(r, spec)?, spec?.version)?;
        let ordered = c.low <= c.open && c.low <= c.close && c.open <= c.high && c.close <= c.high;
        (!c.symbol.is_empty() && ordered).then_some((c.symbol, c.close))
    }

    /// A prediction `_prediction` accepts.
    fn read_prediction(&self, r: &RecordIn<'_>) -> Option<Prediction> {
        let spec = self.readers.prediction.as_ref();
        let p: Prediction = decode(Self::body(r, spec)?, spec?.version)?;
        (!p.symbol.is_empty()).then_some(p)
    }

    /// True where a signal is one `_signal_content` reads without error and does nothing
    /// more with: not a final one with a tier, not one the database keeps.
    fn signal_taken(&self, r: &RecordIn<'_>, stored: Option<usize>) -> bool {
        let Some(body) = Self::body(r, self.readers.signal.as_ref()) else {
            return false;
        };
        let Ok(f) = read_signal_fields(body) else {
            return false;
        };
        let kept =
            Some(f.stage) == stored || (f.stage == self.readers.final_stage && f.tier.is_some());
        in_datetime_range(f.timestamp_us) && plain_uuid(&f.signal_id) && !kept
    }

    /// The whole state as text, for the tests that compare two cores.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for t in &self.topics {
            let _ = writeln!(
                out,
                "topic {} {:?} {} {}",
                t.name, t.kind, t.count, t.unexported
            );
        }
        let _ = writeln!(out, "stages {:?}", self.stages);
        self.latency.dump(&mut out);
        for (symbol, c) in self.symbols.iter().zip(&self.closes) {
            let _ = write!(out, "closes {symbol} latest={} ", c.latest_ns);
            for ns in &c.order {
                let _ = write!(out, "{ns}:{:?},", c.closes[ns]);
            }
            out.push('\n');
        }
        for t in &self.trackers {
            let _ = writeln!(
                out,
                "tracker {} {} hits={:?} ph={:?} drift={} pending={:?}",
                t.model, self.symbols[t.symbol], t.hits, t.detector, t.drift_detected, t.pending
            );
        }
        let _ = writeln!(
            out,
            "seen={} last_candle={:?}",
            self.predictions_seen, self.last_candle_ns
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> MetricsCore {
        MetricsCore::new(
            LatencyTracker::new(3_600_000_000_000, 3, 2_000_000_000),
            AccuracySettings {
                bar_ns: 60_000_000_000,
                horizon_bars: 1,
                flat_band: 1e-4,
                window: 3,
                delta: 0.01,
                threshold: 50.0,
            },
            Readers::default(),
            None,
        )
    }

    #[test]
    fn histogram_buckets_grow_with_the_value() {
        assert_eq!(Histogram::index(2047), 2047);
        // 2048 us: bit length 12, shift 1, bucket (1 << 11) + 1024
        assert_eq!(Histogram::index(2048), 2048 + 1024);
        let mut h = Histogram::default();
        for ms in [1, 2, 3, 100] {
            h.record_ns(ms * 1_000_000);
        }
        let (count, p50, _, p99, max) = h.summary();
        assert_eq!(count, 4);
        assert!((p50 - 2.0).abs() < 0.002, "{p50}");
        assert!((p99 - 100.0).abs() < 0.1, "{p99}");
        assert_eq!(max, 100.0);
        assert_eq!(Histogram::default().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn latency_is_per_stage_and_topic_and_stage_time_is_split_when_settled() {
        let mut c = core();
        let (t, ingest, features) = (
            c.topic("x", Kind::Timed),
            c.stage(b"ingest"),
            c.stage(b"features"),
        );
        c.observe(t, 0, ingest, Some(b"k"), 1_000_000);
        c.observe(t, 0, features, Some(b"k"), 4_000_000);
        c.observe(t, 10_000_000, ingest, None, 5); // 10 ms before its origin: implausible
        assert_eq!(c.latency.implausible, 1);
        let (outputs, stages) = c.take_window(4_000_000); // not settled yet
        assert_eq!(outputs.len(), 2);
        assert!(stages.is_empty());
        let (outputs, stages) = c.take_window(10_000_000_000);
        assert!(outputs.is_empty());
        assert_eq!(stages, vec![(features, (1, 3.0, 3.0, 3.0, 3.0))]);
    }

    #[test]
    fn the_oldest_event_is_split_when_the_table_is_full() {
        let mut c = core();
        let (t, ingest, features) = (
            c.topic("x", Kind::Timed),
            c.stage(b"ingest"),
            c.stage(b"features"),
        );
        c.observe(t, 0, ingest, None, 0);
        c.observe(t, 0, features, None, 2_000_000);
        for origin in 1..=3 {
            c.observe(t, origin, ingest, None, origin);
        }
        let (_, stages) = c.take_window(0); // nothing settled: the first event was pushed out
        assert_eq!(stages, vec![(features, (1, 2.0, 2.0, 2.0, 2.0))]);
    }

    #[test]
    fn predictions_are_scored_when_their_outcome_bar_arrives() {
        let mut c = core();
        let bar = 60_000_000_000;
        c.add_bar("BTC", 0, 100.0);
        assert_eq!(c.add_prediction("lstm", "BTC", 0, 1), 1);
        assert_eq!(c.accuracy(true)[0].2, None);
        c.add_bar("BTC", bar, 101.0); // up: a hit
        c.add_prediction("lstm", "BTC", bar, -1);
        c.add_bar("BTC", 2 * bar, 101.0); // flat: a miss
        let rows = c.accuracy(true);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("lstm", "BTC"));
        assert_eq!(rows[0].2, Some(0.5));
    }

    #[test]
    fn signal_ids_that_python_reads_as_uuids() {
        assert!(plain_uuid("00000000-0000-0000-0000-000000000001"));
        assert!(plain_uuid("0000000000000000000000000000000A"));
        assert!(!plain_uuid("{00000000-0000-0000-0000-000000000001}"));
        assert!(!plain_uuid("0000"));
    }

    #[test]
    fn a_current_well_formed_bar_is_read_here_and_anything_else_left_to_python() {
        use crate::AvroRecord;
        let spec = HeaderSpec {
            schema: Candle::SCHEMA.into(),
            version: Candle::VERSION,
            encoding: "avro".into(),
        };
        let mut c = core();
        c.readers.candle = Some(spec);
        let t = c.topic("market.candles.BTC-USD.1m", Kind::Bar);
        let candle = |close: f64| Candle {
            timestamp_us: 0,
            symbol: "BTC-USD".into(),
            interval: "1m".into(),
            open: 100.0,
            high: 101.0,
            low: 99.0,
            close,
            volume: 1.0,
            source: "test".into(),
            minutes: None,
            origin: None,
        };
        fn record<'a>(body: &'a [u8], version: &'a [u8]) -> RecordIn<'a> {
            RecordIn {
                origin: Some(b"60000000000"),
                stage: Some(b"ingest"),
                schema: Some(Candle::SCHEMA.as_bytes()),
                version: Some(version),
                encoding: None,
                key: None,
                value: Some(body),
                timestamp_ms: 60_001,
            }
        }
        let (good, high) = (
            crate::encode(&candle(100.5)).unwrap(),
            crate::encode(&candle(102.0)).unwrap(),
        );
        let version = Candle::VERSION.to_string();
        let (good, version) = (good.as_slice(), version.as_bytes());
        assert_eq!(c.take(t, &record(good, version), 7), Step::Done);
        assert_eq!(c.last_candle_ns, Some(7));
        assert!(c
            .dump()
            .contains("closes BTC-USD latest=60000000000 60000000000:100.5"));
        // out of order (close above high), an older version's header, not plain, truncated
        assert_eq!(c.take(t, &record(&high, version), 8), Step::Content);
        assert_eq!(c.take(t, &record(good, b"1"), 8), Step::Content);
        assert_eq!(c.take(t, &record(good, b"+2"), 8), Step::Content);
        assert_eq!(
            c.take(t, &record(&good[..good.len() - 1], version), 8),
            Step::Content
        );
        let confluent = RecordIn {
            encoding: Some(b"avro-confluent"),
            ..record(good, version)
        };
        assert_eq!(c.take(t, &confluent, 8), Step::Content);
        assert_eq!(c.counts(), vec![("market.candles.BTC-USD.1m", 6)]);
    }

    #[test]
    fn a_record_with_unplain_headers_goes_to_python_counted() {
        let mut c = core();
        let t = c.topic("x", Kind::Timed);
        let r = RecordIn {
            origin: Some(b"+5"),
            stage: Some(b"ingest"),
            ..RecordIn::default()
        };
        assert_eq!(c.take(t, &r, 0), Step::Whole);
        let r = RecordIn {
            origin: Some(b"5"),
            ..r
        };
        assert_eq!(c.take(t, &r, 0), Step::Done);
        assert_eq!(c.counts(), vec![("x", 2)]);
        assert_eq!(c.take_unexported(), vec![("x".to_owned(), 2)]);
        assert!(c.unexported().is_empty());
    }
}
