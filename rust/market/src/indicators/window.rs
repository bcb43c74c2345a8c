//! Fixed-size building blocks that keep indicator updates O(1): a ring of the last n values
//! (to drop the trailing value of a running sum) and a monotonic deque for the highest high /
//! lowest low of a sliding window (amortised O(1) instead of rescanning the window).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The last `capacity` values, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ring {
    values: VecDeque<f64>,
    capacity: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Self {
            values: VecDeque::with_capacity(capacity + 1),
            capacity,
        }
    }

    /// Push a value; returns the value that left the window, if any.
    #[inline]
    pub fn push(&mut self, value: f64) -> Option<f64> {
        self.values.push_back(value);
        if self.values.len() > self.capacity {
            self.values.pop_front()
        } else {
            None
        }
    }

    /// The oldest value still in the window.
    #[inline]
    pub fn oldest(&self) -> Option<f64> {
        self.values.front().copied()
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.values.iter().copied()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.values.len() == self.capacity
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
    }
}
