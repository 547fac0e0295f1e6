//! `stayput task …` (a requester submits and follows tasks through the
//! coordinator) and `stayput coordinator` (the operator runs it).

use std::path::PathBuf;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use stayput_chain_connector::records::Computation;
use stayput_chain_connector::tasks::{
    BlacklistParams, ComputeOnlyParams, LookupParams, ModelSpec, PredictParams, PsiDelivery, PsiParams, PsiProtocol,
    ResultFormat, TaskParams, TrainParams,
};
use stayput_coordinator::client::{Client, Phase, TaskReport, TaskSpec, sign, unix_now};
use stayput_node::NodeConfig;

use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a balanced PSI task: your node's dataset against a peer's
    /// dataset on the ledger, under a grant the peer gave you. The result is
    /// written on your node only; its digest goes on the ledger.
    Psi {
        /// Your node's TOML configuration (with its [ledger] section).
        #[arg(long)]
        config: PathBuf,
        /// Your dataset, by the name in your node's configuration.
        #[arg(long)]
        dataset: String,
        /// The peer's dataset, as on the ledger.
        #[arg(long)]
        peer_dataset: String,
        /// The peer dataset's key columns to match on (as the grant allows).
        #[arg(long, value_delimiter = ',', required = true)]
        columns: Vec<String>,
        /// Learn only how many keys are common (ecdh only).
        #[arg(long, conflicts_with = "both")]
        cardinality: bool,
        /// Deliver the intersection to both: the peer's node receives its
        /// own matching rows too (under `from-<you>/` on its node) and
        /// records their digest on the ledger beside yours.
        #[arg(long)]
        both: bool,
        /// The protocol: `ecdh` (every mode), `kkrt` (OT-based, an order of
        /// magnitude faster on large sets) or `rr22` (silent VOLE, faster
        /// still with a quarter of KKRT's traffic); the last two give the
        /// intersection, not the cardinality.
        #[arg(long, default_value = "ecdh", value_parser = PsiProtocol::parse)]
        protocol: PsiProtocol,
        /// Run as this many shard pairs (2 to 256): both organisations run
        /// one node per shard (`shard = "i/N"`), each result file on your
        /// shard `i`'s node holds that shard's rows, and the ledger records
        /// each shard's digest and their combination.
        #[arg(long, default_value_t = 1, conflicts_with_all = ["both", "cardinality"])]
        shards: u32,
        /// Return once the task is accepted instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Submit a federated-statistics task: a cohort query (TOML, see
    /// `stayput-mpc-engine`'s query docs) over one dataset per site. The
    /// result is written on your node only, with an evidence file that
    /// `stayput audit verify-result` re-checks.
    Stats {
        /// Your node's TOML configuration (with its [ledger] section).
        #[arg(long)]
        config: PathBuf,
        /// The query file (TOML).
        #[arg(long)]
        query: PathBuf,
        /// The sites' datasets on the ledger, one per site.
        #[arg(long, value_delimiter = ',', required = true)]
        datasets: Vec<String>,
        /// Differential privacy: ε for this query (e.g. 0.5), spent from
        /// each site's grant; every site adds calibrated noise. Required
        /// when a grant has a privacy budget; 0 asks without noise.
        #[arg(long, default_value_t = 0.0)]
        epsilon: f64,
    },
    /// Submit a blacklist query: your dataset's ids against one or more
    /// bureaus' blacklists on the ledger, every bureau at once. The result —
    /// which bureau lists which id with its label, and any bureau that did
    /// not answer — is written on your node only.
    Blacklist {
        /// Your node's TOML configuration (with its [ledger] section).
        #[arg(long)]
        config: PathBuf,
        /// Your dataset of ids, by the name in your node's configuration.
        #[arg(long)]
        dataset: String,
        /// The bureaus' blacklist datasets on the ledger.
        #[arg(long, value_delimiter = ',', required = true)]
        bureaus: Vec<String>,
    },
    /// Submit a compute-only query: aggregates over one dataset you may not
    /// read (TOML cohort query; `[[bins]]` add grid cells, depth bands and
    /// time windows as group keys). The owner's node enforces the grant's
    /// minimum group size and privacy budget; the table is written on your
    /// node only.
    ComputeOnly {
        /// Your node's TOML configuration (with its [ledger] section).
        #[arg(long)]
        config: PathBuf,
        /// The query file (TOML).
        #[arg(long)]
        query: PathBuf,
        /// The dataset on the ledger.
        #[arg(long)]
        dataset: String,
        /// ε to spend on calibrated noise (required when the grant has a
        /// privacy budget; 0 for none).
        #[arg(long, default_value_t = 0.0)]
        epsilon: f64,
        /// Result format: csv, parquet or arrow (Arrow IPC).
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// Submit a private record lookup: fetch the records of your dataset's
    /// keys from a table another organisation serves for lookup, without
    /// its node learning which keys (single-server PIR). Your keys never
    /// leave your node, and the records are written on your node only.
    Lookup {
        /// Your node's TOML configuration (with its [ledger] section).
        #[arg(long)]
        config: PathBuf,
        /// The lookup table on the ledger.
        #[arg(long)]
        dataset: String,
        /// Your dataset of keys to fetch (1 to 64), by the name in your
        /// node's configuration; its key columns and normalisation must
        /// match the table's.
        #[arg(long)]
        keys: String,
    },
    /// Submit a joint training task: your labels and features with a
    /// partner's features of the same customers (aligned by PSI inside the
    /// task), under a grant the partner gave you. Each node keeps its own
    /// share of the model; both shares' commitments go on the ledger.
    Train {
        /// Your node's TOML configuration (with its [ledger] section).
        #[arg(long)]
        config: PathBuf,
        /// Your dataset (labels and features), by the name in your node's
        /// configuration.
        #[arg(long)]
        dataset: String,
        /// Your label column (0 or 1).
        #[arg(long)]
        label: String,
        /// Your feature columns (may be none).
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// The partner's dataset, as on the ledger.
        #[arg(long)]
        peer_dataset: String,
        /// The partner's feature columns (as the grant allows).
        #[arg(long, value_delimiter = ',', required = true)]
        peer_features: Vec<String>,
        /// boosted_trees (vertical SecureBoost) or logistic_regression.
        #[arg(long, default_value = "boosted_trees")]
        model: String,
        /// Trees (boosted_trees).
        #[arg(long, default_value_t = 10)]
        trees: u32,
        /// Tree depth (boosted_trees).
        #[arg(long, default_value_t = 5)]
        depth: u32,
        /// Most quantile bins per feature (boosted_trees).
        #[arg(long, default_value_t = 32)]
        max_bins: u32,
        /// Fewest rows in a node the partner is asked about (boosted_trees).
        #[arg(long, default_value_t = 20)]
        min_node_rows: u64,
        /// Learning rate (shrinkage for trees, step size for LR).
        #[arg(long)]
        learning_rate: Option<f64>,
        /// L2 regularisation (λ of leaf weights; the LR penalty).
        #[arg(long)]
        l2: Option<f64>,
        /// Passes over the aligned rows (logistic_regression).
        #[arg(long, default_value_t = 5)]
        epochs: u32,
        /// Rows per gradient step (logistic_regression; at least 32).
        #[arg(long, default_value_t = 128)]
        batch_size: u32,
    },
    /// Submit a joint prediction task: score your dataset's applicants with
    /// a model you trained with a partner; applicants the partner does not
    /// hold come back as explicit error rows.
    Predict {
        /// Your node's TOML configuration (with its [ledger] section).
        #[arg(long)]
        config: PathBuf,
        /// The training task whose model scores.
        #[arg(long)]
        model_task: String,
        /// Your dataset of applicants (with your model features).
        #[arg(long)]
        dataset: String,
        /// The partner's dataset of the applicants' features, on the ledger.
        #[arg(long)]
        peer_dataset: String,
    },
    /// Follow a task until it ends.
    Watch {
        /// The task id.
        id: String,
        /// Your node's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

/// The node configuration at `path` and its organisation's signing key.
fn requester(path: &std::path::Path) -> Result<(NodeConfig, stayput_chain_connector::records::OrgKey), CliError> {
    let config = NodeConfig::load(path)?;
    let settings = config.ledger.as_ref().ok_or_else(|| {
        CliError::NotFound("the node configuration has no [ledger] section naming the coordinator".into())
    })?;
    let key = stayput_chain_connector::keys::load(&settings.signing_key)?;
    Ok((config, key))
}

/// Signs `spec` as this node's organisation for the consortium's ledger,
/// as this organisation's own verifying view of the ledger names it (the
/// operator-sealed genesis, or the pinned chain and contract) — never as
/// the coordinator says.
async fn sign_for_ledger(
    config: &NodeConfig,
    key: &stayput_chain_connector::records::OrgKey,
    spec: &TaskSpec,
) -> Result<stayput_chain_connector::tasks::SignedTaskRequest, CliError> {
    let state = stayput_node::NodeState::new(config.clone())?;
    let access = state.ledger.as_ref().ok_or_else(|| {
        CliError::NotFound("the node configuration has no [ledger] section naming the coordinator".into())
    })?;
    let ledger = access.ledger.identity().await?;
    Ok(sign(spec, &config.org, key, unix_now(), ledger))
}

async fn client(config: &NodeConfig) -> Result<Client, CliError> {
    let settings = config.ledger.as_ref().ok_or_else(|| {
        CliError::NotFound("the node configuration has no [ledger] section naming the coordinator".into())
    })?;
    let tls = stayput_identity::TlsMaterial::load(&config.tls)?;
    Ok(Client::connect(&tls, &settings.operator, &settings.endpoint).await?)
}

/// Follows a task with a progress bar; returns its final update.
pub async fn follow(client: &mut Client, id: &str) -> Result<TaskReport, CliError> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg:>24} [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let last = client
        .follow(id, |u| {
            bar.set_message(if u.step.is_empty() { format!("{:?}", u.phase).to_lowercase() } else { u.step.clone() });
            bar.set_length(u.total);
            bar.set_position(u.done);
        })
        .await;
    bar.finish_and_clear();
    Ok(last?)
}

fn report(config: &NodeConfig, update: &TaskReport) -> Result<(), CliError> {
    let own_result = (update.receiver == config.org)
        .then(|| stayput_node::results::result_path(&config.output_dir, &update.task_id));
    // A cardinality is the result itself: the coordinator was told none,
    // and it is read from the result file on this node.
    let cardinality = own_result.as_ref().and_then(|p| cardinality_of(&std::fs::read_to_string(p).ok()?));
    match update.phase {
        Phase::Succeeded if cardinality.is_some() => {
            let count = cardinality.unwrap_or_default();
            println!("task {} succeeded: {count} common keys (known to your node only)", update.task_id);
            if let Some(path) = own_result {
                println!("  result on your node: {}", path.display());
            }
            println!("  result commitment on the ledger: {}", update.result_digest);
            Ok(())
        }
        Phase::Succeeded => {
            println!("task {} succeeded: {} common keys", update.task_id, update.result_count);
            if update.receiver == config.org {
                let path = stayput_node::results::result_path(&config.output_dir, &update.task_id);
                println!("  result on your node: {}", path.display());
            }
            println!("  result digest on the ledger: {}", update.result_digest);
            Ok(())
        }
        _ => Err(CliError::NotFound(format!("task {} failed: {}", update.task_id, update.error))),
    }
}

/// Signs and submits `spec`, follows it to its end and returns the final
/// report with the result file's path on this node; a failed task is an
/// error naming why.
async fn run_to_end(
    config: &NodeConfig,
    key: &stayput_chain_connector::records::OrgKey,
    spec: &TaskSpec,
) -> Result<(TaskReport, PathBuf), CliError> {
    let signed = sign_for_ledger(config, key, spec).await?;
    let mut client = client(config).await?;
    let submitted = client.submit(&signed).await?;
    println!("task {} accepted under grant(s) {}", submitted.task_id, submitted.grants.join(", "));
    let last = follow(&mut client, &submitted.task_id).await?;
    if last.phase != Phase::Succeeded {
        return Err(CliError::NotFound(format!("task {} failed: {}", last.task_id, last.error)));
    }
    let path = stayput_node::results::result_file(&config.output_dir, &last.task_id);
    Ok((last, path))
}

/// The model a `stayput task train` asks for.
#[allow(clippy::too_many_arguments)]
fn model_spec(
    model: &str,
    trees: u32,
    depth: u32,
    max_bins: u32,
    min_node_rows: u64,
    learning_rate: Option<f64>,
    l2: Option<f64>,
    epochs: u32,
    batch_size: u32,
) -> Result<ModelSpec, CliError> {
    match model {
        "boosted_trees" => Ok(ModelSpec::BoostedTrees {
            trees,
            max_bins,
            max_depth: depth,
            learning_rate: learning_rate.unwrap_or(0.3),
            min_child_weight: 1.0,
            lambda: l2.unwrap_or(1.0),
            gamma: 0.0,
            min_node_rows,
        }),
        "logistic_regression" => Ok(ModelSpec::LogisticRegression {
            epochs,
            batch_size,
            learning_rate: learning_rate.unwrap_or(0.5),
            l2: l2.unwrap_or(0.001),
        }),
        other => Err(CliError::Usage(format!("--model '{other}': use boosted_trees or logistic_regression"))),
    }
}

pub async fn run(command: TaskCommand) -> Result<(), CliError> {
    match command {
        TaskCommand::Train {
            config,
            dataset,
            label,
            features,
            peer_dataset,
            peer_features,
            model,
            trees,
            depth,
            max_bins,
            min_node_rows,
            learning_rate,
            l2,
            epochs,
            batch_size,
        } => {
            let (config, key) = requester(&config)?;
            let model =
                model_spec(&model, trees, depth, max_bins, min_node_rows, learning_rate, l2, epochs, batch_size)?;
            let spec = TaskSpec {
                kind: Computation::Train,
                datasets: vec![peer_dataset.clone()],
                receiver: config.org.clone(),
                params: TaskParams::Train(TrainParams {
                    requester_dataset: dataset,
                    peer_dataset,
                    label,
                    features,
                    peer_features,
                    model,
                }),
            };
            let (last, path) = run_to_end(&config, &key, &spec).await?;
            println!("task {} succeeded: {} trained on {} aligned rows", last.task_id, model.name(), last.result_count);
            print!("{}", std::fs::read_to_string(&path).unwrap_or_default());
            println!("model card on your node: {} (digest on the ledger: {})", path.display(), last.result_digest);
        }
        TaskCommand::Predict { config, model_task, dataset, peer_dataset } => {
            let (config, key) = requester(&config)?;
            let spec = TaskSpec {
                kind: Computation::Predict,
                datasets: vec![peer_dataset.clone()],
                receiver: config.org.clone(),
                params: TaskParams::Predict(PredictParams { model_task, requester_dataset: dataset, peer_dataset }),
            };
            let (last, path) = run_to_end(&config, &key, &spec).await?;
            println!("task {} succeeded: {} applicants", last.task_id, last.result_count);
            println!("scores on your node: {} (digest on the ledger: {})", path.display(), last.result_digest);
        }
        TaskCommand::Psi { config, dataset, peer_dataset, columns, cardinality, both, protocol, shards, no_wait } => {
            let max = stayput_chain_connector::tasks::MAX_SHARDS;
            if shards == 0 || shards > max {
                return Err(CliError::Usage(format!("--shards {shards}: give 1 (one session) to {max}")));
            }
            if cardinality && protocol != PsiProtocol::Ecdh {
                return Err(CliError::Usage(format!(
                    "--cardinality needs the ecdh protocol: {} reveals which keys matched",
                    protocol.name()
                )));
            }
            let (config, key) = requester(&config)?;
            let spec = TaskSpec {
                kind: if cardinality { Computation::PsiCardinality } else { Computation::Psi },
                datasets: vec![peer_dataset.clone()],
                receiver: config.org.clone(),
                params: TaskParams::Psi(PsiParams {
                    requester_dataset: dataset,
                    peer_dataset,
                    columns,
                    protocol,
                    delivery: if both { PsiDelivery::ToBoth } else { PsiDelivery::ToRequester },
                    shards,
                }),
            };
            let signed = sign_for_ledger(&config, &key, &spec).await?;
            let mut client = client(&config).await?;
            let submitted = client.submit(&signed).await?;
            println!("task {} accepted under grant(s) {}", submitted.task_id, submitted.grants.join(", "));
            if !no_wait {
                let last = follow(&mut client, &submitted.task_id).await?;
                report(&config, &last)?;
            }
        }
        TaskCommand::Stats { config, query, datasets, epsilon } => {
            let (config, key) = requester(&config)?;
            let epsilon = stayput_mpc_engine::privacy::milli_epsilon(epsilon)
                .map_err(|e| CliError::Usage(format!("--epsilon: {e}")))?;
            let text =
                std::fs::read_to_string(&query).map_err(|e| CliError::NotFound(format!("{}: {e}", query.display())))?;
            let query = stayput_mpc_engine::query::CohortQuery::from_toml(&text)
                .map_err(|e| CliError::NotFound(format!("{}: {e}", query.display())))?;
            let spec = TaskSpec {
                kind: Computation::Stats,
                datasets,
                receiver: config.org.clone(),
                params: TaskParams::Stats(stayput_chain_connector::tasks::StatsParams {
                    query: query.to_canonical_json(),
                    epsilon,
                }),
            };
            let (last, path) = run_to_end(&config, &key, &spec).await?;
            println!("task {} succeeded: cohort of {}", last.task_id, last.result_count);
            print!("{}", std::fs::read_to_string(&path).unwrap_or_default());
            println!("result on your node: {} (digest on the ledger: {})", path.display(), last.result_digest);
        }
        TaskCommand::Blacklist { config, dataset, bureaus } => {
            let (config, key) = requester(&config)?;
            let spec = TaskSpec {
                kind: Computation::Blacklist,
                datasets: bureaus.clone(),
                receiver: config.org.clone(),
                params: TaskParams::Blacklist(BlacklistParams { requester_dataset: dataset, bureau_datasets: bureaus }),
            };
            let (last, path) = run_to_end(&config, &key, &spec).await?;
            let table = std::fs::read_to_string(&path).unwrap_or_default();
            println!("task {} succeeded: {} listings", last.task_id, last.result_count);
            for line in table.lines().skip(1).filter(|l| l.split(',').nth(3) == Some("unavailable")) {
                let fields: Vec<&str> = line.splitn(5, ',').collect();
                println!("  PARTIAL: {} ({}) did not answer: {}", fields[1], fields[2], fields.get(4).unwrap_or(&""));
            }
            println!("result on your node: {} (digest on the ledger: {})", path.display(), last.result_digest);
        }
        TaskCommand::ComputeOnly { config, query, dataset, epsilon, format } => {
            let (config, key) = requester(&config)?;
            let text =
                std::fs::read_to_string(&query).map_err(|e| CliError::NotFound(format!("{}: {e}", query.display())))?;
            let query = stayput_mpc_engine::query::CohortQuery::from_toml(&text)
                .map_err(|e| CliError::Usage(format!("{}: {e}", query.display())))?;
            let epsilon = stayput_mpc_engine::privacy::milli_epsilon(epsilon)
                .map_err(|e| CliError::Usage(format!("--epsilon: {e}")))?;
            let format = ResultFormat::parse(&format).map_err(|e| CliError::Usage(format!("--format: {e}")))?;
            let spec = TaskSpec {
                kind: Computation::ComputeOnly,
                datasets: vec![dataset.clone()],
                receiver: config.org.clone(),
                params: TaskParams::ComputeOnly(ComputeOnlyParams {
                    dataset,
                    query: query.to_canonical_json(),
                    epsilon,
                    format,
                }),
            };
            let (last, path) = run_to_end(&config, &key, &spec).await?;
            println!("task {} succeeded: {} groups released", last.task_id, last.result_count);
            if format == ResultFormat::Csv {
                print!("{}", std::fs::read_to_string(&path).unwrap_or_default());
            }
            println!("result on your node: {} (digest on the ledger: {})", path.display(), last.result_digest);
        }
        TaskCommand::Lookup { config, dataset, keys } => {
            let (config, key) = requester(&config)?;
            let spec = TaskSpec {
                kind: Computation::Lookup,
                datasets: vec![dataset.clone()],
                receiver: config.org.clone(),
                params: TaskParams::Lookup(LookupParams { dataset, requester_dataset: keys }),
            };
            let (last, path) = run_to_end(&config, &key, &spec).await?;
            let table = std::fs::read_to_string(&path).unwrap_or_default();
            let found = table.lines().skip(1).filter(|l| status_of(l) == Some("found")).count();
            println!("task {} succeeded: {found} of {} keys found", last.task_id, last.result_count);
            print!("{table}");
            println!(
                "result on your node: {} (the ledger holds a salted commitment to it: {})",
                path.display(),
                last.result_digest
            );
        }
        TaskCommand::Watch { id, config } => {
            let config = NodeConfig::load(&config)?;
            let mut client = client(&config).await?;
            let last = follow(&mut client, &id).await?;
            report(&config, &last)?;
        }
    }
    Ok(())
}

/// The status field of a lookup result's line (`key,status,…`), reading
/// past a quoted key.
fn status_of(line: &str) -> Option<&str> {
    let rest = match line.strip_prefix('"') {
        Some(quoted) => {
            // The key ends at a quote not followed by another quote.
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if chars.peek().is_some_and(|(_, n)| *n == '"') {
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                }
            }
            &quoted[end?..]
        }
        None => &line[line.find(',')?..],
    };
    rest.strip_prefix(',')?.split(',').next()
}

/// The count in a cardinality task's result file (`intersection_keys`,
/// then the count).
pub fn cardinality_of(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    (lines.next()? == "intersection_keys").then_some(())?;
    lines.next()?.trim().parse().ok()
}

/// `stayput coordinator --config …`: serves until stopped.
pub async fn coordinator(config: PathBuf) -> Result<(), CliError> {
    let config = stayput_coordinator::CoordinatorConfig::load(&config)?;
    let running = stayput_coordinator::spawn(&config).await?;
    let stop = StopSignal::install()?;
    eprintln!("coordinator '{}' listening on {}", config.org, running.addr);
    let signal = stop.wait().await?;
    eprintln!("{signal}: shutting down");
    running.shutdown().await?;
    eprintln!("stopped cleanly");
    Ok(())
}

/// What stops a server: SIGTERM (what service managers and Kubernetes
/// send) or SIGINT (Ctrl-C). Installed before the server says it is
/// listening, so a signal sent as soon as it does is caught too; either
/// way the caller then shuts down cleanly — the embedded ledger closed, so
/// it opens again without recovery.
pub struct StopSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    /// Takes over SIGTERM (SIGINT is taken when waiting, as tokio does).
    pub fn install() -> Result<Self, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let terminate = signal(SignalKind::terminate()).map_err(|e| CliError::Signal(e.to_string()))?;
            Ok(Self { terminate })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for a stop; returns the signal's name.
    pub async fn wait(mut self) -> Result<&'static str, CliError> {
        let failed = |e: std::io::Error| CliError::Signal(e.to_string());
        #[cfg(unix)]
        {
            tokio::select! {
                interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| "SIGINT").map_err(failed),
                _ = self.terminate.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.map(|()| "Ctrl-C").map_err(failed)
        }
    }
}

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopSignal")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cardinality_is_read_from_its_result_file() {
        assert_eq!(super::cardinality_of("intersection_keys\n120\n"), Some(120));
        assert_eq!(super::cardinality_of("national_id\n120\n"), None);
        assert_eq!(super::cardinality_of("intersection_keys\n"), None);
    }

    #[test]
    fn the_status_of_a_lookup_line_reads_past_quoted_keys() {
        assert_eq!(super::status_of("ST1,found,Buoy"), Some("found"));
        assert_eq!(super::status_of("\"ST,\"\"found\",absent,,"), Some("absent"));
        assert_eq!(super::status_of("\"unterminated"), None);
    }
}
