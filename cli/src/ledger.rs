//! `stayput ledger …` and `stayput audit …`: reading, auditing and
//! verifying an embedded ledger file with nothing but the operator's public
//! key. Every command verifies the whole chain first.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use stayput_chain_connector::block::InclusionProof;
use stayput_chain_connector::embedded::Snapshot;
use stayput_chain_connector::keys;
use stayput_chain_connector::ledger::LedgerEvent;
use stayput_chain_connector::records::Record;
use stayput_chain_connector::rules::{GrantState, TaskState};

use crate::error::CliError;

/// Which ledger, and whose seal to trust.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The embedded ledger file.
    #[arg(long)]
    ledger: PathBuf,
    /// The operator's public key: 64 hex characters or a .ed25519.pub file.
    #[arg(long)]
    operator: String,
}

impl LedgerArgs {
    fn open(&self) -> Result<Snapshot, CliError> {
        Ok(Snapshot::open(&self.ledger, &keys::public_key(&self.operator)?)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// List the consortium's members.
    Members(LedgerArgs),
    /// List datasets (newest version of each).
    Datasets(LedgerArgs),
    /// List grants and what has been used of them.
    Grants {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Only grants on this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Only grants to this organisation.
        #[arg(long)]
        grantee: Option<String>,
    },
    /// List tasks.
    Tasks {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Only tasks of this requester.
        #[arg(long)]
        requester: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print one task's whole trail (submission, grants, status changes,
    /// uses, result digest) and check the digest against the result file.
    ///
    /// Read the ledger file (--ledger, --operator; a copy while the
    /// coordinator runs) or, as a member, through your node's [ledger]
    /// (--config; every block verified). With --config, the result file on
    /// your node is found and checked when you are the task's receiver.
    Task {
        /// The task id.
        id: String,
        /// The embedded ledger file.
        #[arg(long, requires = "operator", conflicts_with = "config", required_unless_present = "config")]
        ledger: Option<PathBuf>,
        /// The operator's public key: 64 hex characters or a .ed25519.pub file.
        #[arg(long)]
        operator: Option<String>,
        /// Your node's TOML configuration (reads the ledger through its [ledger] section).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The result file to check against the digest on the ledger.
        #[arg(long)]
        result: Option<PathBuf>,
    },
    /// Re-check a federated-statistics result: the sites' commitments
    /// against the digests on the ledger, every range proof, the pooled
    /// opening against the commitments, and the result file's digest.
    VerifyResult {
        /// The task id.
        id: String,
        /// The receiving node's configuration (finds the ledger, the result
        /// and its evidence file).
        #[arg(long)]
        config: PathBuf,
        /// The evidence file, when not beside the result on this node.
        #[arg(long)]
        evidence: Option<PathBuf>,
    },
    /// Verify the whole chain (--ledger) or one inclusion proof (--proof).
    Verify {
        /// The ledger file to verify end to end.
        #[arg(long, conflicts_with = "proof", required_unless_present = "proof")]
        ledger: Option<PathBuf>,
        /// An inclusion proof file (from `stayput audit prove`).
        #[arg(long)]
        proof: Option<PathBuf>,
        /// The operator's public key: 64 hex characters or a .ed25519.pub file.
        #[arg(long)]
        operator: String,
    },
    /// Write an inclusion proof for one record, verifiable offline.
    Prove {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The record's hash (hex).
        #[arg(long)]
        record: String,
        /// Where to write the proof.
        #[arg(long)]
        out: PathBuf,
    },
}

fn short(digest: &[u8]) -> String {
    hex::encode(&digest[..8])
}

pub fn ledger(command: LedgerCommand) -> Result<(), CliError> {
    match command {
        LedgerCommand::Members(args) => {
            let snapshot = args.open()?;
            for m in snapshot.state().members.values() {
                let roles: Vec<&str> = m.roles.iter().map(|r| r.name()).collect();
                println!(
                    "{:<16} {:<28} roles [{}] key {} {}",
                    m.org,
                    m.name,
                    roles.join(", "),
                    short(&m.signing_key),
                    m.endpoint
                );
            }
        }
        LedgerCommand::Datasets(args) => {
            let snapshot = args.open()?;
            for d in snapshot.state().latest_datasets() {
                println!(
                    "{:<20} owner {:<12} v{} content {} schema {}{}",
                    d.dataset,
                    d.owner,
                    d.version,
                    short(&d.content_digest),
                    short(&d.schema_digest),
                    d.protocol_key.as_ref().map_or(String::new(), |k| format!(" protocol key {}", short(k)))
                );
            }
        }
        LedgerCommand::Grants { ledger, dataset, grantee } => {
            let snapshot = ledger.open()?;
            let filter = stayput_chain_connector::ledger::GrantFilter { dataset, grantee };
            for g in snapshot.state().grants_matching(&filter) {
                let computations: Vec<&str> = g.grant.computations.iter().map(|c| c.name()).collect();
                println!(
                    "{:<16} {} → {:<12} [{}] uses {}/{} items {}/{} expires {}{}",
                    g.grant.id,
                    g.grant.dataset,
                    g.grant.grantee,
                    computations.join(", "),
                    g.uses,
                    g.grant.max_uses,
                    g.items,
                    g.grant.max_items,
                    g.grant.expires_at,
                    if g.revoked { " REVOKED" } else { "" }
                );
            }
        }
        LedgerCommand::Tasks { ledger, requester } => {
            let snapshot = ledger.open()?;
            for t in snapshot.state().tasks.values() {
                if requester.as_ref().is_some_and(|r| r != t.task.requester()) {
                    continue;
                }
                println!(
                    "{:<20} {:<10} by {:<12} on [{}] {} uses, {} results",
                    t.task.id,
                    t.status,
                    t.task.requester(),
                    t.task.datasets().join(", "),
                    t.uses.len(),
                    t.results.len()
                );
            }
        }
    }
    Ok(())
}

/// A task's trail as text: the task, its grants, and each record about it
/// with its block, position, writer and hash.
pub fn task_trail(task: &TaskState, grants: &[GrantState], events: &[LedgerEvent]) -> String {
    use std::fmt::Write as _;
    let id = &task.task.id;
    let mut out = String::new();
    let _ = writeln!(out, "task {id}: {} by {}, {}", task.task.kind(), task.task.requester(), task.status);
    let _ = writeln!(out, "  datasets: {}", task.task.datasets().join(", "));
    let _ = writeln!(out, "  parameters digest: {}", hex::encode(task.task.params_digest()));
    let request = &task.task.request.request;
    match stayput_chain_connector::tasks::TaskParams::decode(request.kind, &request.params) {
        Ok(stayput_chain_connector::tasks::TaskParams::Train(p)) => {
            let _ = writeln!(
                out,
                "  model: {:?}\n  label holder {} [{}; label {}], feature holder {} [{}]",
                p.model,
                p.requester_dataset,
                p.features.join(", "),
                p.label,
                p.peer_dataset,
                p.peer_features.join(", ")
            );
        }
        Ok(stayput_chain_connector::tasks::TaskParams::Predict(p)) => {
            let _ = writeln!(
                out,
                "  scores {} × {} with the model of task {}",
                p.requester_dataset, p.peer_dataset, p.model_task
            );
        }
        _ => {}
    }
    for g in grants {
        let _ = writeln!(
            out,
            "  grant {}: {} → {}, columns [{}], uses {}/{}, items {}/{}{}",
            g.grant.id,
            g.grant.dataset,
            g.grant.grantee,
            g.grant.columns.join(", "),
            g.uses,
            g.grant.max_uses,
            g.items,
            g.grant.max_items,
            if g.revoked { ", revoked" } else { "" }
        );
    }
    let _ = writeln!(out, "  trail:");
    for event in events {
        let line = match &event.record.record {
            Record::Task(t) if t.id == *id => "submitted".to_string(),
            Record::TaskStatus { task, status } if task == id => format!("status → {status}"),
            Record::Use(u) if u.task == *id => match u.shard {
                None => format!("use of grant {} for {} items", u.grant, u.items),
                Some(shard) => format!("use of grant {} for {} items (shard {shard})", u.grant, u.items),
            },
            Record::Result(r) if r.task == *id => {
                let committed: Vec<String> = r.intermediates.iter().map(|d| short(d)).collect();
                let what = match task.task.kind() {
                    stayput_chain_connector::records::Computation::Train => "model shares",
                    stayput_chain_connector::records::Computation::Predict => "model share used",
                    _ => "intermediates",
                };
                if committed.is_empty() {
                    format!("result {} for {}", short(&r.result_digest), r.receiver)
                } else {
                    format!("result {} for {}; {what} {}", short(&r.result_digest), r.receiver, committed.join(" "))
                }
            }
            _ => continue,
        };
        let _ = writeln!(
            out,
            "    block {:>5} #{:<3} {:<44} by {:<9} record {}",
            event.receipt.height,
            event.receipt.index,
            line,
            event.record.writer,
            short(&event.receipt.record_hash)
        );
    }
    out
}

/// Checks the result file's salted commitment against the task's result
/// digests (the requester's, and for a task to both the peer's), naming
/// the receiver whose digest it matches.
pub fn check_result(task: &TaskState, path: &std::path::Path) -> Result<String, CliError> {
    if task.results.is_empty() {
        return Err(CliError::NotFound(format!("task '{}' has no result digest on the ledger yet", task.task.id)));
    }
    let actual = stayput_node::results::file_sha256(path)?;
    // Every result is recorded as a salted commitment; the salt lies
    // beside the result on its receiver's node.
    let salt_path = path.with_extension("salt");
    let salt = std::fs::read_to_string(&salt_path)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            CliError::NotFound(format!(
                "{} is missing or malformed: a result is checked with the salt kept beside it",
                salt_path.display()
            ))
        })?;
    let actual = stayput_node::results::salted_commitment(&salt, &actual);
    // A task run as shards: this file is one shard's, recorded among the
    // result's intermediates, whose combination is the result digest.
    if task.task.shards().unwrap_or(1) > 1
        && let Some(r) = task.result()
        && let Some(shard) = r.intermediates.iter().position(|d| *d == actual)
    {
        let combined = stayput_chain_connector::tasks::combine_shard_digests(&r.intermediates);
        if combined != r.result_digest {
            return Err(CliError::NotFound(format!(
                "the ledger's result digest for '{}' is not the combination of its shard digests",
                task.task.id
            )));
        }
        return Ok(format!(
            "  result file {} matches shard {shard}'s digest on the ledger for '{}' ({}), one of {} whose combination is the result digest",
            path.display(),
            r.receiver,
            hex::encode(actual),
            r.intermediates.len()
        ));
    }
    match task.results.iter().find(|r| r.result_digest == actual) {
        Some(r) => Ok(format!(
            "  result file {} matches the digest on the ledger for '{}' ({})",
            path.display(),
            r.receiver,
            hex::encode(actual)
        )),
        None => {
            let recorded: Vec<String> =
                task.results.iter().map(|r| format!("{} for '{}'", hex::encode(r.result_digest), r.receiver)).collect();
            Err(CliError::NotFound(format!(
                "the result file {} does NOT match the ledger: its commitment is {}, the ledger records {}",
                path.display(),
                hex::encode(actual),
                recorded.join(" and ")
            )))
        }
    }
}

/// `audit task --config`: the trail read through the node's verified
/// replica of the ledger, and the result checked on this node when it is
/// the receiver.
pub async fn audit_task_remote(id: &str, config: &std::path::Path, result: Option<PathBuf>) -> Result<(), CliError> {
    let state = stayput_node::NodeState::new(stayput_node::NodeConfig::load(config)?)?;
    let access = state
        .ledger
        .as_ref()
        .ok_or_else(|| CliError::NotFound(format!("{} has no [ledger] section", config.display())))?;
    let ledger = &access.ledger;
    let task = ledger.task(id).await?.ok_or_else(|| CliError::NotFound(format!("task '{id}' is not on the ledger")))?;
    let mut grants = Vec::new();
    for g in &task.task.grants {
        grants.extend(ledger.grant(g).await?);
    }
    let events = ledger.events_after(0, usize::MAX).await?;
    print!("{}", task_trail(&task, &grants, &events));
    let org = &state.config.org;
    let dir = &state.config.output_dir;
    let own = task.result().is_some_and(|r| &r.receiver == org).then(|| stayput_node::results::result_path(dir, id));
    // The peer of a task to both keeps its rows under `from-<requester>/`.
    let as_peer = task.peer_result().filter(|r| &r.receiver == org).map(|_| {
        let dataset = task.task.datasets().first().map_or("", String::as_str);
        dir.join(format!("from-{}", task.task.requester())).join(format!("{id}-{dataset}.csv"))
    });
    let path = result.or(own).or(as_peer);
    if let Some(path) = path {
        println!("{}", check_result(&task, &path)?);
    }
    Ok(())
}

/// `audit verify-result`: re-checks a statistics result through the node's
/// verified view of the ledger.
pub async fn verify_result(id: &str, config: &std::path::Path, evidence: Option<PathBuf>) -> Result<(), CliError> {
    let state = stayput_node::NodeState::new(stayput_node::NodeConfig::load(config)?)?;
    let access = state
        .ledger
        .as_ref()
        .ok_or_else(|| CliError::NotFound(format!("{} has no [ledger] section", config.display())))?;
    let task =
        access.ledger.task(id).await?.ok_or_else(|| CliError::NotFound(format!("task '{id}' is not on the ledger")))?;
    let dir = &state.config.output_dir;
    let path = evidence.unwrap_or_else(|| stayput_node::results::evidence_path(dir, id));
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::NotFound(format!("{}: {e}", path.display())))?;
    let evidence: stayput_node::stats::Evidence = serde_json::from_str(&text)
        .map_err(|e| CliError::NotFound(format!("{} is not an evidence file: {e}", path.display())))?;
    // Proof verification is heavy: off the async executor.
    let on_ledger = task.clone();
    let summary = tokio::task::spawn_blocking(move || stayput_node::stats::verify_evidence(&on_ledger, &evidence))
        .await
        .map_err(|e| CliError::Signal(e.to_string()))??;
    println!("task {id}: {summary}");
    let result = stayput_node::results::result_path(dir, id);
    if result.exists() {
        println!("{}", check_result(&task, &result)?);
    }
    Ok(())
}

pub fn audit(command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Task { id, ledger, operator, config: _, result } => {
            let (Some(ledger), Some(operator)) = (ledger, operator) else {
                return Err(CliError::NotFound(format!("audit task {id} --config runs through the node (async)")));
            };
            let snapshot = Snapshot::open(&ledger, &keys::public_key(&operator)?)?;
            let state = snapshot.state();
            let task =
                state.tasks.get(&id).ok_or_else(|| CliError::NotFound(format!("task '{id}' is not on the ledger")))?;
            let grants: Vec<GrantState> =
                task.task.grants.iter().filter_map(|g| state.grants.get(g).cloned()).collect();
            print!("{}", task_trail(task, &grants, &snapshot.records()?));
            if let Some(path) = result {
                println!("{}", check_result(task, &path)?);
            }
        }
        AuditCommand::VerifyResult { id, .. } => {
            return Err(CliError::NotFound(format!("audit verify-result {id} runs through the node (async)")));
        }
        AuditCommand::Verify { ledger, proof, operator } => {
            let key = keys::public_key(&operator)?;
            if let Some(path) = ledger {
                let summary = Snapshot::open(&path, &key)?.summary();
                println!(
                    "ledger {} verifies: {} blocks, {} records, every seal, Merkle root, signature and rule checked; tip {}",
                    path.display(),
                    summary.blocks,
                    summary.records,
                    hex::encode(summary.tip_hash)
                );
            } else if let Some(path) = proof {
                let bytes = std::fs::read(&path).map_err(|e| CliError::NotFound(format!("{}: {e}", path.display())))?;
                let proof = InclusionProof::from_bytes(&bytes)?;
                let hash = proof.verify(&key)?;
                println!(
                    "proof verifies: the {} record {} by {} is #{} of block {}, sealed by the operator",
                    proof.record.record.kind(),
                    hex::encode(hash),
                    proof.record.writer,
                    proof.index,
                    proof.header.height
                );
            }
        }
        AuditCommand::Prove { ledger, record, out } => {
            let snapshot = ledger.open()?;
            let mut hash = [0u8; 32];
            hex::decode_to_slice(record.trim(), &mut hash)
                .map_err(|_| CliError::NotFound("--record takes a record hash: 64 hex characters".into()))?;
            let proof = snapshot.prove(&hash)?;
            std::fs::write(&out, proof.to_bytes())
                .map_err(|e| CliError::NotFound(format!("{}: {e}", out.display())))?;
            println!(
                "wrote the inclusion proof for record {record} (block {}) to {}",
                proof.header.height,
                out.display()
            );
        }
    }
    Ok(())
}
