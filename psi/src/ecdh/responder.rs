//! The responder's side (`B` in the module docs), one type per phase.

use rand_core::{CryptoRng, RngCore};

use super::{Blinder, OutputMode, Phase, SessionParams, next_range, tag_batches};
use crate::PsiError;
use crate::keys::KeySet;
use crate::messages::{DecodedPoints, PointBatch, Tag, TagBatch};
use crate::permutation::SecretPermutation;

/// Phase 1: sending the responder's blinded keys.
pub struct ResponderSession<'k, K: KeySet> {
    params: SessionParams,
    keys: &'k K,
    blinder: Blinder,
    order: SecretPermutation,
    next: usize,
}

impl<'k, K: KeySet> ResponderSession<'k, K> {
    /// Starts a session over `keys`, whose length must be the announced
    /// responder size.
    pub fn new(params: SessionParams, keys: &'k K, rng: &mut (impl RngCore + CryptoRng)) -> Result<Self, PsiError> {
        super::check_len(keys.len(), params.responder_len())?;
        let blinder = Blinder::new(params.task(), rng);
        let order = SecretPermutation::random(keys.len(), rng);
        Ok(Self { params, keys, blinder, order, next: 0 })
    }

    /// The next batch of blinded keys, or `None` when all are sent.
    pub fn next_batch(&mut self) -> Option<PointBatch> {
        let range = next_range(&mut self.next, self.keys.len(), self.params.batch_size())?;
        Some(self.blinder.blind_keys(self.keys, &self.order, range))
    }

    /// How many blinded keys have been sent.
    pub fn sent(&self) -> usize {
        self.next
    }

    /// Ends phase 1 once every key has been sent.
    pub fn finish(self) -> Result<ResponderAnswering, PsiError> {
        if self.next < self.keys.len() {
            return Err(PsiError::MissingItems {
                phase: Phase::ResponderPoints,
                announced: self.params.responder_len(),
                received: self.next as u64,
            });
        }
        Ok(ResponderAnswering {
            params: self.params,
            blinder: self.blinder,
            order: self.order,
            received: 0,
            kept: Vec::new(),
        })
    }
}

impl<K: KeySet> std::fmt::Debug for ResponderSession<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderSession")
            .field("params", &self.params)
            .field("sent", &self.next)
            .finish_non_exhaustive()
    }
}

/// Phase 2: answering the requester's blinded keys.
pub struct ResponderAnswering {
    params: SessionParams,
    blinder: Blinder,
    order: SecretPermutation,
    received: u64,
    /// Answers kept for phase 3 (cardinality and both modes).
    kept: Vec<Tag>,
}

impl ResponderAnswering {
    /// Answers one request batch: the reply to send now in intersection
    /// modes, `None` in cardinality mode (answers go out sorted at the end).
    pub fn answer(&mut self, batch: DecodedPoints) -> Result<Option<TagBatch>, PsiError> {
        let received = self.received + batch.len() as u64;
        if received > self.params.requester_len() {
            return Err(PsiError::TooManyItems {
                phase: Phase::Requests,
                announced: self.params.requester_len(),
                received,
            });
        }
        self.received = received;
        let tags = self.blinder.tags(&batch.points)?;
        Ok(match self.params.mode() {
            OutputMode::IntersectionToRequester => Some(TagBatch { tags }),
            OutputMode::IntersectionToBoth => {
                self.kept.extend_from_slice(&tags);
                Some(TagBatch { tags })
            }
            OutputMode::CardinalityOnly => {
                self.kept.extend(tags);
                None
            }
        })
    }

    /// How many blinded keys have been answered.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Ends phase 2 once every announced request has arrived.
    pub fn finish(mut self) -> Result<ResponderClosing, PsiError> {
        if self.received != self.params.requester_len() {
            return Err(PsiError::MissingItems {
                phase: Phase::Requests,
                announced: self.params.requester_len(),
                received: self.received,
            });
        }
        // Sorting hides the order the requester sent in (cardinality mode)
        // and makes echo look-ups a binary search (both mode).
        self.kept.sort_unstable();
        Ok(ResponderClosing {
            params: self.params,
            order: self.order,
            kept: self.kept,
            sent: 0,
            echoed: 0,
            matched: Vec::new(),
        })
    }
}

impl std::fmt::Debug for ResponderAnswering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderAnswering")
            .field("params", &self.params)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// Phase 3: sorted answers out (cardinality mode) or the echo in (both mode).
pub struct ResponderClosing {
    params: SessionParams,
    order: SecretPermutation,
    kept: Vec<Tag>,
    sent: usize,
    echoed: u64,
    matched: Vec<u32>,
}

impl ResponderClosing {
    /// Next batch of sorted answers (cardinality mode only).
    pub fn next_batch(&mut self) -> Option<TagBatch> {
        if self.params.mode() != OutputMode::CardinalityOnly {
            return None;
        }
        let range = next_range(&mut self.sent, self.kept.len(), self.params.batch_size())?;
        tag_batches(&self.kept[range], usize::MAX).next()
    }

    /// Absorbs a batch of the requester's echo (both mode only).
    pub fn absorb_echo(&mut self, echo: TagBatch) -> Result<(), PsiError> {
        if self.params.mode() != OutputMode::IntersectionToBoth {
            return Err(PsiError::NotInMode { message: "echo", mode: self.params.mode() });
        }
        let start = self.echoed;
        let received = start + echo.len() as u64;
        if received > self.params.responder_len() {
            return Err(PsiError::TooManyItems {
                phase: Phase::Echo,
                announced: self.params.responder_len(),
                received,
            });
        }
        self.echoed = received;
        for (offset, tag) in echo.tags.iter().enumerate() {
            if self.kept.binary_search(tag).is_ok() {
                let position = usize::try_from(start).expect("bounded by u32") + offset;
                self.matched.push(u32::try_from(self.order.at(position)).expect("set sizes are bounded by u32"));
            }
        }
        Ok(())
    }

    /// How many echoed tags have been absorbed.
    pub fn echoed(&self) -> u64 {
        self.echoed
    }

    /// Ends the session.
    pub fn finish(mut self) -> Result<ResponderOutput, PsiError> {
        let intersection = match self.params.mode() {
            OutputMode::IntersectionToBoth => {
                if self.echoed != self.params.responder_len() {
                    return Err(PsiError::MissingItems {
                        phase: Phase::Echo,
                        announced: self.params.responder_len(),
                        received: self.echoed,
                    });
                }
                let mut matched = std::mem::take(&mut self.matched);
                matched.sort_unstable();
                Some(matched)
            }
            _ => None,
        };
        Ok(ResponderOutput { intersection, requester_len: self.params.requester_len() })
    }
}

impl std::fmt::Debug for ResponderClosing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderClosing").field("params", &self.params).finish_non_exhaustive()
    }
}

/// What the responder learns (in either balanced protocol).
pub struct ResponderOutput {
    intersection: Option<Vec<u32>>,
    requester_len: u64,
}

impl ResponderOutput {
    pub(crate) fn new(intersection: Option<Vec<u32>>, requester_len: u64) -> Self {
        Self { intersection, requester_len }
    }

    /// Indices (into the responder's key set, ascending) of the common keys,
    /// in intersection-to-both mode; `None` otherwise.
    pub fn intersection(&self) -> Option<&[u32]> {
        self.intersection.as_deref()
    }

    /// The requester's set size, which the responder always learns.
    pub fn requester_len(&self) -> u64 {
        self.requester_len
    }
}

impl std::fmt::Debug for ResponderOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderOutput").field("requester_len", &self.requester_len).finish_non_exhaustive()
    }
}
