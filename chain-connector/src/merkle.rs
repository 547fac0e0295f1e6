//! Merkle trees over a block's records, as in RFC 9162 §2.1 (Certificate
//! Transparency v2): leaves are `SHA-256(0x00 ‖ record)`, inner nodes
//! `SHA-256(0x01 ‖ left ‖ right)`, a tree of `n` leaves splits at the
//! largest power of two below `n`. Audit paths and their verification
//! follow §2.1.3.

use sha2::{Digest as _, Sha256};

use crate::records::Digest;

fn node(left: &Digest, right: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn split(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root over `leaves` (leaf hashes); the empty tree's root is `SHA-256("")`.
pub fn root(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index`.
pub fn path(leaves: &[Digest], index: usize) -> Vec<Digest> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut p = path(&leaves[..k], index);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = path(&leaves[k..], index - k);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Whether `leaf` is at `index` of a tree of `size` leaves with root `root`.
pub fn verify(leaf: &Digest, index: u64, size: u64, path: &[Digest], expected_root: &Digest) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s, mut r) = (index, size - 1, *leaf);
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *expected_root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::leaf_hash;

    #[test]
    fn every_leaf_of_every_small_tree_verifies() {
        for n in 1..40usize {
            let leaves: Vec<Digest> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let r = root(&leaves);
            for i in 0..n {
                let p = path(&leaves, i);
                assert!(verify(&leaves[i], i as u64, n as u64, &p, &r), "n={n} i={i}");
                assert!(!verify(&leaves[(i + 1) % n], i as u64, n as u64, &p, &r) || n == 1, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn known_answer() {
        // RFC 9162 structure: root of [a, b, c] = H(1 ‖ H(1 ‖ a ‖ b) ‖ c).
        let leaves: Vec<Digest> = [b"a", b"b", b"c"].iter().map(|x| leaf_hash(*x)).collect();
        assert_eq!(root(&leaves), node(&node(&leaves[0], &leaves[1]), &leaves[2]));
        assert_eq!(hex::encode(root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
