//! The edge between gRPC streams and the sans-IO protocol roles.
//!
//! A session's protocol role runs on a blocking thread (the crypto is heavy
//! and must not stall the async executor, invariant 3). An async task
//! forwards inbound stream messages to it over a channel, enforcing an idle
//! timeout; the role sends outbound messages over another channel that
//! feeds the response or request stream. This module also converts between
//! prost types and domain types (invariant 2).

use std::time::Duration;

use stayput_proto::v1::{PsiMode, psi_requester_message, psi_responder_message};
use stayput_psi::ecdh::OutputMode;
use tokio::sync::mpsc;

use crate::NodeError;

/// Largest gRPC message a node accepts or sends: one full batch of points
/// plus framing.
pub const MAX_MESSAGE_BYTES: usize = stayput_psi::messages::MAX_BATCH * 32 + 4096;

/// How long a session waits for the peer's next message before giving up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an inbound message did not arrive.
#[derive(Debug)]
pub enum Inbound {
    /// The peer (or the transport) ended the stream with a status.
    Status(tonic::Status),
    /// Nothing arrived within [`IDLE_TIMEOUT`].
    Idle,
}

/// Forwards messages from a gRPC stream into `tx` until the stream ends,
/// fails, idles or the receiver goes away.
pub async fn forward_inbound<M: Send + 'static>(
    mut stream: tonic::Streaming<M>,
    tx: mpsc::UnboundedSender<Result<M, Inbound>>,
) {
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, stream.message()).await;
        let item = match next {
            Ok(Ok(Some(message))) => Ok(message),
            Ok(Ok(None)) => return, // dropping tx tells the worker the stream ended
            Ok(Err(status)) => Err(Inbound::Status(status)),
            Err(_) => Err(Inbound::Idle),
        };
        let stop = item.is_err();
        if tx.send(item).is_err() || stop {
            return;
        }
    }
}

/// Receives the next inbound message on a blocking thread, turning every
/// way a peer can fail into a [`NodeError`] naming the phase.
pub fn recv_blocking<M>(
    rx: &mut mpsc::UnboundedReceiver<Result<M, Inbound>>,
    peer: &str,
    phase: &'static str,
) -> Result<M, NodeError> {
    match rx.blocking_recv() {
        Some(Ok(message)) => Ok(message),
        Some(Err(inbound)) => Err(inbound_error(inbound, peer, phase)),
        None => Err(NodeError::PeerVanished {
            peer: peer.to_owned(),
            phase,
            detail: "the stream ended early".into(),
        }),
    }
}

/// Maps an inbound failure: statuses the peer chose to send are refusals;
/// transport failures and silence mean it went away.
pub fn inbound_error(inbound: Inbound, peer: &str, phase: &'static str) -> NodeError {
    match inbound {
        Inbound::Idle => NodeError::PeerVanished {
            peer: peer.to_owned(),
            phase,
            detail: format!("no message for {} s", IDLE_TIMEOUT.as_secs()),
        },
        Inbound::Status(status) => status_error(status, peer, phase),
    }
}

/// Maps a status received from a peer.
pub fn status_error(status: tonic::Status, peer: &str, phase: &'static str) -> NodeError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal
            if std::error::Error::source(&status).is_some() || status.message().contains("transport") || status.message().contains("h2") =>
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

/// Name of a requester message body, for errors.
pub fn requester_body_name(body: Option<&psi_requester_message::Body>) -> &'static str {
    match body {
        Some(psi_requester_message::Body::Open(_)) => "open",
        Some(psi_requester_message::Body::RequestPoints(_)) => "request points",
        Some(psi_requester_message::Body::EchoTags(_)) => "echo tags",
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
        None => "an empty message",
    }
}

/// Task ids name output files and separate protocol domains: 1 to 128
/// characters of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn check_task_id(task_id: &str) -> Result<(), NodeError> {
    if task_id.is_empty() || task_id.len() > 128 {
        return Err(NodeError::BadTaskId("it must be 1 to 128 characters long"));
    }
    if task_id.starts_with('.') {
        return Err(NodeError::BadTaskId("it must not start with a dot"));
    }
    if !task_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(NodeError::BadTaskId("it may hold only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_file_safe() {
        assert!(check_task_id("task-2026.11_01").is_ok());
        for bad in ["", ".hidden", "../etc", "a/b", "空", &"x".repeat(129)] {
            assert!(check_task_id(bad).is_err(), "{bad}");
        }
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
