//! The edge between gRPC streams and the sans-IO protocol roles.
//!
//! A session's protocol role runs on a blocking thread (the crypto is heavy
//! and must not stall the async executor, invariant 3). An async task
//! forwards inbound stream messages to it over a channel, enforcing an idle
//! timeout; the role sends outbound messages over another channel that
//! feeds the response or request stream. This module also converts between
//! prost types and domain types (invariant 2).

use std::time::Duration;

use stayput_proto::v1::{PsiMode, PsiProtocol, psi_requester_message, psi_responder_message};
use stayput_psi::Protocol;
use stayput_psi::ecdh::OutputMode;
use tokio::sync::mpsc;

use crate::NodeError;

/// Largest gRPC message a node accepts or sends: one full batch of points
/// plus framing.
pub const MAX_MESSAGE_BYTES: usize = stayput_psi::messages::MAX_BATCH * 32 + 4096;

/// How long a role waits for its peer (a message, or room to send one)
/// before giving up. Transport death is detected sooner by HTTP/2
/// keep-alives.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The deadline of every call between processes (shared with the
/// coordinator); streams are bounded further by [`IDLE_TIMEOUT`] between
/// messages.
pub use stayput_identity::CALL_DEADLINE;

/// Inbound messages buffered per session; with at most
/// [`MAX_OUTSTANDING_BATCHES`] requests unanswered, replies always fit, so
/// back-pressure never deadlocks the two roles.
pub const INBOUND_CAPACITY: usize = 8;

/// Request batches a requester may have sent without an answer.
pub const MAX_OUTSTANDING_BATCHES: usize = 4;

/// Message bytes this process received from peers in protocol sessions
/// (their protobuf encoding, not TLS or HTTP/2 framing): what a benchmark
/// reads as a protocol's communication.
static PEER_BYTES_RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Peer message bytes received by this process's sessions so far.
pub fn peer_bytes_received() -> u64 {
    PEER_BYTES_RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Forwards messages from a gRPC stream into a bounded channel until the
/// stream ends or fails. The forwarder waits when the channel is full, so
/// HTTP/2 flow control pushes back on a peer that sends faster than the
/// role absorbs; a failure is forwarded as the peer's status.
pub async fn forward_inbound<M: stayput_proto::WireLen + Send + 'static>(
    mut stream: tonic::Streaming<M>,
    tx: mpsc::Sender<Result<M, tonic::Status>>,
) {
    loop {
        let item = match stream.message().await {
            Ok(Some(message)) => {
                PEER_BYTES_RECEIVED.fetch_add(message.wire_len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(message)
            }
            Ok(None) => return, // dropping tx tells the role the stream ended
            Err(status) => Err(status),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

/// The first message of a peer's stream (its open), within
/// [`IDLE_TIMEOUT`]; `None` if the stream ended first.
pub async fn first_message<M>(inbound: &mut tonic::Streaming<M>) -> Result<Option<M>, tonic::Status> {
    tokio::time::timeout(IDLE_TIMEOUT, inbound.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no open message arrived"))?
}

/// Opens a session with `peer`: the stream `call` opens and its first
/// message (the accept), each awaited at most [`IDLE_TIMEOUT`]; a refusal
/// is the peer's status, and silence or an empty stream says so.
pub async fn open_stream<M>(
    peer: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
) -> Result<(tonic::Streaming<M>, M), NodeError> {
    let silent = || NodeError::PeerVanished {
        peer: peer.to_owned(),
        phase: "open",
        detail: format!("no answer for {} s", IDLE_TIMEOUT.as_secs()),
    };
    let mut inbound = tokio::time::timeout(IDLE_TIMEOUT, call)
        .await
        .map_err(|_| silent())?
        .map_err(|s| status_error(s, peer, "open"))?
        .into_inner();
    match tokio::time::timeout(IDLE_TIMEOUT, inbound.message()).await.map_err(|_| silent())? {
        Ok(Some(first)) => Ok((inbound, first)),
        Ok(None) => Err(NodeError::PeerVanished { peer: peer.to_owned(), phase: "open", detail: "no answer".into() }),
        Err(status) => Err(status_error(status, peer, "open")),
    }
}

/// A role's connection to its peer, used from a blocking thread: every wait
/// is bounded by [`IDLE_TIMEOUT`], counted only while the role itself waits.
#[derive(Debug)]
pub struct PeerLink<In, Out> {
    runtime: tokio::runtime::Handle,
    peer: String,
    rx: mpsc::Receiver<Result<In, tonic::Status>>,
    tx: Option<mpsc::Sender<Out>>,
}

impl<In, Out> PeerLink<In, Out> {
    /// Wraps the two channels; call from within the runtime.
    pub fn new(peer: &str, rx: mpsc::Receiver<Result<In, tonic::Status>>, tx: mpsc::Sender<Out>) -> Self {
        Self { runtime: tokio::runtime::Handle::current(), peer: peer.to_owned(), rx, tx: Some(tx) }
    }

    /// The peer's organisation.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    fn vanished(&self, phase: &'static str, detail: impl Into<String>) -> NodeError {
        NodeError::PeerVanished { peer: self.peer.clone(), phase, detail: detail.into() }
    }

    /// The next message; every way a peer can fail becomes an error naming
    /// the phase.
    pub fn recv(&mut self, phase: &'static str) -> Result<In, NodeError> {
        let next = self.runtime.block_on(tokio::time::timeout(IDLE_TIMEOUT, self.rx.recv()));
        match next {
            Ok(Some(Ok(message))) => Ok(message),
            Ok(Some(Err(status))) => Err(status_error(status, &self.peer, phase)),
            Ok(None) => Err(self.vanished(phase, "the stream ended early")),
            Err(_) => Err(self.vanished(phase, format!("no message for {} s", IDLE_TIMEOUT.as_secs()))),
        }
    }

    /// A message if one is waiting.
    pub fn try_recv(&mut self, phase: &'static str) -> Result<Option<In>, NodeError> {
        match self.rx.try_recv() {
            Ok(Ok(message)) => Ok(Some(message)),
            Ok(Err(status)) => Err(status_error(status, &self.peer, phase)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(self.vanished(phase, "the stream ended early")),
        }
    }

    /// Sends a message, waiting at most [`IDLE_TIMEOUT`] for the peer to
    /// make room.
    pub fn send(&self, message: Out, phase: &'static str) -> Result<(), NodeError> {
        let tx = self.tx.as_ref().ok_or_else(|| self.vanished(phase, "our stream is already closed"))?;
        match self.runtime.block_on(tokio::time::timeout(IDLE_TIMEOUT, tx.send(message))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.vanished(phase, "the connection closed")),
            Err(_) => Err(self.vanished(phase, format!("it read nothing for {} s", IDLE_TIMEOUT.as_secs()))),
        }
    }

    /// Ends our side of the stream.
    pub fn close(&mut self) {
        self.tx = None;
    }
}

/// What a protocol role needs of its connection to the peer, so a role
/// can run over its own stream ([`PeerLink`]) or nested inside another
/// protocol's stream ([`Nested`]).
pub trait Link<In, Out> {
    /// The peer's organisation.
    fn peer(&self) -> &str;
    /// The next message.
    fn recv(&mut self, phase: &'static str) -> Result<In, NodeError>;
    /// A message if one is waiting.
    fn try_recv(&mut self, phase: &'static str) -> Result<Option<In>, NodeError>;
    /// Sends a message.
    fn send(&self, message: Out, phase: &'static str) -> Result<(), NodeError>;
    /// Ends our side (a nested role leaves that to its host).
    fn close(&mut self);
}

impl<In, Out> Link<In, Out> for PeerLink<In, Out> {
    fn peer(&self) -> &str {
        PeerLink::peer(self)
    }
    fn recv(&mut self, phase: &'static str) -> Result<In, NodeError> {
        PeerLink::recv(self, phase)
    }
    fn try_recv(&mut self, phase: &'static str) -> Result<Option<In>, NodeError> {
        PeerLink::try_recv(self, phase)
    }
    fn send(&self, message: Out, phase: &'static str) -> Result<(), NodeError> {
        PeerLink::send(self, message, phase)
    }
    fn close(&mut self) {
        PeerLink::close(self)
    }
}

/// One protocol's messages carried inside another's stream: `unwrap` takes
/// the inner message out of an outer one (or names what came instead),
/// `wrap` puts one in. Closing is left to the host protocol.
pub struct Nested<'a, L, U, W, OuterIn, OuterOut> {
    link: &'a mut L,
    unwrap: U,
    wrap: W,
    expected: &'static str,
    outer: std::marker::PhantomData<fn(OuterIn) -> OuterOut>,
}

impl<L, U, W, OuterIn, OuterOut> std::fmt::Debug for Nested<'_, L, U, W, OuterIn, OuterOut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nested").field("expected", &self.expected).finish_non_exhaustive()
    }
}

impl<'a, L, U, W, OuterIn, OuterOut> Nested<'a, L, U, W, OuterIn, OuterOut> {
    /// The inner protocol (named `expected` in errors) over `link`.
    pub fn new(link: &'a mut L, expected: &'static str, unwrap: U, wrap: W) -> Self {
        Self { link, unwrap, wrap, expected, outer: std::marker::PhantomData }
    }
}

impl<OuterIn, OuterOut, In, Out, L, U, W> Link<In, Out> for Nested<'_, L, U, W, OuterIn, OuterOut>
where
    L: Link<OuterIn, OuterOut>,
    U: Fn(OuterIn) -> Result<In, &'static str>,
    W: Fn(Out) -> OuterOut,
{
    fn peer(&self) -> &str {
        self.link.peer()
    }
    fn recv(&mut self, phase: &'static str) -> Result<In, NodeError> {
        let outer = self.link.recv(phase)?;
        (self.unwrap)(outer).map_err(|got| NodeError::UnexpectedMessage {
            peer: self.link.peer().into(),
            expected: self.expected,
            got,
        })
    }
    fn try_recv(&mut self, phase: &'static str) -> Result<Option<In>, NodeError> {
        match self.link.try_recv(phase)? {
            None => Ok(None),
            Some(outer) => (self.unwrap)(outer).map(Some).map_err(|got| NodeError::UnexpectedMessage {
                peer: self.link.peer().into(),
                expected: self.expected,
                got,
            }),
        }
    }
    fn send(&self, message: Out, phase: &'static str) -> Result<(), NodeError> {
        self.link.send((self.wrap)(message), phase)
    }
    fn close(&mut self) {}
}

/// Maps a status received from a peer.
pub fn status_error(status: tonic::Status, peer: &str, phase: &'static str) -> NodeError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal
            if std::error::Error::source(&status).is_some()
                || status.message().contains("transport")
                || status.message().contains("h2") =>
        {
            NodeError::PeerVanished { peer: peer.to_owned(), phase, detail: status.message().to_owned() }
        }
        code => NodeError::PeerRefused { peer: peer.to_owned(), code, message: status.message().to_owned() },
    }
}

/// Domain output mode from the wire enum.
pub fn mode_from_wire(mode: i32) -> Result<OutputMode, NodeError> {
    match PsiMode::try_from(mode) {
        Ok(PsiMode::Intersection) => Ok(OutputMode::IntersectionToRequester),
        Ok(PsiMode::IntersectionBoth) => Ok(OutputMode::IntersectionToBoth),
        Ok(PsiMode::Cardinality) => Ok(OutputMode::CardinalityOnly),
        Ok(PsiMode::Unspecified) | Err(_) => Err(NodeError::MissingMode),
    }
}

/// Wire enum from the domain output mode.
pub fn mode_to_wire(mode: OutputMode) -> PsiMode {
    match mode {
        OutputMode::IntersectionToRequester => PsiMode::Intersection,
        OutputMode::IntersectionToBoth => PsiMode::IntersectionBoth,
        OutputMode::CardinalityOnly => PsiMode::Cardinality,
    }
}

/// The domain protocol from the wire enum.
pub fn protocol_from_wire(protocol: i32) -> Result<Protocol, NodeError> {
    match PsiProtocol::try_from(protocol) {
        Ok(PsiProtocol::Ecdh) => Ok(Protocol::Ecdh),
        Ok(PsiProtocol::Kkrt) => Ok(Protocol::Kkrt),
        Ok(PsiProtocol::Rr22) => Ok(Protocol::Rr22),
        Err(_) => Err(NodeError::UnsupportedProtocol(protocol)),
    }
}

/// Wire enum from the domain protocol.
pub fn protocol_to_wire(protocol: Protocol) -> PsiProtocol {
    match protocol {
        Protocol::Ecdh => PsiProtocol::Ecdh,
        Protocol::Kkrt => PsiProtocol::Kkrt,
        Protocol::Rr22 => PsiProtocol::Rr22,
    }
}

/// Name of a requester message body, for errors.
pub fn requester_body_name(body: Option<&psi_requester_message::Body>) -> &'static str {
    match body {
        Some(psi_requester_message::Body::Open(_)) => "open",
        Some(psi_requester_message::Body::RequestPoints(_)) => "request points",
        Some(psi_requester_message::Body::EchoTags(_)) => "echo tags",
        Some(psi_requester_message::Body::Kkrt(_)) => "a KKRT message",
        None => "an empty message",
    }
}

/// Name of a responder message body, for errors.
pub fn responder_body_name(body: Option<&psi_responder_message::Body>) -> &'static str {
    match body {
        Some(psi_responder_message::Body::Accept(_)) => "accept",
        Some(psi_responder_message::Body::ResponderPoints(_)) => "responder points",
        Some(psi_responder_message::Body::ReplyTags(_)) => "reply tags",
        Some(psi_responder_message::Body::Summary(_)) => "summary",
        Some(psi_responder_message::Body::Kkrt(_)) => "a KKRT message",
        None => "an empty message",
    }
}

/// Task ids name output files and separate protocol domains: the ledger's
/// rule ([`stayput_chain_connector::tasks::check_task_id`]) as a node error.
pub fn check_task_id(task_id: &str) -> Result<(), NodeError> {
    Ok(stayput_chain_connector::tasks::check_task_id(task_id)?)
}

/// Progress of a running session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Phase name.
    pub phase: &'static str,
    /// Items done in this phase.
    pub done: u64,
    /// Items in this phase.
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_task_id_is_an_invalid_argument() {
        assert!(check_task_id("task-2026.11_01").is_ok());
        let err = check_task_id("../etc").unwrap_err();
        assert!(matches!(err, NodeError::BadTaskId(_)), "{err}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn modes_round_trip() {
        for mode in OutputMode::ALL {
            assert_eq!(mode_from_wire(mode_to_wire(mode) as i32).unwrap(), mode);
        }
        assert!(matches!(mode_from_wire(0), Err(NodeError::MissingMode)));
        assert!(matches!(mode_from_wire(99), Err(NodeError::MissingMode)));
    }
}
