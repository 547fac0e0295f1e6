//! # Stayput coordinator
//!
//! Run by the consortium's operator. It accepts tasks, checks them against
//! the ledger, records them, drives the requester's node and records the
//! result digest — and never sees raw data or a result in the clear: the
//! result is written only on the receiver's node, and the coordinator
//! learns its digest and size.
//!
//! * [`admission`] — every check made before anything is recorded.
//! * [`store`] — durable task state (redb), so a restart resumes or fails
//!   each task cleanly.
//! * [`driver`] — the lifecycle of one task, each step safe to repeat.
//! * [`service`] — the `Coordinator` gRPC service (signed submissions,
//!   watching a task).
//! * [`ledger_service`] — the embedded ledger served to members.
//! * [`client`] — what requesters call: sign, submit, watch.
//! * [`config`] — the TOML configuration.
//!
//! Identity and dialling (certificates, mTLS, the caller's organisation)
//! come from `stayput-identity`, shared with the nodes; the coordinator
//! does not depend on the node crate. A whole consortium on loopback is
//! `stayput-localnet`.
//!
//! Trust: a node does what the ledger shows, not what the coordinator
//! says; requests are signed by the requester's organisation key and
//! carry a nonce and issue time (replays are refused); every connection is
//! mutually authenticated TLS under the consortium CA.
#![forbid(unsafe_code)]

pub mod admission;
pub mod client;
pub mod config;
pub mod driver;
mod error;
pub mod evaluation;
pub mod ledger_service;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use stayput_chain_connector::Ledger;
use stayput_chain_connector::embedded::{Clock, EmbeddedLedger};
use stayput_chain_connector::records::{Member, Role};
use stayput_identity::TlsMaterial;
use stayput_proto::v1::coordinator_server::CoordinatorServer;
use stayput_proto::v1::ledger_service_server::LedgerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::CoordinatorConfig;
pub use error::CoordinatorError;
pub use service::Inner;

/// A coordinator serving in the background.
#[derive(Debug)]
pub struct RunningCoordinator {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state.
    pub inner: Arc<Inner>,
    /// The embedded ledger it serves, when it holds one.
    pub embedded: Option<Arc<EmbeddedLedger>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), CoordinatorError>>,
}

impl RunningCoordinator {
    /// Stops accepting and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<(), CoordinatorError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .await
            .map_err(|e| CoordinatorError::Listen { address: self.addr.to_string(), detail: e.to_string() })?
    }

    /// Stops at once, as a crash would (tasks in flight are abandoned).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Opens the embedded ledger named by `config`, creating it (the operator
/// admitting itself) when the file does not exist.
pub fn open_embedded(config: &CoordinatorConfig, clock: Clock) -> Result<Arc<EmbeddedLedger>, CoordinatorError> {
    let config::LedgerBackend::Embedded { path } = &config.ledger else {
        return Err(CoordinatorError::Config {
            path: "coordinator configuration".into(),
            reason: "the ledger is not the embedded one".into(),
        });
    };
    let key = stayput_chain_connector::keys::load(&config.signing_key)?;
    let ledger = if path.exists() {
        EmbeddedLedger::open(path, key, clock)?
    } else {
        let member = Member {
            org: config.org.clone(),
            name: config.name.clone(),
            roles: vec![Role::Operator],
            signing_key: key.public_key(),
            endpoint: format!("https://{}", config.listen),
        };
        tracing::info!(path = %path.display(), "creating the embedded ledger");
        EmbeddedLedger::create(path, key, member, clock)?
    };
    Ok(Arc::new(ledger))
}

/// Starts the coordinator of `config` on `listener` over `ledger`: resumes
/// unfinished tasks, then serves the `Coordinator` service (and the
/// `LedgerService` when `embedded` is given), gRPC health and reflection.
pub async fn spawn_on(
    config: &CoordinatorConfig,
    listener: TcpListener,
    ledger: Arc<dyn Ledger>,
    embedded: Option<Arc<EmbeddedLedger>>,
    clock: Clock,
) -> Result<RunningCoordinator, CoordinatorError> {
    let tls = TlsMaterial::load(&config.tls)?;
    let key = stayput_chain_connector::keys::load(&config.signing_key)?;
    let store = store::Store::open(&config.state)?;
    let inner = Arc::new(Inner::new(config.org.clone(), key, ledger, tls.clone(), store, clock));
    let resumed = inner.resume()?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished tasks");
    }
    let addr = listener
        .local_addr()
        .map_err(|e| CoordinatorError::Listen { address: config.listen.to_string(), detail: e.to_string() })?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CoordinatorServer<service::CoordinatorService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(stayput_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| CoordinatorError::Listen { address: addr.to_string(), detail: e.to_string() })?;
    let ledger_service =
        embedded.clone().map(|l| LedgerServiceServer::new(ledger_service::LedgerServer::new(l, &config.org)));
    let router = tonic::transport::Server::builder()
        .tls_config(tls.server())
        .map_err(|e| CoordinatorError::Listen { address: addr.to_string(), detail: e.to_string() })?
        .timeout(stayput_identity::CALL_DEADLINE)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(CoordinatorServer::new(service::CoordinatorService::new(inner.clone())))
        .add_optional_service(ledger_service);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| CoordinatorError::Listen { address: addr.to_string(), detail: e.to_string() })
    });
    tracing::info!(addr = %addr, "coordinator listening");
    Ok(RunningCoordinator { addr, inner, embedded, stop: Some(stop), task })
}

/// Binds the configured address, opens the configured ledger and serves.
pub async fn spawn(config: &CoordinatorConfig) -> Result<RunningCoordinator, CoordinatorError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| CoordinatorError::Listen { address: config.listen.to_string(), detail: e.to_string() })?;
    let clock = stayput_chain_connector::embedded::system_clock();
    match &config.ledger {
        config::LedgerBackend::Embedded { .. } => {
            let embedded = open_embedded(config, clock.clone())?;
            spawn_on(config, listener, embedded.clone(), Some(embedded), clock).await
        }
        config::LedgerBackend::Evm(evm) => {
            let operator = stayput_chain_connector::keys::load(&config.signing_key)?.public_key();
            let ledger: Arc<dyn Ledger> = Arc::new(evm.open(&config.org, operator)?);
            spawn_on(config, listener, ledger, None, clock).await
        }
    }
}
