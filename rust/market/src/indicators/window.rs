//! Fixed-size building blocks that keep indicator updates O(1): a ring of the last n values
//! (to drop the trailing value of a running sum) and a monotonic deque for the highest high /
//! lowest low of a sliding window (amortised O(1) instead of rescanning the window).

use std::collections::VecDeque;

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

/// The highest (or lowest) value of the last `window` bars.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlidingExtreme {
    /// (bar index, value), values strictly decreasing (for a max) from front to back.
    deque: VecDeque<(u64, f64)>,
    window: u64,
    highest: bool,
    bar: u64,
}

impl SlidingExtreme {
    pub fn highest(window: usize) -> Self {
        Self {
            deque: VecDeque::with_capacity(window + 1),
            window: window as u64,
            highest: true,
            bar: 0,
        }
    }

    pub fn lowest(window: usize) -> Self {
        Self {
            deque: VecDeque::with_capacity(window + 1),
            window: window as u64,
            highest: false,
            bar: 0,
        }
    }

    /// Add the next bar's value and return the extreme over the last `window` bars.
    #[inline]
    pub fn push(&mut self, value: f64) -> f64 {
        let beats = |kept: f64| {
            if self.highest {
                value >= kept
            } else {
                value <= kept
            }
        };
        while let Some(&(_, kept)) = self.deque.back() {
            if beats(kept) {
                self.deque.pop_back();
            } else {
                break;
            }
        }
        self.deque.push_back((self.bar, value));
        while let Some(&(index, _)) = self.deque.front() {
            if index + self.window <= self.bar {
                self.deque.pop_front();
            } else {
                break;
            }
        }
        self.bar += 1;
        self.deque.front().map(|&(_, v)| v).unwrap_or(value)
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
            assert!(hi.deque.len() <= 7 && lo.deque.len() <= 7);
        }
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
