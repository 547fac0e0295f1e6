//! Federated statistics end to end on loopback: a researcher's signed task,
//! three hospitals' nodes checking the ledger, computing, proving and
//! sharing their statistics site to site; the researcher's node verifying
//! the proofs and the pooled opening; the result compared with the merged
//! table; the commitments' digests on the ledger.

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Grant, Record, Role, TaskStatus};
use stayput_chain_connector::tasks::{StatsParams, TaskParams};
use stayput_coordinator::client::{Phase, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};

const QUERY: &str = r#"
precision = 2
ranges = { age = [0, 120], systolic_bp = [50, 260], bmi = [10, 70] }
filter = { column = "diagnosis", eq = "I10" }

[[measures]]
kind = "count"

[[measures]]
kind = "mean"
column = "systolic_bp"

[[measures]]
kind = "histogram"
column = "age"
edges = [0, 40, 60, 80, 120]

[[measures]]
kind = "regression"
y = "systolic_bp"
x = ["age", "bmi"]
"#;

fn hospital(dir: &std::path::Path, name: &str, seed: u32, sbp_shift: f64) -> (Participant, Vec<(f64, f64)>) {
    let mut rows = vec!["patient_id,age,bmi,systolic_bp,diagnosis".to_string()];
    let mut cohort = Vec::new();
    for i in 0..150u32 {
        let age = f64::from(20 + (i * 37 + seed) % 70);
        let bmi = 18.0 + f64::from((i * 3 + seed) % 20);
        let dx = if (i + seed).is_multiple_of(3) { "E11" } else { "I10" };
        let sbp = 100.0 + 0.5 * age + bmi + sbp_shift;
        if dx == "I10" {
            cohort.push((age, sbp));
        }
        rows.push(format!("{name}-{i},{age},{bmi},{sbp},{dx}"));
    }
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, rows.join("\n")).unwrap();
    let spec = OrgSpec {
        name: name.into(),
        datasets: vec![DatasetSpec {
            name: format!("{name}-stays"),
            path,
            key_columns: vec!["patient_id".into()],
            normalise: vec![],
            labels: None,
            pir: None,
        }],
    };
    (Participant { spec, display: name.into(), roles: vec![Role::DataOwner] }, cohort)
}

fn grant(owner: &str, min_cohort: u32, columns: &[&str]) -> Record {
    Record::Grant(Grant {
        id: format!("g-{owner}"),
        dataset: format!("{owner}-stays"),
        grantee: "research".into(),
        computations: vec![Computation::Stats],
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        min_cohort,
        max_uses: 5,
        max_items: 1_000_000,
        max_items_per_use: 1_000_000,
        expires_at: u64::MAX,
        epsilon_budget: 0,
    })
}

/// Calls `Coordinator.Evaluate` as `org` with an upload that opens `task`.
async fn evaluate_as(net: &LocalConsortium, org: &str, task: &str) -> Result<(), tonic::Status> {
    use stayput_proto::v1::coordinator_client::CoordinatorClient;
    use stayput_proto::v1::{FheOpen, FhePhase, FheUpload, fhe_upload};
    let endpoint = format!("https://{}", net.coordinator.addr);
    let channel = stayput_node::peers::connect(net.net.state(org), &net.operator, &endpoint).await.unwrap();
    let open = FheUpload {
        part: Some(fhe_upload::Part::Open(FheOpen {
            task_id: task.into(),
            server_key_len: 16,
            phase: FhePhase::Census as i32,
        })),
    };
    CoordinatorClient::new(channel).evaluate(tokio_stream::iter(vec![open])).await.map(|_| ())
}

fn spec(query: &str) -> TaskSpec {
    let query = stayput_mpc_engine::query::CohortQuery::from_toml(query).unwrap().to_canonical_json();
    TaskSpec {
        kind: Computation::Stats,
        datasets: ["hospital-a", "hospital-b", "hospital-c"].iter().map(|h| format!("{h}-stays")).collect(),
        receiver: "research".into(),
        params: TaskParams::Stats(StatsParams { query, epsilon: 0 }),
    }
}

/// Three hospitals and a research group on loopback, each hospital's
/// dataset published with a grant to the researcher of `min_cohort` and
/// `epsilon_budget` (milli-ε); returns the consortium and the merged
/// cohort (age, systolic blood pressure).
async fn consortium(d: &std::path::Path, min_cohort: u32, epsilon_budget: u32) -> (LocalConsortium, Vec<(f64, f64)>) {
    let (a, ca) = hospital(d, "hospital-a", 1, 0.0);
    let (b, cb) = hospital(d, "hospital-b", 2, 5.0);
    let (c, cc) = hospital(d, "hospital-c", 3, -3.0);
    let research = Participant {
        spec: OrgSpec { name: "research".into(), datasets: vec![] },
        display: "Cardiology research group".into(),
        roles: vec![Role::Requester],
    };
    let clock = stayput_chain_connector::embedded::system_clock();
    let net = LocalConsortium::start(d, &[a, b, c, research], clock).await.unwrap();
    let all = ["patient_id", "age", "bmi", "systolic_bp", "diagnosis"];
    for h in ["hospital-a", "hospital-b", "hospital-c"] {
        net.publish_dataset(h, &format!("{h}-stays")).await.unwrap();
        let mut g = grant(h, min_cohort, &all);
        if let Record::Grant(g) = &mut g {
            g.epsilon_budget = epsilon_budget;
        }
        net.write(h, g).await.unwrap();
    }
    (net, [ca, cb, cc].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hospitals_pool_statistics_verifiably() {
    let dir = tempfile::tempdir().unwrap();
    let (net, merged) = consortium(dir.path(), 5, 0).await;

    let submitted = net.submit("research", &spec(QUERY)).await.unwrap();
    let report = net.client("research").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert_eq!(report.result_count, merged.len() as u64);

    // The result is on the researcher's node; its digest and the three
    // sites' commitment digests are on the ledger; each site used once.
    let out = net.net.state("research").config.output_dir.clone();
    let text = std::fs::read_to_string(stayput_node::results::result_path(&out, &submitted.task_id)).unwrap();
    let mean = merged.iter().map(|r| r.1).sum::<f64>() / merged.len() as f64;
    let line = text.lines().find(|l| l.contains("mean(systolic_bp)")).unwrap();
    let reported: f64 = line.rsplit(',').next().unwrap().parse().unwrap();
    assert!((reported - mean).abs() < 1e-6, "{reported} vs {mean}\n{text}");
    // sbp = 100 + 0.5·age + bmi + site shift: the age coefficient is ~0.5.
    let age_coef: f64 = text.lines().find(|l| l.contains(",age,")).unwrap().split(',').nth(4).unwrap().parse().unwrap();
    assert!((age_coef - 0.5).abs() < 0.05, "{text}");
    let trail = net.ledger.task(&submitted.task_id).await.unwrap().unwrap();
    assert_eq!(trail.status, TaskStatus::Succeeded);
    assert_eq!(trail.results[0].intermediates.len(), 3, "one commitment digest per site");
    assert_eq!(trail.uses.len(), 3);
    assert!(trail.uses.iter().all(|(_, u)| u.items == 150), "metered by rows scanned");

    // Anyone holding the evidence file re-checks the result against the
    // ledger; a doctored pooled value or another site's commitments fail.
    let evidence_text =
        std::fs::read_to_string(stayput_node::results::evidence_path(&out, &submitted.task_id)).unwrap();
    let evidence: stayput_node::stats::Evidence = serde_json::from_str(&evidence_text).unwrap();
    let summary = stayput_node::stats::verify_evidence(&trail, &evidence).unwrap();
    assert!(summary.contains("3 sites"), "{summary}");
    let mut doctored = evidence.clone();
    doctored.pooled[1] = (doctored.pooled[1].parse::<i128>().unwrap() + 1).to_string();
    let err = stayput_node::stats::verify_evidence(&trail, &doctored).unwrap_err();
    assert!(err.to_string().contains("does not match the commitments at entry 1"), "{err}");
    let mut swapped = evidence.clone();
    swapped.sites.swap(0, 1);
    let err = stayput_node::stats::verify_evidence(&trail, &swapped).unwrap_err();
    assert!(err.to_string().contains("not the ones on the ledger"), "{err}");
    let mut other_query = evidence.clone();
    other_query.query = other_query.query.replace("I10", "E11");
    let err = stayput_node::stats::verify_evidence(&trail, &other_query).unwrap_err();
    assert!(err.to_string().contains("not the one recorded"), "{err}");

    // Only the task's requester may have it post-processed, and only while
    // it runs: a hospital, or the researcher after the end, is refused.
    for (org, expected) in [("hospital-a", "may not"), ("research", "not a running")] {
        let err = evaluate_as(&net, org, &submitted.task_id).await.unwrap_err();
        assert!(err.message().contains(expected), "{org}: {err:?}");
    }

    // A column the grants do not allow is refused before anything runs.
    let tasks_before = net.ledger.tasks(None).await.unwrap().len();
    let with_pid = QUERY
        .replace("x = [\"age\", \"bmi\"]", "x = [\"age\", \"bmi\", \"length_of_stay\"]")
        .replace("bmi = [10, 70] }", "bmi = [10, 70], length_of_stay = [0, 365] }");
    let err = net.submit("research", &spec(&with_pid)).await.unwrap_err().to_string();
    assert!(err.contains("length_of_stay"), "{err}");
    assert_eq!(net.ledger.tasks(None).await.unwrap().len(), tasks_before);

    // Min and max across sites and small-cell suppression run under TFHE at
    // the coordinator: the researcher's node sees the extremes and only the
    // bins with no row or at least the grants' minimum cohort (5).
    let edges = [0.0, 40.0, 60.0, 80.0, 89.0, 120.0];
    let extremes = format!(
        "{}\n[[measures]]\nkind = \"min\"\ncolumn = \"age\"\n[[measures]]\nkind = \"max\"\ncolumn = \"systolic_bp\"\n",
        QUERY.replace("edges = [0, 40, 60, 80, 120]", "edges = [0, 40, 60, 80, 89, 120]")
    );
    let submitted = net.submit("research", &spec(&extremes)).await.unwrap();
    let report = net.client("research").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    let text = std::fs::read_to_string(stayput_node::results::result_path(&out, &submitted.task_id)).unwrap();
    let value = |label: &str| -> String {
        text.lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("{label} in\n{text}"))
            .rsplit(',')
            .next()
            .unwrap()
            .to_owned()
    };
    let min_age = merged.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let max_sbp = merged.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(value("min(age)").parse::<f64>().unwrap(), min_age, "{text}");
    assert!((value("max(systolic_bp)").parse::<f64>().unwrap() - max_sbp).abs() < 1e-9, "{text}");
    let bin_lines: Vec<&str> = text.lines().filter(|l| l.contains("histogram(age)")).collect();
    assert_eq!(bin_lines.len(), edges.len() + 1);
    let counts: Vec<usize> = (0..=edges.len())
        .map(|i| {
            let (lo, hi) =
                (if i == 0 { f64::NEG_INFINITY } else { edges[i - 1] }, edges.get(i).copied().unwrap_or(f64::INFINITY));
            merged.iter().filter(|r| r.0 >= lo && r.0 < hi).count()
        })
        .collect();
    // A bin of 1 to 4 rows is withheld, and the whole histogram when the
    // withheld bins add up to 1 to 4 rows (a released total minus the
    // released bins would give them away).
    let small = |n: usize| n > 0 && n < 5;
    let whole = small(counts.iter().filter(|n| small(**n)).sum());
    let mut suppressed = 0;
    for (i, line) in bin_lines.iter().enumerate() {
        let shown = line.rsplit(',').next().unwrap();
        if small(counts[i]) || whole {
            assert_eq!(shown, "suppressed", "bin {i} holds {}: {line}", counts[i]);
            suppressed += 1;
        } else {
            assert_eq!(shown, counts[i].to_string(), "bin {i}: {line}");
        }
    }
    assert!(suppressed > 0, "the data leaves one bin below the minimum cohort\n{text}");
    // The evidence on the researcher's disk holds nothing of a withheld bin.
    let evidence: stayput_node::stats::Evidence = serde_json::from_str(
        &std::fs::read_to_string(stayput_node::results::evidence_path(&out, &submitted.task_id)).unwrap(),
    )
    .unwrap();
    let query = stayput_mpc_engine::query::CohortQuery::from_json(&evidence.query).unwrap();
    let pass = hex::decode(&evidence.pass_set).unwrap();
    for (gate, passes) in stayput_mpc_engine::gates::gates(&query).iter().zip(&pass) {
        if *passes == 0 {
            assert_eq!(evidence.pooled[gate.entry], "0", "a withheld gate's count is in the evidence");
        }
    }

    // A site whose values fall outside the declared ranges fails the task:
    // no result is written.
    let tight = QUERY.replace("systolic_bp = [50, 260]", "systolic_bp = [50, 150]");
    let submitted = net.submit("research", &spec(&tight)).await.unwrap();
    let report = net.client("research").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    assert_eq!(report.phase, Phase::Failed);
    assert!(report.error.contains("outside the declared range"), "{}", report.error);
    assert!(!stayput_node::results::result_path(&out, &submitted.task_id).exists());
    // A failure that depends on a site's data is metered like a query (it
    // says something about the table), and never carries counts or values.
    let failed = net.ledger.task(&submitted.task_id).await.unwrap().unwrap();
    assert!(!failed.uses.is_empty(), "a data-dependent refusal is recorded as a use");
    assert!(report.error.contains("does not fit the query") && !report.error.contains("of them"), "{}", report.error);

    // A grant that names no columns allows the key columns only: not enough
    // for statistics, refused at admission.
    let mut bare = grant("hospital-a", 5, &[]);
    if let Record::Grant(g) = &mut bare {
        g.id = "g-bare".into();
    }
    net.write("hospital-a", bare).await.unwrap();
    net.write("hospital-a", Record::RevokeGrant { grant: "g-hospital-a".into() }).await.unwrap();
    let err = net.submit("research", &spec(QUERY)).await.unwrap_err().to_string();
    assert!(err.contains("names no columns"), "{err}");
    net.shutdown().await.unwrap();
}

/// Records a statistics task over the three hospitals straight on the
/// ledger as the researcher, past admission, as a hostile requester can;
/// returns its id.
async fn record_directly(net: &LocalConsortium, params: &[u8]) -> String {
    let datasets = ["hospital-a-stays", "hospital-b-stays", "hospital-c-stays"];
    let grants = ["g-hospital-a", "g-hospital-b", "g-hospital-c"];
    net.record_task("research", Computation::Stats, &datasets, params.to_vec(), &grants).await.unwrap()
}

/// Calls `StatsPeer.Contribute` on `site` as `org` for `task`, as a hostile
/// requester would: its own task record, straight to the site.
async fn contribute_as(
    net: &LocalConsortium,
    org: &str,
    site: &str,
    request: stayput_proto::v1::ContributeRequest,
) -> Result<stayput_proto::v1::ContributeResponse, tonic::Status> {
    use stayput_proto::v1::stats_peer_client::StatsPeerClient;
    let channel = stayput_node::peers::connect_peer(net.net.state(org), site).await.unwrap();
    StatsPeerClient::new(channel).contribute(request).await.map(tonic::Response::into_inner)
}

/// The hole of issue "small cells are protected by the sites": a researcher
/// filters the cohort down to one patient. The sites withhold everything
/// of it — the researcher's pooled vector, evidence file and result hold
/// nothing of the patient — and a researcher that skips the census and asks
/// the sites directly gets nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_cannot_single_out_a_patient() {
    let dir = tempfile::tempdir().unwrap();
    let (net, _) = consortium(dir.path(), 5, 0).await;
    // hospital-b's patient 7: age 20 + (7·37 + 2) mod 70 = 71, bmi 18 + 23 mod 20 = 21.
    let one_patient = r#"
precision = 2
ranges = { age = [0, 120], systolic_bp = [50, 260], bmi = [10, 70] }
filter = { column = "patient_id", eq = "hospital-b-7" }
[[measures]]
kind = "count"
[[measures]]
kind = "mean"
column = "systolic_bp"
[[measures]]
kind = "max"
column = "age"
"#;
    let sbp = 100.0 + 0.5 * 71.0 + 21.0 + 5.0;
    let submitted = net.submit("research", &spec(one_patient)).await.unwrap();
    let report = net.client("research").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    let out = net.net.state("research").config.output_dir.clone();
    let text = std::fs::read_to_string(stayput_node::results::result_path(&out, &submitted.task_id)).unwrap();
    assert!(text.contains("all,count,count,,suppressed"), "{text}");
    assert!(!text.contains(&format!("{sbp}")) && !text.contains("71"), "{text}");
    let evidence_text =
        std::fs::read_to_string(stayput_node::results::evidence_path(&out, &submitted.task_id)).unwrap();
    let evidence: stayput_node::stats::Evidence = serde_json::from_str(&evidence_text).unwrap();
    assert!(evidence.pooled.iter().all(|v| v == "0"), "the pooled vector holds the patient: {:?}", evidence.pooled);
    assert_eq!(evidence.pass_set, "000000", "every gate withheld");
    // The evidence still verifies: the sites committed to what they shared.
    let trail = net.ledger.task(&submitted.task_id).await.unwrap().unwrap();
    stayput_node::stats::verify_evidence(&trail, &evidence).unwrap();
    // One use per site, recorded at the census.
    assert_eq!(trail.uses.len(), 3);

    // A researcher that records its own task and asks the sites to
    // contribute without a census gets nothing from any site.
    let query = stayput_mpc_engine::query::CohortQuery::from_toml(
        one_patient.replace("[[measures]]\nkind = \"max\"\ncolumn = \"age\"\n", "").as_str(),
    )
    .unwrap()
    .to_canonical_json();
    let params = TaskParams::Stats(StatsParams { query, epsilon: 0 }).encode();
    let (_keys, material) = stayput_mpc_engine::fhe::RequesterKeys::generate().unwrap();
    let id = record_directly(&net, &params).await;
    let mut calls = Vec::new();
    for h in ["hospital-a", "hospital-b", "hospital-c"] {
        use stayput_proto::v1::stats_peer_client::StatsPeerClient;
        let request = stayput_proto::v1::ContributeRequest {
            task_id: id.clone(),
            dataset: format!("{h}-stays"),
            params: params.clone().into(),
            fhe_public_key: material.public_key.clone().into(),
            version: stayput_node::stats::PROTOCOL_VERSION,
            pass_tokens: Vec::new(),
        };
        let channel = stayput_node::peers::connect_peer(net.net.state("research"), h).await.unwrap();
        calls.push(tokio::spawn(async move { StatsPeerClient::new(channel).contribute(request).await }));
    }
    for call in calls {
        let err = call.await.unwrap().expect_err("a site shared without a census");
        assert!(err.message().contains("only after its census"), "{err:?}");
    }
    // Forged pass tokens and a request of the old protocol are refused too.
    let forged = stayput_proto::v1::ContributeRequest {
        task_id: id.clone(),
        dataset: "hospital-a-stays".into(),
        params: params.clone().into(),
        fhe_public_key: material.public_key.clone().into(),
        version: stayput_node::stats::PROTOCOL_VERSION,
        pass_tokens: vec![1, 1],
    };
    let err = contribute_as(&net, "research", "hospital-a", forged.clone()).await.unwrap_err();
    assert!(err.message().contains("only after its census"), "{err:?}");
    let old = stayput_proto::v1::ContributeRequest { version: 0, ..forged };
    let err = contribute_as(&net, "research", "hospital-a", old).await.unwrap_err();
    assert!(err.message().contains("protocol version 0 is not supported"), "{err:?}");
    assert!(net.ledger.task(&id).await.unwrap().unwrap().uses.is_empty(), "nothing was served, nothing recorded");
    net.shutdown().await.unwrap();
}

/// A grant with a privacy budget: every site adds calibrated noise, the ε
/// each task spends is in every site's use record, a task over what is
/// left is refused at admission, and a site refuses a task recorded past
/// admission without noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_budget_noises_statistics_and_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let (net, merged) = consortium(dir.path(), 1, 1_500).await;
    let query = r#"
precision = 1
ranges = { systolic_bp = [50, 260] }
filter = { column = "diagnosis", eq = "I10" }
[[measures]]
kind = "count"
[[measures]]
kind = "mean"
column = "systolic_bp"
"#;
    let with_epsilon = |epsilon: u32| {
        let mut s = spec(query);
        if let TaskParams::Stats(p) = &mut s.params {
            p.epsilon = epsilon;
        }
        s
    };
    let submitted = net.submit("research", &with_epsilon(1_000)).await.unwrap();
    let report = net.client("research").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    let out = net.net.state("research").config.output_dir.clone();
    let text = std::fs::read_to_string(stayput_node::results::result_path(&out, &submitted.task_id)).unwrap();
    let count: f64 =
        text.lines().find(|l| l.starts_with("all,\"count\"")).unwrap().rsplit(',').next().unwrap().parse().unwrap();
    // Noise: count scale 3/ε = 3 per site; three sites.
    assert!((count - merged.len() as f64).abs() < 100.0, "{text}");
    let trail = net.ledger.task(&submitted.task_id).await.unwrap().unwrap();
    assert_eq!(trail.uses.len(), 3);
    assert!(trail.uses.iter().all(|(_, u)| u.epsilon == 1_000), "every site spends the task's ε");
    // The evidence re-checks with the noise's widened bounds.
    let evidence: stayput_node::stats::Evidence = serde_json::from_str(
        &std::fs::read_to_string(stayput_node::results::evidence_path(&out, &submitted.task_id)).unwrap(),
    )
    .unwrap();
    assert_eq!(evidence.epsilon, 1_000);
    stayput_node::stats::verify_evidence(&trail, &evidence).unwrap();

    // 0.5 is left: 0.6 and no noise at all are refused before anything runs.
    for (epsilon, expected) in [(600, "left"), (0, "only with differential privacy")] {
        let err = net.submit("research", &with_epsilon(epsilon)).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{epsilon}: {err}");
    }
    // A task recorded straight on the ledger without noise is refused by
    // the site itself, and nothing is recorded.
    let canonical = stayput_mpc_engine::query::CohortQuery::from_toml(query).unwrap().to_canonical_json();
    let params = TaskParams::Stats(StatsParams { query: canonical, epsilon: 0 }).encode();
    let id = record_directly(&net, &params).await;
    use stayput_proto::v1::stats_peer_client::StatsPeerClient;
    let channel = stayput_node::peers::connect_peer(net.net.state("research"), "hospital-a").await.unwrap();
    let err = StatsPeerClient::new(channel)
        .contribute(stayput_proto::v1::ContributeRequest {
            task_id: id.clone(),
            dataset: "hospital-a-stays".into(),
            params: params.into(),
            fhe_public_key: Default::default(),
            version: stayput_node::stats::PROTOCOL_VERSION,
            pass_tokens: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("only with differential privacy"), "{err:?}");
    assert!(net.ledger.task(&id).await.unwrap().unwrap().uses.is_empty());
    net.shutdown().await.unwrap();
}
