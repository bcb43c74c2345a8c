//! Fixed-size building blocks that keep indicator updates O(1): a ring of the last n values
//! (to drop the trailing value of a running sum) and a block-wise sliding extreme for the highest
//! high / lowest low of a window (amortised O(1) instead of rescanning the window).

use serde::{Deserialize, Serialize};

/// The last `capacity` values, oldest first: a fixed buffer overwritten in place, so a push
/// is one load and one store (no growth check, no length bookkeeping of a deque).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "RingState", into = "RingState")]
pub struct Ring {
    /// `capacity` slots; until the ring is full only the first `len` are used.
    slots: Vec<f64>,
    /// Where the next value goes; once full, also the oldest value.
    next: usize,
    len: usize,
}

/// How a ring is written in snapshots: its values oldest first and its capacity (the layout
/// snapshots have always had, so older snapshots still restore).
#[derive(Serialize, Deserialize)]
struct RingState {
    values: Vec<f64>,
    capacity: usize,
}

impl From<RingState> for Ring {
    fn from(state: RingState) -> Self {
        let mut ring = Ring::new(state.capacity);
        let skip = state.values.len().saturating_sub(state.capacity);
        for &value in &state.values[skip..] {
            ring.push(value);
        }
        ring
    }
}

impl From<Ring> for RingState {
    fn from(ring: Ring) -> Self {
        RingState {
            values: ring.iter().collect(),
            capacity: ring.slots.len(),
        }
    }
}

/// Equal when they hold the same values in the same order (where the buffer starts is not
/// part of the value: a restored ring starts at slot 0).
impl PartialEq for Ring {
    fn eq(&self, other: &Self) -> bool {
        self.slots.len() == other.slots.len() && self.iter().eq(other.iter())
    }
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: vec![0.0; capacity],
            next: 0,
            len: 0,
        }
    }

    /// Push a value; returns the value that left the window, if any.
    #[inline]
    pub fn push(&mut self, value: f64) -> Option<f64> {
        let capacity = self.slots.len();
        let Some(slot) = self.slots.get_mut(self.next) else {
            return Some(value); // capacity 0: the value leaves at once
        };
        let left = if self.len == capacity {
            Some(*slot)
        } else {
            self.len += 1;
            None
        };
        *slot = value;
        self.next += 1;
        if self.next == capacity {
            self.next = 0;
        }
        left
    }

    /// The oldest value still in the window.
    #[inline]
    pub fn oldest(&self) -> Option<f64> {
        if self.len == self.slots.len() {
            self.slots.get(self.next).copied()
        } else {
            self.slots[..self.len].first().copied()
        }
    }

    /// The newest value.
    #[inline]
    pub fn newest(&self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        let slot = if self.next == 0 {
            self.slots.len()
        } else {
            self.next
        };
        self.slots.get(slot - 1).copied()
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        let (newer, older) = if self.len == self.slots.len() {
            self.slots.split_at(self.next)
        } else {
            (&self.slots[..self.len], &self.slots[..0])
        };
        older.iter().chain(newer).copied()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }
}

/// The highest (or lowest) value of the last `window` bars, in O(1) amortised time without a
/// data-dependent branch (the van Herk / Gil-Werman scheme): bars are grouped in blocks of
/// `window`; the extreme of the window is the larger of the extreme of the current block so far
/// (`prefix`) and the extreme of the previous block's bars still in the window (`suffix`,
/// computed once per block, when the block completes).
///
/// The lowest value is tracked as the highest of the negated values (negation is exact), so
/// both directions run the same comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "ExtremeState", into = "ExtremeState")]
pub struct SlidingExtreme {
    /// The last `window` values x sign; slot `pos` is the oldest (the next to be replaced).
    values: Vec<f64>,
    /// `suffix[i]`: the extreme of the previous block's slots `i..window`.
    suffix: Vec<f64>,
    /// The extreme of the current block's values so far.
    prefix: f64,
    /// Slot of the next value (the next bar's position in its block).
    pos: usize,
    /// 1 for the highest, -1 for the lowest.
    sign: f64,
    /// Index of the next bar.
    bar: u64,
}

/// How a sliding extreme is written in snapshots (the layout they have always had): the
/// monotonic deque of the window, the only values that can still be an extreme.
#[derive(Serialize, Deserialize)]
struct ExtremeState {
    /// (bar index, value), values strictly decreasing (for a max) from the front.
    deque: Vec<(u64, f64)>,
    window: u64,
    highest: bool,
    bar: u64,
}

impl From<ExtremeState> for SlidingExtreme {
    /// Values left out of the deque are beaten by a newer value of the window, so they can
    /// never be the extreme again: they restore as -inf, which changes no future output.
    fn from(state: ExtremeState) -> Self {
        let mut extreme = Self::new(state.window as usize, state.highest);
        let window = extreme.values.len() as u64;
        for &(bar, value) in &state.deque {
            if bar + window >= state.bar && bar < state.bar {
                extreme.values[(bar % window) as usize] = value * extreme.sign;
            }
        }
        extreme.bar = state.bar;
        extreme.pos = (state.bar % window) as usize;
        extreme.prefix = extreme.values[..extreme.pos]
            .iter()
            .fold(f64::NEG_INFINITY, |m, &x| larger(m, x));
        // Slots before `pos` hold the current block, the rest the previous block's part of the
        // window: only `suffix[pos + 1..]` is ever read, which covers just that part.
        extreme.compute_suffix();
        extreme
    }
}

impl From<SlidingExtreme> for ExtremeState {
    fn from(extreme: SlidingExtreme) -> Self {
        let window = extreme.values.len() as u64;
        let mut deque: Vec<(u64, f64)> = Vec::new();
        for bar in extreme.bar.saturating_sub(window)..extreme.bar {
            let value = extreme.values[(bar % window) as usize];
            while deque.last().is_some_and(|&(_, kept)| value >= kept) {
                deque.pop();
            }
            deque.push((bar, value));
        }
        ExtremeState {
            deque: deque
                .into_iter()
                .filter(|&(_, value)| value > f64::NEG_INFINITY)
                .map(|(bar, value)| (bar, value * extreme.sign))
                .collect(),
            window,
            highest: extreme.sign > 0.0,
            bar: extreme.bar,
        }
    }
}

/// Equal when every future output is the same: the same window, direction, bar count and
/// candidate values (what the snapshot keeps).
impl PartialEq for SlidingExtreme {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (
            ExtremeState::from(self.clone()),
            ExtremeState::from(other.clone()),
        );
        (a.window, a.highest, a.bar) == (b.window, b.highest, b.bar)
            && a.deque.len() == b.deque.len()
            && a.deque
                .iter()
                .zip(&b.deque)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }
}

/// `max` for values known not to be NaN, written the way `maxsd` works (`a > b`, else `b`) so
/// it compiles to that one instruction: `f64::max` adds NaN handling, and `a >= b` became a
/// branch, which random prices mispredict.
#[inline]
fn larger(a: f64, b: f64) -> f64 {
    if a > b {
        a
    } else {
        b
    }
}

impl SlidingExtreme {
    pub fn highest(window: usize) -> Self {
        Self::new(window, true)
    }

    pub fn lowest(window: usize) -> Self {
        Self::new(window, false)
    }

    fn new(window: usize, highest: bool) -> Self {
        let window = window.max(1);
        Self {
            values: vec![f64::NEG_INFINITY; window],
            suffix: vec![f64::NEG_INFINITY; window],
            prefix: f64::NEG_INFINITY,
            pos: 0,
            sign: if highest { 1.0 } else { -1.0 },
            bar: 0,
        }
    }

    /// The extremes of the block in `values` from each slot to its end.
    fn compute_suffix(&mut self) {
        let mut extreme = f64::NEG_INFINITY;
        for (slot, &value) in self.suffix.iter_mut().zip(&self.values).rev() {
            extreme = larger(extreme, value);
            *slot = extreme;
        }
    }

    /// Add the next bar's value (finite) and return the extreme over the last `window` bars.
    #[inline]
    pub fn push(&mut self, value: f64) -> f64 {
        let x = value * self.sign;
        let window = self.values.len();
        let pos = self.pos;
        self.prefix = larger(self.prefix, x);
        self.values[pos] = x;
        // The window: this block's slots 0..=pos and the previous block's pos+1.. .
        let older = self
            .suffix
            .get(pos + 1)
            .copied()
            .unwrap_or(f64::NEG_INFINITY);
        let extreme = larger(self.prefix, older);
        self.bar += 1;
        self.pos = pos + 1;
        if self.pos == window {
            self.compute_suffix();
            self.prefix = f64::NEG_INFINITY;
            self.pos = 0;
        }
        extreme * self.sign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_extreme_matches_a_rescan() {
        let data = crate::indicators::testutil::series(300);
        let mut hi = SlidingExtreme::highest(7);
        let mut lo = SlidingExtreme::lowest(7);
        for (i, &x) in data.iter().enumerate() {
            let start = i.saturating_sub(6);
            let window = &data[start..=i];
            let want_hi = window.iter().cloned().fold(f64::MIN, f64::max);
            let want_lo = window.iter().cloned().fold(f64::MAX, f64::min);
            assert_eq!(hi.push(x), want_hi);
            assert_eq!(lo.push(x), want_lo);
        }
    }

    /// Snapshots keep the monotonic-deque layout: restoring at any phase of a block, then
    /// continuing, gives what an uninterrupted run gives; and a snapshot written by the
    /// earlier deque implementation (the JSON below) restores.
    #[test]
    fn sliding_extreme_snapshot_restores_at_every_phase() {
        // Runs of equal values too: ties are where a deque keeps or drops a value.
        let data: Vec<f64> = crate::indicators::testutil::series(120)
            .into_iter()
            .map(|x| (x * 4.0).round() / 4.0)
            .collect();
        for window in [1, 2, 5, 7] {
            for cut in 0..40 {
                for highest in [true, false] {
                    let new = |w| {
                        if highest {
                            SlidingExtreme::highest(w)
                        } else {
                            SlidingExtreme::lowest(w)
                        }
                    };
                    let mut whole = new(window);
                    let mut first = new(window);
                    let want: Vec<f64> = data.iter().map(|&x| whole.push(x)).collect();
                    for &x in &data[..cut] {
                        first.push(x);
                    }
                    let json = serde_json::to_string(&first).unwrap();
                    let mut second: SlidingExtreme = serde_json::from_str(&json).unwrap();
                    assert_eq!(second, first, "window {window} cut {cut}: {json}");
                    let got: Vec<f64> = data[cut..].iter().map(|&x| second.push(x)).collect();
                    assert_eq!(
                        got,
                        want[cut..],
                        "window {window} cut {cut} highest {highest}"
                    );
                }
            }
        }
        // Highest of 5 after the bars 3, 9, 4, 8, 2, 7 (bar 6 next): the deque holds 9, 8, 7.
        let old = r#"{"deque":[[1,9.0],[3,8.0],[5,7.0]],"window":5,"highest":true,"bar":6}"#;
        let mut restored: SlidingExtreme = serde_json::from_str(old).unwrap();
        assert_eq!(serde_json::to_string(&restored).unwrap(), old);
        assert_eq!(restored.push(1.0), 8.0); // 9 (bar 1) has left: bars 2..=6
        assert_eq!(restored.push(1.0), 8.0);
        assert_eq!(restored.push(1.0), 7.0);
    }

    #[test]
    fn ring_keeps_the_last_values() {
        let mut r = Ring::new(3);
        assert_eq!(r.push(1.0), None);
        assert_eq!(r.push(2.0), None);
        assert_eq!(r.push(3.0), None);
        assert!(r.is_full());
        assert_eq!(r.push(4.0), Some(1.0));
        assert_eq!(r.oldest(), Some(2.0));
        assert_eq!(r.iter().collect::<Vec<_>>(), [2.0, 3.0, 4.0]);
    }

    #[test]
    fn ring_snapshot_keeps_the_layout_older_snapshots_have() {
        let mut r = Ring::new(3);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            r.push(x);
        }
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"values":[3.0,4.0,5.0],"capacity":3}"#);
        let mut back: Ring = serde_json::from_str(&json).unwrap();
        assert_eq!(back.push(6.0), Some(3.0));
        assert_eq!(back.iter().collect::<Vec<_>>(), [4.0, 5.0, 6.0]);
        let partial: Ring = serde_json::from_str(r#"{"values":[7.0],"capacity":3}"#).unwrap();
        assert_eq!((partial.len(), partial.oldest()), (1, Some(7.0)));
    }
}
