//! `stayput demo`: a small consortium on loopback, end to end.
//!
//! A bank checks its loan applicants against a credit bureau's blacklist by
//! balanced PSI in each output mode. Everything an operator would set up by
//! hand is created in one folder: the consortium CA, organisation
//! certificates, node configurations, CSV and Parquet datasets. The planted
//! overlap is known, so every result is checked before it is shown.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{StringArray, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use stayput_node::dataset::{FileFormat, write_parquet};
use stayput_node::localnet::{DatasetSpec, LocalNet, OrgSpec};
use stayput_node::requester::{PsiReport, PsiRequest};
use stayput_psi::ecdh::OutputMode;

use crate::error::CliError;

const APPLICANTS: usize = 10_000;
const BLACKLIST: usize = 50_000;
const LISTED_APPLICANTS: usize = 300;

/// A mainland resident identity number: region, birth date, sequence, and
/// the ISO 7064 MOD 11-2 check character.
fn resident_id(rng: &mut StdRng) -> String {
    const REGIONS: [u32; 6] = [110101, 310104, 440305, 330106, 510107, 420102];
    let body = format!(
        "{}{:04}{:02}{:02}{:03}",
        REGIONS[rng.gen_range(0..REGIONS.len())],
        rng.gen_range(1955..2004),
        rng.gen_range(1..13),
        rng.gen_range(1..29),
        rng.gen_range(0..1000)
    );
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body.bytes().zip(WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{body}{check}")
}

struct DemoData {
    applicants_csv: PathBuf,
    blacklist_parquet: PathBuf,
    listed: BTreeSet<String>,
}

fn generate(dir: &Path) -> Result<DemoData, CliError> {
    let io = |e: std::io::Error| CliError::Demo(format!("writing demo data: {e}"));
    let mut rng = StdRng::seed_from_u64(20261121);
    let mut ids = BTreeSet::new();
    while ids.len() < APPLICANTS + BLACKLIST - LISTED_APPLICANTS {
        ids.insert(resident_id(&mut rng));
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let (applicant_only, rest) = ids.split_at(APPLICANTS - LISTED_APPLICANTS);
    let (common, bureau_only) = rest.split_at(LISTED_APPLICANTS);

    // The bank's applicants: CSV as an upstream system exports it, with
    // stray spaces and lower-case check characters that normalisation fixes.
    std::fs::create_dir_all(dir.join("bank")).map_err(io)?;
    let applicants_csv = dir.join("bank").join("applicants.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&applicants_csv).map_err(io)?);
    writeln!(out, "applicant_id,name,loan_amount_cny,branch").map_err(io)?;
    let surnames = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu"];
    let branches = ["Beijing", "Shanghai", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan"];
    let mut applicants: Vec<&String> = applicant_only.iter().chain(common).collect();
    applicants.shuffle(&mut rng);
    for id in applicants {
        let shown = if rng.gen_bool(0.1) { format!(" {} ", id.to_lowercase()) } else { id.clone() };
        writeln!(
            out,
            "{shown},{} {},{},{}",
            surnames[rng.gen_range(0..surnames.len())],
            ["Wei", "Fang", "Min", "Jing", "Lei", "Yan"][rng.gen_range(0..6)],
            rng.gen_range(20..500) * 1000,
            branches[rng.gen_range(0..branches.len())]
        )
        .map_err(io)?;
    }
    out.flush().map_err(io)?;

    // The bureau's blacklist: Parquet with its labels.
    std::fs::create_dir_all(dir.join("bureau")).map_err(io)?;
    let blacklist_parquet = dir.join("bureau").join("blacklist.parquet");
    let listed: Vec<&String> = common.iter().chain(bureau_only).collect();
    let reasons = ["D90", "D60", "FRAUD", "COURT", "WRITE-OFF"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("national_id", DataType::Utf8, false),
        Field::new("reason_code", DataType::Utf8, false),
        Field::new("listed_on", DataType::Utf8, false),
        Field::new("severity", DataType::UInt8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(listed.iter().map(|s| s.as_str()))),
            Arc::new(StringArray::from_iter_values(listed.iter().map(|_| reasons[rng.gen_range(0..reasons.len())]))),
            Arc::new(StringArray::from_iter_values(listed.iter().map(|_| {
                format!("20{:02}-{:02}-{:02}", rng.gen_range(18..27), rng.gen_range(1..13), rng.gen_range(1..29))
            }))),
            Arc::new(UInt8Array::from_iter_values(listed.iter().map(|_| rng.gen_range(1..6)))),
        ],
    )
    .map_err(|e| CliError::Demo(e.to_string()))?;
    write_parquet(&blacklist_parquet, &[batch])?;
    Ok(DemoData { applicants_csv, blacklist_parquet, listed: common.iter().cloned().collect() })
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg}").expect("static"));
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

fn check(report: &PsiReport, expected: usize, what: &str) -> Result<(), CliError> {
    if report.intersection_keys != expected as u64 {
        return Err(CliError::Demo(format!(
            "{what}: found {} common keys where {expected} were planted",
            report.intersection_keys
        )));
    }
    Ok(())
}

/// Runs the demo in `dir` (kept) or in a temporary folder.
pub async fn run(dir: Option<PathBuf>) -> Result<(), CliError> {
    let started = Instant::now();
    let temp;
    let kept = dir.is_some();
    let dir = match dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(&d).map(|mut r| r.next().is_some()).unwrap_or(false) {
                return Err(CliError::Demo(format!("{} is not empty; give a new folder", d.display())));
            }
            std::fs::create_dir_all(&d).map_err(|e| CliError::Demo(format!("creating {}: {e}", d.display())))?;
            d
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| CliError::Demo(e.to_string()))?;
            temp.path().to_path_buf()
        }
    };
    if kept {
        println!("Stayput demo in {}", dir.display());
    } else {
        println!("Stayput demo in {} (a temporary folder, removed on exit: give --dir to keep it)", dir.display());
    }

    let bar = spinner("generating synthetic data");
    let data = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || generate(&dir)
    })
    .await
    .map_err(|e| CliError::Demo(e.to_string()))??;
    bar.finish_and_clear();
    println!("data: bank has {APPLICANTS} loan applicants (CSV), bureau has a {BLACKLIST}-entry blacklist (Parquet)");

    let bar = spinner("creating the consortium CA, certificates and node configurations; starting nodes");
    let orgs = [
        OrgSpec {
            name: "bank".into(),
            datasets: vec![DatasetSpec {
                name: "applicants".into(),
                path: data.applicants_csv.clone(),
                key_columns: vec!["applicant_id".into()],
                normalise: vec!["trim".into(), "uppercase".into()],
            }],
        },
        OrgSpec {
            name: "bureau".into(),
            datasets: vec![DatasetSpec {
                name: "blacklist".into(),
                path: data.blacklist_parquet.clone(),
                key_columns: vec!["national_id".into()],
                normalise: vec!["trim".into(), "uppercase".into()],
            }],
        },
    ];
    let net = LocalNet::start(&dir, &orgs, None).await?;
    bar.finish_and_clear();
    println!(
        "nodes: bank at {}, bureau at {} (mutual TLS under the consortium CA)",
        net.nodes["bank"].addr, net.nodes["bureau"].addr
    );

    let journeys = [
        (
            "demo-psi-001",
            OutputMode::IntersectionToRequester,
            "which applicants are blacklisted (bank learns them; bureau learns nothing)",
        ),
        (
            "demo-psi-002",
            OutputMode::CardinalityOnly,
            "how many applicants are blacklisted (bank learns the count only)",
        ),
        (
            "demo-psi-003",
            OutputMode::IntersectionToBoth,
            "common customers, both sides learn them (each writes its own rows)",
        ),
    ];
    println!();
    for (task, mode, what) in journeys {
        let request = PsiRequest {
            task_id: task.into(),
            dataset: "applicants".into(),
            peer: "bureau".into(),
            peer_dataset: "blacklist".into(),
            mode,
            output_format: FileFormat::Csv,
        };
        let bar = spinner(&format!("{task}: {what}"));
        let report = stayput_node::control::request_psi(net.state("bank"), &request, |p| {
            bar.set_message(format!("{task}: {} {}/{}", p.phase, p.done, p.total));
        })
        .await?;
        bar.finish_and_clear();
        check(&report, data.listed.len(), task)?;
        println!("{task} [{mode}] {what}");
        println!(
            "  bank sent {} distinct keys ({} rows), bureau {}; common: {} — matches the {} planted; {:.2} s",
            report.distinct_keys,
            report.rows_read,
            report.peer_keys,
            report.intersection_keys,
            data.listed.len(),
            report.elapsed.as_secs_f64()
        );
        if let Some(file) = &report.output {
            println!("  bank's result: {} ({} rows of its own applicants)", file.path.display(), file.rows);
        }
        if mode == OutputMode::IntersectionToBoth {
            let theirs = net.state("bureau").config.output_dir.join("from-bank").join(format!("{task}-blacklist.csv"));
            println!("  bureau's result: {} (its own blacklist rows)", theirs.display());
        }
    }

    println!("\nAll journeys checked against the planted data in {:.1} s.", started.elapsed().as_secs_f64());
    println!("Raw rows never left their node: only blinded points and tags crossed the wire.");
    net.shutdown().await?;
    println!("\nWhat to try next:");
    println!("  stayput demo --dir ./demo            keep the folder: configs, keys, data and results");
    println!("  stayput node --config ./demo/bank/node.toml    (and the bureau's) in two terminals, then");
    println!(
        "  stayput psi --config ./demo/bank/node.toml --dataset applicants --peer bureau --peer-dataset blacklist --task-id t-1"
    );
    println!("  stayput bench psi --n 1048576        throughput and the ratio to the curve floor");
    Ok(())
}
