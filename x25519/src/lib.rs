//! # Batched X25519 with one secret scalar
//!
//! ECDH-PSI multiplies millions of points by the *same* secret scalar. This
//! crate does exactly that, as the X25519 function of RFC 7748:
//! `x(clamp(k)·u)` on u-coordinates of Curve25519 (or of its twist — the
//! ladder is defined for every 32-byte string), with no hash-to-group, no
//! point compression and no decompression.
//!
//! ## Backends
//!
//! * [`Backend::Ifma`] — on x86-64 CPUs with AVX-512 IFMA (52-bit
//!   multiply-accumulate), eight Montgomery ladders run side by side, one per
//!   64-bit lane, in radix 2^52 ([`ifma`]). Because every lane uses the
//!   same scalar, the ladder's conditional swaps are one lane mask per step.
//! * [`Backend::Portable`] — elsewhere, `curve25519-dalek`'s ladder, one
//!   point at a time.
//!
//! Both give bit-identical results (tested against each other and against
//! the RFC's vectors); the backend is chosen at run time
//! ([`Backend::detect`]). Batches are spread over the rayon pool.
//!
//! ## Security
//!
//! Constant time in the scalar: the ladder runs all 255 steps whatever the
//! scalar, swaps with a lane mask computed without branches, and performs
//! the same instruction sequence for every input. The scalar lives in a
//! [`SecretScalar`]: zeroized on drop, redacted in `Debug`. An all-zero
//! output means the input had small order; callers that need contributory
//! behaviour (PSI does) reject it.
//!
//! ## `unsafe`
//!
//! The one `unsafe` block is the call from [`mul_batch`] into the
//! `#[target_feature(enable = "avx512f,avx512ifma")]` kernel, made only
//! after the CPU was seen to support both features. The kernel itself uses
//! no pointer intrinsics and is safe code.
#![deny(unsafe_code)]

use rayon::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

#[cfg(target_arch = "x86_64")]
pub mod ifma;

/// Bytes of a u-coordinate and of a scalar.
pub const LEN: usize = 32;

/// Points per rayon job: large enough to amortise the per-group inversion
/// and the job's overhead, small enough to balance two cores.
const JOB_POINTS: usize = 256;

/// The X25519 base point's u-coordinate, 9.
pub const BASEPOINT: [u8; LEN] = {
    let mut u = [0u8; LEN];
    u[0] = 9;
    u
};

/// A secret X25519 scalar, clamped as RFC 7748 §5 prescribes (a multiple of
/// the cofactor 8, with bit 254 set). Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretScalar([u8; LEN]);

impl SecretScalar {
    /// `bytes`, clamped.
    pub fn from_bytes(mut bytes: [u8; LEN]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        let scalar = Self(bytes);
        bytes.zeroize();
        scalar
    }

    /// A uniformly random scalar from a cryptographic generator.
    pub fn random(rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng)) -> Self {
        let mut bytes = [0u8; LEN];
        rng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Bit `i` of the clamped scalar, as 0 or 1.
    fn bit(&self, i: usize) -> u8 {
        (self.0[i / 8] >> (i % 8)) & 1
    }
}

impl std::fmt::Debug for SecretScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretScalar(<redacted>)")
    }
}

/// How the ladders run on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Eight ladders at once with AVX-512 IFMA.
    Ifma,
    /// One ladder at a time (`curve25519-dalek`).
    Portable,
}

impl Backend {
    /// The fastest backend this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512ifma") {
            return Self::Ifma;
        }
        Self::Portable
    }

    /// The backend's name, for benchmark reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ifma => "avx512-ifma x8",
            Self::Portable => "portable",
        }
    }
}

/// `X25519(k, u)` for every `u`, in order, on the fastest backend, spread
/// over the rayon pool. Outputs are canonical (reduced mod 2^255 − 19).
pub fn mul_batch(scalar: &SecretScalar, us: &[[u8; LEN]]) -> Vec<[u8; LEN]> {
    mul_batch_on(Backend::detect(), scalar, us)
}

/// [`mul_batch`] on a given backend; an IFMA request on a CPU without IFMA
/// runs the portable ladder.
pub fn mul_batch_on(backend: Backend, scalar: &SecretScalar, us: &[[u8; LEN]]) -> Vec<[u8; LEN]> {
    let backend = if backend == Backend::Ifma { Backend::detect() } else { backend };
    let mut out = vec![[0u8; LEN]; us.len()];
    out.par_chunks_mut(JOB_POINTS).zip(us.par_chunks(JOB_POINTS)).for_each(|(out, us)| match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Ifma => {
            for (out, us) in out.chunks_mut(ifma::LANES).zip(us.chunks(ifma::LANES)) {
                let mut lanes = [BASEPOINT; ifma::LANES];
                lanes[..us.len()].copy_from_slice(us);
                // SAFETY: `Backend::detect` returned `Ifma`, so this CPU
                // supports AVX-512F and AVX-512 IFMA, the kernel's features.
                #[allow(unsafe_code)]
                let results = unsafe { ifma::ladder8(scalar, &lanes) };
                out.copy_from_slice(&results[..out.len()]);
            }
        }
        _ => {
            for (out, u) in out.iter_mut().zip(us) {
                *out = portable(scalar, u);
            }
        }
    });
    out
}

/// One ladder with `curve25519-dalek`.
fn portable(scalar: &SecretScalar, u: &[u8; LEN]) -> [u8; LEN] {
    curve25519_dalek::montgomery::MontgomeryPoint(*u).mul_clamped(scalar.0).to_bytes()
}

#[cfg(test)]
mod tests;
