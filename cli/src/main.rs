//! `stayput` — the one binary of a Stayput deployment.
#![forbid(unsafe_code)]

mod admin;
mod demo;
mod demo_modelling;
mod dispute;
mod error;
mod ledger;
mod subject;
mod task;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use stayput_identity as identity;
use stayput_node::NodeConfig;
use stayput_node::dataset::FileFormat;
use stayput_node::psi::requester::PsiRequest;
use stayput_psi::ecdh::OutputMode;

use crate::error::CliError;

/// Stayput: compute together on data that stays put.
///
/// Each organisation runs a node beside its data. Nodes run private set
/// intersection with each other over mutually authenticated TLS; raw rows
/// never leave the node that owns them.
///
/// Getting started:
///   stayput demo                      run a small consortium on loopback
///   stayput keys ca --dir keys        create the consortium CA
///   stayput keys org --dir keys --org bank --host 127.0.0.1
///   stayput coordinator --config coordinator.toml   run the operator's coordinator
///   stayput node --config bank.toml   run a node
///   stayput task psi --config bank.toml --dataset applicants \
///       --peer-dataset blacklist --columns national_id
///   stayput audit task <task-id> --config bank.toml
///   stayput audit verify --ledger ledger.redb --operator keys/operator.ed25519.pub
#[derive(Debug, Parser)]
#[command(name = "stayput", version, verbatim_doc_comment)]
struct Cli {
    /// Log filter, e.g. `info` or `stayput_node=debug`. Logs go to stderr and
    /// never carry keys, rows or secrets.
    #[arg(long, global = true, env = "STAYPUT_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create keys and certificates: the consortium CA, or an organisation's.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a node with the given configuration until interrupted.
    Node {
        /// The node's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the operator's coordinator (task service and embedded ledger) until interrupted.
    Coordinator {
        /// The coordinator's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Submit and follow tasks through the coordinator (authorised on the ledger).
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Run private set intersection directly, node to node, without the
    /// coordinator (nodes with a [ledger] section still require a recorded task).
    Psi(PsiArgs),
    /// List the datasets your node serves.
    Datasets {
        /// Your node's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Write the consortium's records: deploy the EVM contract, admit members
    /// (the operator); publish datasets, grant and revoke use (data owners).
    #[command(subcommand)]
    Consortium(admin::ConsortiumCommand),
    /// Contest a blacklist listing, and rule on it (arbitrators).
    #[command(subcommand)]
    Dispute(dispute::DisputeCommand),
    /// Read the consortium's ledger: members, datasets, grants, tasks.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Audit: a task's whole trail, inclusion proofs, the whole chain.
    #[command(subcommand)]
    Audit(ledger::AuditCommand),
    /// Measure performance and print figures and ratios.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A person's own keys: credit scores that only they can decrypt.
    #[command(subcommand)]
    Subject(SubjectCommand),
    /// Run the whole product on loopback with synthetic data, end to end.
    Demo {
        /// Working directory to create (kept for inspection); a temporary one otherwise.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create the consortium CA: <dir>/ca.pem and <dir>/ca.key (mode 0600).
    Ca {
        #[arg(long)]
        dir: PathBuf,
        /// The consortium's name, shown in the CA certificate.
        #[arg(long, default_value = "stayput")]
        consortium: String,
    },
    /// Create an organisation's TLS key and certificate under the CA in <dir>,
    /// and its ed25519 signing key for ledger records (<org>.ed25519, 0600).
    Org {
        /// Folder holding ca.pem and ca.key; the organisation's files go there too.
        #[arg(long)]
        dir: PathBuf,
        /// Organisation name (a-z, 0-9, '-'); peers dial it by this name.
        #[arg(long)]
        org: String,
        /// Host names or IP addresses the node is reached at.
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1"])]
        hosts: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// You learn the common keys; the peer learns nothing.
    Intersection,
    /// Both learn the common keys; each side's rows are written on its own node.
    IntersectionBoth,
    /// You learn only how many keys are common.
    Cardinality,
}

impl From<Mode> for OutputMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Intersection => OutputMode::IntersectionToRequester,
            Mode::IntersectionBoth => OutputMode::IntersectionToBoth,
            Mode::Cardinality => OutputMode::CardinalityOnly,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LedgerBackend {
    /// The embedded ledger (redb file).
    Embedded,
    /// The EVM backend against a local anvil node (installed by ./scripts/test).
    Anvil,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Parquet,
}

#[derive(Debug, Args)]
struct PsiArgs {
    /// Your node's TOML configuration (its address and your organisation's TLS files).
    #[arg(long)]
    config: PathBuf,
    /// Your dataset, by the name in your node's configuration.
    #[arg(long)]
    dataset: String,
    /// The peer organisation, as in your node's [peers] table.
    #[arg(long)]
    peer: String,
    /// The peer's dataset, by the name in its node's configuration.
    #[arg(long)]
    peer_dataset: String,
    #[arg(long, value_enum, default_value = "intersection")]
    mode: Mode,
    /// The protocol: `ecdh` (every mode), `kkrt` (OT-based, an order of
    /// magnitude faster on large sets) or `rr22` (silent VOLE, faster still
    /// with a quarter of KKRT's traffic); the last two in intersection modes
    /// only.
    #[arg(long, default_value = "ecdh")]
    protocol: stayput_psi::Protocol,
    /// Task id (letters, digits, '.', '_', '-'): names the result file and binds the protocol.
    #[arg(long)]
    task_id: String,
    /// Format of the result file written on your node.
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
}

#[derive(Debug, Subcommand)]
enum SubjectCommand {
    /// Create the TFHE key pair on this device: `subject.key` (secret, 0600,
    /// never to leave it) and `subject.pub` (public key and server key, to
    /// publish).
    Keys {
        /// Where to write the two files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Replace an existing pair; scores made under it become unreadable.
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Balanced PSI, n × n keys, both parties in this process; prints elements/s,
    /// the ratio to the curve-operation floor measured in the same run, and peak RSS.
    Psi {
        /// Keys per side.
        #[arg(long, default_value_t = 1 << 16)]
        n: usize,
        /// Run the protocol in memory, without gRPC (and without files).
        #[arg(long)]
        in_memory: bool,
        /// Output mode.
        #[arg(long, value_enum, default_value = "intersection")]
        mode: Mode,
        /// The protocol: `ecdh`, `kkrt` or `rr22`.
        #[arg(long, default_value = "ecdh")]
        protocol: stayput_psi::Protocol,
        /// KKRT or RR22 over nodes: run the sets in this many parts (0: one
        /// per 2^20 keys).
        #[arg(long, default_value_t = 0)]
        parts: u32,
        /// Keys per batch.
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// KKRT, RR22: skip the runs on the same sets that give the ratios
        /// (ECDH, and KKRT for RR22; ECDH takes about 25 s per 2^20 keys here).
        #[arg(long)]
        no_ecdh: bool,
    },
    /// The blacklist query (unbalanced labeled PSI, in memory): bureau
    /// precompute, encoded set size, online latency against one and several
    /// bureaus, and balanced PSI on the same data for comparison.
    Blacklist {
        /// Entries per bureau.
        #[arg(long, default_value_t = 1_000_000)]
        entries: usize,
        /// Ids per query.
        #[arg(long, default_value_t = 1_000)]
        query: usize,
        /// Bureaus queried.
        #[arg(long, default_value_t = 3)]
        bureaus: usize,
        /// Skip the balanced-PSI comparison.
        #[arg(long)]
        no_balanced: bool,
    },
    /// A credit score only its subject can decrypt: a scorecard of binned
    /// features under the subject's TFHE key, timed phase by phase
    /// (key generation, encryption, evaluation, decryption).
    Score {
        /// Features of the scorecard.
        #[arg(long, default_value_t = 20)]
        features: usize,
    },
    /// Federated statistics: the demo's hospital query over several sites,
    /// timed phase by phase (scan, proofs, sharing, verification).
    Stats {
        /// Sites.
        #[arg(long, default_value_t = 3)]
        sites: usize,
        /// Rows per site.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
    },
    /// Compute-only access: a gridded monthly mean over synthetic ocean
    /// observations in Parquet, as the data centre's node answers it;
    /// rows/s end to end, against the Parquet decoding floor.
    Ocean {
        /// Observations.
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Folder to keep the generated Parquet file in (reused when present).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Private lookup (SimplePIR-style): server GB/s per core against a
    /// plain scan of the same matrix, sizes, client times, and a checked
    /// end-to-end lookup on a small database.
    Lookup {
        /// Records.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Bytes per record (34 of them are the slot's tag, length and seal tag).
        #[arg(long, default_value_t = 256)]
        record_bytes: usize,
    },
    /// Vertical SecureBoost between a label holder and a feature holder:
    /// the Paillier operations, training time, messages and test AUC —
    /// on SecretFlow's data folder (`sf_vfl.py --data-dir`) when given one,
    /// so both systems train on the same rows.
    Train {
        /// SecretFlow's folder of one data set (e.g. peer-data/vfl_r10000_s2024).
        #[arg(long)]
        secretflow_data: Option<PathBuf>,
        /// Rows of the synthetic set used otherwise (80 % train).
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// Trees.
        #[arg(long, default_value_t = 10)]
        trees: u32,
        /// Depth.
        #[arg(long, default_value_t = 5)]
        depth: u32,
        /// Bins per feature (SecretFlow's sketch_eps 0.1 ≈ 10).
        #[arg(long, default_value_t = 10)]
        max_bins: usize,
        /// Also train and score the same rows as `train` and `predict`
        /// tasks between two nodes (mTLS, coordinator, embedded ledger).
        #[arg(long)]
        nodes: bool,
    },
    /// The embedded ledger: durable signed records per second, and the time
    /// to re-verify the whole chain on open.
    Ledger {
        /// Which ledger: the embedded one, or the EVM backend against a local anvil.
        #[arg(long, value_enum, default_value = "embedded")]
        backend: LedgerBackend,
        /// Records to write.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        /// Concurrent writers.
        #[arg(long, default_value_t = 256)]
        writers: usize,
        /// Folder to keep the ledger and keys in (a temporary one otherwise).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print `ack <record hash>` as each record is acknowledged.
        #[arg(long)]
        print_acks: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into());
    if matches!(cli.command, Command::Demo { .. }) {
        // The demo also keeps the nodes' info lines, to show what a node
        // logs of a private lookup.
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(demo::log_capture)
                    .with_filter(tracing_subscriber::EnvFilter::new("stayput_node=info")),
            )
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Keys(KeysCommand::Ca { dir, consortium }) => {
            let ca = identity::generate_ca(&consortium)?;
            identity::write_certified_key(&dir, "ca", &ca)?;
            println!(
                "created {} and {} (keep the key offline)",
                dir.join("ca.pem").display(),
                dir.join("ca.key").display()
            );
        }
        Command::Keys(KeysCommand::Org { dir, org, hosts }) => {
            let ca = identity::read_certified_key(&dir, "ca")?;
            let issued = identity::issue_org_certificate(&ca, &org, &hosts)?;
            identity::write_certified_key(&dir, &org, &issued)?;
            stayput_chain_connector::keys::save(&dir, &org, &stayput_chain_connector::records::OrgKey::generate())?;
            println!(
                "created {} and {} for '{org}' (hosts: {}), and its ledger signing key {}",
                dir.join(format!("{org}.pem")).display(),
                dir.join(format!("{org}.key")).display(),
                hosts.join(", "),
                dir.join(format!("{org}.ed25519")).display()
            );
        }
        Command::Node { config } => {
            let config = NodeConfig::load(&config)?;
            let node = stayput_node::server::spawn(config).await?;
            let stop = task::StopSignal::install()?;
            eprintln!("node '{}' listening on {}", node.state.config.org, node.addr);
            let signal = stop.wait().await?;
            eprintln!("{signal}: shutting down");
            node.shutdown().await?;
            eprintln!("stopped cleanly");
        }
        Command::Coordinator { config } => task::coordinator(config).await?,
        Command::Task(command) => task::run(command).await?,
        Command::Consortium(command) => admin::run(command).await?,
        Command::Dispute(command) => dispute::run(command).await?,
        Command::Psi(args) => psi(args).await?,
        Command::Datasets { config } => {
            let state = stayput_node::NodeState::new(NodeConfig::load(&config)?)?;
            for (name, keys, rules) in stayput_node::control::list_datasets(&state).await? {
                println!("{name}: key columns [{}], normalisation [{}]", keys.join(", "), rules.join(", "));
            }
        }
        Command::Subject(SubjectCommand::Keys { dir, rotate }) => {
            let said = tokio::task::spawn_blocking(move || subject::keys(&dir, rotate))
                .await
                .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{said}");
        }
        Command::Bench(BenchCommand::Psi { n, in_memory, mode, protocol, parts, batch, no_ecdh }) => {
            let report = tokio::task::spawn_blocking(move || {
                stayput_benches::psi::run(n, protocol, parts, mode.into(), in_memory, batch, !no_ecdh)
            })
            .await
            .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{report}");
        }
        Command::Bench(BenchCommand::Blacklist { entries, query, bureaus, no_balanced }) => {
            let report = tokio::task::spawn_blocking(move || {
                stayput_benches::blacklist::run(entries, query, bureaus, !no_balanced)
            })
            .await
            .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{report}");
        }
        Command::Bench(BenchCommand::Score { features }) => {
            let report = tokio::task::spawn_blocking(move || stayput_benches::score::run(features))
                .await
                .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{report}");
        }
        Command::Bench(BenchCommand::Stats { sites, rows }) => {
            let report = tokio::task::spawn_blocking(move || stayput_benches::stats::run(sites, rows))
                .await
                .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{report}");
        }
        Command::Bench(BenchCommand::Ocean { rows, dir }) => {
            let report = tokio::task::spawn_blocking(move || stayput_benches::ocean::run(rows, dir))
                .await
                .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{report}");
        }
        Command::Bench(BenchCommand::Lookup { records, record_bytes }) => {
            let report = tokio::task::spawn_blocking(move || stayput_benches::lookup::run(records, record_bytes))
                .await
                .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{report}");
        }
        Command::Bench(BenchCommand::Train { secretflow_data, rows, trees, depth, max_bins, nodes }) => {
            let (report, carried) = tokio::task::spawn_blocking(move || {
                let params = stayput_benches::train::secretflow_like(trees, depth, max_bins);
                let ((train, test), source) = match &secretflow_data {
                    Some(dir) => (
                        stayput_benches::train::load_secretflow(dir)?,
                        format!("SecretFlow's rows from {}", dir.display()),
                    ),
                    None => (stayput_benches::train::synthetic(rows, 2024), format!("{rows} synthetic rows")),
                };
                let report = stayput_benches::train::run(&train, &test, params, source)?;
                let carried = nodes
                    .then(|| stayput_benches::train::over_nodes(&train, &test, params, report.train_seconds()))
                    .transpose()?;
                Ok::<_, stayput_benches::BenchError>((report, carried))
            })
            .await
            .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{report}");
            if let Some(carried) = carried {
                println!("{carried}");
            }
        }
        Command::Bench(BenchCommand::Ledger { backend, records, writers, dir, print_acks }) => {
            let backend = match backend {
                LedgerBackend::Embedded => stayput_benches::ledger::Backend::Embedded,
                LedgerBackend::Anvil => stayput_benches::ledger::Backend::Anvil,
            };
            let report = tokio::task::spawn_blocking(move || {
                stayput_benches::ledger::run(backend, records, writers, dir.as_deref(), print_acks)
            })
            .await
            .map_err(|e| CliError::Signal(e.to_string()))??;
            println!("{report}");
        }
        Command::Ledger(command) => {
            tokio::task::spawn_blocking(move || ledger::ledger(command))
                .await
                .map_err(|e| CliError::Signal(e.to_string()))??;
        }
        Command::Audit(ledger::AuditCommand::Task { id, config: Some(config), result, .. }) => {
            ledger::audit_task_remote(&id, &config, result).await?;
        }
        Command::Audit(ledger::AuditCommand::VerifyResult { id, config, evidence }) => {
            ledger::verify_result(&id, &config, evidence).await?;
        }
        Command::Audit(command) => audit_blocking(command).await?,
        Command::Demo { dir } => demo::run(dir).await?,
    }
    Ok(())
}

async fn audit_blocking(command: ledger::AuditCommand) -> Result<(), CliError> {
    tokio::task::spawn_blocking(move || ledger::audit(command)).await.map_err(|e| CliError::Signal(e.to_string()))?
}

async fn psi(args: PsiArgs) -> Result<(), CliError> {
    let state = stayput_node::NodeState::new(NodeConfig::load(&args.config)?)?;
    let request = PsiRequest {
        task_id: args.task_id,
        dataset: args.dataset,
        peer: args.peer,
        peer_dataset: args.peer_dataset,
        mode: args.mode.into(),
        protocol: args.protocol,
        parts: 0,
        output_format: match args.format {
            Format::Csv => FileFormat::Csv,
            Format::Parquet => FileFormat::Parquet,
        },
        shard: None,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {msg:>12} [{bar:30}] {pos}/{len} keys ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let report = stayput_node::control::request_psi(&state, &request, |p| {
        bar.set_message(p.phase);
        bar.set_length(p.total);
        bar.set_position(p.done);
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    println!(
        "task {} ({}) with '{}' done in {:.2} s",
        request.task_id,
        request.mode,
        request.peer,
        report.elapsed.as_secs_f64()
    );
    println!(
        "  your keys: {} distinct from {} rows ({} duplicate, {} without a key)",
        report.distinct_keys, report.rows_read, report.duplicate_keys, report.null_keys
    );
    println!("  peer keys: {}", report.peer_keys);
    println!("  common keys: {}", report.intersection_keys);
    if let Some(file) = &report.output {
        println!("  result: {} ({} rows, sha256 {})", file.path.display(), file.rows, hex_lower(&file.sha256));
    }
    Ok(())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
