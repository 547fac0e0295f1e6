//! What a data owner's node discloses when a query goes wrong, end to end
//! over mTLS on loopback:
//!
//! * a compute-only query that fails because of the rows (a declared range
//!   the data exceeds) is an answer: its use record — rows read, the ε it
//!   spends — is on the ledger before the requester hears of it, and the
//!   error names the column, not a value or a count;
//! * a query recorded straight on the ledger, skipping admission, that is
//!   too large to lay out (four bands of 1,000 edges: 10^12 groups) or
//!   holds a number its precision cannot carry is refused by the owner's
//!   node, which serves the next task as before;
//! * a peer asking for a dataset the node does not serve is not told which
//!   ones it does.

use std::sync::Arc;

use arrow::array::{Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Grant, Record, Role};
use stayput_chain_connector::tasks::{ComputeOnlyParams, ResultFormat, TaskParams};
use stayput_coordinator::client::{Phase, TaskReport, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};
use stayput_mpc_engine::query::CohortQuery;
use stayput_proto::v1::ComputeOnlyRequest;
use stayput_proto::v1::compute_only_peer_client::ComputeOnlyPeerClient;

const QUERY: &str = r#"
precision = 2
ranges = { temperature_c = [-2, 35] }
[[bins]]
kind = "grid"
lat = "lat"
lon = "lon"
cell_degrees = 1.0
lat_range = [10, 12]
lon_range = [100, 102]
[[measures]]
kind = "mean"
column = "temperature_c"
"#;

const ROWS: usize = 2_000;

/// Temperatures from 5.000 to 28.976 in four grid cells.
fn temperature(i: usize) -> f64 {
    5.0 + (i % 1_000) as f64 * 0.024
}

fn write_dataset(path: &std::path::Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("station_id", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("depth_m", DataType::Float64, false),
        Field::new("temperature_c", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| format!("ST{:03}", i % 40)))),
            Arc::new(Float64Array::from_iter_values((0..ROWS).map(|i| 10.5 + (i % 2) as f64))),
            Arc::new(Float64Array::from_iter_values((0..ROWS).map(|i| 100.5 + (i / 2 % 2) as f64))),
            Arc::new(Float64Array::from_iter_values((0..ROWS).map(|i| (i % 100) as f64))),
            Arc::new(Float64Array::from_iter_values((0..ROWS).map(temperature))),
        ],
    )
    .unwrap();
    stayput_node::dataset::write_parquet(path, &[batch]).unwrap();
}

fn grant(id: &str, dataset: &str, epsilon_budget: u32) -> Record {
    Record::Grant(Grant {
        id: id.into(),
        dataset: dataset.into(),
        grantee: "scientist".into(),
        computations: vec![Computation::ComputeOnly],
        columns: ["lat", "lon", "depth_m", "temperature_c"].map(String::from).to_vec(),
        min_cohort: 10,
        max_uses: 20,
        max_items: 1_000_000,
        max_items_per_use: 10_000,
        expires_at: u64::MAX,
        epsilon_budget,
    })
}

fn params(dataset: &str, query_json: String, epsilon: u32) -> TaskParams {
    TaskParams::ComputeOnly(ComputeOnlyParams {
        dataset: dataset.into(),
        query: query_json,
        epsilon,
        format: ResultFormat::Csv,
    })
}

fn spec(dataset: &str, query: &str, epsilon: u32) -> TaskSpec {
    TaskSpec {
        kind: Computation::ComputeOnly,
        datasets: vec![dataset.into()],
        receiver: "scientist".into(),
        params: params(dataset, CohortQuery::from_toml(query).unwrap().to_canonical_json(), epsilon),
    }
}

/// An ocean data centre serving `ctd` (ε budget 1.0, grant `g-dp`) and
/// `ctd-open` (no budget, grant `g-open`) to a scientist.
async fn consortium(dir: &std::path::Path) -> LocalConsortium {
    let path = dir.join("ctd.parquet");
    write_dataset(&path);
    let dataset = |name: &str| DatasetSpec {
        name: name.into(),
        path: path.clone(),
        key_columns: vec!["station_id".into()],
        normalise: vec![],
        labels: None,
        pir: None,
    };
    let ocean = Participant {
        spec: OrgSpec { name: "ocean".into(), datasets: vec![dataset("ctd"), dataset("ctd-open")] },
        display: "Ocean data centre".into(),
        roles: vec![Role::DataOwner],
    };
    let scientist = Participant {
        spec: OrgSpec { name: "scientist".into(), datasets: vec![] },
        display: "Climate lab".into(),
        roles: vec![Role::Requester],
    };
    let clock = stayput_chain_connector::embedded::system_clock();
    let net = LocalConsortium::start(dir, &[ocean, scientist], clock).await.unwrap();
    for name in ["ctd", "ctd-open"] {
        net.publish_dataset("ocean", name).await.unwrap();
    }
    net.write("ocean", grant("g-dp", "ctd", 1_000)).await.unwrap();
    net.write("ocean", grant("g-open", "ctd-open", 0)).await.unwrap();
    net
}

async fn run(net: &LocalConsortium, spec: &TaskSpec) -> TaskReport {
    let submitted = net.submit("scientist", spec).await.unwrap();
    net.client("scientist").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap()
}

/// Records `params` as a task of the scientist's straight on the ledger
/// (no admission) and asks the owner's node for it directly.
async fn ask_directly(net: &LocalConsortium, p: &TaskParams, grant: &str) -> (String, tonic::Status) {
    let TaskParams::ComputeOnly(c) = p else { unreachable!() };
    let bytes = p.encode();
    let id = net
        .record_task("scientist", Computation::ComputeOnly, &[c.dataset.as_str()], bytes.clone(), &[grant])
        .await
        .unwrap();
    let channel = stayput_node::peers::connect_peer(net.net.state("scientist"), "ocean").await.unwrap();
    let mut client = ComputeOnlyPeerClient::new(channel);
    let status = client.query(ComputeOnlyRequest { task_id: id.clone(), params: bytes.into() }).await.unwrap_err();
    (id, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_depends_on_the_rows_is_metered_before_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let net = consortium(dir.path()).await;
    // A declared range the data exceeds: whether this fails says something
    // about the column's maximum, so it costs what the query would.
    for (probe, high, spent) in [("[-2, 20]", 20.0, 300), ("[-2, 25]", 25.0, 600)] {
        let narrow = QUERY.replace("[-2, 35]", probe);
        let report = run(&net, &spec("ctd", &narrow, 300)).await;
        assert_eq!(report.phase, Phase::Failed);
        // The use is on the ledger: every row read, the ε asked.
        let task = net.ledger.task(&report.task_id).await.unwrap().unwrap();
        assert_eq!(task.uses.len(), 1, "the failure was metered: {}", report.error);
        assert_eq!(task.uses[0].0, "ocean");
        assert_eq!((task.uses[0].1.items, task.uses[0].1.epsilon), (ROWS as u64, 300));
        let g = net.ledger.grant("g-dp").await.unwrap().unwrap();
        assert_eq!(g.epsilon_spent, spent, "the budget shrinks with every probe");
        // The words: the column and the declared range, not how many
        // values, nor which, nor where.
        let error = &report.error;
        assert!(error.contains("the data does not fit the query"), "{error}");
        assert!(error.contains(&format!("column 'temperature_c' holds values outside the declared range {probe}")));
        let count = (0..ROWS).filter(|i| temperature(*i) > high).count();
        assert!(count > 0 && !error.contains(&count.to_string()), "{error}");
        assert!(!error.contains("28.9") && !error.contains("row"), "{error}");
    }
    // The budget spent on probes is gone: 0.4 of 1.0 is left.
    let err = net.submit("scientist", &spec("ctd", QUERY, 500)).await.unwrap_err().to_string();
    assert!(err.contains("ε = 0.400 left of 1.000"), "{err}");
    // The same query with a range that holds the data answers.
    let report = run(&net, &spec("ctd", QUERY, 300)).await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert_eq!(net.ledger.grant("g-dp").await.unwrap().unwrap().epsilon_spent, 900);
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_recorded_past_admission_is_checked_by_the_owner_before_it_allocates() {
    let dir = tempfile::tempdir().unwrap();
    let net = consortium(dir.path()).await;

    // Four bands of 1,000 edges: 999^4 ≈ 10^12 groups.
    let edges: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
    let band = |c: &str| format!(r#"{{"kind":"bands","column":"{c}","edges":[{}]}}"#, edges.join(","));
    let bins: Vec<String> = ["lat", "lon", "depth_m", "temperature_c"].iter().map(|c| band(c)).collect();
    let huge = format!(r#"{{"precision":0,"bins":[{}],"measures":[{{"kind":"count"}}]}}"#, bins.join(","));
    // A histogram edge with more decimals than the precision.
    let inexact = r#"{"precision":1,"measures":[{"kind":"histogram","column":"temperature_c","edges":[0,10.05,40]}],"ranges":{"temperature_c":[-2,35]}}"#;
    let cases = [
        ("t-direct-huge-00000000000000", huge, "groups (all keys combined); at most 1048576"),
        ("t-direct-inexact-000000000000", inexact.to_owned(), "raise precision to 2"),
    ];
    for (_, query, expected) in cases {
        let (id, status) = ask_directly(&net, &params("ctd-open", query, 0), "g-open").await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(expected), "{expected}: {status:?}");
        assert!(status.message().contains("Fix the query"), "{status:?}");
        assert!(net.ledger.task(&id).await.unwrap().unwrap().uses.is_empty(), "nothing is metered");
    }
    // The node is still there and serves the next task.
    let report = run(&net, &spec("ctd-open", QUERY, 0)).await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert_eq!(report.result_count, 4);
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_asking_for_an_unknown_dataset_is_not_told_the_others() {
    use stayput_proto::v1::lookup_peer_client::LookupPeerClient;
    use stayput_proto::v1::{FetchHintRequest, LookupRequest};
    let dir = tempfile::tempdir().unwrap();
    let net = consortium(dir.path()).await;
    let channel = stayput_node::peers::connect_peer(net.net.state("scientist"), "ocean").await.unwrap();
    let mut client = LookupPeerClient::new(channel);
    let task = "t-unknown-dataset-0000000000".to_owned();
    let statuses = [
        client
            .fetch_hint(FetchHintRequest { task_id: task.clone(), dataset: "patients".into() })
            .await
            .map(drop)
            .unwrap_err(),
        client
            .answer(LookupRequest {
                task_id: task,
                dataset: "patients".into(),
                version: 1,
                queries: vec![],
                protocol: 2,
                blinded: vec![],
            })
            .await
            .map(drop)
            .unwrap_err(),
    ];
    for status in statuses {
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        assert!(status.message().contains("unknown dataset 'patients'"), "{status:?}");
        assert!(!status.message().contains("ctd"), "the datasets served are not listed: {status:?}");
    }
    net.shutdown().await.unwrap();
}
