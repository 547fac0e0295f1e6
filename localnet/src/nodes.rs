//! The members' nodes on loopback, in this process: CA, organisation
//! certificates, node configurations and running nodes in one folder,
//! without a coordinator (the PSI benchmark and the peer-protocol tests run
//! on this alone; [`crate::consortium`] adds the operator and the ledger).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;

use stayput_identity::{generate_ca, issue_org_certificate, write_certified_key};
use stayput_node::NodeConfig;
use stayput_node::server::RunningNode;

use crate::LocalnetError;

/// A dataset an organisation's node serves.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    /// Name peers use.
    pub name: String,
    /// The file (absolute, or relative to the organisation's folder).
    pub path: PathBuf,
    /// Key columns.
    pub key_columns: Vec<String>,
    /// Normalisation rule names.
    pub normalise: Vec<String>,
    /// For a blacklist: the label column (the OPRF key goes beside the
    /// organisation's configuration as `<dataset>.oprf`).
    pub labels: Option<String>,
    /// For a lookup table: its record columns and record size.
    pub pir: Option<stayput_node::config::PirSettings>,
}

impl DatasetSpec {
    /// A dataset served for the balanced protocols only: `path`, keyed by
    /// `key_column`, keys trimmed.
    pub fn plain(name: &str, path: PathBuf, key_column: &str) -> Self {
        Self {
            name: name.into(),
            path,
            key_columns: vec![key_column.into()],
            normalise: vec!["trim".into()],
            labels: None,
            pir: None,
        }
    }
}

/// An organisation of the local consortium.
#[derive(Debug, Clone)]
pub struct OrgSpec {
    /// Organisation name.
    pub name: String,
    /// Its datasets.
    pub datasets: Vec<DatasetSpec>,
}

/// Running nodes of a local consortium.
#[derive(Debug)]
pub struct LocalNet {
    /// The folder holding keys, configurations and results.
    pub dir: PathBuf,
    /// Running nodes by organisation.
    pub nodes: BTreeMap<String, RunningNode>,
    /// Each organisation's configuration file.
    pub configs: BTreeMap<String, PathBuf>,
}

/// Writes keys and configurations for `orgs` under `dir` with the given
/// listen addresses (`addrs[i]` for `orgs[i]`); returns config paths.
pub fn write_consortium(
    dir: &Path,
    orgs: &[OrgSpec],
    addrs: &[std::net::SocketAddr],
    batch_size: Option<usize>,
    extra: &dyn Fn(&str) -> String,
) -> Result<BTreeMap<String, PathBuf>, LocalnetError> {
    let keys = dir.join("keys");
    let ca = generate_ca("stayput-local")?;
    write_certified_key(&keys, "ca", &ca)?;
    let mut configs = BTreeMap::new();
    for (org, addr) in orgs.iter().zip(addrs) {
        let cert = issue_org_certificate(&ca, &org.name, &["localhost".into(), "127.0.0.1".into()])?;
        write_certified_key(&keys, &org.name, &cert)?;
        let org_dir = dir.join(&org.name);
        std::fs::create_dir_all(&org_dir)
            .map_err(|source| LocalnetError::WriteFile { path: org_dir.clone(), source })?;
        let mut text = String::new();
        let _ = writeln!(text, "[node]\norg = {:?}\nlisten = \"{addr}\"\noutput_dir = \"results\"", org.name);
        if let Some(b) = batch_size {
            let _ = writeln!(text, "batch_size = {b}");
        }
        let key_path = |f: String| keys.join(f).display().to_string();
        let _ = writeln!(
            text,
            "\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n[peers]",
            key_path("ca.pem".into()),
            key_path(format!("{}.pem", org.name)),
            key_path(format!("{}.key", org.name))
        );
        for (peer, peer_addr) in orgs.iter().zip(addrs).filter(|(p, _)| p.name != org.name) {
            let _ = writeln!(text, "{} = \"https://{peer_addr}\"", peer.name);
        }
        for d in &org.datasets {
            let _ = writeln!(
                text,
                "\n[datasets.{}]\npath = {:?}\nkey_columns = {:?}\nnormalise = {:?}",
                d.name,
                d.path.display().to_string(),
                d.key_columns,
                d.normalise
            );
            if let Some(column) = &d.labels {
                let _ = writeln!(text, "labels = {{ column = {column:?}, oprf_key = \"{}.oprf\" }}", d.name);
            }
            if let Some(pir) = &d.pir {
                let _ = writeln!(text, "pir = {{ columns = {:?}, record_bytes = {} }}", pir.columns, pir.record_bytes);
            }
        }
        text.push_str(&extra(&org.name));
        let path = org_dir.join("node.toml");
        std::fs::write(&path, text).map_err(|source| LocalnetError::WriteFile { path: path.clone(), source })?;
        configs.insert(org.name.clone(), path);
    }
    Ok(configs)
}

impl LocalNet {
    /// Creates keys and configurations under `dir` and starts every node on
    /// a free loopback port.
    pub async fn start(dir: &Path, orgs: &[OrgSpec], batch_size: Option<usize>) -> Result<Self, LocalnetError> {
        Self::start_with(dir, orgs, batch_size, &|_| String::new()).await
    }

    /// [`LocalNet::start`], appending `extra(org)` to each organisation's
    /// configuration (a `[ledger]` section, say).
    pub async fn start_with(
        dir: &Path,
        orgs: &[OrgSpec],
        batch_size: Option<usize>,
        extra: &dyn Fn(&str) -> String,
    ) -> Result<Self, LocalnetError> {
        let mut listeners = Vec::new();
        for _ in orgs {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| LocalnetError::Listen { address: "127.0.0.1:0".into(), detail: e.to_string() })?;
            listeners.push(listener);
        }
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().expect("bound")).collect();
        let configs = write_consortium(dir, orgs, &addrs, batch_size, extra)?;
        let mut nodes = BTreeMap::new();
        for (org, listener) in orgs.iter().zip(listeners) {
            let config = NodeConfig::load(&configs[&org.name])?;
            nodes.insert(org.name.clone(), stayput_node::server::spawn_on(config, listener).await?);
        }
        Ok(Self { dir: dir.into(), nodes, configs })
    }

    /// A node's shared state.
    pub fn state(&self, org: &str) -> &std::sync::Arc<stayput_node::NodeState> {
        &self.nodes[org].state
    }

    /// Stops every node.
    pub async fn shutdown(self) -> Result<(), LocalnetError> {
        for (_, node) in self.nodes {
            node.shutdown().await?;
        }
        Ok(())
    }
}
