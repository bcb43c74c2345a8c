//! Avro binary primitives (spec 1.11, "Binary Encoding"): zig-zag varint longs and ints,
//! little-endian doubles, length-prefixed strings, arrays in blocks, enums and union branches as
//! an index. Only what the hot schemas use, written by hand so a candle encodes without any
//! schema interpretation.

use crate::error::{CodecError, CodecResult, Location};

/// Longest varint of a 64-bit long: ceil(64 / 7) bytes.
const MAX_VARINT_BYTES: usize = 10;

/// Appends Avro-encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.buf.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.buf.push(z as u8);
    }

    pub fn double(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn string(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// Enum symbols are written as their index in the schema's symbol list.
    pub fn enum_index(&mut self, i: usize) {
        self.long(i as i64);
    }

    /// An optional value of a `["null", T]` union: branch 0 (null, no bytes) or branch 1
    /// followed by the value.
    pub fn optional<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                write(self, v);
            }
        }
    }

    /// An array as one block of `len` items followed by the end marker (what fastavro writes).
    pub fn array<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        if !items.is_empty() {
            self.long(items.len() as i64);
            for x in items {
                item(self, x);
            }
        }
        self.long(0);
    }
}

/// Reads Avro-encoded values from a byte slice; every read names the field it is for, so a
/// failure can say exactly where the message broke.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    schema: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], schema: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            schema,
        }
    }

    pub fn at(&self, field: &str) -> Location {
        Location::new(self.schema, field)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Step over `n` bytes (already known to be what they should be).
    pub fn skip(&mut self, n: usize, field: &str) -> CodecResult<()> {
        self.take(n, field).map(drop)
    }

    fn take(&mut self, n: usize, field: &str) -> CodecResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(CodecError::Truncated {
                at: self.at(field),
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn long(&mut self, field: &str) -> CodecResult<i64> {
        let mut z: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(CodecError::Truncated {
                    at: self.at(field),
                    needed: 1,
                    available: 0,
                });
            };
            self.pos += 1;
            // The tenth byte may only carry the top bit of the 64.
            if i == MAX_VARINT_BYTES - 1 && b > 1 {
                return Err(CodecError::Malformed {
                    at: self.at(field),
                    reason: "varint overflows 64 bits".into(),
                });
            }
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(CodecError::Malformed {
            at: self.at(field),
            reason: "varint longer than 10 bytes".into(),
        })
    }

    /// An Avro `int`: a varint that must fit 32 bits.
    pub fn int(&mut self, field: &str) -> CodecResult<i32> {
        let v = self.long(field)?;
        i32::try_from(v).map_err(|_| CodecError::Malformed {
            at: self.at(field),
            reason: format!("{v} does not fit an Avro int (32 bits)"),
        })
    }

    pub fn double(&mut self, field: &str) -> CodecResult<f64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// A double that the schema requires to be finite.
    pub fn finite(&mut self, field: &str) -> CodecResult<f64> {
        let v = self.double(field)?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(CodecError::NonFinite {
                at: self.at(field),
                value: v,
            })
        }
    }

    fn length(&mut self, field: &str) -> CodecResult<usize> {
        let n = self.long(field)?;
        usize::try_from(n).map_err(|_| CodecError::Malformed {
            at: self.at(field),
            reason: format!("negative length {n}"),
        })
    }

    pub fn str(&mut self, field: &str) -> CodecResult<&'a str> {
        let n = self.length(field)?;
        let b = self.take(n, field)?;
        std::str::from_utf8(b).map_err(|e| CodecError::Malformed {
            at: self.at(field),
            reason: format!("invalid UTF-8: {e}"),
        })
    }

    pub fn string(&mut self, field: &str) -> CodecResult<String> {
        self.str(field).map(str::to_owned)
    }

    /// An enum index checked against the number of symbols.
    pub fn enum_index(&mut self, field: &str, symbols: usize) -> CodecResult<usize> {
        let i = self.long(field)?;
        match usize::try_from(i) {
            Ok(i) if i < symbols => Ok(i),
            _ => Err(CodecError::Malformed {
                at: self.at(field),
                reason: format!("enum index {i} out of range 0..{symbols}"),
            }),
        }
    }

    /// An optional value of a `["null", T]` union: None for branch 0, `read` for branch 1.
    pub fn optional<T>(
        &mut self,
        field: &str,
        read: impl FnOnce(&mut Self) -> CodecResult<T>,
    ) -> CodecResult<Option<T>> {
        match self.long(field)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            i => Err(CodecError::Malformed {
                at: self.at(field),
                reason: format!("union index {i} out of range 0..2"),
            }),
        }
    }

    /// An array read block by block. A negative block count is followed by the block's byte
    /// size (which we do not need); a zero count ends the array. `min_item_bytes` bounds the
    /// item count by what the buffer can hold, so a hostile count cannot make us allocate.
    pub fn array<T>(
        &mut self,
        field: &str,
        min_item_bytes: usize,
        mut item: impl FnMut(&mut Self, usize) -> CodecResult<T>,
    ) -> CodecResult<Vec<T>> {
        let mut out = Vec::new();
        loop {
            let mut count = self.long(field)?;
            if count == 0 {
                return Ok(out);
            }
            if count < 0 {
                count = count.checked_neg().ok_or_else(|| CodecError::Malformed {
                    at: self.at(field),
                    reason: "array block count overflows".into(),
                })?;
                self.long(field)?; // block size in bytes
            }
            let count = count as u64;
            let fits = (self.remaining() / min_item_bytes.max(1)) as u64;
            if count > fits {
                return Err(CodecError::Truncated {
                    at: self.at(field),
                    needed: (count as usize).saturating_mul(min_item_bytes.max(1)),
                    available: self.remaining(),
                });
            }
            out.reserve(count as usize);
            for _ in 0..count {
                let i = out.len();
                out.push(item(self, i)?);
            }
        }
    }

    /// The whole buffer must be one record: anything left over means a schema mismatch.
    pub fn finish(&self) -> CodecResult<()> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes {
                at: self.at(""),
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_long(v: i64) -> (Vec<u8>, i64) {
        let mut w = Writer::default();
        w.long(v);
        let mut r = Reader::new(&w.buf, "t");
        let back = r.long("x").unwrap();
        r.finish().unwrap();
        (w.buf, back)
    }

    #[test]
    fn zigzag_matches_the_spec_table() {
        // Avro spec, "Binary Encoding": 0 -> 00, -1 -> 01, 1 -> 02, -2 -> 03, 2 -> 04, -64 -> 7f, 64 -> 80 01
        for (v, bytes) in [
            (0i64, vec![0x00u8]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (2, vec![0x04]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            assert_eq!(roundtrip_long(v), (bytes, v));
        }
    }

    #[test]
    fn extreme_longs_roundtrip_in_ten_bytes() {
        for v in [i64::MIN, i64::MAX, i64::MIN + 1, -1_000_000_000_000] {
            let (bytes, back) = roundtrip_long(v);
            assert_eq!(back, v);
            assert!(bytes.len() <= MAX_VARINT_BYTES);
        }
    }

    #[test]
    fn overlong_varint_is_malformed_not_a_panic() {
        let bytes = [0xffu8; 11];
        let e = Reader::new(&bytes, "t").long("x").unwrap_err();
        assert_eq!(e.code(), "MALFORMED");
    }

    #[test]
    fn hostile_array_count_is_rejected_before_allocating() {
        let mut w = Writer::default();
        w.long(i64::MAX);
        let e = Reader::new(&w.buf, "t")
            .array("values", 8, |r, _| r.double("values"))
            .unwrap_err();
        assert_eq!(e.code(), "TRUNCATED");
    }

    #[test]
    fn negative_block_count_carries_a_byte_size() {
        let mut w = Writer::default();
        w.long(-2);
        w.long(16);
        w.double(1.5);
        w.double(-2.5);
        w.long(1);
        w.double(3.0);
        w.long(0);
        let mut r = Reader::new(&w.buf, "t");
        assert_eq!(
            r.array("v", 8, |r, _| r.double("v")).unwrap(),
            vec![1.5, -2.5, 3.0]
        );
        r.finish().unwrap();
    }

    #[test]
    fn optional_values_are_a_union_index_then_the_value() {
        let mut w = Writer::default();
        w.optional(None::<i32>, |w, v| w.long(i64::from(v)));
        w.optional(Some(5), |w, v| w.long(i64::from(v)));
        assert_eq!(w.buf, [0x00, 0x02, 0x0a]);
        let mut r = Reader::new(&w.buf, "t");
        assert_eq!(r.optional("a", |r| r.int("a")).unwrap(), None);
        assert_eq!(r.optional("b", |r| r.int("b")).unwrap(), Some(5));
        r.finish().unwrap();
        let e = Reader::new(&[0x04], "t")
            .optional("c", |r| r.int("c"))
            .unwrap_err();
        assert_eq!((e.code(), e.location().field.as_str()), ("MALFORMED", "c"));
    }

    #[test]
    fn an_int_wider_than_32_bits_is_malformed() {
        let mut w = Writer::default();
        w.long(i64::from(i32::MAX) + 1);
        assert_eq!(
            Reader::new(&w.buf, "t").int("n").unwrap_err().code(),
            "MALFORMED"
        );
        let mut w = Writer::default();
        w.long(i64::from(i32::MIN));
        assert_eq!(Reader::new(&w.buf, "t").int("n").unwrap(), i32::MIN);
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let bytes = [0x04u8, 0xff, 0xfe];
        assert_eq!(
            Reader::new(&bytes, "t").str("symbol").unwrap_err().code(),
            "MALFORMED"
        );
    }
}
