//! Paillier encryption at a 2048-bit modulus (Paillier 1999, with
//! `g = n + 1`), the additively homomorphic scheme both vertical models
//! use: the label holder encrypts, the feature holder adds ciphertexts it
//! cannot read, the label holder decrypts sums.
//!
//! * **Keys.** `n = p·q` with `p`, `q` random 1024-bit primes
//!   (Baillie–PSW via `crypto-primes`), `|n| = 2048` exactly — about 112
//!   bits of security (NIST SP 800-57); 1024-bit moduli are never made.
//! * **Encryption** `c = (1 + m·n) · rⁿ mod n²`, `r` uniform in `[1, n)`
//!   ([`PublicKey::encrypt`]). The key holder, who encrypts every row,
//!   uses Damgård–Jurik–Nielsen's variant instead ([`SecretKey::encrypt`]):
//!   `c = (1 + m·n) · h_sᵅ` with `h_s = (−x²)ⁿ` fixed at key generation and
//!   `α` of 1024 random bits, computed by the CRT mod `p²` and `q²` from
//!   fixed-base tables (6-bit windows, constant-time selection) — one
//!   171-multiplication product per prime instead of a full exponentiation.
//! * **Decryption** by the CRT: `m_p = L_p(c^{p−1} mod p²)·h_p mod p` with
//!   `h_p = (−q)⁻¹ mod p` (the value `L_p(g^{p−1})` takes for `g = n+1`),
//!   the same mod `q`, then recombined.
//! * **Homomorphism.** `D(E(a)·E(b)) = a + b mod n` ([`PublicKey::add`]) and
//!   `D(E(a)^k) = k·a mod n` ([`PublicKey::mul_plain`]). Sums are kept in
//!   Montgomery form ([`Prepared`]) so each addition is one multiplication.
//!
//! Exponentiations with secret exponents are constant-time
//! (`crypto-bigint`'s `pow`); secret values are zeroized on drop and never
//! printed.

#[cfg(test)]
use crypto_bigint::RandomBits;
use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{NonZero, Odd, RandomMod, U1024, U2048, U4096};
use rand10::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::LearningError;

/// Bits of the modulus `n`.
pub const MODULUS_BITS: u32 = 2048;
/// Bytes of a ciphertext on the wire: a residue mod `n²`, big-endian.
pub const CIPHERTEXT_BYTES: usize = 512;
/// Bytes of a public key on the wire: `n`, big-endian.
pub const PUBLIC_KEY_BYTES: usize = 256;
/// Bits of plaintext a ciphertext carries without wrapping: `m < n`, and
/// `n ≥ 2^2047`.
pub const PLAINTEXT_BITS: u32 = MODULUS_BITS - 1;

const N2_LIMBS: usize = U4096::LIMBS;
const P2_LIMBS: usize = U2048::LIMBS;

/// The public key: `n`, and Montgomery parameters for `n²`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    n: U2048,
    n_squared: FixedMontyParams<N2_LIMBS>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey(paillier-{MODULUS_BITS}, n = {:.16}…)", format!("{:x}", self.n))
    }
}

/// The secret key: the factors of `n` and what decryption and fast
/// encryption precompute from them. Zeroized on drop.
#[derive(Clone)]
pub struct SecretKey {
    public: PublicKey,
    factors: [PrimeFactor; 2],
    /// `q⁻¹ mod p`, for recombining.
    q_inv_p: U1024,
    /// `(q²)⁻¹ mod p²` in Montgomery form, for recombining noise.
    q2_inv_p2: FixedMontyForm<P2_LIMBS>,
    /// `h_s = (−x²)ⁿ mod p²` and `mod q²` as fixed-base tables, for the
    /// key holder's encryption with short randomness.
    noise_bases: [FixedBase; 2],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.q_inv_p.zeroize();
        self.q2_inv_p2.as_montgomery_mut().zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

/// What one prime `p` of `n` contributes to decryption and encryption.
#[derive(Clone)]
struct PrimeFactor {
    p: Odd<U1024>,
    p_squared: FixedMontyParams<P2_LIMBS>,
    /// `p − 1`: the decryption exponent mod `p²`.
    p_minus_1: U1024,
    /// `(−other)⁻¹ mod p`: `L_p(g^{p−1} mod p²)⁻¹` for `g = n + 1`.
    h: U1024,
    /// `n mod p(p−1)`: the encryption exponent mod `p²`.
    n_mod_order: U2048,
}

impl Drop for PrimeFactor {
    fn drop(&mut self) {
        let mut p = *self.p.as_ref();
        p.zeroize();
        self.p_minus_1.zeroize();
        self.h.zeroize();
        self.n_mod_order.zeroize();
    }
}

/// A ciphertext: a residue mod `n²`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ciphertext(U4096);

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ciphertext(…)")
    }
}

/// A ciphertext in Montgomery form, ready to be added to others.
#[derive(Clone, Copy)]
pub struct Prepared(FixedMontyForm<N2_LIMBS>);

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared(…)")
    }
}

/// A plaintext: an integer below `n`.
pub type Plaintext = U2048;

fn odd<const L: usize>(x: crypto_bigint::Uint<L>) -> Odd<crypto_bigint::Uint<L>> {
    Option::from(Odd::new(x)).expect("the moduli here are products of odd primes")
}

impl PublicKey {
    fn from_modulus(n: U2048) -> Result<Self, LearningError> {
        if n.bit_width() != MODULUS_BITS || !bool::from(n.is_odd()) {
            return Err(LearningError::BadKey(format!(
                "a Paillier modulus must be an odd {MODULUS_BITS}-bit integer (got {} bits)",
                n.bit_width()
            )));
        }
        let n_squared: U4096 = n.concatenating_mul(&n);
        Ok(Self { n, n_squared: FixedMontyParams::new_vartime(odd(n_squared)) })
    }

    /// The modulus `n`.
    pub fn n(&self) -> &U2048 {
        &self.n
    }

    /// `n` big-endian, [`PUBLIC_KEY_BYTES`] long.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.n.to_be_bytes().as_ref().to_vec()
    }

    /// Reads a public key, refusing anything but an odd 2048-bit modulus.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LearningError> {
        if bytes.len() != PUBLIC_KEY_BYTES {
            return Err(LearningError::BadKey(format!(
                "a Paillier public key is {PUBLIC_KEY_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        Self::from_modulus(U2048::from_be_slice(bytes))
    }

    fn n_squared(&self) -> &U4096 {
        self.n_squared.modulus().as_ref()
    }

    /// `1 + m·n mod n²`: the message part of a ciphertext.
    fn message_part(&self, m: &Plaintext) -> Result<U4096, LearningError> {
        if m >= &self.n {
            return Err(LearningError::PlaintextTooLarge);
        }
        let mn: U4096 = m.concatenating_mul(&self.n);
        Ok(mn.wrapping_add(&U4096::ONE))
    }

    fn random_unit<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> U2048 {
        let n = NonZero::new(self.n).expect("n is not zero");
        loop {
            let r = U2048::random_mod_vartime(rng, &n);
            // r ≠ 0; a non-unit would reveal a factor of n (probability 2^-1000).
            if r != U2048::ZERO {
                return r;
            }
        }
    }

    /// Encrypts `m < n` with fresh randomness.
    pub fn encrypt<R: CryptoRng + ?Sized>(&self, m: &Plaintext, rng: &mut R) -> Result<Ciphertext, LearningError> {
        let message = FixedMontyForm::new(&self.message_part(m)?, &self.n_squared);
        let r: U4096 = self.random_unit(rng).resize();
        let noise = FixedMontyForm::new(&r, &self.n_squared).pow(&self.n);
        Ok(Ciphertext((message * noise).retrieve()))
    }

    /// Reads a ciphertext: [`CIPHERTEXT_BYTES`] big-endian, a non-zero
    /// residue below `n²`.
    pub fn ciphertext(&self, bytes: &[u8]) -> Result<Ciphertext, LearningError> {
        if bytes.len() != CIPHERTEXT_BYTES {
            return Err(LearningError::BadCiphertext(format!(
                "a ciphertext is {CIPHERTEXT_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        let c = U4096::from_be_slice(bytes);
        if c == U4096::ZERO || &c >= self.n_squared() {
            return Err(LearningError::BadCiphertext("not a residue in [1, n²)".into()));
        }
        Ok(Ciphertext(c))
    }

    /// A ciphertext in Montgomery form for summing.
    pub fn prepare(&self, c: &Ciphertext) -> Prepared {
        Prepared(FixedMontyForm::new(&c.0, &self.n_squared))
    }

    /// The trivial encryption of zero: the start of a sum.
    pub fn zero(&self) -> Prepared {
        Prepared(FixedMontyForm::one(&self.n_squared))
    }

    /// `E(a + b)`.
    pub fn add(&self, a: &Prepared, b: &Prepared) -> Prepared {
        Prepared(a.0 * b.0)
    }

    /// `E(k·a)`.
    pub fn mul_plain(&self, a: &Prepared, k: &Plaintext) -> Prepared {
        Prepared(a.0.pow(k))
    }

    /// `E(a + m)` for a known plaintext `m < n`.
    pub fn add_plain(&self, a: &Prepared, m: &Plaintext) -> Result<Prepared, LearningError> {
        Ok(Prepared(a.0 * FixedMontyForm::new(&self.message_part(m)?, &self.n_squared)))
    }

    /// `Σ kᵢ·aᵢ` for small signed `kᵢ`: positive and negative terms are
    /// summed apart with 64-bit exponents and joined by one inversion.
    pub fn dot_signed(&self, terms: impl IntoIterator<Item = (Prepared, i64)>) -> Result<Prepared, LearningError> {
        let (mut plus, mut minus) = (self.zero(), self.zero());
        for (c, k) in terms {
            let e = crypto_bigint::U64::from_u64(k.unsigned_abs());
            let term = c.0.pow_bounded_exp(&e, 64);
            if k >= 0 {
                plus.0 *= term;
            } else {
                minus.0 *= term;
            }
        }
        let inverse: crypto_bigint::modular::FixedMontyForm<N2_LIMBS> = Option::from(minus.0.invert())
            .ok_or_else(|| LearningError::BadCiphertext("a ciphertext is not invertible mod n²".into()))?;
        Ok(Prepared(plus.0 * inverse))
    }

    /// A signed integer as a plaintext: `v mod n`.
    pub fn encode_signed(&self, v: i128) -> Plaintext {
        let magnitude = U2048::from_u128(v.unsigned_abs());
        if v >= 0 { magnitude } else { self.n.wrapping_sub(&magnitude) }
    }

    /// A plaintext as a signed integer (`m > n/2` is negative); an error
    /// if it does not fit 127 bits.
    pub fn decode_signed(&self, m: &Plaintext) -> Result<i128, LearningError> {
        let half = self.n.shr_vartime(1);
        let (negative, magnitude) = if m > &half { (true, self.n.wrapping_sub(m)) } else { (false, *m) };
        if magnitude.bit_width() > 127 {
            return Err(LearningError::BadCiphertext("a decrypted value is out of range".into()));
        }
        let words = magnitude.to_words();
        let v = i128::try_from(u128::from(words[0]) | (u128::from(words[1]) << 64)).expect("fits 127 bits");
        Ok(if negative { -v } else { v })
    }

    /// A plaintext uniform in `[0, n)`: a mask that hides any value mod `n`.
    pub fn random_plaintext<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Plaintext {
        U2048::random_mod_vartime(rng, &NonZero::new(self.n).expect("n is not zero"))
    }

    /// `masked − mask mod n`, read as a signed integer.
    pub fn unmask(&self, masked: &Plaintext, mask: &Plaintext) -> Result<i128, LearningError> {
        if masked >= &self.n {
            return Err(LearningError::BadCiphertext("a decrypted value is not below n".into()));
        }
        self.decode_signed(&masked.sub_mod(mask, &NonZero::new(self.n).expect("n is not zero")))
    }

    /// `E(a·2^bits)`: a plaintext shifted left, for packing sums side by
    /// side (the caller keeps the result below `n`).
    pub fn shift_left(&self, a: &Prepared, bits: u32) -> Prepared {
        let mut out = a.0;
        for _ in 0..bits {
            out = out.square();
        }
        Prepared(out)
    }

    /// The ciphertext a sum stands for.
    pub fn finish(&self, sum: &Prepared) -> Ciphertext {
        Ciphertext(sum.0.retrieve())
    }

    /// `c` times a fresh encryption of zero: the same plaintext, unlinkable
    /// to `c` for anyone without the key.
    pub fn rerandomize<R: CryptoRng + ?Sized>(&self, c: &Ciphertext, rng: &mut R) -> Ciphertext {
        let r: U4096 = self.random_unit(rng).resize();
        let noise = FixedMontyForm::new(&r, &self.n_squared).pow(&self.n);
        Ciphertext((FixedMontyForm::new(&c.0, &self.n_squared) * noise).retrieve())
    }
}

impl Ciphertext {
    /// [`CIPHERTEXT_BYTES`] big-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_be_bytes().as_ref().to_vec()
    }
}

impl PrimeFactor {
    fn new(p: U1024, other: &U1024, n: &U2048) -> Result<Self, LearningError> {
        let p_odd = odd(p);
        let p_squared: U2048 = p.concatenating_mul(&p);
        let p_minus_1 = p.wrapping_sub(&U1024::ONE);
        let order: U2048 = p.concatenating_mul(&p_minus_1);
        let n_mod_order = n.rem(&NonZero::new(order).expect("p(p-1) > 0"));
        let p_nz = p_odd.to_nz().expect("p is odd");
        let minus_other = p.wrapping_sub(&other.rem(&p_nz));
        let h = Option::from(minus_other.invert_odd_mod(&p_odd))
            .ok_or_else(|| LearningError::BadKey("the primes of n must be distinct".into()))?;
        Ok(Self { p: p_odd, p_squared: FixedMontyParams::new(odd(p_squared)), p_minus_1, h, n_mod_order })
    }

    /// `c mod p` decrypted: `L_p(c^{p−1} mod p²)·h mod p`.
    fn decrypt(&self, c: &U4096) -> U1024 {
        let p_squared = NonZero::new(*self.p_squared.modulus().as_ref()).expect("p² > 0");
        let c_mod = c.rem(&p_squared);
        let x = FixedMontyForm::new(&c_mod, &self.p_squared).pow(&self.p_minus_1).retrieve();
        // L_p(x) = (x − 1) / p, below p.
        let p_wide: NonZero<U1024> = self.p.to_nz().expect("p is odd");
        let (l, _) = x.wrapping_sub(&U2048::ONE).div_rem(&p_wide);
        let l: U1024 = l.resize();
        mul_mod(&l, &self.h, &self.p)
    }

    /// `r^n mod p²`.
    fn noise(&self, r: &U2048) -> U2048 {
        let p_squared = NonZero::new(*self.p_squared.modulus().as_ref()).expect("p² > 0");
        let r_mod = r.rem(&p_squared);
        FixedMontyForm::new(&r_mod, &self.p_squared).pow(&self.n_mod_order).retrieve()
    }
}

/// Bits of the DJN noise exponent `α`: half the modulus.
pub const NOISE_EXPONENT_BITS: u32 = MODULUS_BITS / 2;
const WINDOW_BITS: u32 = 6;
const WINDOWS: u32 = NOISE_EXPONENT_BITS.div_ceil(WINDOW_BITS);

/// `base^e` for a fixed base and `e < 2^1024`: per 6-bit window `i` the
/// 64 powers `base^(j·2^(6i))`, selected in constant time and multiplied.
#[derive(Clone)]
struct FixedBase {
    table: Vec<FixedMontyForm<P2_LIMBS>>,
    params: FixedMontyParams<P2_LIMBS>,
}

impl FixedBase {
    fn new(base: FixedMontyForm<P2_LIMBS>) -> Self {
        let params = *base.params();
        let mut table = Vec::with_capacity((WINDOWS << WINDOW_BITS) as usize);
        let mut g = base;
        for _ in 0..WINDOWS {
            let mut power = FixedMontyForm::one(&params);
            for _ in 0..1u32 << WINDOW_BITS {
                table.push(power);
                power *= g;
            }
            // g^(2^6): the next window's base.
            g = power;
        }
        Self { table, params }
    }

    fn pow(&self, e: &U1024) -> FixedMontyForm<P2_LIMBS> {
        let words = e.to_words();
        let mut acc = FixedMontyForm::one(&self.params);
        for i in 0..WINDOWS {
            let digit = window(&words, i * WINDOW_BITS);
            let entries = &self.table[(i << WINDOW_BITS) as usize..((i + 1) << WINDOW_BITS) as usize];
            let mut chosen = [0 as crypto_bigint::Word; P2_LIMBS];
            for (j, entry) in (0u64..).zip(entries) {
                // All-ones when j == digit, without a branch on the digit.
                let diff = j ^ digit;
                let mask = ((diff | diff.wrapping_neg()) >> 63).wrapping_sub(1);
                for (c, w) in chosen.iter_mut().zip(entry.as_montgomery().to_words()) {
                    *c |= w & mask;
                }
            }
            acc *= FixedMontyForm::from_montgomery(U2048::from_words(chosen), &self.params);
        }
        acc
    }
}

impl Drop for FixedBase {
    fn drop(&mut self) {
        for entry in &mut self.table {
            entry.as_montgomery_mut().zeroize();
        }
    }
}

/// The 6 bits of `words` from bit `at`.
fn window(words: &[crypto_bigint::Word], at: u32) -> u64 {
    let (i, shift) = ((at / 64) as usize, at % 64);
    let low = words.get(i).copied().unwrap_or(0) >> shift;
    let high = if shift + WINDOW_BITS > 64 { words.get(i + 1).copied().unwrap_or(0) << (64 - shift) } else { 0 };
    (low | high) & ((1 << WINDOW_BITS) - 1)
}

/// `a·b mod p` for `a, b < p`.
fn mul_mod(a: &U1024, b: &U1024, p: &Odd<U1024>) -> U1024 {
    let wide: U2048 = a.concatenating_mul(b);
    wide.rem(&p.to_nz().expect("p is odd"))
}

impl SecretKey {
    /// A fresh key pair with a [`MODULUS_BITS`]-bit modulus.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let p: U1024 = crypto_primes::random_prime(rng, crypto_primes::Flavor::Any, MODULUS_BITS / 2);
            let q: U1024 = crypto_primes::random_prime(rng, crypto_primes::Flavor::Any, MODULUS_BITS / 2);
            // Both have their top bit set, so n has 2047 or 2048 bits: keep 2048.
            if p == q {
                continue;
            }
            let n: U2048 = p.concatenating_mul(&q);
            if n.bit_width() != MODULUS_BITS {
                continue;
            }
            if let Ok(key) = Self::from_primes(p, q, rng) {
                return key;
            }
        }
    }

    fn from_primes<R: CryptoRng + ?Sized>(p: U1024, q: U1024, rng: &mut R) -> Result<Self, LearningError> {
        let n: U2048 = p.concatenating_mul(&q);
        let public = PublicKey::from_modulus(n)?;
        let fp = PrimeFactor::new(p, &q, &n)?;
        let fq = PrimeFactor::new(q, &p, &n)?;
        let q_mod_p = q.rem(&fp.p.to_nz().expect("p is odd"));
        let q_inv_p = Option::from(q_mod_p.invert_odd_mod(&fp.p))
            .ok_or_else(|| LearningError::BadKey("the primes of n must be distinct".into()))?;
        // DJN: h = −x² mod n for a random unit x; h_s = hⁿ, reduced mod p² and q².
        let x = public.random_unit(rng);
        let x2: U4096 = x.concatenating_mul(&x);
        let h = public.n.wrapping_sub(&x2.rem(&NonZero::new(public.n).expect("n > 0")));
        let noise_bases = [&fp, &fq].map(|f| FixedBase::new(FixedMontyForm::new(&f.noise(&h), &f.p_squared)));
        let p2 = *fp.p_squared.modulus().as_ref();
        let q2 = *fq.p_squared.modulus().as_ref();
        let q2_inv: U2048 =
            Option::from(q2.rem(&NonZero::new(p2).expect("p² > 0")).invert_odd_mod(fp.p_squared.modulus()))
                .ok_or_else(|| LearningError::BadKey("the primes of n must be distinct".into()))?;
        let q2_inv_p2 = FixedMontyForm::new(&q2_inv, &fp.p_squared);
        Ok(Self { public, factors: [fp, fq], q_inv_p, q2_inv_p2, noise_bases })
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Encrypts `m < n` as `(1 + m·n)·h_sᵅ mod n²` with `α` of
    /// [`NOISE_EXPONENT_BITS`] random bits (Damgård–Jurik–Nielsen's
    /// short-randomness variant, semantically secure under DCR with
    /// `|α| = |n|/2`), computed by the CRT from fixed-base tables: the key
    /// holder's fast path.
    pub fn encrypt<R: CryptoRng + ?Sized>(&self, m: &Plaintext, rng: &mut R) -> Result<Ciphertext, LearningError> {
        let message = FixedMontyForm::new(&self.public.message_part(m)?, &self.public.n_squared);
        let mut alpha_bytes = [0u8; NOISE_EXPONENT_BITS as usize / 8];
        rng.fill_bytes(&mut alpha_bytes);
        let mut alpha = U1024::from_be_slice(&alpha_bytes);
        alpha_bytes.zeroize();
        let [bp, bq] = &self.noise_bases;
        let noise = self.crt_squared(&bp.pow(&alpha).retrieve(), &bq.pow(&alpha).retrieve());
        alpha.zeroize();
        let noise = FixedMontyForm::new(&noise, &self.public.n_squared);
        Ok(Ciphertext((message * noise).retrieve()))
    }

    /// Encrypts every plaintext, on all cores: each chunk draws its
    /// randomness from its own ChaCha stream seeded from `rng`.
    pub fn encrypt_all<R: CryptoRng + ?Sized>(
        &self,
        plaintexts: &[Plaintext],
        rng: &mut R,
    ) -> Result<Vec<Ciphertext>, LearningError> {
        use rand10::SeedableRng;
        use rayon::prelude::*;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let chunks: Vec<Vec<Ciphertext>> = plaintexts
            .par_chunks(64)
            .enumerate()
            .map(|(i, chunk)| {
                let mut chunk_seed = seed;
                for (s, b) in chunk_seed.iter_mut().zip((i as u64).to_le_bytes()) {
                    *s ^= b;
                }
                let mut chunk_rng = rand10::rngs::StdRng::from_seed(chunk_seed);
                chunk.iter().map(|m| self.encrypt(m, &mut chunk_rng)).collect()
            })
            .collect::<Result<_, _>>()?;
        seed.zeroize();
        Ok(chunks.into_iter().flatten().collect())
    }

    /// The residue mod `n²` that is `a mod p²` and `b mod q²` (Garner).
    fn crt_squared(&self, a: &U2048, b: &U2048) -> U4096 {
        let [fp, fq] = &self.factors;
        let p2 = *fp.p_squared.modulus().as_ref();
        let q2 = *fq.p_squared.modulus().as_ref();
        let p2_nz = NonZero::new(p2).expect("p² > 0");
        // (a − b)·(q²)⁻¹ mod p², then b + q²·that.
        let diff = a.sub_mod(&b.rem(&p2_nz), &p2_nz);
        let t = (FixedMontyForm::new(&diff, &fp.p_squared) * self.q2_inv_p2).retrieve();
        let qt: U4096 = q2.concatenating_mul(&t);
        qt.wrapping_add(&b.resize())
    }

    /// Decrypts `c`.
    pub fn decrypt(&self, c: &Ciphertext) -> Plaintext {
        let [fp, fq] = &self.factors;
        let (mp, mq) = (fp.decrypt(&c.0), fq.decrypt(&c.0));
        // m = mq + q·((mp − mq)·q⁻¹ mod p).
        let p_nz = fp.p.to_nz().expect("p is odd");
        let diff = mp.sub_mod(&mq.rem(&p_nz), &p_nz);
        let t = mul_mod(&diff, &self.q_inv_p, &fp.p);
        let q = *fq.p.as_ref();
        let qt: U2048 = q.concatenating_mul(&t);
        qt.wrapping_add(&mq.resize())
    }
}

/// `x` as a plaintext.
pub fn plaintext_from_u128(x: u128) -> Plaintext {
    U2048::from_u128(x)
}

/// A plaintext from 256 big-endian bytes.
pub fn plaintext_from_bytes(bytes: &[u8]) -> Result<Plaintext, LearningError> {
    if bytes.len() != PUBLIC_KEY_BYTES {
        return Err(LearningError::BadCiphertext(format!(
            "a plaintext is {PUBLIC_KEY_BYTES} bytes, got {}",
            bytes.len()
        )));
    }
    Ok(U2048::from_be_slice(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand10::SeedableRng;
    use std::sync::OnceLock;

    /// One key for the crate's tests: generating one takes a moment.
    pub(crate) fn test_key() -> &'static SecretKey {
        static KEY: OnceLock<SecretKey> = OnceLock::new();
        KEY.get_or_init(|| SecretKey::generate(&mut rand10::rngs::StdRng::seed_from_u64(7)))
    }

    #[test]
    fn keys_have_a_2048_bit_modulus_and_round_trip() {
        let key = test_key();
        assert_eq!(key.public().n().bit_width(), 2048);
        let bytes = key.public().to_bytes();
        assert_eq!(bytes.len(), PUBLIC_KEY_BYTES);
        assert_eq!(&PublicKey::from_bytes(&bytes).unwrap(), key.public());
        let short = U2048::from_u64(1_000_003).to_be_bytes();
        assert!(PublicKey::from_bytes(short.as_ref()).unwrap_err().to_string().contains("2048-bit"));
        assert!(PublicKey::from_bytes(&bytes[1..]).is_err());
    }

    #[test]
    fn both_encryptions_decrypt_and_add() {
        let key = test_key();
        let public = key.public();
        let mut rng = rand10::rngs::StdRng::seed_from_u64(1);
        let a = plaintext_from_u128(123_456_789_012_345_678_901_234_567);
        let b = plaintext_from_u128(987_654_321);
        let ca = public.encrypt(&a, &mut rng).unwrap();
        let cb = key.encrypt(&b, &mut rng).unwrap();
        assert_eq!(key.decrypt(&ca), a);
        assert_eq!(key.decrypt(&cb), b);
        let sum = public.finish(&public.add(&public.prepare(&ca), &public.prepare(&cb)));
        assert_eq!(key.decrypt(&sum), a.wrapping_add(&b));
        let tripled = public.finish(&public.mul_plain(&public.prepare(&cb), &plaintext_from_u128(3)));
        assert_eq!(key.decrypt(&tripled), plaintext_from_u128(3 * 987_654_321));
        let fresh = public.rerandomize(&ca, &mut rng);
        assert_ne!(fresh, ca);
        assert_eq!(key.decrypt(&fresh), a);
        assert_eq!(key.decrypt(&public.finish(&public.zero())), U2048::ZERO);
        // The largest plaintext, and one too large.
        let max = public.n().wrapping_sub(&U2048::ONE);
        assert_eq!(key.decrypt(&key.encrypt(&max, &mut rng).unwrap()), max);
        assert!(matches!(key.encrypt(public.n(), &mut rng), Err(LearningError::PlaintextTooLarge)));
    }

    #[test]
    fn fixed_base_powers_equal_plain_powers() {
        let key = test_key();
        let [fp, _] = &key.factors;
        let base = FixedMontyForm::new(&U2048::from_u64(0x1234_5678_9abc_def1), &fp.p_squared);
        let table = FixedBase::new(base);
        let mut rng = rand10::rngs::StdRng::seed_from_u64(9);
        for e in [U1024::ZERO, U1024::ONE, U1024::MAX, U1024::from_u64(64), U1024::random_bits(&mut rng, 1024)] {
            assert_eq!(table.pow(&e).retrieve(), base.pow(&e).retrieve());
        }
    }

    #[test]
    fn ciphertexts_are_bounded_when_read() {
        let key = test_key();
        let public = key.public();
        let mut rng = rand10::rngs::StdRng::seed_from_u64(2);
        let c = key.encrypt(&plaintext_from_u128(5), &mut rng).unwrap();
        let bytes = c.to_bytes();
        assert_eq!(bytes.len(), CIPHERTEXT_BYTES);
        assert_eq!(public.ciphertext(&bytes).unwrap(), c);
        assert!(public.ciphertext(&bytes[1..]).is_err());
        assert!(public.ciphertext(&[0u8; CIPHERTEXT_BYTES]).is_err());
        assert!(public.ciphertext(&[0xff; CIPHERTEXT_BYTES]).is_err(), "not below n²");
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = test_key();
        let shown = format!("{key:?}");
        assert!(shown.contains("paillier-2048"));
        let p = format!("{:x}", key.factors[0].p.as_ref());
        assert!(!shown.contains(&p[..16]));
    }
}
