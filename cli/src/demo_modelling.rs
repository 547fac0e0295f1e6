//! The demo's joint-modelling journey: the bank (repayment labels and
//! income) and bureau-a (debt ratio and credit inquiries of mostly the same
//! customers) train a boosted-trees risk model, then score new applicants —
//! neither node sees the other's columns, each keeps its share of the
//! model, and the ledger holds the training, both share commitments and
//! the scoring's use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::rngs::StdRng;
use stayput_chain_connector::Ledger as _;
use stayput_chain_connector::records::{Computation, Grant, Record};
use stayput_chain_connector::tasks::{ModelSpec, PredictParams, TaskParams, TrainParams};
use stayput_coordinator::client::TaskSpec;
use stayput_localnet::LocalConsortium;

use crate::error::CliError;

/// Customers with a loan history at the bank; bureau-a holds 90 % of them.
pub const HISTORY: usize = 3_000;
/// New applicants scored; bureau-a holds 90 % of them.
pub const SCORED: usize = 500;

/// The journey's files and the planted outcomes of the applicants scored.
#[derive(Debug)]
pub struct ModellingData {
    /// The bank's loan history: id, monthly income, defaulted.
    pub loans_csv: PathBuf,
    /// The bank's applicants to score: id, monthly income.
    pub scoring_csv: PathBuf,
    /// Bureau-a's credit profiles: id, debt ratio, inquiries (some missing).
    pub profiles_csv: PathBuf,
    /// Whether each scored applicant (normalised id) goes on to default.
    pub outcomes: HashMap<String, u8>,
}

/// A customer's planted features and outcome.
fn customer(rng: &mut StdRng) -> (f64, f64, Option<u32>, u8) {
    let income = rng.gen_range(8.0..60.0);
    let debt = rng.gen_range(0.0..1.0);
    let inquiries = rng.gen_bool(0.92).then(|| rng.gen_range(0..9));
    let z = -0.08 * (income - 30.0) + 3.5 * (debt - 0.5) + 0.35 * f64::from(inquiries.unwrap_or(3)) - 1.4;
    let default = u8::from(rng.gen_bool(1.0 / (1.0 + (-z).exp())));
    (income, debt, inquiries, default)
}

/// Writes the journey's three files for customers `history` (with
/// outcomes) and `scored` (to score).
pub fn generate(
    dir: &Path,
    rng: &mut StdRng,
    history: &[String],
    scored: &[String],
    write_csv: impl Fn(&Path, &str, Vec<String>) -> Result<(), CliError>,
) -> Result<ModellingData, CliError> {
    let (mut loans, mut scoring, mut profiles) = (Vec::new(), Vec::new(), Vec::new());
    let mut outcomes = HashMap::new();
    for (i, id) in history.iter().chain(scored).enumerate() {
        let (income, debt, inquiries, default) = customer(rng);
        if i < history.len() {
            loans.push(format!("{id},{income:.1},{default}"));
        } else {
            scoring.push(format!("{id},{income:.1}"));
            outcomes.insert(id.to_uppercase(), default);
        }
        if i % 10 != 3 {
            let inquiries = inquiries.map(|q| q.to_string()).unwrap_or_default();
            profiles.push(format!("{id},{debt:.3},{inquiries}"));
        }
    }
    let data = ModellingData {
        loans_csv: dir.join("bank").join("loan-history.csv"),
        scoring_csv: dir.join("bank").join("scoring.csv"),
        profiles_csv: dir.join("bureau-a").join("credit-profiles.csv"),
        outcomes,
    };
    write_csv(&data.loans_csv, "applicant_id,monthly_income_k,defaulted", loans)?;
    write_csv(&data.scoring_csv, "applicant_id,monthly_income_k", scoring)?;
    write_csv(&data.profiles_csv, "national_id,debt_ratio,inquiries", profiles)?;
    Ok(data)
}

/// Bureau-a's grant: train and predict on its credit profiles, rows
/// metered, at least 100 aligned customers in a training or a scoring.
pub fn grant(expires_at: u64) -> Record {
    Record::Grant(Grant {
        id: "g-profiles-bank".into(),
        dataset: "credit-profiles".into(),
        grantee: "bank".into(),
        computations: vec![Computation::Train, Computation::Predict],
        columns: ["national_id", "debt_ratio", "inquiries"].map(String::from).to_vec(),
        min_cohort: 100,
        max_uses: 10,
        max_items: 50_000,
        max_items_per_use: 5_000,
        expires_at,
        epsilon_budget: 0,
    })
}

fn train() -> TaskSpec {
    TaskSpec {
        kind: Computation::Train,
        datasets: vec!["credit-profiles".into()],
        receiver: "bank".into(),
        params: TaskParams::Train(TrainParams {
            requester_dataset: "loan-history".into(),
            peer_dataset: "credit-profiles".into(),
            label: "defaulted".into(),
            features: vec!["monthly_income_k".into()],
            peer_features: vec!["debt_ratio".into(), "inquiries".into()],
            model: ModelSpec::BoostedTrees {
                trees: 5,
                max_bins: 16,
                max_depth: 3,
                learning_rate: 0.3,
                min_child_weight: 1.0,
                lambda: 1.0,
                gamma: 0.0,
                min_node_rows: 50,
            },
        }),
    }
}

fn predict(model_task: &str) -> TaskSpec {
    TaskSpec {
        kind: Computation::Predict,
        datasets: vec!["credit-profiles".into()],
        receiver: "bank".into(),
        params: TaskParams::Predict(PredictParams {
            model_task: model_task.into(),
            requester_dataset: "scoring".into(),
            peer_dataset: "credit-profiles".into(),
        }),
    }
}

/// Journey 7: train, score, and show the trail.
pub async fn journey(net: &LocalConsortium, data: &ModellingData) -> Result<(), CliError> {
    println!(
        "\njourney 7 — joint modelling (bank × bureau-a): a default-risk model on the bank's labels and income and the bureau's debt ratio and inquiries"
    );
    let trained = crate::demo::run_task(net, "bank", &train(), "boosted trees, 5 trees of depth 3").await?;
    let task = net.ledger.task(&trained.task_id).await?.ok_or_else(|| CliError::Demo("task missing".into()))?;
    let shares = task.result().map(|r| r.intermediates.len()).unwrap_or_default();
    if trained.result_count != (HISTORY - HISTORY / 10) as u64 || shares != 2 {
        return Err(CliError::Demo(format!(
            "training aligned {} customers with {shares} share commitments",
            trained.result_count
        )));
    }
    println!(
        "  trained on the {} customers both hold (aligned by PSI inside the task); each node keeps its own share of the model,",
        trained.result_count
    );
    println!("  and the ledger holds both shares' commitments: a later scoring must use exactly this model");

    let scored = crate::demo::run_task(net, "bank", &predict(&trained.task_id), "scoring new applicants").await?;
    let bank_out = net.net.state("bank").config.output_dir.clone();
    let table = std::fs::read_to_string(stayput_node::results::result_file(&bank_out, &scored.task_id))
        .map_err(|e| CliError::Demo(e.to_string()))?;
    let mut pairs = Vec::new();
    let mut missing = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        match fields.as_slice() {
            [id, score, "scored"] => {
                let score: f64 = score.parse().map_err(|_| CliError::Demo(format!("a score of '{score}'")))?;
                let outcome = data.outcomes.get(&id.trim().to_uppercase()).copied();
                pairs.push((score, outcome.ok_or_else(|| CliError::Demo(format!("an unknown applicant {id}")))?));
            }
            [_, "", status] if status.starts_with("not held by") => missing += 1,
            _ => return Err(CliError::Demo(format!("an unexpected scoring row: {line}"))),
        }
    }
    let (scores, outcomes): (Vec<f64>, Vec<u8>) = pairs.iter().copied().unzip();
    let auc = stayput_benches::train::auc(&scores, &outcomes);
    if pairs.len() + missing != SCORED || missing != SCORED / 10 || auc < 0.7 {
        return Err(CliError::Demo(format!(
            "scoring went wrong: {} scored, {missing} not held, AUC {auc:.3}",
            pairs.len()
        )));
    }
    println!(
        "  scored {} of {SCORED} applicants (AUC {auc:.3} against the planted outcomes); the {missing} the bureau does not hold are",
        pairs.len()
    );
    println!(
        "  explicit 'not held by bureau-a' rows, never a default score; {SCORED} rows metered on the bureau's grant"
    );
    let task = net.ledger.task(&scored.task_id).await?.ok_or_else(|| CliError::Demo("task missing".into()))?;
    let mut grants = Vec::new();
    for g in &task.task.grants {
        grants.extend(net.ledger.grant(g).await?);
    }
    let events = net.ledger.events_after(0, usize::MAX).await?;
    print!("{}", crate::ledger::task_trail(&task, &grants, &events));
    Ok(())
}
