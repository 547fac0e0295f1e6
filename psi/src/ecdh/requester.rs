//! The requester's side (`A` in the module docs), one type per phase.

use std::collections::VecDeque;
use std::ops::Range;

use rand_core::{CryptoRng, RngCore};

use super::{Blinder, OutputMode, Phase, SessionParams, next_range, tag_batches};
use crate::PsiError;
use crate::keys::KeySet;
use crate::messages::{DecodedPoints, PointBatch, Tag, TagBatch};
use crate::permutation::SecretPermutation;

/// Phase 1: absorbing the responder's blinded keys.
pub struct RequesterSession<'k, K: KeySet> {
    params: SessionParams,
    keys: &'k K,
    blinder: Blinder,
    order: SecretPermutation,
    /// `tag(a·b·H(y))` in the order the responder sent them.
    peer_tags: Vec<Tag>,
}

impl<'k, K: KeySet> RequesterSession<'k, K> {
    /// Starts a session over `keys`, whose length must be the announced
    /// requester size.
    pub fn new(params: SessionParams, keys: &'k K, rng: &mut (impl RngCore + CryptoRng)) -> Result<Self, PsiError> {
        super::check_len(keys.len(), params.requester_len())?;
        let blinder = Blinder::new(params.task(), rng);
        let order = SecretPermutation::random(keys.len(), rng);
        Ok(Self { params, keys, blinder, order, peer_tags: Vec::new() })
    }

    /// Absorbs one batch of the responder's points.
    pub fn absorb(&mut self, batch: DecodedPoints) -> Result<(), PsiError> {
        let received = (self.peer_tags.len() + batch.len()) as u64;
        if received > self.params.responder_len() {
            return Err(PsiError::TooManyItems {
                phase: Phase::ResponderPoints,
                announced: self.params.responder_len(),
                received,
            });
        }
        self.peer_tags.extend(self.blinder.tags(&batch.points)?);
        Ok(())
    }

    /// Ends phase 1; fails if the responder sent fewer points than announced.
    pub fn finish(self) -> Result<RequesterRequests<'k, K>, PsiError> {
        let received = self.peer_tags.len() as u64;
        if received != self.params.responder_len() {
            return Err(PsiError::MissingItems {
                phase: Phase::ResponderPoints,
                announced: self.params.responder_len(),
                received,
            });
        }
        let (sorted, echo) = if self.params.mode() == OutputMode::IntersectionToBoth {
            let mut sorted = self.peer_tags.clone();
            sorted.sort_unstable();
            (sorted, Some(self.peer_tags))
        } else {
            let mut sorted = self.peer_tags;
            sorted.sort_unstable();
            (sorted, None)
        };
        Ok(RequesterRequests {
            params: self.params,
            keys: self.keys,
            blinder: self.blinder,
            order: self.order,
            sorted_peer_tags: sorted,
            echo,
            next: 0,
            pending: VecDeque::new(),
            replies: 0,
            matched: Vec::new(),
            matches: 0,
        })
    }
}

impl<K: KeySet> std::fmt::Debug for RequesterSession<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequesterSession").field("params", &self.params).finish_non_exhaustive()
    }
}

/// Phase 2: sending blinded keys and absorbing the answers.
pub struct RequesterRequests<'k, K: KeySet> {
    params: SessionParams,
    keys: &'k K,
    blinder: Blinder,
    order: SecretPermutation,
    sorted_peer_tags: Vec<Tag>,
    echo: Option<Vec<Tag>>,
    next: usize,
    /// Positions (in send order) of request batches not yet answered.
    pending: VecDeque<Range<usize>>,
    replies: u64,
    /// Key indices found in the intersection.
    matched: Vec<u32>,
    matches: u64,
}

impl<K: KeySet> RequesterRequests<'_, K> {
    /// The next batch of blinded keys, or `None` when all are sent.
    pub fn next_batch(&mut self) -> Option<PointBatch> {
        let range = next_range(&mut self.next, self.keys.len(), self.params.batch_size())?;
        let batch = self.blinder.blind_keys(self.keys, &self.order, range.clone());
        if self.params.mode().reveals_intersection() {
            self.pending.push_back(range);
        }
        Some(batch)
    }

    /// How many blinded keys have been sent.
    pub fn sent(&self) -> usize {
        self.next
    }

    /// Request batches sent and not yet answered (intersection modes; in
    /// cardinality mode answers come only at the end, so always 0).
    pub fn awaiting_replies(&self) -> usize {
        self.pending.len()
    }

    /// How many answers have been absorbed.
    pub fn replies(&self) -> u64 {
        self.replies
    }

    /// Absorbs a batch of answers: in intersection modes the answer to the
    /// oldest unanswered request, in cardinality mode any run of sorted tags.
    pub fn absorb_reply(&mut self, reply: TagBatch) -> Result<(), PsiError> {
        let received = self.replies + reply.len() as u64;
        if received > self.params.requester_len() {
            return Err(PsiError::TooManyItems {
                phase: Phase::Replies,
                announced: self.params.requester_len(),
                received,
            });
        }
        self.replies = received;
        let known = |tag: &Tag| self.sorted_peer_tags.binary_search(tag).is_ok();
        if !self.params.mode().reveals_intersection() {
            self.matches += reply.tags.iter().filter(|t| known(t)).count() as u64;
            return Ok(());
        }
        let range = self.pending.pop_front().ok_or(PsiError::UnexpectedReply)?;
        if range.len() != reply.len() {
            return Err(PsiError::ReplyMismatch { expected: range.len(), got: reply.len() });
        }
        let found: Vec<u32> = range
            .zip(&reply.tags)
            .filter(|(_, tag)| known(tag))
            .map(|(pos, _)| u32::try_from(self.order.at(pos)).expect("set sizes are bounded by u32"))
            .collect();
        self.matches += found.len() as u64;
        self.matched.extend(found);
        Ok(())
    }

    /// Ends the session; fails unless every request was answered.
    pub fn finish(mut self) -> Result<RequesterOutput, PsiError> {
        if self.next < self.keys.len() || self.replies != self.params.requester_len() {
            return Err(PsiError::MissingItems {
                phase: Phase::Replies,
                announced: self.params.requester_len(),
                received: self.replies,
            });
        }
        let intersection = self.params.mode().reveals_intersection().then(|| {
            let mut matched = std::mem::take(&mut self.matched);
            matched.sort_unstable();
            matched
        });
        Ok(RequesterOutput {
            intersection,
            cardinality: self.matches,
            echo: self.echo.take(),
            batch_size: self.params.batch_size(),
        })
    }
}

impl<K: KeySet> std::fmt::Debug for RequesterRequests<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequesterRequests")
            .field("params", &self.params)
            .field("sent", &self.next)
            .field("replies", &self.replies)
            .finish_non_exhaustive()
    }
}

/// What the requester learns.
pub struct RequesterOutput {
    intersection: Option<Vec<u32>>,
    cardinality: u64,
    echo: Option<Vec<Tag>>,
    batch_size: usize,
}

impl RequesterOutput {
    /// Indices (into the requester's key set, ascending) of the common keys;
    /// `None` in cardinality mode.
    pub fn intersection(&self) -> Option<&[u32]> {
        self.intersection.as_deref()
    }

    /// Number of common keys.
    pub fn cardinality(&self) -> u64 {
        self.cardinality
    }

    /// Phase 3 messages for the responder (intersection to both only; empty
    /// otherwise).
    pub fn echo_batches(&self) -> impl Iterator<Item = TagBatch> + '_ {
        tag_batches(self.echo.as_deref().unwrap_or_default(), self.batch_size)
    }
}

impl std::fmt::Debug for RequesterOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequesterOutput").field("cardinality", &self.cardinality).finish_non_exhaustive()
    }
}
