//! The signals stage's state and per-record work, natively: the market book (closes and the
//! features a decision reads), the prediction join (deadlines, `decided_through`), the offsets
//! each undecided candle holds on the bus, the open positions, and the decision of each candle
//! through [`signal_plan::plan`]. The stage (`kstrade.signals.aggregator`) hands it a batch of
//! records at once; what it cannot read itself it hands back, and the stage feeds it the values
//! its Python path read, so that every piece of state lives here and only here.
//!
//! Each rule follows the Python it replaced (the join, market book and held offsets that were
//! `kstrade.signals.join` and the aggregator's `_hold`) step for step: the same candles decided,
//! in the same order, with the same inputs and the same position state, so the same bytes come
//! out (tests/test_signals_core.py holds the native path equal to the stage's Python path).
//!
//! The commit rule (`retained`): every input of a candle not yet decided stays held, so the
//! runner never commits past it and a crash redelivers it; a candle's inputs (and those of the
//! symbol's older candles) are let go when it is decided, since a symbol's candles are decided in
//! time order; an input of a candle already decided holds nothing (it can never be used).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::feature_pick::FeaturePick;
use crate::records::{AvroRecord, Candle, Prediction};
use crate::signal_plan::{self, PlanSettings, Vote};
use crate::Context;

/// Candle times whose inputs are held per symbol before the oldest is let go: the books'
/// backlog (`kstrade.signals.join.MARKET_BACKLOG`, which the stage passes for the books).
pub const MARKET_BACKLOG: usize = 1440;
/// The microseconds Python's `datetime` can hold (years 1 to 9999, UTC): a time outside them
/// is not read here, so the Python path meets it and fails as it always did.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// A prediction's vote as the join keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedVote {
    pub model: String,
    pub version: String,
    /// PredictedDirection index: DOWN 0, FLAT 1, UP 2.
    pub direction: u8,
    pub probability: f64,
    pub confidence: f64,
}

struct Pending {
    deadline_ns: i64,
    origin_ns: i64,
    /// In arrival order: the ensemble sums in this order (the same float bits as Python's dict).
    votes: Vec<OwnedVote>,
}

/// Where a held input sits: (topic-partition index, offset).
type Where = (usize, i64);

#[derive(Default)]
struct SymbolState {
    closes: BTreeMap<i64, f64>,
    /// Per candle time, the wanted features' values (None: not in the vector).
    features: BTreeMap<i64, Vec<Option<f64>>>,
    pending: BTreeMap<i64, Pending>,
    /// The newest candle time decided: anything at or before it is late.
    decided_through: Option<i64>,
    /// Undecided candles' inputs on the bus, by candle time.
    held: BTreeMap<i64, Vec<Where>>,
    /// Prices forgotten after the first decision (the warning's count).
    forgotten: u64,
    /// The final signal that reserves the symbol: (signal id, expiry ns).
    reserved: Option<(String, i64)>,
    /// Filled signals of this symbol whose P&L has not closed them yet.
    filled: usize,
}

/// Counters the stage reports (`JoinStats` and the market book's).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CoreStats {
    pub late: u64,
    pub repeated: u64,
    pub ignored: u64,
    pub forgotten_undecided: u64,
}

/// Something the stage logs, as the Python it replaced logged it.
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// A prediction for a candle at or before `decided_through` (model, symbol, time, through).
    Late(String, usize, i64, i64),
    /// An undecided candle's price forgotten (symbol, candles in the book, its time, count so far).
    Forgotten(usize, usize, i64, u64),
}

/// A candle taken for its decision, with everything the decision reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub symbol: usize,
    pub timestamp_us: i64,
    pub origin_ns: i64,
    pub votes: Vec<OwnedVote>,
    pub features: Option<Vec<Option<f64>>>,
    pub close: Option<f64>,
    pub last_close: Option<f64>,
    pub position_open: bool,
}

/// What deciding the next queued candle gave.
pub enum Decided {
    /// Decided natively: the bodies, and the position reserved if it is final.
    Plan(Taken, signal_plan::Plan),
    /// Only the stage's Python path can decide it (no native planner for the settings, or one
    /// that declines this candle): it reserves the position itself (`reserve`).
    Python(Taken),
}

/// The signals stage's state. Symbols are indexes into the configured list.
pub struct SignalCore {
    symbols: Vec<String>,
    states: Vec<SymbolState>,
    /// Symbol indexes in name order: `due` sorts by (time, name).
    by_name: Vec<usize>,
    required: Vec<String>,
    deadline_ns: i64,
    memory: usize,
    backlog: usize,
    planner: Option<PlanSettings>,
    /// Topic-partitions in the order first held (the order `retained` lists them).
    partitions: Vec<(String, i32)>,
    /// Per topic-partition, held offset -> times held.
    held_offsets: Vec<BTreeMap<i64, u32>>,
    /// Filled signal id -> symbol.
    filled: HashMap<String, usize>,
    /// Candles to decide, in order.
    queue: VecDeque<(usize, i64)>,
    pub stats: CoreStats,
    pub warnings: Vec<Warning>,
}

impl SignalCore {
    /// `required`: the models with a weight; `planner`: None when only Python can decide.
    pub fn new(
        symbols: Vec<String>,
        required: Vec<String>,
        deadline_ns: i64,
        memory: usize,
        backlog: usize,
        planner: Option<PlanSettings>,
    ) -> Self {
        let mut by_name: Vec<usize> = (0..symbols.len()).collect();
        by_name.sort_by(|a, b| symbols[*a].cmp(&symbols[*b]));
        Self {
            states: symbols.iter().map(|_| SymbolState::default()).collect(),
            symbols,
            by_name,
            required,
            deadline_ns,
            memory,
            backlog,
            planner,
            partitions: Vec::new(),
            held_offsets: Vec::new(),
            filled: HashMap::new(),
            queue: VecDeque::new(),
            stats: CoreStats::default(),
            warnings: Vec::new(),
        }
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    pub fn symbol_index(&self, symbol: &str) -> Option<usize> {
        self.symbols.iter().position(|s| s == symbol)
    }

    // -- inputs --------------------------------------------------------------------------------

    /// A 1m close: into the book, its record held, then the candle queued if complete.
    pub fn add_close(
        &mut self,
        symbol: usize,
        ts: i64,
        close: f64,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        self.put(symbol, ts, Book::Close(close));
        self.hold(symbol, ts, topic, partition, offset);
        self.ready(symbol, ts);
    }

    /// The wanted features of a vector: into the book, held, queued if complete.
    pub fn add_features(
        &mut self,
        symbol: usize,
        ts: i64,
        values: Vec<Option<f64>>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        self.put(symbol, ts, Book::Features(values));
        self.hold(symbol, ts, topic, partition, offset);
        self.ready(symbol, ts);
    }

    /// A prediction into the join; its record held while its candle is pending.
    #[allow(clippy::too_many_arguments)]
    pub fn add_prediction(
        &mut self,
        symbol: usize,
        ts: i64,
        vote: OwnedVote,
        now_ns: i64,
        origin_ns: i64,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        self.join(symbol, ts, vote, now_ns, origin_ns);
        if self.states[symbol].pending.contains_key(&ts) {
            self.hold(symbol, ts, topic, partition, offset);
        }
    }

    fn join(&mut self, symbol: usize, ts: i64, vote: OwnedVote, now_ns: i64, origin_ns: i64) {
        if !self.required.contains(&vote.model) {
            self.stats.ignored += 1;
            return;
        }
        let state = &mut self.states[symbol];
        if let Some(done) = state.decided_through {
            if ts <= done && !state.pending.contains_key(&ts) {
                self.stats.late += 1;
                self.warnings
                    .push(Warning::Late(vote.model, symbol, ts, done));
                return;
            }
        }
        let deadline_ns = now_ns + self.deadline_ns;
        let entry = state.pending.entry(ts).or_insert_with(|| Pending {
            deadline_ns,
            origin_ns,
            votes: Vec::new(),
        });
        if entry.votes.iter().any(|v| v.model == vote.model) {
            self.stats.repeated += 1;
            return;
        }
        entry.votes.push(vote);
        self.ready(symbol, ts);
    }

    /// If the candle is complete, queue the symbol's older pending candles, oldest first, then
    /// it: a symbol's candles are decided in time order (each model predicts a symbol's candles
    /// in order, so once a newer candle is complete an older one's missing models are not coming).
    fn ready(&mut self, symbol: usize, ts: i64) {
        let state = &self.states[symbol];
        let complete = state.pending.get(&ts).is_some_and(|e| {
            self.required
                .iter()
                .all(|m| e.votes.iter().any(|v| &v.model == m))
        }) && state.closes.contains_key(&ts)
            && state.features.contains_key(&ts);
        if complete {
            self.queue
                .extend(state.pending.range(..=ts).map(|(t, _)| (symbol, *t)));
        }
    }

    /// Whether a candle's deadline has passed (`on_time` asks before anything else).
    pub fn has_due(&self, now_ns: i64) -> bool {
        self.states
            .iter()
            .any(|s| s.pending.values().any(|e| e.deadline_ns <= now_ns))
    }

    /// Queue the candles whose deadline passed, with every older pending candle of the same
    /// symbol, by (time, symbol name).
    pub fn queue_due(&mut self, now_ns: i64) {
        let mut due: Vec<(i64, usize)> = Vec::new();
        for &symbol in &self.by_name {
            let pending = &self.states[symbol].pending;
            let newest = pending.iter().rev().find(|(_, e)| e.deadline_ns <= now_ns);
            if let Some((&through, _)) = newest {
                due.extend(pending.range(..=through).map(|(t, _)| (*t, symbol)));
            }
        }
        // Stable: symbols are visited in name order, so equal times stay in name order.
        due.sort_by_key(|(t, _)| *t);
        self.queue.extend(due.into_iter().map(|(t, s)| (s, t)));
    }

    // -- the market book -----------------------------------------------------------------------

    /// A candle's close or features into the symbol's book, which keeps every
    /// undecided candle up to `backlog` and decided ones while it holds fewer than `memory`.
    fn put(&mut self, symbol: usize, ts: i64, value: Book) {
        let (memory, backlog) = (self.memory, self.backlog);
        let state = &mut self.states[symbol];
        let through = state.decided_through;
        let undecided = |t: i64| through.is_none_or(|d| t > d);
        let (len, first, present) = match &value {
            Book::Close(_) => book_shape(&state.closes, ts),
            Book::Features(_) => book_shape(&state.features, ts),
        };
        if !present && len >= backlog && first.is_some_and(undecided) {
            self.stats.forgotten_undecided += 1;
            // Warming up (nothing decided yet), a symbol's oldest candles are let go quietly.
            if through.is_some() {
                state.forgotten += 1;
                let n = state.forgotten;
                if n == 1 || n % 100 == 0 {
                    self.warnings.push(Warning::Forgotten(
                        symbol,
                        len,
                        first.unwrap_or_default(),
                        n,
                    ));
                }
            }
        }
        // What is dropped here was decided (or is beyond the backlog): nothing else refers to it.
        match value {
            Book::Close(close) => {
                put_in_time_order(
                    &mut state.closes,
                    ts,
                    close,
                    memory,
                    Some((&undecided, backlog)),
                );
            }
            Book::Features(values) => {
                put_in_time_order(
                    &mut state.features,
                    ts,
                    values,
                    memory,
                    Some((&undecided, backlog)),
                );
            }
        }
    }

    pub fn close(&self, symbol: usize, ts: i64) -> Option<f64> {
        self.states[symbol].closes.get(&ts).copied()
    }

    pub fn features(&self, symbol: usize, ts: i64) -> Option<&[Option<f64>]> {
        self.states[symbol].features.get(&ts).map(Vec::as_slice)
    }

    pub fn is_pending(&self, symbol: usize, ts: i64) -> bool {
        self.states[symbol].pending.contains_key(&ts)
    }

    pub fn decided_through(&self, symbol: usize) -> Option<i64> {
        self.states[symbol].decided_through
    }

    // -- held offsets --------------------------------------------------------------------------

    /// Keep an undecided candle's input from being committed past (a decided one needs nothing).
    /// Bounded like the market book: beyond `MARKET_BACKLOG` candle times the oldest is let go.
    fn hold(&mut self, symbol: usize, ts: i64, topic: &str, partition: i32, offset: i64) {
        if self.states[symbol].decided_through.is_some_and(|d| ts <= d) {
            return;
        }
        let tp = self.partition(topic, partition);
        *self.held_offsets[tp].entry(offset).or_insert(0) += 1;
        let held = &mut self.states[symbol].held;
        if let Some(positions) = held.get_mut(&ts) {
            positions.push((tp, offset));
            return;
        }
        let dropped = put_in_time_order(held, ts, vec![(tp, offset)], MARKET_BACKLOG, None);
        for positions in dropped {
            self.release(&positions);
        }
    }

    fn partition(&mut self, topic: &str, partition: i32) -> usize {
        // A lookup keyed by an owned String would allocate per record: the partitions are few.
        if let Some(i) = self
            .partitions
            .iter()
            .position(|(t, p)| *p == partition && t == topic)
        {
            return i;
        }
        self.partitions.push((topic.to_string(), partition));
        self.held_offsets.push(BTreeMap::new());
        self.partitions.len() - 1
    }

    fn release(&mut self, positions: &[Where]) {
        for &(tp, offset) in positions {
            let offsets = &mut self.held_offsets[tp];
            if let Some(n) = offsets.get_mut(&offset) {
                *n -= 1;
                if *n == 0 {
                    offsets.remove(&offset);
                }
            }
        }
    }

    /// Per topic-partition holding anything, the lowest offset held: the runner never commits
    /// past it, so a crash redelivers every input of a candle not yet decided.
    pub fn retained(&self) -> Vec<(&str, i32, i64)> {
        self.partitions
            .iter()
            .zip(&self.held_offsets)
            .filter_map(|((t, p), offsets)| offsets.keys().next().map(|o| (t.as_str(), *p, *o)))
            .collect()
    }

    // -- positions -----------------------------------------------------------------------------

    /// A fill of `signal_id`: its symbol stays open until its P&L closes it.
    pub fn filled(&mut self, symbol: usize, signal_id: &str) {
        if let Some(previous) = self.filled.insert(signal_id.to_string(), symbol) {
            self.states[previous].filled -= 1;
        }
        let state = &mut self.states[symbol];
        state.filled += 1;
        if state
            .reserved
            .as_ref()
            .is_some_and(|(id, _)| id == signal_id)
        {
            state.reserved = None;
        }
    }

    /// A P&L event closing `signal_id`.
    pub fn closed(&mut self, signal_id: &str) {
        if let Some(symbol) = self.filled.remove(signal_id) {
            self.states[symbol].filled -= 1;
        }
    }

    /// A final signal reserves its symbol until it expires (or is filled).
    pub fn reserve(&mut self, symbol: usize, signal_id: String, expires_ns: i64) {
        self.states[symbol].reserved = Some((signal_id, expires_ns));
    }

    /// Whether the symbol is busy: a live reservation, or a fill not yet closed.
    fn is_open(&mut self, symbol: usize, now_ns: i64) -> bool {
        let state = &mut self.states[symbol];
        if let Some((_, expires)) = state.reserved {
            if expires > now_ns {
                return true;
            }
            state.reserved = None;
        }
        state.filled > 0
    }

    // -- decisions -----------------------------------------------------------------------------

    /// Decide the next queued candle, or None when the queue is empty.
    pub fn decide_next(&mut self, now_ns: i64) -> Option<Decided> {
        loop {
            let (symbol, ts) = self.queue.pop_front()?;
            // Every queued candle was pending when queued, and only deciding takes one.
            if let Some(taken) = self.take(symbol, ts, now_ns) {
                return Some(self.plan(taken, now_ns));
            }
        }
    }

    /// Take a candle for its decision: out of the join, `decided_through` moved, its inputs (and
    /// the symbol's older ones) released, and whether its position is open, in that order.
    fn take(&mut self, symbol: usize, ts: i64, now_ns: i64) -> Option<Taken> {
        let state = &mut self.states[symbol];
        let entry = state.pending.remove(&ts)?;
        if state.decided_through.is_none_or(|d| ts > d) {
            state.decided_through = Some(ts);
        }
        let close = state.closes.get(&ts).copied();
        let last_close = state.closes.range(..ts).next_back().map(|(_, c)| *c);
        let features = state.features.get(&ts).cloned();
        // The candle's inputs, and those of the symbol's older candles, are done with.
        let mut done = Vec::new();
        while let Some(entry) = state.held.first_entry() {
            if *entry.key() > ts {
                break;
            }
            done.push(entry.remove());
        }
        for positions in done {
            self.release(&positions);
        }
        let position_open = self.is_open(symbol, now_ns);
        Some(Taken {
            symbol,
            timestamp_us: ts,
            origin_ns: entry.origin_ns,
            votes: entry.votes,
            features,
            close,
            last_close,
            position_open,
        })
    }

    fn plan(&mut self, taken: Taken, now_ns: i64) -> Decided {
        let Some(settings) = &self.planner else {
            return Decided::Python(taken);
        };
        let votes: Vec<Vote<'_>> = taken
            .votes
            .iter()
            .map(|v| Vote {
                model: &v.model,
                version: &v.version,
                direction: v.direction,
                probability: v.probability,
                confidence: v.confidence,
            })
            .collect();
        let plan = signal_plan::plan(
            settings,
            &self.symbols[taken.symbol],
            taken.timestamp_us,
            &votes,
            taken.features.as_deref(),
            taken.close,
            taken.last_close,
            now_ns,
            taken.position_open,
            None,
        );
        let Some(plan) = plan else {
            return Decided::Python(taken);
        };
        if plan.reasons == 0 {
            let expires = taken.timestamp_us * 1000 + settings.ttl_seconds * 1_000_000_000;
            self.reserve(taken.symbol, plan.signal_id.clone(), expires);
        }
        Decided::Plan(taken, plan)
    }
}

enum Book {
    Close(f64),
    Features(Vec<Option<f64>>),
}

/// (entries, oldest time, whether `ts` is in the book).
fn book_shape<V>(book: &BTreeMap<i64, V>, ts: i64) -> (usize, Option<i64>, bool) {
    (
        book.len(),
        book.keys().next().copied(),
        book.contains_key(&ts),
    )
}

/// `book[ts] = value`, then the oldest entries dropped until at most
/// `memory` remain (returned). Given `keep` (is a time undecided?, backlog), the oldest entry is
/// kept while it is undecided and the book holds at most `backlog`. A repeated time replaces
/// its value in place and drops nothing.
fn put_in_time_order<V>(
    book: &mut BTreeMap<i64, V>,
    ts: i64,
    value: V,
    memory: usize,
    keep: Option<(&dyn Fn(i64) -> bool, usize)>,
) -> Vec<V> {
    if let Some(slot) = book.get_mut(&ts) {
        *slot = value;
        return Vec::new();
    }
    book.insert(ts, value);
    let mut dropped = Vec::new();
    while book.len() > memory {
        let len = book.len();
        let Some(entry) = book.first_entry() else {
            break;
        };
        if let Some((undecided, backlog)) = keep {
            if len <= backlog && undecided(*entry.key()) {
                break; // kept for its predictions
            }
        }
        dropped.push(entry.remove());
    }
    dropped
}

// -- reading records -----------------------------------------------------------------------------

/// The standard headers a message of one schema version carries (`FastReader`).
#[derive(Debug, Clone)]
pub struct HeaderSpec {
    pub schema: String,
    pub version: u32,
    pub encoding: String,
}

/// `FastReader.origin_ns`: the origin time when the headers are those the full decode accepts
/// for the current schema version, else None (the Python path then reads the record). Only
/// plain digits are parsed here; anything Python's `int()` might read otherwise goes to Python.
pub fn origin_ns<'a>(
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    spec: &HeaderSpec,
) -> Option<i64> {
    let mut seen: Vec<&str> = Vec::with_capacity(8);
    let (mut schema, mut version, mut origin, mut stage, mut encoding) =
        (None, None, None, false, None);
    for (name, value) in headers {
        // The first non-null value of each name counts (and must be ASCII); later ones are skipped.
        let Some(value) = value else { continue };
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        if !value.is_ascii() {
            return None;
        }
        match name {
            "schema" => schema = Some(value),
            "schema_version" => version = Some(value),
            "origin_ns" => origin = Some(value),
            "stage" => stage = true,
            "encoding" => encoding = Some(value),
            _ => {}
        }
    }
    if schema? != spec.schema.as_bytes()
        || encoding.unwrap_or(b"avro") != spec.encoding.as_bytes()
        || !stage
    {
        return None;
    }
    if digits(version?)? != i64::from(spec.version) {
        return None;
    }
    digits(origin?)
}

/// A non-empty run of ASCII digits that fits an i64.
fn digits(text: &[u8]) -> Option<i64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

pub(crate) fn in_datetime_range(micros: i64) -> bool {
    (MIN_MICROS..=MAX_MICROS).contains(&micros)
}

/// The body as `Codec.decode_value` decodes a bare body of the headers' `version`.
pub(crate) fn decode<T: AvroRecord>(body: &[u8], version: u32) -> Option<T> {
    let context = Context {
        topic: None,
        offset: None,
    };
    std::panic::catch_unwind(|| crate::decode::<T>(body, Some(version), &context).ok()).ok()?
}

/// (symbol, time, close) of a bare `Candle` body of `version` that `Candle` validates, of
/// `interval` (lasting `minutes`): `inputs.candle` and the stage's interval check. None: the
/// Python path.
pub fn read_candle(
    body: &[u8],
    version: u32,
    interval: &str,
    minutes: i32,
) -> Option<(String, i64, f64)> {
    let c: Candle = decode(body, version)?;
    let provenance = c.minutes.is_none_or(|m| (1..=minutes).contains(&m))
        && (c.origin.is_none() || interval == "1m");
    let ok = !c.symbol.is_empty()
        && c.interval == interval
        && provenance
        && c.volume >= 0.0
        && c.low <= c.open
        && c.low <= c.close
        && c.open <= c.high
        && c.close <= c.high
        && in_datetime_range(c.timestamp_us);
    ok.then_some((c.symbol, c.timestamp_us, c.close))
}

/// A bare `Prediction` body of `version` that `Prediction` validates (`inputs.prediction`): the
/// decoder already holds probability and confidence in [0, 1] and every double finite.
pub fn read_prediction(body: &[u8], version: u32) -> Option<Prediction> {
    let p: Prediction = decode(body, version)?;
    let ok =
        !p.symbol.is_empty() && p.inference_time_ms >= 0.0 && in_datetime_range(p.timestamp_us);
    ok.then_some(p)
}

/// (symbol, time, wanted values) of a feature vector body the picker accepts.
pub fn read_features(
    picker: &mut FeaturePick,
    body: &[u8],
) -> Option<(String, i64, Vec<Option<f64>>)> {
    let picked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| picker.read(body).ok()))
        .ok()??;
    in_datetime_range(picked.timestamp_us).then_some((
        picked.symbol,
        picked.timestamp_us,
        picked.values,
    ))
}

/// The reader a record's body needs, by topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    Candle(usize),
    Features(usize),
    /// `predictions.lstm.{symbol}`: an LSTM prediction of that symbol.
    Lstm(usize),
    /// `predictions.transformer`: a transformer prediction of any configured symbol.
    Transformer,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(model: &str) -> OwnedVote {
        OwnedVote {
            model: model.into(),
            version: "v1".into(),
            direction: 2,
            probability: 0.8,
            confidence: 0.8,
        }
    }

    fn core() -> SignalCore {
        SignalCore::new(
            vec!["B".into(), "A".into()],
            vec!["lstm".into(), "transformer".into()],
            1_000,
            4,
            10,
            None,
        )
    }

    fn decided(core: &mut SignalCore, now: i64) -> Vec<(usize, i64)> {
        std::iter::from_fn(|| core.decide_next(now))
            .map(|d| match d {
                Decided::Python(t) | Decided::Plan(t, _) => (t.symbol, t.timestamp_us),
            })
            .collect()
    }

    #[test]
    fn a_complete_candle_is_decided_with_every_older_pending_one_first() {
        let mut c = core();
        c.add_prediction(0, 10, vote("lstm"), 0, 1, "p", 0, 1);
        c.add_prediction(0, 20, vote("lstm"), 0, 1, "p", 0, 2);
        c.add_prediction(0, 20, vote("transformer"), 0, 1, "t", 0, 3);
        c.add_close(0, 20, 1.0, "c", 0, 4);
        assert!(decided(&mut c, 0).is_empty(), "no features yet");
        c.add_features(0, 20, vec![Some(1.0)], "f", 0, 5);
        assert_eq!(decided(&mut c, 0), vec![(0, 10), (0, 20)]);
        // After the decision, a prediction of either candle is late and nothing stays held.
        c.add_prediction(0, 10, vote("transformer"), 0, 1, "t", 0, 6);
        assert_eq!(c.stats.late, 1);
        assert!(c.retained().is_empty());
    }

    #[test]
    fn retained_is_the_lowest_offset_held_until_its_candle_is_decided() {
        let mut c = core();
        c.add_close(0, 20, 1.0, "c", 0, 7);
        c.add_close(0, 10, 1.0, "c", 0, 3); // a redelivery: an older offset after a newer one
        c.add_prediction(1, 10, vote("lstm"), 0, 1, "p", 1, 9);
        assert_eq!(c.retained(), vec![("c", 0, 3), ("p", 1, 9)]);
        assert!(c.has_due(1_000) && !c.has_due(999));
        c.queue_due(1_000);
        assert_eq!(decided(&mut c, 1_000), vec![(1, 10)]);
        assert_eq!(c.retained(), vec![("c", 0, 3)]);
    }

    #[test]
    fn due_candles_come_by_time_then_symbol_name() {
        let mut c = core();
        for (symbol, ts) in [(0, 30), (1, 30), (1, 20), (0, 10)] {
            c.add_prediction(symbol, ts, vote("lstm"), 0, 1, "p", 0, 1);
        }
        c.queue_due(1_000);
        // Symbol 1 is "A", before "B".
        assert_eq!(
            decided(&mut c, 1_000),
            vec![(0, 10), (1, 20), (1, 30), (0, 30)]
        );
    }

    #[test]
    fn the_book_keeps_undecided_candles_up_to_its_backlog() {
        let mut c = core();
        for ts in 0..12 {
            c.add_close(0, ts, ts as f64, "c", 0, ts);
        }
        // Nothing decided: 10 kept (the backlog), the two oldest forgotten, quietly.
        assert_eq!(c.close(0, 1), None);
        assert_eq!(c.close(0, 2), Some(2.0));
        assert_eq!(c.stats.forgotten_undecided, 2);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn a_reservation_expires_and_a_fill_keeps_the_symbol_open_until_closed() {
        let mut c = core();
        c.reserve(0, "s1".into(), 100);
        assert!(c.is_open(0, 99));
        assert!(!c.is_open(0, 100));
        c.reserve(0, "s2".into(), 100);
        c.filled(0, "s2");
        assert!(c.is_open(0, 1_000));
        c.closed("s2");
        assert!(!c.is_open(0, 1_000));
    }

    #[test]
    fn a_candle_or_prediction_is_read_only_when_its_model_would_take_it() {
        let good = Candle {
            timestamp_us: 60_000_000,
            symbol: "BTC-USD".into(),
            interval: "1m".into(),
            open: 10.0,
            high: 12.0,
            low: 9.0,
            close: 11.0,
            volume: 1.0,
            source: "t".into(),
            minutes: Some(1),
            origin: None,
        };
        let read = |c: &Candle| read_candle(&crate::encode(c).unwrap(), 2, "1m", 1);
        assert_eq!(read(&good), Some(("BTC-USD".into(), 60_000_000, 11.0)));
        let bad = [
            Candle {
                low: 10.5,
                ..good.clone()
            },
            Candle {
                high: 10.5,
                ..good.clone()
            },
            Candle {
                volume: -1.0,
                ..good.clone()
            },
            Candle {
                symbol: String::new(),
                ..good.clone()
            },
            Candle {
                interval: "5m".into(),
                ..good.clone()
            },
            Candle {
                minutes: Some(2),
                ..good.clone()
            },
            Candle {
                timestamp_us: MAX_MICROS + 1,
                ..good.clone()
            },
        ];
        for c in &bad {
            assert_eq!(read(c), None, "{c:?}");
        }
        // A v2 body read as v1 leaves bytes over.
        assert_eq!(
            read_candle(&crate::encode(&good).unwrap(), 1, "1m", 1),
            None
        );

        let p = Prediction {
            timestamp_us: 60_000_000,
            symbol: "BTC-USD".into(),
            model_type: crate::ModelType::Lstm,
            model_version: "a".into(),
            direction: crate::Direction::Up,
            probability: 0.7,
            confidence: 0.6,
            inference_time_ms: 0.3,
        };
        let read = |p: &Prediction| read_prediction(&crate::encode(p).unwrap(), 1);
        assert_eq!(read(&p), Some(p.clone()));
        assert_eq!(
            read(&Prediction {
                inference_time_ms: -0.1,
                ..p.clone()
            }),
            None
        );
        assert_eq!(
            read(&Prediction {
                symbol: String::new(),
                ..p.clone()
            }),
            None
        );
    }

    #[test]
    fn origin_is_read_only_from_plain_current_headers() {
        let spec = HeaderSpec {
            schema: "kstrade.Candle".into(),
            version: 2,
            encoding: "avro".into(),
        };
        let h = |pairs: &'static [(&'static str, Option<&'static [u8]>)]| {
            origin_ns(pairs.iter().copied(), &spec)
        };
        let good: &[(&str, Option<&[u8]>)] = &[
            ("schema", Some(b"kstrade.Candle")),
            ("schema_version", Some(b"2")),
            ("origin_ns", Some(b"17")),
            ("stage", Some(b"x")),
        ];
        assert_eq!(h(good), Some(17));
        assert_eq!(
            h(&[
                ("schema", Some(b"kstrade.Candle")),
                ("schema_version", Some(b"1")),
                ("origin_ns", Some(b"17")),
                ("stage", Some(b"x"))
            ]),
            None
        );
        assert_eq!(
            h(&[
                ("schema", None),
                ("schema", Some(b"kstrade.Candle")),
                ("schema_version", Some(b"2")),
                ("origin_ns", Some(b"+17")),
                ("stage", Some(b"x"))
            ]),
            None
        );
    }
}
