//! GF(2^128), the field of RR22's VOLE and OKVS values.
//!
//! Elements are 128-bit strings, addition is XOR, and multiplication is
//! POLYVAL's `dot(a, b) = a·b·x⁻¹²⁸` in GF(2)[x]/(x¹²⁸ + x¹²⁷ + x¹²⁶ +
//! x¹²¹ + 1) (RFC 8452), computed with carry-less multiplication by the
//! `polyval` crate where the CPU has it. `dot` is a field multiplication:
//! `a ↦ a·x⁻¹²⁸` maps it onto the polynomial product, so everything the
//! protocol needs — bilinearity over GF(2), no zero divisors, a uniform `Δ`
//! hiding `a·Δ` for `a ≠ 0` — holds for it.

use polyval::Polyval;
use polyval::universal_hash::{KeyInit, Reset, UniversalHash};

/// An element of GF(2^128) (little-endian bytes ⇄ `u128`).
pub type Gf = u128;

/// Multiplies many elements by one fixed element.
pub struct Multiplier {
    by: Polyval,
}

impl Multiplier {
    /// Multiplication by `by`.
    pub fn new(by: Gf) -> Self {
        Self { by: Polyval::new(&by.to_le_bytes().into()) }
    }

    /// `a · by`.
    pub fn mul(&mut self, a: Gf) -> Gf {
        self.by.update(&[a.to_le_bytes().into()]);
        let product = u128::from_le_bytes(self.by.finalize_reset().into());
        self.by.reset();
        product
    }
}

impl std::fmt::Debug for Multiplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Multiplier(..)")
    }
}

impl Clone for Multiplier {
    fn clone(&self) -> Self {
        Self { by: self.by.clone() }
    }
}

/// `a · b`.
pub fn mul(a: Gf, b: Gf) -> Gf {
    Multiplier::new(b).mul(a)
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    use super::*;

    fn random(rng: &mut impl RngCore) -> Gf {
        u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64)
    }

    #[test]
    fn multiplication_is_a_commutative_bilinear_product_without_zero_divisors() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for _ in 0..200 {
            let (a, b, c) = (random(&mut rng), random(&mut rng), random(&mut rng));
            assert_eq!(mul(a, b), mul(b, a));
            assert_eq!(mul(a ^ b, c), mul(a, c) ^ mul(b, c));
            assert_eq!(mul(mul(a, b), c), mul(a, mul(b, c)));
            assert_ne!(mul(a | 1, b | 1), 0);
        }
        let mut by = Multiplier::new(0x1234);
        assert_eq!(by.mul(0), 0);
        assert_eq!(by.mul(5), mul(5, 0x1234));
        assert_eq!(by.mul(5), mul(5, 0x1234), "the multiplier resets between products");
    }

    #[test]
    fn known_answer_from_rfc_8452() {
        // RFC 8452 Appendix A: POLYVAL(H, X_1) = dot(X_1, H).
        let h = u128::from_le_bytes(hex::decode("25629347589242761d31f826ba4b757b").unwrap().try_into().unwrap());
        let x = u128::from_le_bytes(hex::decode("4f4f95668c83dfb6401762bb2d01a262").unwrap().try_into().unwrap());
        let expected = hex::decode("cedac64537ff50989c16011551086d77").unwrap();
        assert_eq!(mul(x, h).to_le_bytes().to_vec(), expected);
    }
}
