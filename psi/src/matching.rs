//! What the two OT protocols (KKRT, RR22) share once their OPRF has run:
//! the requester matches the responder's outputs against its own and, in
//! intersection to both, tells the responder the positions that matched;
//! the responder maps those positions back to its keys.

use crate::PsiError;
use crate::ecdh::OutputMode;
use crate::kkrt::RequesterOutput;
use crate::kkrt::messages::{MAX_OUTPUTS, Matches, Outputs};
use crate::kkrt::requester::OwnOutputs;

/// The requester's side: its own outputs by value, and the hits so far.
#[derive(Default)]
pub(crate) struct OutputMatcher {
    /// The requester's own outputs, each to its key.
    pub(crate) own: OwnOutputs,
    received: u64,
    hit_keys: Vec<u32>,
    hit_positions: Vec<u32>,
}

impl OutputMatcher {
    /// Outputs received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Matches a run of the responder's outputs: `len` bytes each, at most
    /// `announced` in all.
    pub(crate) fn absorb(
        &mut self,
        message: &'static str,
        outputs: &Outputs,
        len: usize,
        announced: u64,
    ) -> Result<(), PsiError> {
        if usize::from(outputs.len) != len {
            return Err(PsiError::Malformed {
                message,
                reason: format!("outputs of {} bytes where the session uses {len}", outputs.len),
            });
        }
        let received = self.received + outputs.values.len() as u64;
        if received > announced {
            return Err(PsiError::TooMany { message, announced, received });
        }
        for (offset, value) in outputs.values.iter().enumerate() {
            if let Some(&key) = self.own.get(value) {
                self.hit_keys.push(key);
                // Below `announced`, which the session bounds to 32 bits.
                self.hit_positions.push(u32::try_from(self.received + offset as u64).expect("bounded by the session"));
            }
        }
        self.received = received;
        Ok(())
    }

    /// The intersection once all `announced` outputs arrived, with the
    /// matches messages for the responder in intersection to both.
    pub(crate) fn finish(
        &mut self,
        message: &'static str,
        mode: OutputMode,
        announced: u64,
    ) -> Result<RequesterOutput, PsiError> {
        if self.received != announced {
            return Err(PsiError::TooFew { message, announced, received: self.received });
        }
        let mut keys = std::mem::take(&mut self.hit_keys);
        keys.sort_unstable();
        keys.dedup();
        let matches = if mode == OutputMode::IntersectionToBoth {
            let mut batches: Vec<Matches> = self
                .hit_positions
                .chunks(MAX_OUTPUTS)
                .map(|p| Matches { last: false, positions: p.to_vec() })
                .collect();
            if batches.is_empty() {
                batches.push(Matches { last: false, positions: Vec::new() });
            }
            batches.last_mut().expect("one batch at least").last = true;
            batches
        } else {
            Vec::new()
        };
        Ok(RequesterOutput::new(keys, matches))
    }
}

/// The responder's side in intersection to both: its keys at the positions
/// the requester says matched.
#[derive(Debug, Default)]
pub(crate) struct MatchedKeys {
    keys: Vec<u32>,
    last: Option<u32>,
    done: bool,
}

impl MatchedKeys {
    /// Takes a matches message once all `sent` of `total` outputs left;
    /// `key_of` maps an output's position to its key.
    pub(crate) fn absorb(
        &mut self,
        message: &'static str,
        (mode, sent, total): (OutputMode, u64, u64),
        matches: &Matches,
        key_of: impl Fn(u32) -> u32,
    ) -> Result<(), PsiError> {
        if mode != OutputMode::IntersectionToBoth {
            return Err(PsiError::NotInMode { message, mode });
        }
        if self.done || sent < total {
            return Err(PsiError::OutOfTurn { message });
        }
        for &position in &matches.positions {
            if self.last.is_some_and(|last| position <= last) || u64::from(position) >= total {
                return Err(PsiError::Malformed {
                    message,
                    reason: "positions must ascend and name outputs that were sent".into(),
                });
            }
            self.last = Some(position);
            self.keys.push(key_of(position));
        }
        self.done = matches.last;
        Ok(())
    }

    /// Whether the requester's last matches message arrived.
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// The matched keys, ascending (intersection to both), `None` in the
    /// other modes.
    pub(crate) fn finish(&mut self, message: &'static str, mode: OutputMode) -> Result<Option<Vec<u32>>, PsiError> {
        if mode != OutputMode::IntersectionToBoth {
            return Ok(None);
        }
        if !self.done {
            return Err(PsiError::TooFew { message, announced: 1, received: 0 });
        }
        let mut keys = std::mem::take(&mut self.keys);
        keys.sort_unstable();
        keys.dedup();
        Ok(Some(keys))
    }
}

impl Drop for MatchedKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.keys);
    }
}
