//! `stayput demo`: a small consortium on loopback, end to end.
//!
//! A consortium of seven organisations — a bank, two credit bureaus, three
//! hospitals and an ocean-science data centre — plus the operator's
//! coordinator with the embedded ledger. Everything an operator would set
//! up by hand is created in one folder: the consortium CA, certificates,
//! ed25519 signing keys, node and coordinator configurations, and synthetic
//! but realistic CSV and Parquet datasets. Members, dataset versions and
//! grants are registered on the ledger; then every journey that exists runs
//! as a signed task through the coordinator, with nodes checking the
//! ledger themselves. The planted overlaps are known, so every result is
//! checked before it is shown, and the audit trail is read back with the
//! result file checked against its digest on the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float64Array, StringArray, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use stayput_chain_connector::Ledger as _;
use stayput_chain_connector::embedded::system_clock;
use stayput_chain_connector::records::{Computation, Grant, Record, Role};
use stayput_chain_connector::tasks::{
    BlacklistParams, LookupParams, PsiDelivery, PsiParams, PsiProtocol, StatsParams, TaskParams,
};
use stayput_coordinator::client::{Phase, TaskReport, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};
use stayput_node::dataset::write_parquet;

use crate::error::CliError;

const APPLICANTS: usize = 10_000;
const BUREAU_A_ENTRIES: usize = 50_000;
const BUREAU_B_ENTRIES: usize = 30_000;
/// Applicants on bureau A's list; the first `BOTH_LISTED` are also on B's.
const LISTED_A: usize = 300;
const LISTED_B: usize = 120;
const BOTH_LISTED: usize = 80;
/// The credit journey: 1,000 new applicants checked against two bureaus'
/// labeled blacklists of 100,000 entries each.
const NEW_APPLICANTS: usize = 1_000;
const DEFAULTS_ENTRIES: usize = 100_000;
/// New applicants listed by bureau A's and B's defaults lists; the first
/// `DEFAULTS_BOTH` of A's are also on B's.
const DEFAULTS_A: usize = 40;
const DEFAULTS_B: usize = 25;
const DEFAULTS_BOTH: usize = 10;
const PATIENTS_PER_HOSPITAL: usize = 3_000;
const OBSERVATIONS: usize = 400_000;
/// The ocean centre's station registry, served for private lookup.
const STATIONS: usize = 5_000;
const STATION_COLUMNS: [&str; 7] = ["name", "lat", "lon", "platform", "operator", "commissioned", "water_depth_m"];
const STATION_RECORD_BYTES: usize = 128;
/// The station the climate lab fetches privately, and one the registry
/// does not list.
const WANTED_STATION: &str = "ST0217";
const UNLISTED_STATION: &str = "ST9999";

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
    bureau_a_parquet: PathBuf,
    bureau_b_csv: PathBuf,
    new_applicants_csv: PathBuf,
    defaults_csv: [PathBuf; 2],
    hospitals: Vec<(String, PathBuf)>,
    /// Inpatient stays with diagnosis I10 across the three hospitals.
    hypertension: u64,
    observations_parquet: PathBuf,
    /// The ocean centre's station registry and the lab's wanted stations.
    registry_csv: PathBuf,
    wanted_csv: PathBuf,
    /// Journey 7's loan history, applicants to score and credit profiles.
    modelling: crate::demo_modelling::ModellingData,
}

fn io_err(e: impl std::fmt::Display) -> CliError {
    CliError::Demo(format!("writing demo data: {e}"))
}

fn write_csv(path: &Path, header: &str, rows: impl IntoIterator<Item = String>) -> Result<(), CliError> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io_err)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io_err)?);
    writeln!(out, "{header}").map_err(io_err)?;
    for row in rows {
        writeln!(out, "{row}").map_err(io_err)?;
    }
    out.flush().map_err(io_err)
}

fn listing_date(rng: &mut StdRng) -> String {
    format!("20{:02}-{:02}-{:02}", rng.gen_range(18..27), rng.gen_range(1..13), rng.gen_range(1..29))
}

/// A normal variate by Box–Muller (enough for synthetic clinical values).
fn normal(rng: &mut StdRng, mean: f64, sd: f64) -> f64 {
    let (u, v): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen_range(0.0..1.0));
    mean + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn generate(dir: &Path) -> Result<DemoData, CliError> {
    let mut rng = StdRng::seed_from_u64(20261121);
    let mut ids = BTreeSet::new();
    while ids.len() < APPLICANTS + BUREAU_A_ENTRIES + BUREAU_B_ENTRIES + 2 * DEFAULTS_ENTRIES {
        ids.insert(resident_id(&mut rng));
    }
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.shuffle(&mut rng);
    let (applicants, rest) = ids.split_at(APPLICANTS);
    let (only_a, only_b) = rest.split_at(BUREAU_A_ENTRIES - LISTED_A);
    let (only_b, unrelated) = only_b.split_at(BUREAU_B_ENTRIES - LISTED_B);
    // Applicants 0..300 are on A's list; 220..340 on B's (80 on both).
    let on_a = &applicants[..LISTED_A];
    let on_b = &applicants[LISTED_A - BOTH_LISTED..LISTED_A - BOTH_LISTED + LISTED_B];

    // The bank's applicants: CSV as an upstream system exports it, with
    // stray spaces and lower-case check characters that normalisation fixes.
    let applicants_csv = dir.join("bank").join("applicants.csv");
    let surnames = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu"];
    let branches = ["Beijing", "Shanghai", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan"];
    let mut shown: Vec<String> = applicants.to_vec();
    shown.shuffle(&mut rng);
    let rows: Vec<String> = shown
        .iter()
        .map(|id| {
            let id = if rng.gen_bool(0.1) { format!(" {} ", id.to_lowercase()) } else { id.clone() };
            format!(
                "{id},{} {},{},{}",
                surnames[rng.gen_range(0..surnames.len())],
                ["Wei", "Fang", "Min", "Jing", "Lei", "Yan"][rng.gen_range(0..6)],
                rng.gen_range(20..500) * 1000,
                branches[rng.gen_range(0..branches.len())]
            )
        })
        .collect();
    write_csv(&applicants_csv, "applicant_id,name,loan_amount_cny,branch", rows)?;

    // Bureau A: Parquet blacklist with labels.
    let bureau_a_parquet = dir.join("bureau-a").join("blacklist.parquet");
    std::fs::create_dir_all(dir.join("bureau-a")).map_err(io_err)?;
    let listed: Vec<&String> = on_a.iter().chain(only_a).collect();
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
            Arc::new(StringArray::from_iter_values(listed.iter().map(|_| listing_date(&mut rng)))),
            Arc::new(UInt8Array::from_iter_values(listed.iter().map(|_| rng.gen_range(1..6)))),
        ],
    )
    .map_err(|e| CliError::Demo(e.to_string()))?;
    write_parquet(&bureau_a_parquet, &[batch])?;

    // Bureau B: a CSV export of court judgements.
    let bureau_b_csv = dir.join("bureau-b").join("judgements.csv");
    let rows: Vec<String> = on_b
        .iter()
        .chain(only_b)
        .map(|id| {
            format!(
                "{id},{},{},{}",
                listing_date(&mut rng),
                ["civil", "enforcement"][rng.gen_range(0..2)],
                rng.gen_range(5..900) * 1000
            )
        })
        .collect();
    write_csv(&bureau_b_csv, "national_id,judgement_date,case_type,amount_cny", rows)?;

    // The credit journey: the last 1,000 applicants are new; each bureau
    // keeps a defaults list of 100,000 with a label per entry.
    let modelling = crate::demo_modelling::generate(
        dir,
        &mut rng,
        &applicants[..crate::demo_modelling::HISTORY],
        &applicants[APPLICANTS - crate::demo_modelling::SCORED..],
        write_csv,
    )?;

    let new = &applicants[APPLICANTS - NEW_APPLICANTS..];
    let new_applicants_csv = dir.join("bank").join("new-applicants.csv");
    write_csv(&new_applicants_csv, "applicant_id", new.iter().cloned())?;
    let planted = [&new[..DEFAULTS_A], &new[DEFAULTS_A - DEFAULTS_BOTH..DEFAULTS_A - DEFAULTS_BOTH + DEFAULTS_B]];
    let others = unrelated.chunks(DEFAULTS_ENTRIES);
    let mut defaults_csv = Vec::new();
    for ((bureau, planted), others) in ["bureau-a", "bureau-b"].into_iter().zip(planted).zip(others) {
        let path = dir.join(bureau).join("defaults.csv");
        let labels = ["D90", "D180", "WRITE-OFF", "FRAUD"];
        let rows: Vec<String> = planted
            .iter()
            .chain(&others[..DEFAULTS_ENTRIES - planted.len()])
            .map(|id| format!("{id},{}|{}", labels[rng.gen_range(0..labels.len())], &listing_date(&mut rng)[..7]))
            .collect();
        write_csv(&path, "national_id,status", rows)?;
        defaults_csv.push(path);
    }
    let defaults_csv: [PathBuf; 2] = defaults_csv.try_into().map_err(|_| CliError::Demo("two bureaus".into()))?;

    // Three hospitals: one row per inpatient stay.
    let diagnoses = ["I10", "E11", "I25", "J44", "N18", "I50"];
    let mut hospitals = Vec::new();
    let mut hypertension = 0;
    for (h, name) in ["hospital-a", "hospital-b", "hospital-c"].into_iter().enumerate() {
        let path = dir.join(name).join("inpatients.csv");
        let rows: Vec<String> = (0..PATIENTS_PER_HOSPITAL)
            .map(|i| {
                let age = rng.gen_range(18..95);
                let bmi = normal(&mut rng, 25.5 + h as f64 * 0.4, 4.0).clamp(15.0, 50.0);
                let diagnosis = diagnoses[rng.gen_range(0..diagnoses.len())];
                hypertension += u64::from(diagnosis == "I10");
                let base = if diagnosis == "I10" { 142.0 } else { 128.0 };
                let sbp = normal(&mut rng, base + 0.35 * f64::from(age - 50) + 0.6 * (bmi - 25.0), 12.0).round();
                format!(
                    "H{}-{i:06},{age},{},{bmi:.1},{sbp},{diagnosis},{}",
                    h + 1,
                    ["F", "M"][rng.gen_range(0..2)],
                    rng.gen_range(1..30)
                )
            })
            .collect();
        write_csv(&path, "patient_id,age,sex,bmi,systolic_bp,diagnosis,length_of_stay", rows)?;
        hospitals.push((name.to_owned(), path));
    }

    // The ocean-science data centre: CTD observations at stations.
    let observations_parquet = dir.join("ocean").join("observations.parquet");
    std::fs::create_dir_all(dir.join("ocean")).map_err(io_err)?;
    let n = OBSERVATIONS;
    let stations: Vec<String> = (0..n).map(|i| format!("ST{:04}", i % 400)).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("station_id", DataType::Utf8, false),
        Field::new("time", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("depth_m", DataType::Float64, false),
        Field::new("temperature_c", DataType::Float64, false),
        Field::new("salinity_psu", DataType::Float64, false),
    ]));
    // Casts sample the surface more densely than the deep: depth = 1000·u³.
    let depth: Vec<f64> = (0..n).map(|_| (1000.0 * rng.gen_range(0.0f64..1.0).powi(3) * 10.0).round() / 10.0).collect();
    let lat: Vec<f64> = (0..n).map(|_| rng.gen_range(18.0..40.0)).collect();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(stations.iter().map(String::as_str))),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("2025-{:02}-{:02}T{:02}:00:00Z", i % 12 + 1, i % 28 + 1, i % 24)),
            )),
            Arc::new(Float64Array::from(lat.clone())),
            Arc::new(Float64Array::from_iter_values((0..n).map(|_| rng.gen_range(110.0..130.0)))),
            Arc::new(Float64Array::from(depth.clone())),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| 28.0 - 0.25 * (lat[i] - 18.0) - 20.0 * (1.0 - (-depth[i] / 300.0).exp())),
            )),
            Arc::new(Float64Array::from_iter_values((0..n).map(|_| normal(&mut rng, 34.5, 0.3)))),
        ],
    )
    .map_err(|e| CliError::Demo(e.to_string()))?;
    write_parquet(&observations_parquet, &[batch])?;

    // Its station registry (one record per station; the first 400 are the
    // stations of the observations), and the lab's list of wanted stations.
    let registry_csv = dir.join("ocean").join("stations.csv");
    let platforms = ["moored buoy", "drifting buoy", "ship of opportunity", "coastal station", "glider"];
    let operators = ["SCSIO", "NMDIS", "FIO", "HKO", "KMA"];
    let places = ["Xisha", "Nansha", "Dongsha", "Pearl River", "Hainan", "Luzon Strait", "Taiwan Bank", "Beibu"];
    let rows: Vec<String> = (0..STATIONS)
        .map(|i| {
            format!(
                "ST{i:04},{} {},{:.3},{:.3},{},{},{}-{:02}-{:02},{}",
                places[rng.gen_range(0..places.len())],
                rng.gen_range(1..60),
                rng.gen_range(18.0..40.0),
                rng.gen_range(110.0..130.0),
                platforms[rng.gen_range(0..platforms.len())],
                operators[rng.gen_range(0..operators.len())],
                rng.gen_range(1995..2025),
                rng.gen_range(1..13),
                rng.gen_range(1..29),
                rng.gen_range(20..4000)
            )
        })
        .collect();
    write_csv(&registry_csv, &format!("station_id,{}", STATION_COLUMNS.join(",")), rows)?;
    let wanted_csv = dir.join("climate").join("wanted-stations.csv");
    write_csv(&wanted_csv, "station_id", [WANTED_STATION.to_lowercase(), UNLISTED_STATION.to_owned()])?;
    // The queries of journeys 4 and 5, kept for `stayput task stats|aggregate --query`.
    for (path, what, query) in [
        (dir.join("research").join("hypertension.toml"), "journey 4's cohort query", stayput_benches::stats::QUERY),
        (dir.join("climate").join("sst.toml"), "journey 5's compute-only query", SST_QUERY),
    ] {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io_err)?;
        std::fs::write(&path, format!("# The demo's {what}.\n{query}")).map_err(io_err)?;
    }
    Ok(DemoData {
        registry_csv,
        wanted_csv,
        applicants_csv,
        bureau_a_parquet,
        bureau_b_csv,
        new_applicants_csv,
        defaults_csv,
        hospitals,
        hypertension,
        observations_parquet,
        modelling,
    })
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg}").expect("static"));
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

fn prepare_dir(dir: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>), CliError> {
    match dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(&d).map(|mut r| r.next().is_some()).unwrap_or(false) {
                return Err(CliError::Demo(format!("{} is not empty; give a new folder", d.display())));
            }
            std::fs::create_dir_all(&d).map_err(|e| CliError::Demo(format!("creating {}: {e}", d.display())))?;
            // Configurations resolve relative paths against their own folder:
            // the paths written into them must not be relative to ours.
            let d = std::path::absolute(&d).map_err(|e| CliError::Demo(format!("{}: {e}", d.display())))?;
            Ok((d, None))
        }
        None => {
            let temp = tempfile::tempdir().map_err(|e| CliError::Demo(e.to_string()))?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// How a demo dataset is served besides PSI and computations.
#[derive(Debug, Clone, Copy)]
enum Serving<'a> {
    /// As it is.
    Plain,
    /// As a blacklist with this label column.
    Blacklist(&'a str),
    /// As a lookup table of these record columns.
    Lookup(&'a [&'a str]),
}

/// A dataset of a demo participant: name, file, key column, how it is served.
type DemoDataset<'a> = (&'a str, &'a Path, &'a str, Serving<'a>);

fn participant(name: &str, display: &str, roles: Vec<Role>, datasets: Vec<DemoDataset<'_>>) -> Participant {
    Participant {
        spec: OrgSpec {
            name: name.into(),
            datasets: datasets
                .into_iter()
                .map(|(dataset, path, key, serving)| DatasetSpec {
                    name: dataset.into(),
                    path: path.into(),
                    key_columns: vec![key.into()],
                    normalise: vec!["trim".into(), "uppercase".into()],
                    labels: match serving {
                        Serving::Blacklist(column) => Some(column.to_owned()),
                        _ => None,
                    },
                    pir: match serving {
                        Serving::Lookup(columns) => Some(stayput_node::config::PirSettings {
                            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
                            record_bytes: STATION_RECORD_BYTES,
                        }),
                        _ => None,
                    },
                })
                .collect(),
        },
        display: display.into(),
        roles,
    }
}

fn hospital_query() -> Result<TaskSpec, CliError> {
    let query = stayput_mpc_engine::query::CohortQuery::from_toml(stayput_benches::stats::QUERY)
        .map_err(|e| CliError::Demo(e.to_string()))?
        .to_canonical_json();
    Ok(TaskSpec {
        kind: Computation::Stats,
        datasets: vec!["inpatients-a".into(), "inpatients-b".into(), "inpatients-c".into()],
        receiver: "research".into(),
        params: TaskParams::Stats(StatsParams { query, epsilon: 0 }),
    })
}

fn psi_task(kind: Computation, peer_dataset: &str) -> TaskSpec {
    TaskSpec {
        kind,
        datasets: vec![peer_dataset.into()],
        receiver: "bank".into(),
        params: TaskParams::Psi(PsiParams {
            requester_dataset: "applicants".into(),
            peer_dataset: peer_dataset.into(),
            columns: vec!["national_id".into()],
            protocol: PsiProtocol::Ecdh,
            delivery: PsiDelivery::ToRequester,
            shards: 1,
        }),
    }
}

/// Submits a task as `org` and follows it with a spinner.
pub(crate) async fn run_task(
    net: &LocalConsortium,
    org: &str,
    spec: &TaskSpec,
    what: &str,
) -> Result<TaskReport, CliError> {
    let submitted = net.submit(org, spec).await?;
    let bar = spinner(&format!("{}: {what}", submitted.task_id));
    let report = net
        .client(org)
        .await?
        .follow(&submitted.task_id, |r| {
            let step = if r.step.is_empty() { format!("{:?}", r.phase).to_lowercase() } else { r.step.clone() };
            bar.set_message(format!("{}: {what} — {step} {}/{}", submitted.task_id, r.done, r.total));
        })
        .await?;
    bar.finish_and_clear();
    if report.phase != Phase::Succeeded {
        return Err(CliError::Demo(format!("task {} failed: {}", report.task_id, report.error)));
    }
    Ok(report)
}

fn expect(report: &TaskReport, planted: usize, what: &str) -> Result<(), CliError> {
    if report.result_count != planted as u64 {
        return Err(CliError::Demo(format!("{what}: found {} where {planted} were planted", report.result_count)));
    }
    Ok(())
}

/// Runs the demo in `dir` (kept) or in a temporary folder.
pub async fn run(dir: Option<PathBuf>) -> Result<(), CliError> {
    let started = Instant::now();
    let kept = dir.is_some();
    let (dir, _temp) = prepare_dir(dir)?;
    if kept {
        println!("Stayput demo in {}", dir.display());
    } else {
        println!("Stayput demo in {} (a temporary folder, removed on exit: give --dir to keep it)", dir.display());
    }

    let bar = spinner("generating synthetic data for the consortium");
    let data = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || generate(&dir)
    })
    .await
    .map_err(|e| CliError::Demo(e.to_string()))??;
    bar.finish_and_clear();
    println!(
        "data: bank {APPLICANTS} loan applicants (CSV); bureau-a {BUREAU_A_ENTRIES}-entry blacklist (Parquet); \
         bureau-b {BUREAU_B_ENTRIES} court judgements (CSV);\n      {NEW_APPLICANTS} new applicants; two bureaus' defaults lists of {DEFAULTS_ENTRIES} labeled entries (CSV);\n      3 hospitals × {PATIENTS_PER_HOSPITAL} inpatient stays (CSV); \
         ocean centre {OBSERVATIONS} CTD observations (Parquet) and a {STATIONS}-station registry (CSV)"
    );

    let bar = spinner(
        "creating the CA, certificates, signing keys and configurations; starting the coordinator and 10 nodes",
    );
    let h = &data.hospitals;
    let participants = [
        participant(
            "bank",
            "Lakeside Commercial Bank",
            vec![Role::Requester, Role::DataOwner],
            vec![
                ("applicants", &data.applicants_csv, "applicant_id", Serving::Plain),
                ("new-applicants", &data.new_applicants_csv, "applicant_id", Serving::Plain),
                ("loan-history", &data.modelling.loans_csv, "applicant_id", Serving::Plain),
                ("scoring", &data.modelling.scoring_csv, "applicant_id", Serving::Plain),
            ],
        ),
        participant(
            "bureau-a",
            "Credit Bureau A",
            vec![Role::DataOwner],
            vec![
                ("blacklist-a", &data.bureau_a_parquet, "national_id", Serving::Plain),
                ("defaults-a", &data.defaults_csv[0], "national_id", Serving::Blacklist("status")),
                ("credit-profiles", &data.modelling.profiles_csv, "national_id", Serving::Plain),
            ],
        ),
        participant(
            "bureau-b",
            "Credit Bureau B",
            vec![Role::DataOwner],
            vec![
                ("judgements-b", &data.bureau_b_csv, "national_id", Serving::Plain),
                ("defaults-b", &data.defaults_csv[1], "national_id", Serving::Blacklist("status")),
            ],
        ),
        participant(
            "hospital-a",
            "City Hospital A",
            vec![Role::DataOwner],
            vec![("inpatients-a", &h[0].1, "patient_id", Serving::Plain)],
        ),
        participant(
            "hospital-b",
            "University Hospital B",
            vec![Role::DataOwner],
            vec![("inpatients-b", &h[1].1, "patient_id", Serving::Plain)],
        ),
        participant(
            "hospital-c",
            "County Hospital C",
            vec![Role::DataOwner],
            vec![("inpatients-c", &h[2].1, "patient_id", Serving::Plain)],
        ),
        participant("research", "Cardiovascular Research Institute", vec![Role::Requester], vec![]),
        participant("court", "Credit Arbitration Court", vec![Role::Arbitrator], vec![]),
        participant(
            "ocean",
            "Ocean Science Data Centre",
            vec![Role::DataOwner],
            vec![
                ("ctd-observations", &data.observations_parquet, "station_id", Serving::Plain),
                ("station-registry", &data.registry_csv, "station_id", Serving::Lookup(&STATION_COLUMNS)),
            ],
        ),
        participant(
            "climate",
            "Marine Climate Lab",
            vec![Role::Requester],
            vec![("wanted-stations", &data.wanted_csv, "station_id", Serving::Plain)],
        ),
    ];
    let net = LocalConsortium::start(&dir, &participants, system_clock()).await?;
    bar.finish_and_clear();
    println!(
        "coordinator: {} (embedded ledger {}), 10 nodes on loopback, mutual TLS under the consortium CA",
        net.coordinator.addr,
        dir.join("operator/ledger.redb").display()
    );

    let bar = spinner("registering datasets and grants on the ledger");
    // Data owners publish their datasets; the lab's list of wanted stations
    // stays its own.
    for p in participants.iter().filter(|p| p.roles.contains(&Role::DataOwner)) {
        for d in &p.spec.datasets {
            net.publish_dataset(&p.spec.name, &d.name).await?;
        }
    }
    let month = 30 * 24 * 3600;
    let both = vec![Computation::Psi, Computation::PsiCardinality];
    net.grant("bureau-a", "g-a-bank", "blacklist-a", "bank", both, &["national_id"], 10, month).await?;
    net.grant(
        "bureau-b",
        "g-b-bank",
        "judgements-b",
        "bank",
        vec![Computation::PsiCardinality],
        &["national_id"],
        10,
        month,
    )
    .await?;
    for (bureau, dataset) in [("bureau-a", "defaults-a"), ("bureau-b", "defaults-b")] {
        net.write(
            bureau,
            Record::Grant(Grant {
                id: format!("g-{dataset}-bank"),
                dataset: dataset.into(),
                grantee: "bank".into(),
                computations: vec![Computation::Blacklist],
                columns: vec!["national_id".into(), "status".into()],
                min_cohort: 0,
                max_uses: 30,
                max_items: 30_000,
                max_items_per_use: 2_000,
                expires_at: stayput_coordinator::client::unix_now() + month,
                epsilon_budget: 0,
            }),
        )
        .await?;
    }
    // The ocean centre opens its observations for computation only: aggregate
    // queries over the measurements (not the station ids), groups of at
    // least 10, and a total privacy budget of ε = 3.
    net.write(
        "ocean",
        Record::Grant(Grant {
            id: "g-ctd-climate".into(),
            dataset: "ctd-observations".into(),
            grantee: "climate".into(),
            computations: vec![Computation::ComputeOnly],
            columns: ["time", "lat", "lon", "depth_m", "temperature_c", "salinity_psu"].map(String::from).to_vec(),
            min_cohort: 10,
            max_uses: 50,
            max_items: 100_000_000,
            max_items_per_use: 10_000_000,
            expires_at: stayput_coordinator::client::unix_now() + month,
            epsilon_budget: 3_000,
        }),
    )
    .await?;
    // It serves its station registry for private lookup, metered in
    // records: each lookup opens at most one (records are sealed under an
    // OPRF the owner evaluates once per lookup), at most 16 per task and
    // 200 in all.
    net.write(
        "ocean",
        Record::Grant(Grant {
            id: "g-stations-climate".into(),
            dataset: "station-registry".into(),
            grantee: "climate".into(),
            computations: vec![Computation::Lookup],
            columns: STATION_COLUMNS.map(String::from).to_vec(),
            min_cohort: 0,
            max_uses: 10,
            max_items: 200,
            max_items_per_use: 16,
            expires_at: stayput_coordinator::client::unix_now() + month,
            epsilon_budget: 0,
        }),
    )
    .await?;
    // Bureau-a lets the bank train and score with its credit profiles.
    net.write("bureau-a", crate::demo_modelling::grant(stayput_coordinator::client::unix_now() + month)).await?;
    let clinical = ["age", "sex", "bmi", "systolic_bp", "diagnosis", "length_of_stay"];
    for h in ["a", "b", "c"] {
        let (owner, dataset) = (format!("hospital-{h}"), format!("inpatients-{h}"));
        net.write(
            &owner,
            Record::Grant(Grant {
                id: format!("g-{h}-research"),
                dataset,
                grantee: "research".into(),
                computations: vec![Computation::Stats],
                columns: clinical.iter().map(|c| (*c).to_owned()).collect(),
                min_cohort: 10,
                max_uses: 20,
                max_items: 10_000_000,
                max_items_per_use: 10_000_000,
                expires_at: stayput_coordinator::client::unix_now() + month,
                epsilon_budget: 0,
            }),
        )
        .await?;
    }
    bar.finish_and_clear();
    println!(
        "ledger: 10 members, 13 dataset versions (schema and content digests; the two defaults lists as encoded sets with their OPRF keys, the station registry as a PIR layout and hint digest), 9 grants — each signed by its writer"
    );
    println!("  grant g-a-bank: bureau-a lets bank run psi or psi_cardinality on blacklist-a.national_id, 10 uses");
    println!("  grant g-b-bank: bureau-b lets bank learn only counts (psi_cardinality) on judgements-b.national_id");

    println!("\njourney 1 — balanced PSI (bank × bureau-a): which applicants are blacklisted?");
    let listed = run_task(&net, "bank", &psi_task(Computation::Psi, "blacklist-a"), "bank × bureau-a").await?;
    expect(&listed, LISTED_A, "bank × bureau-a")?;
    let result = stayput_node::results::result_path(&net.net.state("bank").config.output_dir, &listed.task_id);
    println!("  task {}: {} applicants listed — matches the {LISTED_A} planted", listed.task_id, listed.result_count);
    println!("  result (bank's node only): {}", result.display());
    println!("  bureau-a learned how many ids the bank sent, nothing else; the coordinator saw only the digest");

    println!("\njourney 2 — PSI cardinality (bank × bureau-b): how many applicants have court judgements?");
    let counted =
        run_task(&net, "bank", &psi_task(Computation::PsiCardinality, "judgements-b"), "bank × bureau-b").await?;
    // The count is the result: the coordinator was told none; it is in the
    // result file on the bank's node.
    let count_file = stayput_node::results::result_path(&net.net.state("bank").config.output_dir, &counted.task_id);
    let text = std::fs::read_to_string(&count_file).map_err(|e| CliError::Demo(e.to_string()))?;
    let count = crate::task::cardinality_of(&text).ok_or_else(|| CliError::Demo("no cardinality".into()))?;
    if count != LISTED_B as u64 || counted.result_count != 0 {
        return Err(CliError::Demo(format!(
            "bank × bureau-b: {count} counted where {LISTED_B} were planted; the coordinator was told {}",
            counted.result_count
        )));
    }
    println!(
        "  task {}: {count} applicants — matches the {LISTED_B} planted; bank learned the count only, and the coordinator not even that",
        counted.task_id
    );

    println!(
        "\njourney 3 — blacklist query (bank × bureau-a, bureau-b): which of {NEW_APPLICANTS} new applicants are on a defaults list, with what status?"
    );
    let spec = TaskSpec {
        kind: Computation::Blacklist,
        datasets: vec!["defaults-a".into(), "defaults-b".into()],
        receiver: "bank".into(),
        params: TaskParams::Blacklist(BlacklistParams {
            requester_dataset: "new-applicants".into(),
            bureau_datasets: vec!["defaults-a".into(), "defaults-b".into()],
        }),
    };
    let checked = run_task(&net, "bank", &spec, "bank × bureaus").await?;
    expect(&checked, DEFAULTS_A + DEFAULTS_B, "blacklist query")?;
    let file = stayput_node::results::result_path(&net.net.state("bank").config.output_dir, &checked.task_id);
    let table = std::fs::read_to_string(&file).map_err(|e| CliError::Demo(e.to_string()))?;
    println!(
        "  task {}: both bureaus queried in parallel, {DEFAULTS_ENTRIES:>} entries each; every answer's DLEQ proof checked against the bureau's key on the ledger",
        checked.task_id
    );
    for (bureau, planted) in [("bureau-a", DEFAULTS_A), ("bureau-b", DEFAULTS_B)] {
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for line in table.lines().filter(|l| l.split(',').nth(1) == Some(bureau)) {
            let label = line.rsplit(',').next().unwrap_or_default();
            *statuses.entry(label.split('|').next().unwrap_or_default().to_owned()).or_default() += 1;
        }
        let found: usize = statuses.values().sum();
        let listed: Vec<String> = statuses.iter().map(|(s, n)| format!("{s} ×{n}")).collect();
        println!("  {bureau} lists {found} of them ({planted} planted): {}", listed.join(", "));
    }
    let both = {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for line in table.lines().skip(1) {
            *seen.entry(line.split(',').next().unwrap_or_default()).or_default() += 1;
        }
        seen.values().filter(|n| **n > 1).count()
    };
    println!(
        "  {both} applicants are on both lists ({DEFAULTS_BOTH} planted); ids and statuses went to the bank's node only: {}",
        file.display()
    );
    let trail = net.ledger.task(&checked.task_id).await.map_err(|e| CliError::Demo(e.to_string()))?;
    for (org, used) in trail.map(|t| t.uses).unwrap_or_default() {
        println!("  metered: {org} recorded a use of {} ids under grant {}", used.items, used.grant);
    }
    println!("  the bureaus learned how many ids were asked, nothing about which");
    dispute_journey(&net, &spec, &table).await?;

    println!("\njourney 4 — federated statistics (research × 3 hospitals): hypertensive inpatients (I10)");
    let stats = run_task(&net, "research", &hospital_query()?, "research × hospitals").await?;
    expect(&stats, usize::try_from(data.hypertension).unwrap_or(usize::MAX), "hypertension cohort")?;
    let stats_file = stayput_node::results::result_path(&net.net.state("research").config.output_dir, &stats.task_id);
    println!(
        "  task {}: cohort of {} stays — matches the merged tables; each hospital's contribution committed, range-proven",
        stats.task_id, stats.result_count
    );
    println!("  and shared site to site; the pooled result opens the commitments (verified on the institute's node):");
    let table = std::fs::read_to_string(&stats_file).map_err(|e| CliError::Demo(e.to_string()))?;
    for line in table.lines().skip(1) {
        println!("    {line}");
    }
    let hidden = table.lines().filter(|l| l.ends_with(",suppressed")).count();
    println!(
        "  first a census: each hospital's group size, measures' n and histogram bins were pooled under TFHE at the coordinator"
    );
    println!(
        "  and checked against the minimum cohort (10); {hidden} line(s) withheld by the hospitals themselves, so nothing of a"
    );
    println!("  small cell reached the institute's node — not in the pooled vector, the evidence file or a log line");

    ocean_journey(&net).await?;
    lookup_journey(&net).await?;
    crate::demo_modelling::journey(&net, &data.modelling).await?;

    println!("\na refused request — the bank asks bureau-b for the names, which its grant does not allow:");
    match net.submit("bank", &psi_task(Computation::Psi, "judgements-b")).await {
        Err(e) => println!("  refused before anything ran: {e}"),
        Ok(t) => return Err(CliError::Demo(format!("task {} should have been refused", t.task_id))),
    }

    println!("\naudit trail of task {} (read back from the ledger):", listed.task_id);
    let task = net.ledger.task(&listed.task_id).await?.ok_or_else(|| CliError::Demo("task missing".into()))?;
    let mut grants = Vec::new();
    for g in &task.task.grants {
        grants.extend(net.ledger.grant(g).await?);
    }
    let events = net.ledger.events_after(0, usize::MAX).await?;
    print!("{}", crate::ledger::task_trail(&task, &grants, &events));
    println!("{}", crate::ledger::check_result(&task, &result)?);

    println!("\nAll journeys checked against the planted data in {:.1} s.", started.elapsed().as_secs_f64());
    println!("Raw rows never left their node: only blinded points and tags crossed the wire.");
    net.shutdown().await?;
    println!("\nWhat to try next:");
    println!("  stayput demo --dir ./demo     keep everything: keys, configs, data, ledger, results");
    println!(
        "  stayput audit task <task-id> --ledger ./demo/operator/ledger.redb --operator ./demo/keys/operator.ed25519.pub \\"
    );
    println!("      --result ./demo/bank/results/<task-id>.csv");
    println!("  stayput audit verify --ledger ./demo/operator/ledger.redb --operator ./demo/keys/operator.ed25519.pub");
    println!("  stayput coordinator --config ./demo/operator/coordinator.toml, and each node with");
    println!("  stayput node --config ./demo/<org>/node.toml; then as the bank:");
    println!(
        "  stayput task psi --config ./demo/bank/node.toml --dataset applicants --peer-dataset blacklist-a --columns national_id"
    );
    println!("  stayput bench psi --n 1048576  throughput and the ratio to the curve floor");
    println!(
        "  stayput task blacklist --config ./demo/bank/node.toml --dataset new-applicants --bureaus defaults-a,defaults-b"
    );
    println!(
        "  stayput task stats --config ./demo/research/node.toml --query ./demo/research/hypertension.toml --datasets inpatients-a,inpatients-b,inpatients-c"
    );
    println!(
        "  stayput task compute-only --config ./demo/climate/node.toml --dataset ctd-observations --query ./demo/climate/sst.toml --epsilon 0.5 --format parquet"
    );
    println!("  stayput bench ocean            rows/s of a gridded monthly mean over 10M Parquet observations");
    println!(
        "  stayput task lookup --config ./demo/climate/node.toml --dataset station-registry --keys wanted-stations"
    );
    println!(
        "  stayput bench lookup           GB/s per core of the PIR server against a plain scan, sizes, client times"
    );
    Ok(())
}

/// The climate lab's gridded query: monthly mean sea-surface temperature
/// per 2° cell of the northern South China Sea, top 10 m.
const SST_QUERY: &str = r#"
precision = 2
ranges = { temperature_c = [-2, 35] }
filter = { column = "depth_m", le = 10 }
[[bins]]
kind = "grid"
lat = "lat"
lon = "lon"
cell_degrees = 2.0
lat_range = [18, 26]
lon_range = [112, 120]
[[bins]]
kind = "time"
column = "time"
window = "month"
from = "2025-01-01"
to = "2026-01-01"
[[measures]]
kind = "mean"
column = "temperature_c"
"#;

fn compute_only(query: &str, epsilon: u32) -> Result<TaskSpec, CliError> {
    let query = stayput_mpc_engine::query::CohortQuery::from_toml(query).map_err(|e| CliError::Demo(e.to_string()))?;
    Ok(TaskSpec {
        kind: Computation::ComputeOnly,
        datasets: vec!["ctd-observations".into()],
        receiver: "climate".into(),
        params: TaskParams::ComputeOnly(stayput_chain_connector::tasks::ComputeOnlyParams {
            dataset: "ctd-observations".into(),
            query: query.to_canonical_json(),
            epsilon,
            format: stayput_chain_connector::tasks::ResultFormat::Csv,
        }),
    })
}

/// Journey 6: a private lookup in the ocean centre's station registry.
/// Journey 3b: an applicant listed by bureau-a alone contests the listing
/// through the bank; the court overturns it; bureau-a publishes a corrected
/// version; the next query no longer lists the applicant.
async fn dispute_journey(net: &LocalConsortium, spec: &TaskSpec, table: &str) -> Result<(), CliError> {
    use stayput_chain_connector::records::{Dispute, DisputeState, OrgKey};
    let demo_err = |e: &dyn std::fmt::Display| CliError::Demo(format!("the dispute journey: {e}"));
    println!("\njourney 3b — a disputed listing (bank × bureau-a, before the Credit Arbitration Court)");
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let only_a = rows
        .iter()
        .find(|r| r[1] == "bureau-a" && rows.iter().filter(|o| o[0] == r[0]).count() == 1)
        .ok_or_else(|| demo_err(&"no applicant listed by bureau-a alone"))?;
    let (key, version) = (only_a[0].to_owned(), only_a[3].parse::<u32>().map_err(|e| demo_err(&e))?);
    let mut tag = [0u8; 8];
    hex::decode_to_slice(only_a[4], &mut tag).map_err(|e| demo_err(&e))?;
    let court = net.ledger.member("court").await?.ok_or_else(|| demo_err(&"no court"))?;
    let id = "d-demo-1";
    let sealed_id =
        OrgKey::seal_to(&court.signing_key, crate::dispute::SEALED_ID_LABEL, id.as_bytes(), key.as_bytes())?;
    let dispute = Dispute {
        id: id.into(),
        dataset: "defaults-a".into(),
        version,
        tag,
        sealed_id: sealed_id.clone(),
        arbitrator: "court".into(),
        evidence_digest: [0x1e; 32],
        deadline: stayput_coordinator::client::unix_now() + 30 * 86_400,
    };
    net.write("bank", Record::Dispute(dispute)).await?;
    println!(
        "  bank files dispute {id} on defaults-a v{version}: the entry named by its tag {}, the applicant's id sealed to the court",
        hex::encode(tag)
    );
    let opened = net.key("court").open_sealed(crate::dispute::SEALED_ID_LABEL, id.as_bytes(), &sealed_id)?;
    if opened.as_slice() != key.as_bytes() {
        return Err(demo_err(&"the court opened another id"));
    }
    for state in [DisputeState::UnderReview, DisputeState::Overturned] {
        net.write("court", Record::DisputeRuling { dispute: id.into(), state }).await?;
    }
    println!(
        "  the court opens the id, takes the dispute up and overturns the listing (ledger records by the court only)"
    );
    // Bureau-a drops the entry and publishes the corrected version.
    let path = net.net.state("bureau-a").config.dataset("defaults-a")?.path.clone();
    let text = std::fs::read_to_string(&path).map_err(|e| demo_err(&e))?;
    let kept: Vec<&str> = text.lines().filter(|l| l.split(',').next() != Some(key.as_str())).collect();
    std::fs::write(&path, kept.join("\n")).map_err(|e| demo_err(&e))?;
    net.publish_dataset("bureau-a", "defaults-a").await?;
    let again = run_task(net, "bank", spec, "bank × bureaus, after the ruling").await?;
    let file = stayput_node::results::result_path(&net.net.state("bank").config.output_dir, &again.task_id);
    let after = std::fs::read_to_string(&file).map_err(|e| demo_err(&e))?;
    let still = after.lines().any(|l| l.split(',').next() == Some(key.as_str()));
    if still || again.result_count != (DEFAULTS_A + DEFAULTS_B - 1) as u64 {
        return Err(demo_err(&format!(
            "after the correction {} listings, the applicant listed: {still}",
            again.result_count
        )));
    }
    println!(
        "  bureau-a publishes defaults-a v{}; the next query (task {}) lists {} applicants — the overturned one no longer",
        version + 1,
        again.task_id,
        again.result_count
    );
    Ok(())
}

async fn lookup_journey(net: &LocalConsortium) -> Result<(), CliError> {
    println!(
        "\njourney 6 — private record lookup (climate lab × ocean centre): one station's registry record, without the ocean centre learning which"
    );
    let spec = TaskSpec {
        kind: Computation::Lookup,
        datasets: vec!["station-registry".into()],
        receiver: "climate".into(),
        params: TaskParams::Lookup(LookupParams {
            dataset: "station-registry".into(),
            requester_dataset: "wanted-stations".into(),
        }),
    };
    let version =
        net.ledger.dataset("station-registry").await?.pop().ok_or_else(|| CliError::Demo("no version".into()))?;
    let layout = stayput_node::lookup::published(&version)?.layout;
    println!(
        "  the registry's v{} on the ledger: {STATIONS} records of {STATION_RECORD_BYTES} B in a {} × {} byte matrix; hint {:.1} MB, fetched once and checked against the ledger's digest",
        version.version,
        layout.rows(),
        layout.columns,
        (layout.rows() * stayput_pir::LWE_DIMENSION * 4) as f64 / 1e6
    );
    let report = run_task(net, "climate", &spec, "climate × ocean (lookup)").await?;
    let dir = &net.net.state("climate").config.output_dir;
    let file = stayput_node::results::result_file(dir, &report.task_id);
    let table = std::fs::read_to_string(&file).map_err(|e| CliError::Demo(e.to_string()))?;
    println!(
        "  task {}: the lab's node asked for {} keys (its own file wanted-stations.csv):",
        report.task_id, report.result_count
    );
    for line in table.lines() {
        println!("    {line}");
    }
    let registry = &net.net.state("ocean").config.dataset("station-registry")?.path;
    let registry = std::fs::read_to_string(registry).map_err(|e| CliError::Demo(e.to_string()))?;
    let expected = registry.lines().find_map(|l| l.strip_prefix(&format!("{WANTED_STATION},")));
    let fetched = table.lines().find_map(|l| l.strip_prefix(&format!("{WANTED_STATION},found,")));
    let found = expected.is_some() && fetched == expected;
    let absent = table.lines().any(|l| l.starts_with(&format!("{UNLISTED_STATION},absent")));
    let task = net.ledger.task(&report.task_id).await?.ok_or_else(|| CliError::Demo("task missing".into()))?;
    for (org, used) in &task.uses {
        println!(
            "  ledger: {org} recorded a use of {} records under grant {}: one per lookup, the most {} lookups can open whatever they hold (the hint and the answers carry only sealed records), and nothing about which keys",
            used.items, used.grant, report.result_count,
        );
    }
    let metered: u64 = task.uses.iter().map(|(_, u)| u.items).sum();
    let logged: Vec<String> =
        captured_log().lines().filter(|l| l.contains(&report.task_id)).map(str::to_owned).collect();
    println!("  what the nodes logged of the lookup:");
    for line in logged.iter().filter(|l| l.contains("stayput_node::lookup")) {
        println!("    {}", line.split_once("stayput_node::lookup: ").map_or(line.as_str(), |(_, rest)| rest));
    }
    let leaked = logged.iter().any(|l| l.contains(WANTED_STATION) || l.contains(&WANTED_STATION.to_lowercase()));
    let grant = net.ledger.grant("g-stations-climate").await?.ok_or_else(|| CliError::Demo("grant missing".into()))?;
    println!(
        "  grant g-stations-climate: {} of {} records used; the ledger holds a salted commitment to the result, not its digest",
        grant.items, grant.grant.max_items
    );
    let metered_per_lookup = metered == report.result_count && grant.items == metered;
    if !found || !absent || leaked || logged.is_empty() || !metered_per_lookup {
        return Err(CliError::Demo(format!(
            "the lookup journey went wrong: found {found}, absent {absent}, a log line naming the station {leaked}, {} log lines, {metered} records metered, {} used",
            logged.len(),
            grant.items
        )));
    }
    println!(
        "  checked: {WANTED_STATION}'s record matches the registry file, and no node's log line names the station"
    );
    Ok(())
}

/// Log lines of the nodes, captured for the lookup journey (bounded).
static CAPTURED_LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
const MAX_CAPTURED_LOG: usize = 4 << 20;

/// A writer into the demo's log capture (`stayput demo` installs it for
/// the nodes' info lines); beyond 4 MiB it drops what it is given.
pub fn log_capture() -> LogCapture {
    LogCapture
}

/// See [`log_capture`].
#[derive(Debug, Clone, Copy)]
pub struct LogCapture;

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut log = CAPTURED_LOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() + buf.len() <= MAX_CAPTURED_LOG {
            log.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_log() -> String {
    String::from_utf8_lossy(&CAPTURED_LOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
}

/// Journey 5: compute-only access to the ocean centre's observations.
async fn ocean_journey(net: &LocalConsortium) -> Result<(), CliError> {
    println!(
        "\njourney 5 — compute-only access (climate lab × ocean centre): monthly mean SST per 2° cell, 18–26°N 112–120°E, top 10 m, ε = 2"
    );
    let sst = run_task(net, "climate", &compute_only(SST_QUERY, 2_000)?, "climate × ocean").await?;
    let file = stayput_node::results::result_file(&net.net.state("climate").config.output_dir, &sst.task_id);
    let table = std::fs::read_to_string(&file).map_err(|e| CliError::Demo(e.to_string()))?;
    let rows: Vec<&str> = table.lines().skip(1).collect();
    println!(
        "  task {}: {} cell-months released (of 192; a cell-month with fewer than 10 observations after noise is left out)",
        sst.task_id,
        rows.len()
    );
    println!("    {}", table.lines().next().unwrap_or_default());
    for line in rows.iter().take(4) {
        println!("    {line}");
    }
    println!(
        "    counts and sums carry discrete Laplace noise (ε split over count, n and Σ; Σ's sensitivity from the declared range)"
    );
    println!("    … (the table is on the lab's node only: {})", file.display());

    println!("  attempts to get at rows, refused before anything ran:");
    let pull = TaskSpec {
        kind: Computation::Psi,
        datasets: vec!["ctd-observations".into()],
        receiver: "climate".into(),
        params: TaskParams::Psi(PsiParams {
            requester_dataset: "stations".into(),
            peer_dataset: "ctd-observations".into(),
            columns: vec!["station_id".into()],
            protocol: PsiProtocol::Ecdh,
            delivery: PsiDelivery::ToRequester,
            shards: 1,
        }),
    };
    let extreme = SST_QUERY.replace("kind = \"mean\"", "kind = \"max\"");
    for (what, spec) in [
        ("match station ids (psi)", pull),
        ("the warmest observation (max)", compute_only(&extreme, 500)?),
        ("a query spending ε = 2.5", compute_only(SST_QUERY, 2_500)?),
    ] {
        match net.submit("climate", &spec).await {
            Err(e) => println!("    {what}: {e}"),
            Ok(t) => return Err(CliError::Demo(format!("task {} should have been refused", t.task_id))),
        }
    }
    let task = net.ledger.task(&sst.task_id).await?.ok_or_else(|| CliError::Demo("task missing".into()))?;
    for (org, used) in &task.uses {
        println!(
            "  ledger: {org} recorded a use of {} rows scanned and ε = {:.3} under grant {}",
            used.items,
            f64::from(used.epsilon) / 1000.0,
            used.grant
        );
    }
    let grant = net.ledger.grant("g-ctd-climate").await?.ok_or_else(|| CliError::Demo("grant missing".into()))?;
    println!(
        "  privacy budget of grant g-ctd-climate: ε = {:.3} spent, {:.3} left of {:.3}",
        f64::from(grant.epsilon_spent) / 1000.0,
        f64::from(grant.grant.epsilon_budget.saturating_sub(grant.epsilon_spent)) / 1000.0,
        f64::from(grant.grant.epsilon_budget) / 1000.0
    );
    if grant.epsilon_spent != 2_000 || rows.is_empty() {
        return Err(CliError::Demo("the ocean journey did not spend exactly ε = 2 or released nothing".into()));
    }
    Ok(())
}
