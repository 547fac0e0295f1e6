//! Assembling and running a node's gRPC server: mTLS, the protocol and
//! control services with message size limits, gRPC health and reflection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use stayput_proto::v1::blacklist_peer_server::BlacklistPeerServer;
use stayput_proto::v1::compute_only_peer_server::ComputeOnlyPeerServer;
use stayput_proto::v1::learning_peer_server::LearningPeerServer;
use stayput_proto::v1::lookup_peer_server::LookupPeerServer;
use stayput_proto::v1::node_control_server::NodeControlServer;
use stayput_proto::v1::psi_peer_server::PsiPeerServer;
use stayput_proto::v1::stats_peer_server::StatsPeerServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::control::ControlService;
use crate::psi::owner::PsiPeerService;
use crate::wire::MAX_MESSAGE_BYTES;
use crate::{NodeConfig, NodeError, NodeState};

/// A node serving in the background.
#[derive(Debug)]
pub struct RunningNode {
    /// The address it listens on (useful when configured with port 0).
    pub addr: SocketAddr,
    /// The shared state.
    pub state: Arc<NodeState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    /// Stops accepting, lets sessions end, and waits.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.map_err(|e| NodeError::Worker(e.to_string()))?
    }

    /// Stops at once, dropping every connection (as a crash would).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Binds the configured address and serves in the background.
pub async fn spawn(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let listen = config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| NodeError::Listen { address: listen.to_string(), detail: e.to_string() })?;
    spawn_on(config, listener).await
}

/// Serves in the background on an already bound listener.
pub async fn spawn_on(config: NodeConfig, listener: TcpListener) -> Result<RunningNode, NodeError> {
    let state = Arc::new(NodeState::new(config)?);
    let listen = state.config.listen;
    let addr =
        listener.local_addr().map_err(|e| NodeError::Listen { address: listen.to_string(), detail: e.to_string() })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_on(state.clone(), listener, async {
        let _ = stopped.await;
    }));
    Ok(RunningNode { addr, state, stop: Some(stop), task })
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve_on(
    state: Arc<NodeState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<PsiPeerServer<PsiPeerService>>().await;
    health.set_serving::<NodeControlServer<ControlService>>().await;
    health.set_serving::<StatsPeerServer<crate::stats::StatsPeerService>>().await;
    health.set_serving::<BlacklistPeerServer<crate::blacklist::BlacklistPeerService>>().await;
    health.set_serving::<ComputeOnlyPeerServer<crate::compute_only::ComputeOnlyPeerService>>().await;
    health.set_serving::<LookupPeerServer<crate::lookup::LookupPeerService>>().await;
    health.set_serving::<LearningPeerServer<crate::learning::owner::LearningPeerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(stayput_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Worker(e.to_string()))?;
    let psi = PsiPeerServer::new(PsiPeerService::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let control = NodeControlServer::new(ControlService::new(state.clone()));
    let stats = StatsPeerServer::new(crate::stats::StatsPeerService::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let labeled = BlacklistPeerServer::new(crate::blacklist::BlacklistPeerService::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let aggregate = ComputeOnlyPeerServer::new(crate::compute_only::ComputeOnlyPeerService::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::compute_only::MAX_TABLE_BYTES + 4096);
    let pir = LookupPeerServer::new(crate::lookup::LookupPeerService::new(state.clone()))
        .max_decoding_message_size(crate::lookup::MAX_PIR_MESSAGE_BYTES)
        .max_encoding_message_size(crate::lookup::MAX_PIR_MESSAGE_BYTES);
    let learning = LearningPeerServer::new(crate::learning::owner::LearningPeerService::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tracing::info!(org = %state.config.org, addr = ?listener.local_addr().ok(), "node listening");
    Server::builder()
        .tls_config(state.tls.server())
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .timeout(crate::wire::CALL_DEADLINE)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(psi)
        .add_service(control)
        .add_service(stats)
        .add_service(labeled)
        .add_service(aggregate)
        .add_service(pir)
        .add_service(learning)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| NodeError::Listen { address: "(bound)".into(), detail: e.to_string() })
}
