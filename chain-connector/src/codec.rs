//! The canonical binary encoding of ledger records (version 1).
//!
//! One encoding, used for signing, hashing and storage on every backend:
//! integers little-endian and fixed-width; strings and byte strings as a
//! `u32` length then the bytes; lists as a `u32` count then the items;
//! options as a `0`/`1` byte then the value; digests as 32 raw bytes. There
//! is exactly one encoding of each value, so equal records hash equally.
//! The reader bounds every length before it allocates and refuses trailing
//! bytes.

use crate::LedgerError;

/// Longest string or byte string in a record.
pub const MAX_FIELD_LEN: usize = 4096;
/// Most items in a list field.
pub const MAX_LIST_LEN: usize = 1024;

/// Appends canonical encodings to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoding so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    /// A `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Fixed-size bytes (digests, keys, signatures).
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).expect("fields are far below 4 GiB"));
        self.fixed(v)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// A length-prefixed byte string beyond the field limit (a nested
    /// encoding; the reader states its own bound).
    pub fn bytes_unbounded(&mut self, v: &[u8]) -> &mut Self {
        self.bytes(v)
    }

    /// A counted list.
    pub fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) -> &mut Self {
        self.u32(u32::try_from(items.len()).expect("lists are bounded"));
        for item in items {
            each(self, item);
        }
        self
    }
}

/// Reads canonical encodings, bounding every length.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `bytes`, naming `what` in errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    fn err(&self, reason: impl Into<String>) -> LedgerError {
        LedgerError::Malformed { what: self.what, reason: reason.into() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LedgerError> {
        if self.bytes.len() < n {
            return Err(self.err(format!("needs {n} more bytes, {} left", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, LedgerError> {
        Ok(self.take(1)?[0])
    }

    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, LedgerError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, LedgerError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// Fixed-size bytes.
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], LedgerError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    /// A length-prefixed byte string of at most [`MAX_FIELD_LEN`] bytes.
    pub fn bytes(&mut self) -> Result<Vec<u8>, LedgerError> {
        self.bytes_bounded(MAX_FIELD_LEN)
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes_bounded(&mut self, max: usize) -> Result<Vec<u8>, LedgerError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.err(format!("a field of {len} bytes exceeds {max}")));
        }
        Ok(self.take(len)?.to_vec())
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<String, LedgerError> {
        String::from_utf8(self.bytes()?).map_err(|_| self.err("a string is not UTF-8"))
    }

    /// A counted list of at most [`MAX_LIST_LEN`] items.
    pub fn list<T>(
        &mut self,
        mut each: impl FnMut(&mut Self) -> Result<T, LedgerError>,
    ) -> Result<Vec<T>, LedgerError> {
        let count = self.u32()? as usize;
        if count > MAX_LIST_LEN {
            return Err(self.err(format!("a list of {count} items exceeds {MAX_LIST_LEN}")));
        }
        let mut items = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            items.push(each(self)?);
        }
        Ok(items)
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), LedgerError> {
        if self.bytes.is_empty() { Ok(()) } else { Err(self.err(format!("{} trailing bytes", self.bytes.len()))) }
    }
}
