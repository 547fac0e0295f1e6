//! `stayput dispute file|show|rule`: contesting one listing of a bureau's
//! blacklist, and the arbitrator's ruling, as ledger records.
//!
//! A bank files for its customer from the result of the blacklist query
//! that found the listing: the row gives the set's version and the entry's
//! tag, which names the entry to the bureau (it ties the tag to its own
//! row) and to nobody else. The listed id itself goes on the ledger only
//! sealed to the arbitrator's key (ECIES over the arbitrator's ledger key,
//! bound to the dispute's id), so the arbitrator can check the evidence
//! against it and no other member learns it. The arbitrator — a member the
//! operator admitted with the role `arbitrator`, party to neither side —
//! takes the dispute up and upholds or overturns the listing before the
//! deadline. After an overturn, members' nodes report the entry as
//! `overturned`, and refuse a later version of the set that still holds it.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use stayput_chain_connector::records::{DISPUTE_TAG_LEN, Dispute, DisputeState, OrgKey, Record, SignedRecord};
use stayput_node::{LedgerAccess, NodeConfig};

use crate::error::CliError;

/// What a dispute's sealed id is sealed under.
pub const SEALED_ID_LABEL: &[u8] = b"stayput/dispute/sealed-id/v1";

#[derive(Debug, Subcommand)]
pub enum DisputeCommand {
    /// Contest one listing found by a blacklist query of yours: the row of
    /// its result gives the entry's version and tag; the listed id is sealed
    /// to the arbitrator.
    File {
        /// Your node's configuration (with [ledger]).
        #[arg(long)]
        config: PathBuf,
        /// The blacklist task whose result lists the entry.
        #[arg(long)]
        task: String,
        /// The listed applicant's key, as in the result's first column.
        #[arg(long)]
        key: String,
        /// The bureau's dataset that lists it.
        #[arg(long)]
        dataset: String,
        /// The arbitrator (a member with the role arbitrator).
        #[arg(long)]
        arbitrator: String,
        /// The evidence you hand the arbitrator (its SHA-256 goes on the
        /// ledger).
        #[arg(long)]
        evidence: PathBuf,
        /// Days the arbitrator has to rule (1 to 180).
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// Disputes on the ledger, with their state; the arbitrator of a
    /// dispute sees the listed id with `--open`.
    Show {
        #[arg(long)]
        config: PathBuf,
        /// Only this dataset's.
        #[arg(long)]
        dataset: Option<String>,
        /// Open the sealed ids of the disputes you arbitrate.
        #[arg(long)]
        open: bool,
    },
    /// The arbitrator takes a dispute up (under_review), then upholds or
    /// overturns the listing (upheld, overturned) before its deadline.
    Rule {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        dispute: String,
        /// under_review, upheld or overturned.
        #[arg(long)]
        state: DisputeState,
    },
}

fn bad(what: impl Into<String>) -> CliError {
    CliError::NotFound(what.into())
}

fn ledger_of(config: &Path) -> Result<(NodeConfig, stayput_node::NodeState), CliError> {
    let node = NodeConfig::load(config)?;
    let state = stayput_node::NodeState::new(node.clone())?;
    if state.ledger.is_none() {
        return Err(bad(format!("{} has no [ledger] section", config.display())));
    }
    Ok((node, state))
}

async fn submit(access: &LedgerAccess, org: &str, record: Record) -> Result<u64, CliError> {
    let ledger = &*access.ledger;
    let signed = SignedRecord::sign(record, org, &access.key, &ledger.identity().await?);
    Ok(ledger.submit(signed).await?.height)
}

/// The version and tag of `key`'s listing in `dataset`, from the result of
/// blacklist task `task` on this node.
fn listing(node: &NodeConfig, task: &str, key: &str, dataset: &str) -> Result<(u32, [u8; DISPUTE_TAG_LEN]), CliError> {
    let path = stayput_node::results::result_path(&node.output_dir, task);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad(format!("the result of task {task} ({}): {e}", path.display())))?;
    if !text.starts_with(stayput_node::blacklist::RESULT_HEADER.trim_end()) {
        return Err(bad(format!(
            "{} is not a blacklist result of this version (it has no version and tag columns); query again",
            path.display()
        )));
    }
    let row = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[0] == key && f[2] == dataset)
        .ok_or_else(|| bad(format!("task {task}'s result lists no '{key}' in dataset '{dataset}'")))?;
    if row[5] != "listed" {
        return Err(bad(format!("that listing is {} already; nothing to file", row[5])));
    }
    let version = row[3].parse().map_err(|_| bad(format!("{}: a version that is not a number", path.display())))?;
    let mut tag = [0u8; DISPUTE_TAG_LEN];
    hex::decode_to_slice(row[4], &mut tag).map_err(|_| bad(format!("{}: a malformed tag", path.display())))?;
    Ok((version, tag))
}

pub async fn run(command: DisputeCommand) -> Result<(), CliError> {
    match command {
        DisputeCommand::File { config, task, key, dataset, arbitrator, evidence, days } => {
            if !(1..=180).contains(&days) {
                return Err(CliError::Usage(format!("--days {days}: give 1 to 180")));
            }
            let (node, state) = ledger_of(&config)?;
            let access = state.ledger.as_ref().expect("checked");
            let (version, tag) = listing(&node, &task, &key, &dataset)?;
            let member = access
                .ledger
                .member(&arbitrator)
                .await?
                .ok_or_else(|| bad(format!("'{arbitrator}' is not a member")))?;
            let evidence_digest = stayput_node::results::file_sha256(&evidence)?;
            let mut nonce = [0u8; 8];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
            // Random: an id derived from the key would reveal it to
            // anyone who tries candidate ids.
            let id = format!("d-{}", hex::encode(nonce));
            let sealed_id = OrgKey::seal_to(&member.signing_key, SEALED_ID_LABEL, id.as_bytes(), key.as_bytes())?;
            let dispute = Dispute {
                id: id.clone(),
                dataset: dataset.clone(),
                version,
                tag,
                sealed_id,
                arbitrator,
                evidence_digest,
                deadline: stayput_coordinator::client::unix_now().saturating_add(days * 86_400),
            };
            let height = submit(access, &node.org, Record::Dispute(dispute)).await?;
            println!(
                "dispute {id} filed on '{dataset}' v{version} (block {height}); the listed id is sealed to the arbitrator"
            );
        }
        DisputeCommand::Show { config, dataset, open } => {
            let (node, state) = ledger_of(&config)?;
            let access = state.ledger.as_ref().expect("checked");
            let disputes = access.ledger.disputes(dataset.as_deref()).await?;
            if disputes.is_empty() {
                println!("no disputes");
            }
            for d in disputes {
                let f = &d.dispute;
                println!(
                    "{} on '{}' v{} tag {}: {} (filed by {}, arbitrator {}, deadline {}{})",
                    f.id,
                    f.dataset,
                    f.version,
                    hex::encode(f.tag),
                    d.state,
                    d.filer,
                    f.arbitrator,
                    f.deadline,
                    d.ruled_at_version.map(|v| format!(", ruled at version {v}")).unwrap_or_default()
                );
                if open && f.arbitrator == node.org {
                    let id = access.key.open_sealed(SEALED_ID_LABEL, f.id.as_bytes(), &f.sealed_id)?;
                    println!("  listed id (sealed to you): {}", String::from_utf8_lossy(&id));
                }
            }
        }
        DisputeCommand::Rule { config, dispute, state: next } => {
            let (node, state) = ledger_of(&config)?;
            let access = state.ledger.as_ref().expect("checked");
            let record = Record::DisputeRuling { dispute: dispute.clone(), state: next };
            let height = submit(access, &node.org, record).await?;
            println!("dispute {dispute}: {next} (block {height})");
        }
    }
    Ok(())
}
