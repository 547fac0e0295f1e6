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
    /// Shard nodes by organisation, in shard order ([`Self::start_shards`]).
    pub shards: BTreeMap<String, Vec<stayput_node::server::RunningNode>>,
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
            shards: BTreeMap::new(),
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

    /// Starts `count` shard nodes for each `(org, count)`, as a deployment
    /// runs them: the organisation's certificate, ledger key and dataset
    /// files, `shard = "i/N"`, its own result and state folders; shard `i`
    /// of every sharded organisation listens on `127.0.i.2` at a port of
    /// that organisation, so its member endpoint on the ledger becomes
    /// `https://127.0.{shard}.2:<port>` and its peers' shard nodes dial
    /// theirs by index. The organisation's first node keeps running.
    pub async fn start_shards(&mut self, orgs: &[(&str, u32)]) -> Result<(), LocalnetError> {
        let mut listeners: BTreeMap<String, Vec<TcpListener>> = BTreeMap::new();
        for (org, count) in orgs {
            listeners.insert((*org).to_owned(), bind_shards(*count).await?);
        }
        let templates: BTreeMap<String, String> = listeners
            .iter()
            .map(|(org, l)| {
                let port = l[0].local_addr().expect("bound").port();
                (org.clone(), format!("https://127.0.{{shard}}.2:{port}"))
            })
            .collect();
        let template = |org: &str| templates.get(org).cloned();
        for (org, count) in orgs {
            let path = &self.net.configs[*org];
            let text = std::fs::read_to_string(path)
                .map_err(|source| LocalnetError::WriteFile { path: path.clone(), source })?;
            let mut nodes = Vec::new();
            for (index, listener) in (0..*count).zip(listeners.remove(*org).expect("bound above")) {
                let addr = listener
                    .local_addr()
                    .map_err(|e| LocalnetError::Listen { address: "127.0.x.2".into(), detail: e.to_string() })?;
                let mut config = String::new();
                for line in text.lines() {
                    let peer = line.split_once(" = \"https://").map(|(name, _)| name);
                    if line.starts_with("listen = ") {
                        config.push_str(&format!("listen = \"{addr}\"\nshard = \"{index}/{count}\"\n"));
                    } else if line.starts_with("output_dir = ") {
                        config.push_str(&format!(
                            "output_dir = \"results-shard-{index}\"\nstate_dir = \"state-shard-{index}\"\n"
                        ));
                    } else if let Some(endpoint) = peer.and_then(template) {
                        config.push_str(&format!("{} = \"{endpoint}\"\n", peer.unwrap_or_default()));
                    } else {
                        config.push_str(line);
                        config.push('\n');
                    }
                }
                let shard_path = path.with_file_name(format!("node-shard-{index}.toml"));
                std::fs::write(&shard_path, config)
                    .map_err(|source| LocalnetError::WriteFile { path: shard_path.clone(), source })?;
                let config = stayput_node::NodeConfig::load(&shard_path)?;
                nodes.push(stayput_node::server::spawn_on(config, listener).await?);
            }
            self.shards.insert((*org).to_owned(), nodes);
        }
        for (org, _) in orgs {
            let mut member = self
                .ledger
                .member(org)
                .await?
                .ok_or_else(|| LocalnetError::Worker(format!("'{org}' is not a member")))?;
            member.endpoint = template(org).expect("every sharded organisation has a template");
            self.write(OPERATOR, Record::Member(member)).await?;
        }
        Ok(())
    }

    /// Stops the coordinator and every node.
    pub async fn shutdown(self) -> Result<(), LocalnetError> {
        for node in self.shards.into_values().flatten() {
            node.shutdown().await?;
        }
        self.coordinator.shutdown().await?;
        self.net.shutdown().await?;
        Ok(())
    }
}

/// Listeners for `count` shards at one port: shard `i` on `127.0.i.2`
/// (every 127/8 address is loopback). A port taken on one of them is
/// tried again with another, a bounded number of times.
async fn bind_shards(count: u32) -> Result<Vec<TcpListener>, LocalnetError> {
    let listen_err =
        |address: String| move |e: std::io::Error| LocalnetError::Listen { address, detail: e.to_string() };
    let mut last = None;
    for _ in 0..16 {
        let first = TcpListener::bind("127.0.0.2:0").await.map_err(listen_err("127.0.0.2:0".into()))?;
        let port = first.local_addr().map_err(listen_err("127.0.0.2:0".into()))?.port();
        let mut all = vec![first];
        for index in 1..count {
            let address = format!("127.0.{index}.2:{port}");
            match TcpListener::bind(&address).await {
                Ok(listener) => all.push(listener),
                Err(e) => {
                    last = Some(listen_err(address)(e));
                    break;
                }
            }
        }
        if all.len() == count as usize {
            return Ok(all);
        }
    }
    Err(last.unwrap_or_else(|| LocalnetError::Listen { address: "127.0.x.2".into(), detail: "no common port".into() }))
}
