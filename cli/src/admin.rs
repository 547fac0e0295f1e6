//! Writing the consortium's records, each by the organisation entitled to:
//! the operator deploys the EVM contract and admits members (`stayput
//! consortium deploy|admit --config coordinator.toml`); a data owner
//! publishes dataset versions and grants or revokes use
//! (`stayput consortium publish|grant|revoke --config node.toml`).
//!
//! Every record is signed with the writer's ed25519 key and goes to the
//! configured ledger: the embedded one through the coordinator's ledger
//! service (mTLS, every block verified), an EVM chain directly from the
//! writer's own account.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use stayput_chain_connector::evm::{Address, EvmLedger, create_account, load_account};
use stayput_chain_connector::records::{Computation, Grant, Member, OrgKey, Record, Role, SignedRecord};
use stayput_chain_connector::{Ledger, keys};
use stayput_coordinator::CoordinatorConfig;
use stayput_coordinator::config::LedgerBackend;
use stayput_node::NodeConfig;

use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum ConsortiumCommand {
    /// Print the address of an organisation's EVM account (<dir>/<org>.evm),
    /// creating the key (0600) when there is none; the operator needs the
    /// address to admit the organisation.
    Account {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        org: String,
    },
    /// The operator deploys the ledger contract on the EVM chain named in
    /// its coordinator configuration, admitting itself; prints the
    /// contract's address and block for every configuration's [ledger.evm].
    Deploy {
        /// The coordinator's configuration (backend = "evm").
        #[arg(long)]
        config: PathBuf,
        /// The operator's display name.
        #[arg(long, default_value = "Consortium operator")]
        name: String,
    },
    /// The operator admits (or updates) a member.
    Admit {
        /// The coordinator's configuration.
        #[arg(long)]
        config: PathBuf,
        /// Organisation id (as in its certificate).
        #[arg(long)]
        org: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Roles: data_owner, requester, operator, algorithm_provider, regulator, arbitrator.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<Role>,
        /// Its ed25519 public key: 64 hex characters or a .ed25519.pub file.
        #[arg(long)]
        signing_key: String,
        /// Its node's endpoint (https URL).
        #[arg(long)]
        endpoint: String,
        /// Its EVM account address (EVM ledger only).
        #[arg(long)]
        evm_address: Option<String>,
    },
    /// A data owner publishes the next version of one of its node's datasets
    /// (schema and content digests computed from the file).
    Publish {
        /// The owner's node configuration (with [ledger]).
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        dataset: String,
    },
    /// A data owner grants another member use of a dataset.
    Grant {
        #[arg(long)]
        config: PathBuf,
        /// Grant id (unique on the ledger).
        #[arg(long)]
        id: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        grantee: String,
        /// Computations allowed: psi, psi_cardinality, blacklist, stats, compute_only, pir.
        #[arg(long, value_delimiter = ',', required = true)]
        allow: Vec<Computation>,
        /// Columns allowed (empty: the dataset's key columns only).
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
        #[arg(long, default_value_t = 10)]
        max_uses: u32,
        /// Items (ids queried, rows scanned, records a private lookup's
        /// answers could disclose at worst) across all uses.
        #[arg(long, default_value_t = 10_000_000)]
        max_items: u64,
        /// Items one use (one task) may take (default: --max-items).
        #[arg(long)]
        max_items_per_use: Option<u64>,
        /// Smallest cohort a result may describe.
        #[arg(long, default_value_t = 0)]
        min_cohort: u32,
        /// Total differential-privacy budget (ε, e.g. 3.0) of a compute_only
        /// grant: every query must then ask for noise, and the owner's node
        /// refuses one that would exceed what is left. 0: no noise.
        #[arg(long, default_value_t = 0.0)]
        epsilon_budget: f64,
        /// Days until it expires.
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// A data owner revokes a grant.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        grant: String,
    },
}

fn bad(what: impl Into<String>) -> CliError {
    CliError::NotFound(what.into())
}

/// The operator's ledger handle for `config`, writing for the operator
/// (and knowing `accounts` on an EVM chain).
async fn operator_ledger(
    config: &CoordinatorConfig,
    accounts: BTreeMap<String, Address>,
) -> Result<Arc<dyn Ledger>, CliError> {
    match &config.ledger {
        LedgerBackend::Evm(evm) => {
            let signer = load_account(&evm.account_key)?;
            let evm_config = evm.config(keys::load(&config.signing_key)?.public_key());
            Ok(Arc::new(EvmLedger::connect(evm_config, BTreeMap::from([(config.org.clone(), signer)]), accounts)?))
        }
        LedgerBackend::Embedded { .. } => {
            // Through the running coordinator's ledger service, as the operator.
            let tls = stayput_identity::TlsMaterial::load(&config.tls)?;
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let channel = stayput_identity::dial(&tls, &config.org, &format!("https://{addr}")).await?;
            let operator = keys::load(&config.signing_key)?.public_key();
            Ok(Arc::new(stayput_node::ledger_client::RemoteLedger::new(channel, operator)))
        }
    }
}

fn node_access(config: &Path) -> Result<(NodeConfig, stayput_node::NodeState), CliError> {
    let node = NodeConfig::load(config)?;
    let state = stayput_node::NodeState::new(node.clone())?;
    if state.ledger.is_none() {
        return Err(bad(format!("{} has no [ledger] section", config.display())));
    }
    Ok((node, state))
}

async fn submit(ledger: &dyn Ledger, record: Record, writer: &str, key: &OrgKey) -> Result<String, CliError> {
    let kind = record.kind();
    let receipt = ledger.submit(SignedRecord::sign(record, writer, key, &ledger.identity().await?)).await?;
    Ok(format!(
        "{kind} record by {writer} in block {} (record {})",
        receipt.height,
        hex::encode(&receipt.record_hash[..8])
    ))
}

pub async fn run(command: ConsortiumCommand) -> Result<(), CliError> {
    match command {
        ConsortiumCommand::Account { dir, org } => {
            std::fs::create_dir_all(&dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
            let path = dir.join(format!("{org}.evm"));
            let signer = if path.exists() {
                load_account(&path)?
            } else {
                let signer = create_account(&path)?;
                eprintln!("created {} for '{org}' (mode 0600)", path.display());
                signer
            };
            println!("{}", signer.address());
        }
        ConsortiumCommand::Deploy { config, name } => {
            let config = CoordinatorConfig::load(&config)?;
            let LedgerBackend::Evm(evm) = &config.ledger else {
                return Err(bad("deploy is for an EVM ledger; the embedded one is created by `stayput coordinator`"));
            };
            let key = keys::load(&config.signing_key)?;
            let member = Member {
                org: config.org.clone(),
                name,
                roles: vec![Role::Operator],
                signing_key: key.public_key(),
                endpoint: format!("https://{}", config.listen),
            };
            let deployed =
                EvmLedger::deploy(&evm.rpc_url, evm.tls.clone(), load_account(&evm.account_key)?, &key, member).await?;
            println!(
                "chain_id = {}\ncontract = \"{}\"\ndeployed_at = {}",
                deployed.chain_id, deployed.contract, deployed.deployed_at
            );
        }
        ConsortiumCommand::Admit { config, org, name, roles, signing_key, endpoint, evm_address } => {
            let config = CoordinatorConfig::load(&config)?;
            let mut accounts = BTreeMap::new();
            if let Some(address) = evm_address {
                let address = address
                    .parse()
                    .map_err(|_| bad(format!("--evm-address '{address}' is not an address (0x + 40 hex)")))?;
                accounts.insert(org.clone(), address);
            }
            let ledger = operator_ledger(&config, accounts).await?;
            let member = Member { org, name, roles, signing_key: keys::public_key(&signing_key)?, endpoint };
            let key = keys::load(&config.signing_key)?;
            println!("{}", submit(&*ledger, Record::Member(member), &config.org, &key).await?);
        }
        ConsortiumCommand::Publish { config, dataset } => {
            let (node, state) = node_access(&config)?;
            let access = state.ledger.as_ref().expect("checked");
            let source = node.dataset(&dataset)?.clone();
            let version = u32::try_from(access.ledger.dataset(&dataset).await?.len()).unwrap_or(u32::MAX - 1) + 1;
            // Hashing the whole file (and encoding a blacklist) is blocking work.
            let config = node.clone();
            let record =
                tokio::task::spawn_blocking(move || stayput_node::publish::version_record(&config, &source, version))
                    .await
                    .map_err(|e| bad(e.to_string()))??;
            let record = Record::DatasetVersion(record);
            println!("{} — {dataset} v{version}", submit(&*access.ledger, record, &node.org, &access.key).await?);
        }
        ConsortiumCommand::Grant {
            config,
            id,
            dataset,
            grantee,
            allow,
            columns,
            max_uses,
            max_items,
            max_items_per_use,
            min_cohort,
            epsilon_budget,
            days,
        } => {
            let epsilon_budget = stayput_mpc_engine::privacy::milli_epsilon(epsilon_budget)
                .map_err(|e| CliError::Usage(format!("--epsilon-budget: {e}")))?;
            let (node, state) = node_access(&config)?;
            let access = state.ledger.as_ref().expect("checked");
            let now = stayput_coordinator::client::unix_now();
            let grant = Grant {
                id,
                dataset,
                grantee,
                computations: allow,
                columns,
                min_cohort,
                max_uses,
                max_items,
                max_items_per_use: max_items_per_use.unwrap_or(max_items),
                expires_at: now.saturating_add(days.saturating_mul(86_400)),
                epsilon_budget,
            };
            println!("{}", submit(&*access.ledger, Record::Grant(grant), &node.org, &access.key).await?);
        }
        ConsortiumCommand::Revoke { config, grant } => {
            let (node, state) = node_access(&config)?;
            let access = state.ledger.as_ref().expect("checked");
            println!("{}", submit(&*access.ledger, Record::RevokeGrant { grant }, &node.org, &access.key).await?);
        }
    }
    Ok(())
}
