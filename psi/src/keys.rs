//! Protocol inputs: normalisation rules and the key sets both sides hash.
//!
//! Two institutions only find a common customer if they turn the same person
//! into the same bytes. Each side declares an ordered list of
//! [`Normalisation`] rules for its key columns ([`KeyRules`]); the rules travel
//! with the request and a responder refuses a session whose rules differ from
//! its own, so both sides are guaranteed to have applied the same ones.
//!
//! A key made of several columns is encoded unambiguously as the
//! concatenation of `len(partᵢ) ‖ partᵢ` (4-byte little-endian lengths), so
//! `("ab", "c")` and `("a", "bc")` never collide. A single-column key is
//! encoded the same way.
//!
//! Keys are personal data. [`KeyList`] zeroizes its buffer on drop and never
//! prints its contents.

use rayon::prelude::*;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use zeroize::Zeroize;

use crate::PsiError;

/// Longest single key part accepted.
pub const MAX_KEY_PART_LEN: usize = 4096;

/// One normalisation step applied to each key part, as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Normalisation {
    /// Remove leading and trailing white space.
    Trim,
    /// Unicode lower case (locale-independent).
    Lowercase,
    /// Unicode upper case (locale-independent).
    Uppercase,
    /// Remove every white-space character.
    RemoveWhitespace,
    /// Replace each run of white space by one space and trim.
    CollapseWhitespace,
    /// Keep ASCII digits only (phone numbers, national ids with separators).
    DigitsOnly,
    /// Keep letters and digits only (drops punctuation and white space).
    AlphanumericOnly,
}

const KNOWN_RULES: &str =
    "trim, lowercase, uppercase, remove_whitespace, collapse_whitespace, digits_only, alphanumeric_only";

impl Normalisation {
    /// The rule's name in configuration files and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trim => "trim",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
            Self::RemoveWhitespace => "remove_whitespace",
            Self::CollapseWhitespace => "collapse_whitespace",
            Self::DigitsOnly => "digits_only",
            Self::AlphanumericOnly => "alphanumeric_only",
        }
    }

    /// The rule applied to `text`, borrowing it where the rule leaves it
    /// as it is (most keys of a clean column): no allocation then.
    fn apply_cow(self, text: Cow<'_, str>) -> Cow<'_, str> {
        let unchanged = match self {
            Self::Trim => {
                return match text {
                    Cow::Borrowed(t) => Cow::Borrowed(t.trim()),
                    Cow::Owned(t) if t.trim().len() == t.len() => Cow::Owned(t),
                    Cow::Owned(t) => Cow::Owned(t.trim().to_owned()),
                };
            }
            Self::Lowercase => !text.chars().any(|c| c.to_lowercase().ne(std::iter::once(c))),
            Self::Uppercase => !text.chars().any(|c| c.to_uppercase().ne(std::iter::once(c))),
            Self::RemoveWhitespace => !text.chars().any(char::is_whitespace),
            Self::CollapseWhitespace => !text.chars().any(char::is_whitespace),
            Self::DigitsOnly => text.chars().all(|c| c.is_ascii_digit()),
            Self::AlphanumericOnly => text.chars().all(char::is_alphanumeric),
        };
        if unchanged { text } else { Cow::Owned(self.apply(&text)) }
    }

    fn apply(self, text: &str) -> String {
        match self {
            Self::Trim => text.trim().to_owned(),
            Self::Lowercase => text.to_lowercase(),
            Self::Uppercase => text.to_uppercase(),
            Self::RemoveWhitespace => text.chars().filter(|c| !c.is_whitespace()).collect(),
            Self::CollapseWhitespace => text.split_whitespace().collect::<Vec<_>>().join(" "),
            Self::DigitsOnly => text.chars().filter(char::is_ascii_digit).collect(),
            Self::AlphanumericOnly => text.chars().filter(|c| c.is_alphanumeric()).collect(),
        }
    }
}

impl FromStr for Normalisation {
    type Err = PsiError;

    fn from_str(name: &str) -> Result<Self, PsiError> {
        Ok(match name {
            "trim" => Self::Trim,
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            "remove_whitespace" => Self::RemoveWhitespace,
            "collapse_whitespace" => Self::CollapseWhitespace,
            "digits_only" => Self::DigitsOnly,
            "alphanumeric_only" => Self::AlphanumericOnly,
            other => {
                return Err(PsiError::UnknownRule { name: other.to_owned(), known: KNOWN_RULES });
            }
        })
    }
}

/// The ordered normalisation rules applied to every part of a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyRules(Vec<Normalisation>);

impl KeyRules {
    /// Rules applied in the given order.
    pub fn new(rules: Vec<Normalisation>) -> Self {
        Self(rules)
    }

    /// Parses rule names, e.g. from a configuration file.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, PsiError> {
        names.iter().map(|n| n.as_ref().parse()).collect::<Result<_, _>>().map(Self)
    }

    /// The rules in order.
    pub fn rules(&self) -> &[Normalisation] {
        &self.0
    }

    /// The rule names in order; what a peer compares against its own.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|r| r.name()).collect()
    }

    /// Normalises one key part.
    pub fn normalise(&self, text: &str) -> String {
        self.normalised(text).into_owned()
    }

    /// Normalises one key part, borrowing it where no rule changes it.
    pub fn normalised<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.0.iter().fold(Cow::Borrowed(text), |acc, rule| rule.apply_cow(acc))
    }
}

impl fmt::Display for KeyRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        f.write_str(&self.names().join(", "))
    }
}

/// Appends the unambiguous encoding of a key made of `parts` to `out`.
pub fn encode_key<P: AsRef<[u8]>>(parts: &[P], out: &mut Vec<u8>) -> Result<(), PsiError> {
    for part in parts {
        encode_key_part(part.as_ref(), out)?;
    }
    Ok(())
}

/// Appends one part of a key's encoding to `out`: parts appended in order
/// encode as [`encode_key`] encodes them together.
pub fn encode_key_part(part: &[u8], out: &mut Vec<u8>) -> Result<(), PsiError> {
    if part.len() > MAX_KEY_PART_LEN {
        return Err(PsiError::KeyTooLong { len: part.len(), max: MAX_KEY_PART_LEN });
    }
    let len = u32::try_from(part.len()).expect("bounded above");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(part);
    Ok(())
}

/// A party's input: a set of distinct byte-string keys with random access.
///
/// The protocol visits keys in a secret random order, so it needs random
/// access; implementations may generate keys on the fly (the benchmark does)
/// rather than store them. Keys must be distinct — equal keys would produce
/// equal blinded points and so reveal the input's duplicate structure to the
/// peer; [`KeyList::dedup`] makes a list distinct.
pub trait KeySet: Sync {
    /// Number of keys.
    fn len(&self) -> usize;

    /// Whether there are no keys.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the contents of `out` with key `index` (`index < len()`).
    fn key_into(&self, index: usize, out: &mut Vec<u8>);
}

/// Keys stored back to back in one buffer: compact (no per-key allocation),
/// zeroized on drop, never printed.
#[derive(Default, Clone)]
pub struct KeyList {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a key. The buffer grows by explicit reallocation so that
    /// no copy of earlier keys is left behind unzeroized.
    pub fn push(&mut self, key: &[u8]) {
        let needed = self.bytes.len() + key.len();
        if needed > self.bytes.capacity() {
            let mut grown = Vec::with_capacity(needed.max(2 * self.bytes.capacity()).max(4096));
            grown.extend_from_slice(&self.bytes);
            self.bytes.zeroize();
            self.bytes = grown;
        }
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Key `index`.
    pub fn get(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.bytes[start..self.ends[index]]
    }

    /// Iterates over the keys in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The distinct keys, in order of first appearance, and how many
    /// duplicates were dropped.
    pub fn dedup(&self) -> (KeyList, usize) {
        let (distinct, _) = self.dedup_mapped();
        let dropped = self.len() - distinct.len();
        (distinct, dropped)
    }

    /// The distinct keys, in order of first appearance, and for each key of
    /// this list the index of its equal among them.
    pub fn dedup_mapped(&self) -> (KeyList, Vec<u32>) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        // Ties broken by index: the unstable parallel sort is deterministic,
        // and each run of equal keys starts with its first appearance.
        order.par_sort_unstable_by(|&a, &b| self.get(a).cmp(self.get(b)).then(a.cmp(&b)));
        let mut first = vec![0usize; self.len()];
        for (pos, &index) in order.iter().enumerate() {
            first[index] =
                if pos > 0 && self.get(order[pos - 1]) == self.get(index) { first[order[pos - 1]] } else { index };
        }
        let mut distinct = KeyList::new();
        let mut map = vec![0u32; self.len()];
        for index in 0..self.len() {
            if first[index] == index {
                map[index] = u32::try_from(distinct.len()).expect("key lists hold fewer than 2^32 keys");
                distinct.push(self.get(index));
            } else {
                map[index] = map[first[index]];
            }
        }
        (distinct, map)
    }
}

impl<K: AsRef<[u8]>> FromIterator<K> for KeyList {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        let mut list = KeyList::new();
        for key in iter {
            list.push(key.as_ref());
        }
        list
    }
}

impl KeySet for KeyList {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn key_into(&self, index: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.get(index));
    }
}

impl Drop for KeyList {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for KeyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyList({} keys, <redacted>)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Borrowing where a rule changes nothing gives what applying every
        /// rule in turn gives, for every rule order and awkward text.
        #[test]
        fn borrowed_normalisation_equals_applying_each_rule(
            text in "[ a-zA-Z0-9\t\u{3a3}\u{3c3}\u{130}\u{df}\u{4e2d}.-]{0,12}",
            rules in proptest::collection::vec(0usize..7, 0..4),
        ) {
            let all = [
                Normalisation::Trim, Normalisation::Lowercase, Normalisation::Uppercase,
                Normalisation::RemoveWhitespace, Normalisation::CollapseWhitespace,
                Normalisation::DigitsOnly, Normalisation::AlphanumericOnly,
            ];
            let rules: Vec<Normalisation> = rules.into_iter().map(|i| all[i]).collect();
            let expected = rules.iter().fold(text.clone(), |acc, rule| rule.apply(&acc));
            prop_assert_eq!(KeyRules::new(rules).normalised(&text), expected);
        }
    }

    #[test]
    fn rules_apply_in_order() {
        let rules = KeyRules::parse(&["trim", "lowercase"]).unwrap();
        assert_eq!(rules.normalise("  Alice@Example.COM "), "alice@example.com");
        let digits = KeyRules::parse(&["digits_only"]).unwrap();
        assert_eq!(digits.normalise("+86 (10) 1234-5678"), "861012345678");
        let collapse = KeyRules::parse(&["collapse_whitespace", "uppercase"]).unwrap();
        assert_eq!(collapse.normalise(" zhang   san\t"), "ZHANG SAN");
        assert_eq!(KeyRules::parse(&["alphanumeric_only"]).unwrap().normalise("a-b c.d"), "abcd");
        assert_eq!(KeyRules::parse(&["remove_whitespace"]).unwrap().normalise(" a b\tc "), "abc");
        assert_eq!(rules.to_string(), "trim, lowercase");
        assert_eq!(KeyRules::default().to_string(), "(none)");
    }

    #[test]
    fn unknown_rule_names_the_known_ones() {
        let err = KeyRules::parse(&["trim", "soundex"]).unwrap_err();
        assert!(err.to_string().contains("'soundex'"), "{err}");
        assert!(err.to_string().contains("lowercase"), "{err}");
    }

    #[test]
    fn composite_encoding_is_unambiguous() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_key(&["ab", "c"], &mut a).unwrap();
        encode_key(&["a", "bc"], &mut b).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, b"\x02\0\0\0ab\x01\0\0\0c");
        let long = vec![b'x'; MAX_KEY_PART_LEN + 1];
        assert!(matches!(encode_key(&[long], &mut a), Err(PsiError::KeyTooLong { .. })));
    }

    #[test]
    fn dedup_keeps_first_appearance_order() {
        let list: KeyList = ["b", "a", "b", "", "a", "c", ""].into_iter().collect();
        let (distinct, dropped) = list.dedup();
        assert_eq!(dropped, 3);
        assert_eq!(distinct.iter().collect::<Vec<_>>(), vec![&b"b"[..], b"a", b"", b"c"]);
        assert_eq!(format!("{distinct:?}"), "KeyList(4 keys, <redacted>)");
        let (mapped, map) = list.dedup_mapped();
        assert_eq!(mapped.iter().collect::<Vec<_>>(), distinct.iter().collect::<Vec<_>>());
        assert_eq!(map, [0, 1, 0, 2, 1, 3, 2], "each key to its first appearance among the distinct");
    }
}
