//! Eight X25519 ladders side by side with AVX-512 IFMA.
//!
//! ## Field arithmetic
//!
//! An element of GF(2^255 − 19) is five limbs in radix 2^52,
//! `v = Σ lᵢ·2^(52i)`, one element per 64-bit lane of five `__m512i`
//! registers. `vpmadd52luq`/`vpmadd52huq` add the low and high 52 bits of
//! a 52×52-bit product to a 64-bit accumulator and **ignore input bits above
//! 52**, so every multiplication input must have limbs below 2^52.
//! Products return *reduced* elements: limbs 0–3 below 2^52, limb 4 below
//! 2^47 + 2^8, so `v < 2^255 + 2^216`. Sums and differences of reduced
//! elements are only carried, not folded: limbs 0–3 below 2^52, limb 4
//! below 2^49 (*loose*) — fit for multiplication; the ladder only ever adds
//! and subtracts reduced elements.
//!
//! * Multiplication forms ten 52-bit columns (25 low and 25 high halves;
//!   squaring needs 15 of each), normalises columns 5–9 below 2^52 and
//!   folds them down with `2^260 ≡ 608 (mod p)`, folds limb 4's bits above
//!   2^255 with `2^255 ≡ 19`, and ends with one carry chain.
//! * Subtraction adds `2p` written with limbs no smaller than any reduced
//!   limb (`2^53 − 38, 2^53 − 2, 2^53 − 2, 2^53 − 2, 2^48 − 2`), so no lane
//!   goes negative; sums and differences then take one carry chain.
//!
//! ## Ladder
//!
//! RFC 7748 §5's Montgomery ladder over all 255 bits with `a24 = 121665`;
//! the swap bit is the same in every lane, so each conditional swap is one
//! mask blend. The affine result takes an inversion by Fermat's little
//! theorem (254 squarings, 11 multiplications); zero inverts to zero, so a
//! small-order input yields the all-zero output, as RFC 7748 specifies.
//! Final freezing and byte encoding run lane by lane in plain integer code.
use std::arch::x86_64::{
    __m256i, __m512i, _mm256_extract_epi64, _mm512_add_epi64, _mm512_and_si512, _mm512_extracti64x4_epi64,
    _mm512_madd52hi_epu64, _mm512_madd52lo_epu64, _mm512_mask_blend_epi64, _mm512_set_epi64, _mm512_set1_epi64,
    _mm512_setzero_si512, _mm512_slli_epi64, _mm512_srli_epi64, _mm512_sub_epi64,
};

use crate::{LEN, SecretScalar};

/// Ladders per call.
pub const LANES: usize = 8;

const MASK52: u64 = (1 << 52) - 1;
const MASK47: u64 = (1 << 47) - 1;

/// Eight field elements, one per lane.
#[derive(Clone, Copy)]
struct Fe([__m512i; 5]);

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn splat(x: u64) -> __m512i {
    _mm512_set1_epi64(x.cast_signed())
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn lo(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    _mm512_madd52lo_epu64(acc, a, b)
}

#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn hi(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    _mm512_madd52hi_epu64(acc, a, b)
}

/// Folds limb 4's bits above 2^255, plus `top`, a count of 2^260, into
/// limb 0 (`2^255 ≡ 19`, `2^260 ≡ 19·32`) and runs one carry chain. Input
/// limbs below 2^60, `top` below 2^16; output reduced.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn fold_and_carry(mut z: [__m512i; 5], top: __m512i) -> Fe {
    let over = _mm512_add_epi64(_mm512_srli_epi64::<47>(z[4]), _mm512_slli_epi64::<5>(top));
    z[4] = _mm512_and_si512(z[4], splat(MASK47));
    z[0] = lo(z[0], over, splat(19));
    carry(z)
}

/// One carry chain: limbs below 2^60 in, limbs 0–3 below 2^52 out, limb 4
/// keeping the carries (the caller bounds it).
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn carry(mut z: [__m512i; 5]) -> Fe {
    let m52 = splat(MASK52);
    for i in 0..4 {
        let carry = _mm512_srli_epi64::<52>(z[i]);
        z[i] = _mm512_and_si512(z[i], m52);
        z[i + 1] = _mm512_add_epi64(z[i + 1], carry);
    }
    Fe(z)
}

/// Reduces ten product columns (each below 2^57) to a reduced element.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn reduce_columns(z: [__m512i; 10]) -> Fe {
    // Column k ≥ 5 weighs 2^(52(k−5))·2^260 ≡ 2^(52(k−5))·608. Its low 52
    // bits fold into columns k−5 (low half) and k−4 (high half); its bits
    // above 52 (below 2^5) weigh 2^(52(k−4))·2^260 and fold into column
    // k−4. No carry runs between the high columns, so the folds are
    // independent. Inputs' limb 4 is below 2^49: column 9 is below 2^47
    // and needs no split; its high fold `top` (weight 2^260) is below 2^5.
    let (m52, c608) = (splat(MASK52), splat(608));
    let mut low = [z[0], z[1], z[2], z[3], z[4]];
    for k in 5..9 {
        let (bits, over) = (_mm512_and_si512(z[k], m52), _mm512_srli_epi64::<52>(z[k]));
        low[k - 5] = lo(low[k - 5], bits, c608);
        low[k - 4] = hi(low[k - 4], bits, c608);
        low[k - 4] = lo(low[k - 4], over, c608);
    }
    low[4] = lo(low[4], z[9], c608);
    let top = hi(_mm512_setzero_si512(), z[9], c608);
    fold_and_carry(low, top)
}

impl Fe {
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn splat_small(x: u64) -> Fe {
        let zero = _mm512_setzero_si512();
        Fe([splat(x), zero, zero, zero, zero])
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn add(&self, other: &Fe) -> Fe {
        // Reduced inputs: limb 4 below 2^49 before the carries.
        carry(std::array::from_fn(|i| _mm512_add_epi64(self.0[i], other.0[i])))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn sub(&self, other: &Fe) -> Fe {
        const TWO_P: [u64; 5] = [(1 << 53) - 38, (1 << 53) - 2, (1 << 53) - 2, (1 << 53) - 2, (1 << 48) - 2];
        // Reduced inputs: limb 4 below 2^47 + 2^8 + 2^48 before the carries.
        carry(std::array::from_fn(|i| _mm512_sub_epi64(_mm512_add_epi64(self.0[i], splat(TWO_P[i])), other.0[i])))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn mul(&self, other: &Fe) -> Fe {
        let (a, b) = (&self.0, &other.0);
        let mut z = [_mm512_setzero_si512(); 10];
        for i in 0..5 {
            for j in 0..5 {
                z[i + j] = lo(z[i + j], a[i], b[j]);
                z[i + j + 1] = hi(z[i + j + 1], a[i], b[j]);
            }
        }
        reduce_columns(z)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn square(&self) -> Fe {
        let a = &self.0;
        let mut cross = [_mm512_setzero_si512(); 10];
        for i in 0..5 {
            for j in i + 1..5 {
                cross[i + j] = lo(cross[i + j], a[i], a[j]);
                cross[i + j + 1] = hi(cross[i + j + 1], a[i], a[j]);
            }
        }
        let mut z: [__m512i; 10] = std::array::from_fn(|k| _mm512_slli_epi64::<1>(cross[k]));
        for i in 0..5 {
            z[2 * i] = lo(z[2 * i], a[i], a[i]);
            z[2 * i + 1] = hi(z[2 * i + 1], a[i], a[i]);
        }
        reduce_columns(z)
    }

    /// `self^(2^n)`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn square_n(&self, n: u32) -> Fe {
        let mut x = *self;
        for _ in 0..n {
            x = x.square();
        }
        x
    }

    /// `self · 121665` (the ladder's `a24`): six columns, the sixth tiny.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn mul_a24(&self) -> Fe {
        let a24 = splat(121_665);
        let zero = _mm512_setzero_si512();
        let mut z = [zero; 5];
        let mut top = zero;
        for i in 0..5 {
            z[i] = lo(z[i], self.0[i], a24);
            if i < 4 {
                z[i + 1] = hi(z[i + 1], self.0[i], a24);
            } else {
                // Column 5 weighs 2^260: limb 4 is below 2^49, so this
                // high half is below 2^14 and joins the fold as `top`.
                top = hi(top, self.0[i], a24);
            }
        }
        fold_and_carry(z, top)
    }

    /// `self^(p − 2)`, the inverse (zero for zero).
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn invert(&self) -> Fe {
        let z = self;
        let z2 = z.square();
        let z9 = z2.square_n(2).mul(z);
        let z11 = z9.mul(&z2);
        let z_5_0 = z11.square().mul(&z9); // z^(2^5 − 1)
        let z_10_0 = z_5_0.square_n(5).mul(&z_5_0);
        let z_20_0 = z_10_0.square_n(10).mul(&z_10_0);
        let z_40_0 = z_20_0.square_n(20).mul(&z_20_0);
        let z_50_0 = z_40_0.square_n(10).mul(&z_10_0);
        let z_100_0 = z_50_0.square_n(50).mul(&z_50_0);
        let z_200_0 = z_100_0.square_n(100).mul(&z_100_0);
        let z_250_0 = z_200_0.square_n(50).mul(&z_50_0);
        z_250_0.square_n(5).mul(&z11) // z^(2^255 − 21) = z^(p − 2)
    }

    /// Where `swap` is set, exchanges `a` and `b` (the same in every lane).
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn cswap(swap: u8, a: &mut Fe, b: &mut Fe) {
        let mask = 0u8.wrapping_sub(swap);
        for i in 0..5 {
            let (x, y) = (a.0[i], b.0[i]);
            a.0[i] = _mm512_mask_blend_epi64(mask, x, y);
            b.0[i] = _mm512_mask_blend_epi64(mask, y, x);
        }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    fn from_lanes(lanes: &[[u64; 5]; LANES]) -> Fe {
        Fe(std::array::from_fn(|i| {
            let l = |lane: usize| lanes[lane][i].cast_signed();
            _mm512_set_epi64(l(7), l(6), l(5), l(4), l(3), l(2), l(1), l(0))
        }))
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    fn to_lanes(self) -> [[u64; 5]; LANES] {
        let mut lanes = [[0u64; 5]; LANES];
        for (i, limb) in self.0.iter().enumerate() {
            let halves: [__m256i; 2] = [_mm512_extracti64x4_epi64::<0>(*limb), _mm512_extracti64x4_epi64::<1>(*limb)];
            for (h, half) in halves.iter().enumerate() {
                lanes[4 * h][i] = _mm256_extract_epi64::<0>(*half).cast_unsigned();
                lanes[4 * h + 1][i] = _mm256_extract_epi64::<1>(*half).cast_unsigned();
                lanes[4 * h + 2][i] = _mm256_extract_epi64::<2>(*half).cast_unsigned();
                lanes[4 * h + 3][i] = _mm256_extract_epi64::<3>(*half).cast_unsigned();
            }
        }
        lanes
    }
}

/// `X25519(k, uᵢ)` for eight u-coordinates.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 IFMA.
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn ladder8(scalar: &SecretScalar, us: &[[u8; LEN]; LANES]) -> [[u8; LEN]; LANES] {
    let x1 = Fe::from_lanes(&std::array::from_fn(|lane| unpack(&us[lane])));
    let mut x2 = Fe::splat_small(1);
    let mut z2 = Fe::splat_small(0);
    let mut x3 = x1;
    let mut z3 = Fe::splat_small(1);
    let mut swap = 0u8;
    for t in (0..255).rev() {
        let bit = scalar.bit(t);
        swap ^= bit;
        Fe::cswap(swap, &mut x2, &mut x3);
        Fe::cswap(swap, &mut z2, &mut z3);
        swap = bit;
        let a = x2.add(&z2);
        let aa = a.square();
        let b = x2.sub(&z2);
        let bb = b.square();
        let e = aa.sub(&bb);
        let c = x3.add(&z3);
        let d = x3.sub(&z3);
        let da = d.mul(&a);
        let cb = c.mul(&b);
        x3 = da.add(&cb).square();
        z3 = x1.mul(&da.sub(&cb).square());
        x2 = aa.mul(&bb);
        z2 = e.mul(&aa.add(&e.mul_a24()));
    }
    Fe::cswap(swap, &mut x2, &mut x3);
    Fe::cswap(swap, &mut z2, &mut z3);
    let lanes = x2.mul(&z2.invert()).to_lanes();
    std::array::from_fn(|lane| pack(lanes[lane]))
}

/// A u-coordinate's 32 bytes as five 52-bit limbs, bit 255 ignored
/// (RFC 7748 §5). Non-canonical values (`p ≤ u < 2^255`) are accepted and
/// act as `u mod p`.
fn unpack(bytes: &[u8; LEN]) -> [u64; 5] {
    let w: [u64; 4] = std::array::from_fn(|i| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes")));
    [
        w[0] & MASK52,
        ((w[0] >> 52) | (w[1] << 12)) & MASK52,
        ((w[1] >> 40) | (w[2] << 24)) & MASK52,
        ((w[2] >> 28) | (w[3] << 36)) & MASK52,
        (w[3] >> 16) & MASK47,
    ]
}

/// A reduced element, frozen to its canonical value and encoded.
fn pack(mut l: [u64; 5]) -> [u8; LEN] {
    let carry = |l: &mut [u64; 5]| {
        for i in 0..4 {
            l[i + 1] += l[i] >> 52;
            l[i] &= MASK52;
        }
    };
    // Below 2^255 + 2^216; after one more fold; then subtract p at most once.
    let over = l[4] >> 47;
    l[4] &= MASK47;
    l[0] += 19 * over;
    carry(&mut l);
    let mut q = (l[0] + 19) >> 52;
    q = (l[1] + q) >> 52;
    q = (l[2] + q) >> 52;
    q = (l[3] + q) >> 52;
    q = (l[4] + q) >> 47;
    l[0] += 19 * q;
    carry(&mut l);
    l[4] &= MASK47;
    let w =
        [l[0] | (l[1] << 52), (l[1] >> 12) | (l[2] << 40), (l[2] >> 24) | (l[3] << 28), (l[3] >> 36) | (l[4] << 16)];
    let mut out = [0u8; LEN];
    for (i, word) in w.iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&word.to_le_bytes());
    }
    out
}
