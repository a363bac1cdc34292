//! Prometheus's XOR chunk encoding (the `XOR` chunk of `tsdb/chunkenc`), bit for bit, so head
//! chunks can be streamed to remote-read clients as `prometheus.Chunk` frames unchanged.
//!
//! Layout: a 2-byte big-endian sample count, then the first sample as a signed varint
//! timestamp and the 64 raw bits of its value, the second as an unsigned varint timestamp delta
//! and an XOR-encoded value, and every later one as a delta-of-delta timestamp in one of five
//! bit-width buckets (`0`, `10`+14, `110`+17, `1110`+20, `1111`+64) followed by the XOR of its
//! value with the previous one (Gorilla, VLDB 2015, §4.1.2).

/// The number of samples at which the head cuts a chunk, as Prometheus does.
pub const SAMPLES_PER_CHUNK: u16 = 120;

/// An appendable XOR chunk.
#[derive(Debug, Clone)]
pub struct XorChunk {
    bytes: Vec<u8>,
    /// Bits still free in the last byte (0..=7; 0 means the next bit starts a new byte).
    free: u8,
    count: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl Default for XorChunk {
    fn default() -> Self {
        Self {
            bytes: vec![0, 0],
            free: 0,
            count: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0xff,
            trailing: 0,
        }
    }
}

impl XorChunk {
    pub fn len(&self) -> u16 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded chunk, valid at any point between appends.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Heap bytes held by this chunk.
    pub fn allocated(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends a sample. Timestamps must be strictly increasing; the head guarantees it.
    pub fn append(&mut self, t: i64, v: f64) {
        let vbits = v.to_bits();
        match self.count {
            0 => {
                self.write_varint(t);
                self.write_bits(vbits, 64);
            }
            1 => {
                let delta = t.wrapping_sub(self.t) as u64;
                self.write_uvarint(delta);
                self.write_xor(vbits);
                self.t_delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.t) as u64;
                let dod = delta.wrapping_sub(self.t_delta) as i64;
                if dod == 0 {
                    self.write_bit(false);
                } else if bit_range(dod, 14) {
                    self.write_bits(0b10, 2);
                    self.write_bits(dod as u64, 14);
                } else if bit_range(dod, 17) {
                    self.write_bits(0b110, 3);
                    self.write_bits(dod as u64, 17);
                } else if bit_range(dod, 20) {
                    self.write_bits(0b1110, 4);
                    self.write_bits(dod as u64, 20);
                } else {
                    self.write_bits(0b1111, 4);
                    self.write_bits(dod as u64, 64);
                }
                self.write_xor(vbits);
                self.t_delta = delta;
            }
        }
        self.t = t;
        self.v = vbits;
        self.count += 1;
        self.bytes[..2].copy_from_slice(&self.count.to_be_bytes());
    }

    /// Shrinks the buffer once the chunk is full and will not grow again.
    pub fn into_frozen(self) -> Box<[u8]> {
        self.bytes.into_boxed_slice()
    }

    fn write_xor(&mut self, vbits: u64) {
        let delta = vbits ^ self.v;
        if delta == 0 {
            self.write_bit(false);
            return;
        }
        self.write_bit(true);
        // Leading zeros are clamped to 31 so they fit in 5 bits.
        let leading = (delta.leading_zeros() as u8).min(31);
        let trailing = delta.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.write_bit(false);
            let width = 64 - self.leading - self.trailing;
            self.write_bits(delta >> self.trailing, width);
            return;
        }
        self.leading = leading;
        self.trailing = trailing;
        self.write_bit(true);
        self.write_bits(u64::from(leading), 5);
        let sig = 64 - leading - trailing;
        // 64 significant bits are written as 0 in the 6-bit field.
        self.write_bits(u64::from(sig), 6);
        self.write_bits(delta >> trailing, sig);
    }

    fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        if bit {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 1 << (self.free - 1);
        }
        self.free -= 1;
    }

    fn write_bits(&mut self, value: u64, width: u8) {
        let mut left = width;
        while left > 0 {
            if self.free == 0 {
                self.bytes.push(0);
                self.free = 8;
            }
            let take = left.min(self.free);
            let shift = left - take;
            let part = ((value >> shift) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= part << (self.free - take);
            self.free -= take;
            left -= take;
        }
    }

    fn write_uvarint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.write_bits((x as u8 | 0x80).into(), 8);
            x >>= 7;
        }
        self.write_bits(x, 8);
    }

    fn write_varint(&mut self, x: i64) {
        self.write_uvarint(((x << 1) ^ (x >> 63)) as u64);
    }
}

/// Whether `x` fits the delta-of-delta bucket of `nbits` bits (Prometheus's `bitRange`).
fn bit_range(x: i64, nbits: u8) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

/// A chunk that could not be decoded: truncated or not an XOR chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt XOR chunk: {0}")]
pub struct CorruptChunk(&'static str);

/// Iterates the samples of an encoded XOR chunk.
#[derive(Debug)]
pub struct XorIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    bit: u8,
    total: u16,
    read: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
}

impl<'a> XorIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, CorruptChunk> {
        if bytes.len() < 2 {
            return Err(CorruptChunk("shorter than its header"));
        }
        Ok(Self {
            bytes,
            pos: 2,
            bit: 0,
            total: u16::from_be_bytes([bytes[0], bytes[1]]),
            read: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
        })
    }

    fn read_bit(&mut self) -> Result<bool, CorruptChunk> {
        let byte = *self
            .bytes
            .get(self.pos)
            .ok_or(CorruptChunk("ends before its last sample"))?;
        let bit = byte & (0x80 >> self.bit) != 0;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.pos += 1;
        }
        Ok(bit)
    }

    fn read_bits(&mut self, width: u8) -> Result<u64, CorruptChunk> {
        let mut out = 0u64;
        let mut left = width;
        while left > 0 {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or(CorruptChunk("ends before its last sample"))?;
            let avail = 8 - self.bit;
            let take = left.min(avail);
            let part = (byte >> (avail - take)) & ((1u16 << take) - 1) as u8;
            out = (out << take) | u64::from(part);
            self.bit += take;
            if self.bit == 8 {
                self.bit = 0;
                self.pos += 1;
            }
            left -= take;
        }
        Ok(out)
    }

    fn read_uvarint(&mut self) -> Result<u64, CorruptChunk> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.read_bits(8)?;
            x |= (b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(CorruptChunk("varint overflows 64 bits"))
    }

    fn read_xor(&mut self) -> Result<(), CorruptChunk> {
        if !self.read_bit()? {
            return Ok(());
        }
        if self.read_bit()? {
            self.leading = self.read_bits(5)? as u8;
            let mut sig = self.read_bits(6)? as u8;
            if sig == 0 {
                sig = 64;
            }
            self.trailing = 64 - self.leading - sig;
        }
        let sig = 64 - self.leading - self.trailing;
        let bits = self.read_bits(sig)?;
        self.v ^= bits << self.trailing;
        Ok(())
    }

    fn next_sample(&mut self) -> Result<(i64, f64), CorruptChunk> {
        match self.read {
            0 => {
                let z = self.read_uvarint()?;
                self.t = ((z >> 1) as i64) ^ -((z & 1) as i64);
                self.v = self.read_bits(64)?;
            }
            1 => {
                self.t_delta = self.read_uvarint()?;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_xor()?;
            }
            _ => {
                let mut prefix = 0u8;
                for _ in 0..4 {
                    if !self.read_bit()? {
                        break;
                    }
                    prefix += 1;
                }
                let dod: i64 = match prefix {
                    0 => 0,
                    4 => self.read_bits(64)? as i64,
                    n => {
                        let width = [14u8, 17, 20][usize::from(n - 1)];
                        let raw = self.read_bits(width)? as i64;
                        if raw > 1 << (width - 1) {
                            raw - (1 << width)
                        } else {
                            raw
                        }
                    }
                };
                self.t_delta = (self.t_delta as i64).wrapping_add(dod) as u64;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_xor()?;
            }
        }
        self.read += 1;
        Ok((self.t, f64::from_bits(self.v)))
    }
}

impl Iterator for XorIter<'_> {
    type Item = Result<(i64, f64), CorruptChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.read >= self.total {
            return None;
        }
        let r = self.next_sample();
        if r.is_err() {
            self.read = self.total;
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(samples: &[(i64, f64)]) -> Vec<(i64, f64)> {
        let mut c = XorChunk::default();
        for &(t, v) in samples {
            c.append(t, v);
        }
        XorIter::new(c.bytes())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    #[test]
    fn regular_scrape_compresses_to_about_a_byte_per_sample() {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 15_000, (i / 4) as f64))
            .collect();
        let mut c = XorChunk::default();
        for &(t, v) in &samples {
            c.append(t, v);
        }
        assert!(c.bytes().len() < 120 * 2, "{} bytes", c.bytes().len());
        assert_eq!(roundtrip(&samples), samples);
    }

    #[test]
    fn truncated_chunk_is_an_error_not_a_panic() {
        let mut c = XorChunk::default();
        for i in 0..50 {
            c.append(i * 1000 + (i % 3), i as f64 * 1.5);
        }
        let bytes = &c.bytes()[..c.bytes().len() / 2];
        let got: Vec<_> = XorIter::new(bytes).unwrap().collect();
        assert!(got.last().unwrap().is_err());
    }

    #[test]
    fn encodes_the_documented_layout() {
        // Worked by hand from the layout above: header 3, varint(1000) = d0 0f, the bits of
        // 1.0, uvarint(1000) = e8 07, then `0` (same value), `0` (same delta), and
        // 1.0 ^ 2.5 = 0x7ff4 << 48 as `11`, leading 1 (5 bits), 13 significant bits (6 bits)
        // and the bits 0x1ffd.
        let mut c = XorChunk::default();
        c.append(1000, 1.0);
        c.append(2000, 1.0);
        c.append(3000, 2.5);
        assert_eq!(
            c.bytes(),
            &[
                0x00, 0x03, 0xd0, 0x0f, 0x3f, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe8, 0x07,
                0x30, 0x9b, 0xff, 0xd0
            ][..]
        );
    }

    proptest! {
        #[test]
        fn any_increasing_series_roundtrips(
            start in -1_000_000_000_000i64..2_000_000_000_000,
            steps in proptest::collection::vec((1i64..10_000_000, any::<f64>()), 1..200),
        ) {
            let mut t = start;
            let samples: Vec<(i64, f64)> = steps.iter().map(|&(d, v)| { t += d; (t, v) }).collect();
            let got = roundtrip(&samples);
            prop_assert_eq!(got.len(), samples.len());
            for (a, b) in got.iter().zip(&samples) {
                prop_assert_eq!(a.0, b.0);
                prop_assert_eq!(a.1.to_bits(), b.1.to_bits());
            }
        }
    }
}
