//! The whole consortium on loopback, in this process: the members' nodes
//! of [`crate::nodes`], each organisation's ed25519 key, and the operator's
//! coordinator with the embedded ledger, every node configured to check
//! that ledger and every member admitted on it with its node's endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stayput_chain_connector::embedded::{Clock, EmbeddedLedger};
use stayput_chain_connector::keys;
use stayput_chain_connector::records::{Computation, Grant, Member, OrgKey, Record, Role, SignedRecord};
use stayput_chain_connector::{Ledger, LedgerError};
use stayput_coordinator::client::{Client, Submitted, TaskSpec};
use stayput_coordinator::{CoordinatorConfig, CoordinatorError, RunningCoordinator};
use stayput_identity::{TlsMaterial, issue_org_certificate, read_certified_key, write_certified_key};
use tokio::net::TcpListener;

use crate::LocalnetError;
use crate::nodes::{LocalNet, OrgSpec};

/// An organisation of the local consortium with its roles.
#[derive(Debug, Clone)]
pub struct Participant {
    /// Its node and datasets.
    pub spec: OrgSpec,
    /// Display name.
    pub display: String,
    /// Roles on the ledger.
    pub roles: Vec<Role>,
}

/// The running consortium.
pub struct LocalConsortium {
    /// The folder holding everything.
    pub dir: PathBuf,
    /// The nodes.
    pub net: LocalNet,
    /// The coordinator.
    pub coordinator: RunningCoordinator,
    /// The operator's embedded ledger.
    pub ledger: Arc<EmbeddedLedger>,
    /// The coordinator's configuration file.
    pub coordinator_config: PathBuf,
    /// The operator organisation.
    pub operator: String,
    keys: BTreeMap<String, OrgKey>,
    clock: Clock,
}

impl std::fmt::Debug for LocalConsortium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConsortium").field("dir", &self.dir).field("net", &self.net).finish_non_exhaustive()
    }
}

/// The operator's organisation id in a local consortium.
pub const OPERATOR: &str = "operator";

fn coordinator_toml(listen: std::net::SocketAddr, keys: &Path) -> String {
    let k = |f: &str| keys.join(f).display().to_string();
    format!(
        "[coordinator]\norg = \"{OPERATOR}\"\nname = \"Consortium operator\"\nlisten = \"{listen}\"\nstate = \"coordinator.redb\"\nsigning_key = {:?}\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n[ledger]\nbackend = \"embedded\"\npath = \"ledger.redb\"\n",
        k(&format!("{OPERATOR}.ed25519")),
        k("ca.pem"),
        k(&format!("{OPERATOR}.pem")),
        k(&format!("{OPERATOR}.key"))
    )
}

impl LocalConsortium {
    /// Creates keys, certificates and configurations under `dir`; starts the
    /// coordinator (embedded ledger, judged by `clock`) and every node;
    /// admits every participant as a member with its node's endpoint.
    pub async fn start(dir: &Path, participants: &[Participant], clock: Clock) -> Result<Self, LocalnetError> {
        let listen_err =
            |e: std::io::Error| LocalnetError::Listen { address: "127.0.0.1:0".into(), detail: e.to_string() };
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        let key_dir = dir.join("keys");
        let mut org_keys = BTreeMap::new();
        for name in participants.iter().map(|p| p.spec.name.as_str()).chain([OPERATOR]) {
            let key = OrgKey::generate();
            keys::save(&key_dir, name, &key)?;
            org_keys.insert(name.to_owned(), key);
        }
        let operator_hex = hex::encode(org_keys[OPERATOR].public_key());
        let extra = |name: &str| {
            format!(
                "\n[ledger]\nendpoint = \"https://{addr}\"\noperator = \"{OPERATOR}\"\noperator_key = \"{operator_hex}\"\nsigning_key = {:?}\n",
                key_dir.join(format!("{name}.ed25519")).display().to_string()
            )
        };
        let specs: Vec<OrgSpec> = participants.iter().map(|p| p.spec.clone()).collect();
        let net = LocalNet::start_with(dir, &specs, None, &extra).await?;

        // The operator's certificate, under the consortium CA LocalNet made.
        let ca = read_certified_key(&key_dir, "ca")?;
        let cert = issue_org_certificate(&ca, OPERATOR, &["localhost".into(), "127.0.0.1".into()])?;
        write_certified_key(&key_dir, OPERATOR, &cert)?;
        let operator_dir = dir.join(OPERATOR);
        std::fs::create_dir_all(&operator_dir)
            .map_err(|source| LocalnetError::WriteFile { path: operator_dir.clone(), source })?;
        let coordinator_config = operator_dir.join("coordinator.toml");
        std::fs::write(&coordinator_config, coordinator_toml(addr, &key_dir))
            .map_err(|source| LocalnetError::WriteFile { path: coordinator_config.clone(), source })?;
        let config = CoordinatorConfig::load(&coordinator_config)?;
        let ledger = stayput_coordinator::open_embedded(&config, clock.clone())?;
        let operator_key = &org_keys[OPERATOR];
        for p in participants {
            let member = Member {
                org: p.spec.name.clone(),
                name: p.display.clone(),
                roles: p.roles.clone(),
                signing_key: org_keys[&p.spec.name].public_key(),
                endpoint: format!("https://{}", net.nodes[&p.spec.name].addr),
            };
            ledger.submit(SignedRecord::sign(Record::Member(member), OPERATOR, operator_key, &ledger.id())).await?;
        }
        let coordinator =
            stayput_coordinator::spawn_on(&config, listener, ledger.clone(), Some(ledger.clone()), clock.clone())
                .await?;
        Ok(Self {
            dir: dir.into(),
            net,
            coordinator,
            ledger,
            coordinator_config,
            operator: OPERATOR.into(),
            keys: org_keys,
            clock,
        })
    }

    /// An organisation's ledger signing key.
    pub fn key(&self, org: &str) -> &OrgKey {
        &self.keys[org]
    }

    /// Submits `record` signed by `org`.
    pub async fn write(&self, org: &str, record: Record) -> Result<(), LedgerError> {
        self.ledger.submit(SignedRecord::sign(record, org, &self.keys[org], &self.ledger.id())).await.map(drop)
    }

    /// Records a task straight on the ledger as `requester`, past the
    /// coordinator's admission (as a hostile requester can): its signed
    /// request for `kind` on `datasets` with `params`, under `grants`.
    /// Returns the task id.
    pub async fn record_task(
        &self,
        requester: &str,
        kind: Computation,
        datasets: &[&str],
        params: Vec<u8>,
        grants: &[&str],
    ) -> Result<String, LedgerError> {
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let request = stayput_chain_connector::tasks::TaskRequest {
            requester: requester.into(),
            kind,
            datasets: datasets.iter().map(|d| (*d).to_owned()).collect(),
            receiver: requester.into(),
            params,
            nonce,
            issued_at: (self.clock)(),
            ledger: self.ledger.id(),
        }
        .sign(&self.keys[requester]);
        let task =
            stayput_chain_connector::records::Task::new(request, grants.iter().map(|g| (*g).to_owned()).collect());
        let id = task.id.clone();
        self.write(requester, Record::Task(task)).await?;
        Ok(id)
    }

    /// The owner publishes the next version of one of its node's datasets,
    /// with the digests of its schema and content.
    pub async fn publish_dataset(&self, org: &str, dataset: &str) -> Result<(), LocalnetError> {
        let state = self.net.state(org).clone();
        let source = state.config.dataset(dataset)?.clone();
        let version = u32::try_from(self.ledger.dataset(dataset).await?.len()).unwrap_or(u32::MAX - 1) + 1;
        let record =
            tokio::task::spawn_blocking(move || stayput_node::publish::version_record(&state.config, &source, version))
                .await
                .map_err(|e| LocalnetError::Worker(e.to_string()))??;
        Ok(self.write(org, Record::DatasetVersion(record)).await?)
    }

    /// The owner of `dataset` grants it to `grantee`.
    #[allow(clippy::too_many_arguments)]
    pub async fn grant(
        &self,
        owner: &str,
        id: &str,
        dataset: &str,
        grantee: &str,
        computations: Vec<Computation>,
        columns: &[&str],
        max_uses: u32,
        valid_for_secs: u64,
    ) -> Result<(), LedgerError> {
        let grant = Grant {
            id: id.into(),
            dataset: dataset.into(),
            grantee: grantee.into(),
            computations,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            min_cohort: 0,
            max_uses,
            max_items: 100_000_000,
            max_items_per_use: 100_000_000,
            expires_at: (self.clock)().saturating_add(valid_for_secs),
            epsilon_budget: 0,
        };
        self.write(owner, Record::Grant(grant)).await
    }

    /// `org`'s client of the coordinator (its node's TLS identity).
    pub async fn client(&self, org: &str) -> Result<Client, CoordinatorError> {
        let tls: &TlsMaterial = &self.net.state(org).tls;
        Client::connect(tls, OPERATOR, &format!("https://{}", self.coordinator.addr)).await
    }

    /// Signs `spec` as `org` and submits it.
    pub async fn submit(&self, org: &str, spec: &TaskSpec) -> Result<Submitted, CoordinatorError> {
        let signed = stayput_coordinator::client::sign(spec, org, &self.keys[org], (self.clock)(), self.ledger.id());
        self.client(org).await?.submit(&signed).await
    }

    /// Stops the coordinator and every node.
    pub async fn shutdown(self) -> Result<(), LocalnetError> {
        self.coordinator.shutdown().await?;
        self.net.shutdown().await?;
        Ok(())
    }
}
