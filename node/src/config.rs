//! The node's TOML configuration.
//!
//! ```toml
//! [node]
//! org = "bank"                       # this organisation; must match the certificate
//! listen = "127.0.0.1:7101"
//! output_dir = "results"             # where results are written
//! state_dir = "state"                # the node's own working state (default "state")
//! max_sessions = 4                   # sessions at once (each holds a dataset's keys)
//! shard = "0/4"                      # optional: this node is shard 0 of 4 of its organisation
//!
//! [tls]
//! ca = "keys/ca.pem"                 # the consortium CA
//! cert = "keys/bank.pem"
//! key = "keys/bank.key"
//!
//! [peers]
//! bureau = "https://127.0.0.1:7102"  # org name = the name in its certificate
//!
//! [ledger]                           # optional: serve only what the ledger authorises
//! endpoint = "https://127.0.0.1:7000"
//! operator = "operator"
//! operator_key = "keys/operator.ed25519.pub"
//! signing_key = "keys/bank.ed25519"
//!
//! [datasets.applicants]
//! path = "data/applicants.csv"       # CSV with a header row, or Parquet
//! key_columns = ["national_id"]      # one or more; composite keys are encoded unambiguously
//! normalise = ["trim", "uppercase"]  # applied in order to every key column
//! null_values = ["N/A", "NULL"]      # raw values that mean "no key" (never matched)
//! ```
//!
//! Relative paths are resolved against the configuration file's folder.
//!
//! **Shards.** An organisation with more rows than one machine serves runs
//! `N` nodes for PSI tasks run as shards, each with the same organisation
//! certificate and ledger key, the same dataset files (shared storage) and
//! `shard = "i/N"`; node `i` keeps the keys that fall in shard `i` and
//! pairs with the peer's shard `i`. A peer endpoint (here, and the
//! member's endpoint on the ledger) may name its shards with `{shard}`,
//! e.g. `https://psi-{shard}.bureau.svc:7101`: a shard node dials the
//! peer's node of its own index. A shard node also runs tasks of one
//! session (reading every key).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stayput_identity::TlsPaths;
use stayput_psi::keys::KeyRules;

use crate::NodeError;
use crate::dataset::{Dataset, FileFormat};
pub use crate::dataset::{LabelSettings, PirSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    tls: TlsPaths,
    #[serde(default)]
    ledger: Option<LedgerSettings>,
    #[serde(default)]
    peers: BTreeMap<String, String>,
    #[serde(default)]
    datasets: BTreeMap<String, RawDataset>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    org: String,
    listen: SocketAddr,
    output_dir: PathBuf,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    max_sessions: Option<usize>,
    #[serde(default)]
    shard: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    path: PathBuf,
    #[serde(default)]
    format: Option<FileFormat>,
    key_columns: Vec<String>,
    #[serde(default)]
    normalise: Vec<String>,
    #[serde(default)]
    null_values: Vec<String>,
    #[serde(default)]
    labels: Option<LabelSettings>,
    #[serde(default)]
    pir: Option<PirSettings>,
}

/// Where the consortium's ledger is and how this node signs for it. With
/// it, the node serves a task only when the ledger authorises it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// The coordinator's ledger service (https URL).
    pub endpoint: String,
    /// The operator organisation (the name in the coordinator's certificate).
    pub operator: String,
    /// The operator's ed25519 public key: 64 hex characters or a .pub file.
    pub operator_key: String,
    /// This organisation's ed25519 signing key file (for use records).
    pub signing_key: PathBuf,
    /// When the ledger is an EVM chain: read and write it there directly,
    /// with this organisation's own account (`endpoint` is then only the
    /// coordinator's address).
    #[serde(default)]
    pub evm: Option<stayput_chain_connector::evm::EvmSettings>,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This organisation's name, as in its certificate.
    pub org: String,
    /// Where the node listens.
    pub listen: SocketAddr,
    /// Where results are written.
    pub output_dir: PathBuf,
    /// The node's own working state: blacklist versions it serves, caches
    /// of other organisations' encoded sets.
    pub state_dir: PathBuf,
    /// Items per PSI batch this node sends.
    pub batch_size: usize,
    /// Protocol sessions this node runs at once (as requester or responder).
    pub max_sessions: usize,
    /// TLS material.
    pub tls: TlsPaths,
    /// Peer organisations by name → endpoint URL.
    pub peers: BTreeMap<String, String>,
    /// Datasets by name.
    pub datasets: BTreeMap<String, Dataset>,
    /// The ledger, when the node checks authorisation on it.
    pub ledger: Option<LedgerSettings>,
    /// Which shard of its organisation this node is, when it runs PSI
    /// tasks as shards.
    pub shard: Option<ShardOf>,
}

/// Shard `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardOf {
    /// This shard.
    pub index: u32,
    /// Shards in all.
    pub count: u32,
}

impl ShardOf {
    /// Parses `i/N` (0 ≤ i < N, 2 ≤ N ≤ 256).
    pub fn parse(text: &str) -> Result<Self, NodeError> {
        let max = stayput_chain_connector::tasks::MAX_SHARDS;
        let bad = || {
            NodeError::InvalidConfig(format!(
                "shard = \"{text}\": give \"i/N\", this node's index from 0 and the shard count (2 to {max})"
            ))
        };
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) =
            (index.trim().parse().map_err(|_| bad())?, count.trim().parse().map_err(|_| bad())?);
        if !(2..=max).contains(&count) || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for ShardOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Default number of concurrent sessions: each holds a dataset's keys.
pub const DEFAULT_MAX_SESSIONS: usize = 4;

/// Default PSI batch: 4096 points = 128 KiB per message.
pub const DEFAULT_BATCH_SIZE: usize = 4096;

impl NodeConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::ReadFile { path: path.into(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| match e {
            NodeError::Config { source, .. } => NodeError::Config { path: path.into(), source },
            other => other,
        })
    }

    /// Parses a configuration, resolving relative paths against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, NodeError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| NodeError::Config { path: PathBuf::from("<config>"), source: Box::new(e) })?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let mut datasets = BTreeMap::new();
        for (name, d) in raw.datasets {
            if d.key_columns.is_empty() {
                return Err(NodeError::InvalidConfig(format!("dataset '{name}' names no key_columns")));
            }
            let path = resolve(d.path);
            let format = match d.format {
                Some(f) => f,
                None => FileFormat::from_path(&path).ok_or(NodeError::UnknownFormat { path: path.clone() })?,
            };
            let rules = KeyRules::parse(&d.normalise)?;
            let labels = d.labels.map(|l| LabelSettings { oprf_key: resolve(l.oprf_key), ..l });
            if labels.is_some() && d.pir.is_some() {
                return Err(NodeError::InvalidConfig(format!(
                    "dataset '{name}' has both `labels` and `pir`; serve a blacklist and a lookup table as two datasets"
                )));
            }
            if let Some(pir) = &d.pir {
                let limit = stayput_pir::MAX_RECORD_BYTES;
                if pir.columns.is_empty()
                    || !(stayput_pir::TAG_BYTES + 2 < pir.record_bytes && pir.record_bytes <= limit)
                {
                    return Err(NodeError::InvalidConfig(format!(
                        "dataset '{name}': `pir` needs at least one column and a record_bytes of 19 to {limit}"
                    )));
                }
            }
            datasets.insert(
                name.clone(),
                Dataset {
                    name,
                    path,
                    format,
                    key_columns: d.key_columns,
                    rules,
                    null_values: d.null_values,
                    labels,
                    pir: d.pir,
                    shard: None,
                },
            );
        }
        for (peer, endpoint) in &raw.peers {
            if !endpoint.starts_with("https://") {
                return Err(NodeError::InvalidConfig(format!(
                    "peer '{peer}' endpoint '{endpoint}' must be an https:// URL: nodes only talk mutually authenticated TLS"
                )));
            }
        }
        let batch_size = raw.node.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 || batch_size > stayput_psi::messages::MAX_BATCH {
            return Err(NodeError::InvalidConfig(format!(
                "batch_size must be 1 to {}",
                stayput_psi::messages::MAX_BATCH
            )));
        }
        let shard = raw.node.shard.as_deref().map(ShardOf::parse).transpose()?;
        Ok(Self {
            shard,
            org: raw.node.org,
            listen: raw.node.listen,
            output_dir: resolve(raw.node.output_dir),
            state_dir: resolve(raw.node.state_dir.unwrap_or_else(|| PathBuf::from("state"))),
            batch_size,
            max_sessions: raw.node.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS).max(1),
            tls: TlsPaths { ca: resolve(raw.tls.ca), cert: resolve(raw.tls.cert), key: resolve(raw.tls.key) },
            peers: raw.peers,
            datasets,
            ledger: raw.ledger.map(|l| LedgerSettings {
                signing_key: resolve(l.signing_key),
                evm: l.evm.map(|e| e.with_paths_resolved(resolve)),
                ..l
            }),
        })
    }

    /// A dataset by name, or an error listing the known ones.
    pub fn dataset(&self, name: &str) -> Result<&Dataset, NodeError> {
        self.datasets
            .get(name)
            .ok_or_else(|| NodeError::UnknownDataset { name: name.to_owned(), known: join_names(self.datasets.keys()) })
    }

    /// A peer's endpoint by organisation name.
    pub fn peer(&self, name: &str) -> Result<&str, NodeError> {
        self.peers
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| NodeError::UnknownPeer { name: name.to_owned(), known: join_names(self.peers.keys()) })
    }
}

fn join_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() { "(none)".into() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
org = "bank"
listen = "127.0.0.1:7101"
output_dir = "out"
[tls]
ca = "ca.pem"
cert = "bank.pem"
key = "/abs/bank.key"
[peers]
bureau = "https://127.0.0.1:7102"
[datasets.applicants]
path = "applicants.csv"
key_columns = ["national_id", "name"]
normalise = ["trim", "uppercase"]
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let c = NodeConfig::parse(GOOD, Path::new("/etc/stayput")).unwrap();
        assert_eq!(c.org, "bank");
        assert_eq!(c.output_dir, Path::new("/etc/stayput/out"));
        assert_eq!(c.state_dir, Path::new("/etc/stayput/state"));
        assert_eq!(c.tls.key, Path::new("/abs/bank.key"));
        let d = c.dataset("applicants").unwrap();
        assert_eq!(d.format, FileFormat::Csv);
        assert_eq!(d.key_columns, ["national_id", "name"]);
        assert_eq!(d.rules.to_string(), "trim, uppercase");
        assert_eq!(c.peer("bureau").unwrap(), "https://127.0.0.1:7102");
        assert_eq!(c.batch_size, DEFAULT_BATCH_SIZE);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let c = NodeConfig::parse(GOOD, Path::new("/")).unwrap();
        let e = c.dataset("loans").unwrap_err().to_string();
        assert!(e.contains("'loans'") && e.contains("applicants"), "{e}");
        let e = c.peer("hospital").unwrap_err().to_string();
        assert!(e.contains("'hospital'") && e.contains("bureau"), "{e}");
        let bad_rule = GOOD.replace("\"uppercase\"", "\"upcase\"");
        let e = NodeConfig::parse(&bad_rule, Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("'upcase'"), "{e}");
        let plain = GOOD.replace("https://127", "http://127");
        assert!(NodeConfig::parse(&plain, Path::new("/")).unwrap_err().to_string().contains("https://"));
        let typo = GOOD.replace("key_columns", "key_column");
        assert!(matches!(NodeConfig::parse(&typo, Path::new("/")), Err(NodeError::Config { .. })));
        let unknown = GOOD.replace("applicants.csv", "applicants.xlsx");
        assert!(matches!(NodeConfig::parse(&unknown, Path::new("/")), Err(NodeError::UnknownFormat { .. })));
    }
}
