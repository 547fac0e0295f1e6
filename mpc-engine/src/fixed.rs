//! Fixed-point encoding of statistics, and their embedding in the
//! Ristretto scalar field for sharing.
//!
//! A value x is carried as the integer x̂ = round(x·10^p) for a declared
//! precision p; sums of values and of products stay exact integers (i128).
//! For secret sharing an integer v is embedded as v mod ℓ (ℓ the group
//! order, ≈ 2^252): negative values wrap to the top half, and a pooled
//! value decodes back as long as |v| < ℓ/2 — far beyond any i128.

use curve25519_dalek::scalar::Scalar;

use crate::MpcError;

/// Largest magnitude an encoded value may have: f64 is exact below 2^53.
pub const MAX_ENCODED: f64 = 9_007_199_254_740_992.0;

/// The encoding of a query's precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedPoint {
    precision: u32,
    scale: i64,
}

impl FixedPoint {
    /// Precision `p` decimal digits (at most [`crate::query::MAX_PRECISION`]).
    pub fn new(precision: u32) -> Result<Self, MpcError> {
        if precision > crate::query::MAX_PRECISION {
            return Err(MpcError::Query(format!("precision {precision} is above the maximum")));
        }
        Ok(Self { precision, scale: 10i64.pow(precision) })
    }

    /// 10^precision.
    pub fn scale(&self) -> i64 {
        self.scale
    }

    /// Decimal digits kept.
    pub fn precision(&self) -> u32 {
        self.precision
    }

    /// x̂ = round(x·10^p), refusing values that cannot be encoded exactly.
    pub fn encode(&self, x: f64, column: &str) -> Result<i64, MpcError> {
        let scaled = (x * self.scale as f64).round();
        if !scaled.is_finite() || scaled.abs() >= MAX_ENCODED {
            return Err(MpcError::OutOfRange { column: column.into() });
        }
        #[allow(clippy::cast_possible_truncation)]
        Ok(scaled as i64)
    }

    /// A value at scale 10^(p·power) back as f64.
    pub fn decode(&self, v: i128, power: u32) -> f64 {
        v as f64 / (self.scale as f64).powi(i32::try_from(power).unwrap_or(i32::MAX))
    }
}

/// An integer as a scalar (negative values wrap modulo the group order).
pub fn to_scalar(v: i128) -> Scalar {
    let magnitude = Scalar::from(v.unsigned_abs());
    if v < 0 { -magnitude } else { magnitude }
}

/// A scalar back as an integer, or `None` when it is not the embedding of
/// an i128 (a share, or a corrupted sum).
pub fn from_scalar(s: &Scalar) -> Option<i128> {
    let (negative, magnitude) = {
        let bytes = s.to_bytes();
        if bytes[16..].iter().all(|b| *b == 0) {
            (false, bytes)
        } else {
            let neg = (-s).to_bytes();
            if neg[16..].iter().any(|b| *b != 0) {
                return None;
            }
            (true, neg)
        }
    };
    let mut low = [0u8; 16];
    low.copy_from_slice(&magnitude[..16]);
    let m = u128::from_le_bytes(low);
    if negative {
        if m > i128::MAX as u128 + 1 {
            return None;
        }
        Some((m as i128).wrapping_neg())
    } else {
        i128::try_from(m).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_through_scalars() {
        for v in [0i128, 1, -1, 42, -42, i128::MAX, i128::MIN + 1, 1 << 100, -(1 << 100)] {
            assert_eq!(from_scalar(&to_scalar(v)), Some(v), "{v}");
        }
        assert_eq!(from_scalar(&(to_scalar(5) + to_scalar(-7))), Some(-2));
        assert_eq!(from_scalar(&Scalar::from_bytes_mod_order([0x55; 32])), None);
    }

    #[test]
    fn encoding_is_exact_and_bounded() {
        let f = FixedPoint::new(2).unwrap();
        assert_eq!(f.encode(1.234, "x").unwrap(), 123);
        assert_eq!(f.encode(-2.5, "x").unwrap(), -250);
        assert!(f.encode(1e15, "x").is_err());
        assert!(f.encode(f64::NAN, "x").is_err());
        assert!((f.decode(12_345, 1) - 123.45).abs() < 1e-12);
    }
}
