//! A band OKVS (oblivious key-value store; Bienstock–Patranabis–Yeo–Yung,
//! USENIX Security 2023): each key is a row of a sparse GF(2) matrix whose
//! ones lie in a 128-column band at a pseudorandom start, and encoding
//! solves `M·P = v` for the vector `P` of `m` field elements; decoding one
//! key is the XOR of `P` over its band's ones.
//!
//! **Encoding** sorts the rows by start and eliminates in that order: a
//! row's leading one is its pivot column unless another row holds that
//! column already, in which case that row is added — both bands start at
//! the pivot, so the sum still fits 128 columns, starting further right.
//! Back substitution from the last column fills `P`; columns without a
//! pivot get random values. Identical keys give identical rows and are
//! dropped; two different keys whose rows become dependent make encoding
//! fail — with `m = 1.1·n + 128` and width 128, rarely (BPSY23's fits at
//! ε = 0.1 give about 2^-25 per 2^14 keys; the protocol then draws a fresh
//! seed before it sends anything that depends on it). Expected work is
//! `O(n·w)` bit operations, and both passes walk memory in order.

use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use zeroize::Zeroize;

use super::field::Gf;

/// Columns of a band.
pub const BAND: usize = 128;

/// A key's row: its band of ones, starting at `start` (bit 0 of `band` is
/// column `start`, and always set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// First column of the band.
    pub start: u32,
    /// The band's ones.
    pub band: u128,
}

/// Columns of the store for `n` keys: `1.1·n + 128`, a multiple of 64.
pub fn columns(n: u64) -> u64 {
    (n + n.div_ceil(10) + BAND as u64).div_ceil(64) * 64
}

/// The row of a key from two pseudorandom words: the start is `⌊x·(m −
/// 128 + 1) / 2⁶⁴⌋`, the band `band | 1`.
pub fn row(columns: u64, start_word: u64, band: u128) -> Row {
    let starts = u128::from(columns - BAND as u64 + 1);
    let start = ((u128::from(start_word) * starts) >> 64) as u32;
    Row { start, band: band | 1 }
}

/// `Σ P[j]` over the ones of `row`.
pub fn decode(store: &[Gf], row: Row) -> Gf {
    let window = &store[row.start as usize..row.start as usize + BAND];
    let mut band = row.band;
    let mut sum = 0;
    while band != 0 {
        sum ^= window[band.trailing_zeros() as usize];
        band &= band - 1;
    }
    sum
}

/// `f(i, Decode(store, rows[i]))` for every row, on all cores, visiting the
/// rows in order of their start so that neighbouring decodes share cache
/// lines: the store is read about once, not 2 KiB per key.
pub fn decode_all<T: Send + Copy + Default>(store: &[Gf], rows: &[Row], f: impl Fn(usize, Gf) -> T + Sync) -> Vec<T> {
    let mut by_start: Vec<u64> =
        rows.iter().enumerate().map(|(i, row)| (u64::from(row.start) << 32) | i as u64).collect();
    by_start.par_sort_unstable();
    let found: Vec<(u32, T)> = by_start
        .par_iter()
        .map(|&key| {
            let i = key as u32 as usize;
            (i as u32, f(i, decode(store, rows[i])))
        })
        .collect();
    let mut out = vec![T::default(); rows.len()];
    for (i, value) in found {
        out[i as usize] = value;
    }
    out
}

/// Two different keys with dependent rows: encoding needs a fresh seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependent;

/// Solves for a store of `columns` elements that decodes each row to its
/// value.
pub fn encode(columns: u64, rows: &[(Row, Gf)], rng: &mut (impl RngCore + CryptoRng)) -> Result<Vec<Gf>, Dependent> {
    const NONE: u32 = u32::MAX;
    let columns = columns as usize;
    // Rows in order of their start, gathered once so elimination walks
    // memory in order.
    let mut order: Vec<u64> =
        rows.iter().enumerate().map(|(i, (row, _))| (u64::from(row.start) << 32) | i as u64).collect();
    order.par_sort_unstable();
    let sorted: Vec<(Row, Gf)> = order.par_iter().map(|&key| rows[key as u32 as usize]).collect();
    drop(order);
    // The reduced pivot rows, by pivot column.
    let mut pivot_of = vec![NONE; columns];
    let mut pivots: Vec<(u128, Gf)> = Vec::with_capacity(rows.len());
    for &(Row { start, mut band }, mut value) in &sorted {
        let mut column = start as usize;
        loop {
            if band == 0 {
                if value == 0 {
                    break; // the same key again
                }
                return Err(Dependent);
            }
            let shift = band.trailing_zeros();
            column += shift as usize;
            band >>= shift;
            match pivot_of[column] {
                NONE => {
                    pivot_of[column] = pivots.len() as u32;
                    pivots.push((band, value));
                    break;
                }
                p => {
                    let (pivot_band, pivot_value) = pivots[p as usize];
                    band ^= pivot_band;
                    value ^= pivot_value;
                }
            }
        }
    }
    let mut sorted = sorted;
    for (_, value) in &mut sorted {
        value.zeroize();
    }
    let mut store = vec![0u128; columns + BAND];
    for column in (0..columns).rev() {
        store[column] = match pivot_of[column] {
            NONE => u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64),
            p => {
                let (band, value) = pivots[p as usize];
                let mut sum = value;
                let mut rest = band & !1;
                while rest != 0 {
                    sum ^= store[column + rest.trailing_zeros() as usize];
                    rest &= rest - 1;
                }
                sum
            }
        };
    }
    store.truncate(columns);
    Ok(store)
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn random_rows(n: usize, rng: &mut ChaCha20Rng) -> (u64, Vec<(Row, Gf)>) {
        let m = columns(n as u64);
        let mut word = || u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64);
        let rows = (0..n).map(|_| (row(m, word() as u64, word()), word())).collect();
        (m, rows)
    }

    #[test]
    fn every_key_decodes_to_its_value() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        for n in [0, 1, 2, 100, 5_000, 60_000] {
            let (m, mut rows) = random_rows(n, &mut rng);
            if n > 2 {
                rows.push(rows[1]); // a duplicate key
            }
            let store = encode(m, &rows, &mut rng).expect("encodes");
            assert_eq!(store.len() as u64, m);
            for (row, value) in &rows {
                assert!(row.start as u64 + BAND as u64 <= m);
                assert_eq!(decode(&store, *row), *value);
            }
        }
    }

    #[test]
    fn a_key_outside_decodes_to_something_else() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (m, rows) = random_rows(1000, &mut rng);
        let store = encode(m, &rows, &mut rng).unwrap();
        let (_, others) = random_rows(1000, &mut rng);
        let hits = others.iter().filter(|(row, value)| decode(&store, *row) == *value).count();
        assert_eq!(hits, 0);
    }

    #[test]
    fn two_keys_with_one_row_and_different_values_are_dependent() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let row = row(256, 5, 0b1011);
        assert_eq!(encode(256, &[(row, 1), (row, 2)], &mut rng), Err(Dependent));
    }
}
