//! Dialling other nodes: a peer organisation by the endpoint this node's
//! configuration lists for it, over mutual TLS whose server certificate
//! must name that organisation ([`stayput_identity::dial()`]).

use tonic::transport::Channel;

use crate::{NodeError, NodeState};

/// Opens a mutually authenticated channel to a peer organisation's node
/// (its shard 0, when its endpoint names shards).
pub async fn connect_peer(state: &NodeState, peer: &str) -> Result<Channel, NodeError> {
    connect_peer_shard(state, peer, 0).await
}

/// Opens a mutually authenticated channel to shard `shard` of a peer
/// organisation: its endpoint with `{shard}` replaced by the index.
pub async fn connect_peer_shard(state: &NodeState, peer: &str, shard: u32) -> Result<Channel, NodeError> {
    let endpoint = stayput_identity::shard_endpoint(state.config.peer(peer)?, shard);
    connect(state, peer, &endpoint).await
}

/// Opens a mutually authenticated channel to `endpoint`, which must present
/// a certificate for organisation `org` ([`stayput_identity::dial()`] with
/// this node's TLS material).
pub async fn connect(state: &NodeState, org: &str, endpoint: &str) -> Result<Channel, NodeError> {
    Ok(stayput_identity::dial(&state.tls, org, endpoint).await?)
}
