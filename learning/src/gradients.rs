//! Packing a row's gradient, hessian and a count into one Paillier
//! plaintext, so the feature holder's homomorphic sums give the label
//! holder `(Σg, Σh, rows)` of a bin in one decryption.
//!
//! Each quantity is a fixed-point integer with [`FRACTION_BITS`] bits after
//! the point in its own slot of `slot_bits` bits: the gradient shifted by
//! its bound (so it is never negative), the hessian, and 1. A slot is wide
//! enough for the sum over `max_rows` rows, so sums never carry into the
//! next slot and the plaintext never wraps mod `n`. The gradient's offset
//! is removed after decryption with the count. Precision: 2⁻⁴⁰ per row
//! (about 10⁻¹²), far below what split finding resolves.

use crypto_bigint::{U2048, Word};

use crate::LearningError;
use crate::paillier::{PLAINTEXT_BITS, Plaintext};
use crate::split::BinSum;

/// Bits after the binary point.
pub const FRACTION_BITS: u32 = 40;
const SLOTS: u32 = 3;

/// The encoding, fixed per training run from the objective's bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientCodec {
    gradient_bound: f64,
    hessian_bound: f64,
    max_rows: u64,
    slot_bits: u32,
}

impl GradientCodec {
    /// A codec for gradients in `[-gradient_bound, gradient_bound]`,
    /// hessians in `[0, hessian_bound]` and sums over up to `max_rows`
    /// rows. Logistic loss: bounds 1 and ¼.
    pub fn new(gradient_bound: f64, hessian_bound: f64, max_rows: u64) -> Result<Self, LearningError> {
        let finite = |x: f64| x.is_finite() && x > 0.0 && x <= 1e6;
        if !finite(gradient_bound) || !finite(hessian_bound) {
            return Err(LearningError::BadParameter("gradient and hessian bounds must be in (0, 1e6]".into()));
        }
        // Bounds are at most 1e6 (checked above): the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let int_bits = |bound: f64| bits_for(bound.ceil() as u64);
        let value_bits = FRACTION_BITS + int_bits(2.0 * gradient_bound).max(int_bits(hessian_bound)).max(1);
        let slot_bits = value_bits + bits_for(max_rows);
        if slot_bits > 127 || SLOTS * slot_bits > PLAINTEXT_BITS {
            return Err(LearningError::BadParameter(format!("slots of {slot_bits} bits do not fit a plaintext")));
        }
        Ok(Self { gradient_bound, hessian_bound, max_rows, slot_bits })
    }

    /// The logistic-loss codec: `g = p − y ∈ [−1, 1]`, `h = p(1−p) ∈ [0, ¼]`.
    pub fn logistic(max_rows: u64) -> Result<Self, LearningError> {
        Self::new(1.0, 0.25, max_rows)
    }

    /// Most rows a sum may hold.
    pub fn max_rows(&self) -> u64 {
        self.max_rows
    }

    /// One row's plaintext.
    pub fn encode(&self, gradient: f64, hessian: f64) -> Result<Plaintext, LearningError> {
        let check = |what, value: f64, min: f64, max: f64| {
            if value.is_finite() && value >= min && value <= max {
                Ok(())
            } else {
                Err(LearningError::OutOfRange { what, min, max })
            }
        };
        check("gradient", gradient, -self.gradient_bound, self.gradient_bound)?;
        check("hessian", hessian, 0.0, self.hessian_bound)?;
        let scale = (1u64 << FRACTION_BITS) as f64;
        // Both are checked to lie in [0, 2·bound·2^40] above: the casts are exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (g, h) = (((gradient + self.gradient_bound) * scale).round() as u128, (hessian * scale).round() as u128);
        Ok(self.pack([g, h, 1]))
    }

    /// A decrypted sum: `(Σg, Σh, rows)`.
    pub fn decode(&self, sum: &Plaintext) -> Result<BinSum, LearningError> {
        Ok(self.decode_packed(sum, 1)?[0])
    }

    /// Bits one sum takes in a plaintext.
    pub fn sum_bits(&self) -> u32 {
        SLOTS * self.slot_bits
    }

    /// Sums one plaintext holds side by side (sum `i` shifted left by
    /// `i·sum_bits`): how the feature holder packs a histogram.
    pub fn sums_per_plaintext(&self) -> usize {
        (PLAINTEXT_BITS / self.sum_bits()) as usize
    }

    /// `count` sums packed side by side in one decrypted plaintext.
    pub fn decode_packed(&self, packed: &Plaintext, count: usize) -> Result<Vec<BinSum>, LearningError> {
        if count == 0 || count > self.sums_per_plaintext() {
            return Err(LearningError::Protocol(format!("{count} sums cannot share one plaintext")));
        }
        let words = packed.to_words();
        // Nothing may sit above the last sum: an overflow, or a plaintext
        // that is not a sum of encoded rows.
        let top = index(count) * self.sum_bits();
        let beyond = words.iter().zip((0u32..).step_by(64)).any(|(w, b)| {
            let keep_from = top.saturating_sub(b);
            keep_from < 64 && (w >> keep_from) != 0
        });
        if beyond {
            return Err(LearningError::BadCiphertext("the decrypted sum has bits beyond its slots".into()));
        }
        let mask = (1u128 << self.slot_bits) - 1;
        let scale = (1u64 << FRACTION_BITS) as f64;
        (0..index(count))
            .map(|i| {
                let at = |slot: u32| get_bits(&words, i * self.sum_bits() + slot * self.slot_bits) & mask;
                let (g, h, count) = (at(0), at(1), at(2));
                let count =
                    u64::try_from(count).ok().filter(|c| *c <= self.max_rows).ok_or(LearningError::TooManyRows {
                        rows: u64::try_from(count).unwrap_or(u64::MAX),
                        max: self.max_rows,
                    })?;
                Ok(BinSum { g: g as f64 / scale - self.gradient_bound * count as f64, h: h as f64 / scale, count })
            })
            .collect()
    }

    fn pack(&self, slots: [u128; SLOTS as usize]) -> Plaintext {
        let mut words = [0 as Word; U2048::LIMBS];
        for (i, slot) in (0..SLOTS).zip(slots) {
            put_bits(&mut words, i * self.slot_bits, slot);
        }
        U2048::from_words(words)
    }
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("at most a plaintext's worth of sums")
}

/// Bits to write `x`.
fn bits_for(x: u64) -> u32 {
    64 - x.leading_zeros()
}

fn put_bits(words: &mut [Word], at: u32, value: u128) {
    for bit in 0..128u32 {
        if (value >> bit) & 1 == 1 {
            let i = at + bit;
            words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }
}

fn get_bits(words: &[Word], at: u32) -> u128 {
    let mut out = 0u128;
    for bit in 0..128u32 {
        let i = at + bit;
        if let Some(w) = words.get((i / 64) as usize)
            && (w >> (i % 64)) & 1 == 1
        {
            out |= 1 << bit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paillier::tests::test_key;
    use proptest::prelude::*;
    use rand10::SeedableRng;

    #[test]
    fn a_sum_of_encrypted_rows_decodes_to_the_sums() {
        let key = test_key();
        let public = key.public();
        let codec = GradientCodec::logistic(1 << 24).unwrap();
        let rows = [(0.73, 0.197), (-1.0, 0.0), (1.0, 0.25), (-0.25, 0.1875), (0.0, 0.125)];
        let mut rng = rand10::rngs::StdRng::seed_from_u64(3);
        let mut sum = public.zero();
        for (g, h) in rows {
            let c = key.encrypt(&codec.encode(g, h).unwrap(), &mut rng).unwrap();
            sum = public.add(&sum, &public.prepare(&c));
        }
        let got = codec.decode(&key.decrypt(&public.finish(&sum))).unwrap();
        assert_eq!(got.count, 5);
        assert!((got.g - rows.iter().map(|r| r.0).sum::<f64>()).abs() < 1e-9, "{got:?}");
        assert!((got.h - rows.iter().map(|r| r.1).sum::<f64>()).abs() < 1e-9, "{got:?}");
        assert_eq!(codec.decode(&key.decrypt(&public.finish(&public.zero()))).unwrap(), BinSum::default());
    }

    #[test]
    fn bounds_are_enforced() {
        let codec = GradientCodec::logistic(1000).unwrap();
        assert!(matches!(codec.encode(1.5, 0.1), Err(LearningError::OutOfRange { what: "gradient", .. })));
        assert!(matches!(codec.encode(0.5, -0.1), Err(LearningError::OutOfRange { what: "hessian", .. })));
        let shown = codec.encode(1.234_567, 0.1).unwrap_err().to_string();
        assert!(!shown.contains("1.234567"), "the value is data and stays out of the message: {shown}");
        assert!(codec.encode(f64::NAN, 0.1).is_err());
        assert!(GradientCodec::logistic(u64::MAX).is_ok(), "a slot holds a sum over 2^64 rows");
        assert!(GradientCodec::new(0.0, 1.0, 10).is_err());
    }

    proptest! {
        #[test]
        fn plaintext_sums_decode_exactly(rows in proptest::collection::vec((-1.0f64..=1.0, 0.0f64..=0.25), 0..200)) {
            let codec = GradientCodec::logistic(1 << 20).unwrap();
            let mut sum = U2048::ZERO;
            for (g, h) in &rows {
                sum = sum.wrapping_add(&codec.encode(*g, *h).unwrap());
            }
            let got = codec.decode(&sum).unwrap();
            prop_assert_eq!(got.count, rows.len() as u64);
            prop_assert!((got.g - rows.iter().map(|r| r.0).sum::<f64>()).abs() < 1e-8);
            prop_assert!((got.h - rows.iter().map(|r| r.1).sum::<f64>()).abs() < 1e-8);
        }
    }
}
