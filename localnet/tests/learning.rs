//! Joint modelling end to end on loopback: a bank (labels and income) and
//! a bureau (debt ratio and inquiries of mostly the same customers) train
//! boosted trees and a logistic regression without either seeing the
//! other's columns, then score new applicants; every step is on the
//! ledger, each model share stays on its own node under a commitment the
//! ledger holds, and the attacks a hostile grantee or operator would try
//! are refused.

use std::collections::HashMap;
use std::path::Path;

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Grant, Record, Role};
use stayput_chain_connector::tasks::{ModelSpec, PredictParams, TaskParams, TrainParams};
use stayput_coordinator::client::{Phase, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};
use stayput_node::learning::ShareFile;
use stayput_proto::v1::learning_peer_client::LearningPeerClient;
use stayput_proto::v1::{LearningOpen, LearningRequesterMessage, learning_requester_message::Body};

/// A customer: the bank's label and income, the bureau's debt ratio and
/// inquiries (missing for some).
struct Customer {
    id: String,
    income: f64,
    debt: f64,
    inquiries: Option<u32>,
    default: u8,
}

fn customers(prefix: &str, n: u32, seed: u64) -> Vec<Customer> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 11
    };
    let mut uniform = move || next() as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|i| {
            let income = 20.0 + 80.0 * uniform();
            let debt = uniform();
            let inquiries = (uniform() < 0.9)
                .then(|| u32::from(uniform() < 0.5) + 2 * u32::from(uniform() < 0.5) + 4 * u32::from(uniform() < 0.5));
            let z = -0.04 * (income - 60.0) + 4.0 * (debt - 0.5) + 0.3 * f64::from(inquiries.unwrap_or(3)) - 0.9;
            let default = u8::from(uniform() < 1.0 / (1.0 + (-z).exp()));
            Customer { id: format!("{prefix}{i:05}"), income, debt, inquiries, default }
        })
        .collect()
}

fn write_bank(path: &Path, rows: &[Customer]) {
    let mut text = String::from("customer_id,income,defaulted\n");
    rows.iter().for_each(|c| text.push_str(&format!("{},{:.2},{}\n", c.id, c.income, c.default)));
    std::fs::write(path, text).unwrap();
}

fn write_bureau(path: &Path, rows: &[&Customer]) {
    let mut text = String::from("customer_id,debt_ratio,inquiries\n");
    for c in rows {
        let inquiries = c.inquiries.map(|q| q.to_string()).unwrap_or_default();
        text.push_str(&format!("{},{:.4},{inquiries}\n", c.id, c.debt));
    }
    std::fs::write(path, text).unwrap();
}

fn dataset(name: &str, path: &Path) -> DatasetSpec {
    DatasetSpec {
        name: name.into(),
        path: path.into(),
        key_columns: vec!["customer_id".into()],
        normalise: vec!["trim".into()],
        labels: None,
        pir: None,
    }
}

fn grant(id: &str, dataset: &str, kinds: Vec<Computation>, min_cohort: u32, per_use: u64) -> Record {
    Record::Grant(Grant {
        id: id.into(),
        dataset: dataset.into(),
        grantee: "bank".into(),
        computations: kinds,
        columns: ["customer_id", "debt_ratio", "inquiries"].map(String::from).to_vec(),
        min_cohort,
        max_uses: 10,
        max_items: 1_000_000,
        max_items_per_use: per_use,
        expires_at: u64::MAX,
        epsilon_budget: 0,
    })
}

fn train(dataset: &str, peer_features: &[&str], model: ModelSpec) -> TaskSpec {
    TaskSpec {
        kind: Computation::Train,
        datasets: vec![dataset.into()],
        receiver: "bank".into(),
        params: TaskParams::Train(TrainParams {
            requester_dataset: "loans".into(),
            peer_dataset: dataset.into(),
            label: "defaulted".into(),
            features: vec!["income".into()],
            peer_features: peer_features.iter().map(|c| (*c).to_owned()).collect(),
            model,
        }),
    }
}

fn predict(model_task: &str) -> TaskSpec {
    TaskSpec {
        kind: Computation::Predict,
        datasets: vec!["bureau".into()],
        receiver: "bank".into(),
        params: TaskParams::Predict(PredictParams {
            model_task: model_task.into(),
            requester_dataset: "applicants".into(),
            peer_dataset: "bureau".into(),
        }),
    }
}

const TREES: ModelSpec = ModelSpec::BoostedTrees {
    trees: 3,
    max_bins: 16,
    max_depth: 3,
    learning_rate: 0.3,
    min_child_weight: 1.0,
    lambda: 1.0,
    gamma: 0.0,
    min_node_rows: 20,
};

const LOGISTIC: ModelSpec = ModelSpec::LogisticRegression { epochs: 2, batch_size: 100, learning_rate: 0.5, l2: 0.001 };

async fn run(net: &LocalConsortium, spec: &TaskSpec) -> Result<(String, u64), String> {
    let submitted = net.submit("bank", spec).await.map_err(|e| e.to_string())?;
    let report = net.client("bank").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    match report.phase {
        Phase::Succeeded => Ok((submitted.task_id, report.result_count)),
        _ => Err(report.error),
    }
}

/// Opens a learning session with the bureau's node as `org`, straight to
/// the peer service (no coordinator), and returns its refusal.
async fn open_as(net: &LocalConsortium, org: &str, task: &str, version: u32) -> tonic::Status {
    let addr = net.net.nodes["bureau"].addr;
    let channel = stayput_node::peers::connect(net.net.state(org), "bureau", &format!("https://{addr}")).await.unwrap();
    let open = LearningOpen {
        protocol_version: version,
        task_id: task.into(),
        dataset: "bureau".into(),
        requester_size: 10,
        key_columns: 1,
        normalisation: vec!["trim".into()],
        batch_size: 16,
    };
    let outbound = tokio_stream::iter(vec![LearningRequesterMessage { body: Some(Body::Open(open)) }]);
    let mut inbound = match LearningPeerClient::new(channel).session(outbound).await {
        Ok(response) => response.into_inner(),
        Err(status) => return status,
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, inbound.message()).await.expect("a refusal, not a hang") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the session ended without a refusal"),
            Err(status) => return status,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_and_a_bureau_train_and_score_without_sharing_columns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 900 customers at both, 100 only at the bank, 200 only at the bureau;
    // 120 applicants of whom 90 the bureau holds.
    let history = customers("C", 1_000, 7);
    let others = customers("X", 200, 8);
    let applicants = customers("A", 120, 9);
    write_bank(&d.join("loans.csv"), &history);
    write_bank(&d.join("applicants.csv"), &applicants);
    let held: Vec<&Customer> = history[..900].iter().chain(&others).chain(&applicants[..90]).collect();
    write_bureau(&d.join("bureau.csv"), &held);
    let bank = Participant {
        spec: OrgSpec {
            name: "bank".into(),
            datasets: vec![dataset("loans", &d.join("loans.csv")), dataset("applicants", &d.join("applicants.csv"))],
        },
        display: "Bank".into(),
        roles: vec![Role::Requester, Role::DataOwner],
    };
    let bureau = Participant {
        spec: OrgSpec {
            name: "bureau".into(),
            datasets: vec![dataset("bureau", &d.join("bureau.csv")), dataset("bureau-strict", &d.join("bureau.csv"))],
        },
        display: "Credit bureau".into(),
        roles: vec![Role::DataOwner],
    };
    let rival = Participant {
        spec: OrgSpec { name: "rival".into(), datasets: vec![] },
        display: "Another bank".into(),
        roles: vec![Role::Requester],
    };
    let clock = stayput_chain_connector::embedded::system_clock();
    let net = LocalConsortium::start(d, &[bank, bureau, rival], clock).await.unwrap();
    for name in ["bureau", "bureau-strict"] {
        net.publish_dataset("bureau", name).await.unwrap();
    }
    net.write("bureau", grant("g-model", "bureau", vec![Computation::Train, Computation::Predict], 50, 5_000))
        .await
        .unwrap();
    net.write("bureau", grant("g-strict", "bureau-strict", vec![Computation::Train], 5_000, 5_000)).await.unwrap();
    let bank_state = net.net.state("bank").config.clone();
    let bureau_state = net.net.state("bureau").config.clone();

    // Training: the bureau's node records one use (the bank's 1,000 keys)
    // before any key is touched; both commitments go on the ledger.
    let (trees, aligned) = run(&net, &train("bureau", &["debt_ratio", "inquiries"], TREES)).await.unwrap();
    assert_eq!(aligned, 900, "trained on the customers both hold");
    let task = net.ledger.task(&trees).await.unwrap().unwrap();
    assert_eq!(task.uses.len(), 1);
    assert_eq!((task.uses[0].0.as_str(), task.uses[0].1.items), ("bureau", 1_000));
    let commitments = &task.result().unwrap().intermediates;
    let bank_share = ShareFile::read(&bank_state.state_dir, &trees).unwrap();
    let bureau_share = ShareFile::read(&bureau_state.state_dir, &trees).unwrap();
    assert_eq!(commitments, &vec![bank_share.commitment(), bureau_share.commitment()]);
    assert_eq!(bureau_share.columns, ["debt_ratio", "inquiries"], "each party keeps its own features' splits");
    let card = std::fs::read_to_string(stayput_node::results::result_file(&bank_state.output_dir, &trees)).unwrap();
    assert!(card.contains("model,boosted_trees") && card.contains("aligned_rows,900"), "{card}");

    // Prediction: one row per applicant; those the bureau lacks are
    // explicit error rows, never a default score.
    let truth: HashMap<&str, u8> = applicants.iter().map(|c| (c.id.as_str(), c.default)).collect();
    let check_scores = |task: &str| {
        let text = std::fs::read_to_string(stayput_node::results::result_file(&bank_state.output_dir, task)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("customer_id,score,status"));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 120);
        let missing = rows.iter().filter(|r| r[2] == "not held by bureau" && r[1].is_empty()).count();
        assert_eq!(missing, 30);
        let scored: Vec<(f64, u8)> =
            rows.iter().filter(|r| r[2] == "scored").map(|r| (r[1].parse::<f64>().unwrap(), truth[r[0]])).collect();
        assert_eq!(scored.len(), 90);
        assert!(scored.iter().all(|(p, _)| (0.0..=1.0).contains(p)));
        let (scores, outcomes): (Vec<f64>, Vec<u8>) = scored.into_iter().unzip();
        stayput_learning::metrics::auc(&scores, &outcomes)
    };
    let (scoring, count) = run(&net, &predict(&trees)).await.unwrap();
    assert_eq!(count, 120);
    let tree_auc = check_scores(&scoring);
    assert!(tree_auc > 0.7, "boosted trees AUC {tree_auc}");
    let task = net.ledger.task(&scoring).await.unwrap().unwrap();
    assert_eq!(task.uses[0].1.items, 120, "a prediction meters the applicants scored");
    assert_eq!(task.result().unwrap().intermediates, vec![bank_share.commitment()], "it names the model used");

    // Logistic regression (on complete columns: it refuses missing
    // values rather than guess them), then scoring with it.
    let (lr, aligned) = run(&net, &train("bureau", &["debt_ratio"], LOGISTIC)).await.unwrap();
    assert_eq!(aligned, 900);
    let lr_share = ShareFile::read(&bureau_state.state_dir, &lr).unwrap();
    assert_eq!(lr_share.columns, ["debt_ratio"]);
    let (scoring_lr, _) = run(&net, &predict(&lr)).await.unwrap();
    let lr_auc = check_scores(&scoring_lr);
    assert!(lr_auc > 0.7, "logistic regression AUC {lr_auc}");

    // Attacks. A grantee asking for a column outside its grant: refused
    // at admission.
    let err = run(&net, &train("bureau", &["debt_ratio", "salary"], TREES)).await.unwrap_err();
    assert!(err.contains("salary"), "{err}");
    // Fewer aligned rows than the grant's minimum cohort: refused by the
    // bureau's node after its use record, and no share is written.
    let err = run(&net, &train("bureau-strict", &["debt_ratio"], TREES)).await.unwrap_err();
    assert!(err.contains("fewer than the grant's minimum of 5000"), "{err}");
    // Predicting with something that is not a trained model.
    let err = run(&net, &predict(&scoring)).await.unwrap_err();
    assert!(err.contains("not a training task"), "{err}");
    // An operator (or anyone with the bureau's disk) swapping the bureau's
    // share: the bureau's own node refuses to predict with it.
    let path = ShareFile::path(&bureau_state.state_dir, &trees);
    let original = std::fs::read(&path).unwrap();
    let mut swapped = original.clone();
    let last = swapped.len() - 2;
    swapped[last] ^= 0x40;
    std::fs::write(&path, &swapped).unwrap();
    let err = run(&net, &predict(&trees)).await.unwrap_err();
    assert!(err.contains("not the one the training recorded"), "{err}");
    std::fs::write(&path, &original).unwrap();
    // Straight to the bureau's node, past the coordinator: another member
    // naming the bank's task, the bank replaying a finished training, and
    // a session of another protocol version — each refused before any key
    // is touched, and no use recorded.
    let status = open_as(&net, "rival", &trees, 1).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("requested by 'bank', not by 'rival'"), "{status:?}");
    let status = open_as(&net, "bank", &trees, 1).await;
    assert!(status.message().contains("it is succeeded"), "{status:?}");
    let status = open_as(&net, "bank", &trees, 2).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(net.ledger.task(&trees).await.unwrap().unwrap().uses.len(), 1);

    net.shutdown().await.unwrap();
}
