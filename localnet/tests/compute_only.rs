//! Compute-only access end to end on loopback: an ocean data centre opens
//! observations for aggregate queries; a scientist's gridded monthly means
//! come back as tables equal to a plain computation (without noise) or
//! noised within a budget the owner's node enforces and records; attempts
//! to pull rows, to exceed the budget or to read other columns are refused
//! and consume nothing.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use arrow::array::{Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Grant, Record, Role};
use stayput_chain_connector::tasks::{
    ComputeOnlyParams, PsiDelivery, PsiParams, PsiProtocol, ResultFormat, TaskParams,
};
use stayput_coordinator::client::{Phase, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};
use stayput_mpc_engine::query::CohortQuery;

const QUERY: &str = r#"
precision = 2
ranges = { temperature_c = [-2, 35] }
filter = { column = "depth_m", le = 50 }
[[bins]]
kind = "grid"
lat = "lat"
lon = "lon"
cell_degrees = 1.0
lat_range = [10, 12]
lon_range = [100, 102]
[[bins]]
kind = "time"
column = "time"
window = "month"
from = "2025-01-01"
to = "2025-04-01"
[[measures]]
kind = "mean"
column = "temperature_c"
"#;

struct Obs {
    lat: f64,
    lon: f64,
    month: u32,
    depth: f64,
    temperature: f64,
}

/// 3,000 observations in three well-sampled cells and 6 in a fourth.
fn observations() -> Vec<Obs> {
    let mut out = Vec::new();
    for i in 0..3_000u32 {
        let cell = i % 3;
        let (lat, lon) = (
            10.2 + f64::from(cell / 2) + f64::from(i % 7) * 0.1,
            100.1 + f64::from(cell % 2) + f64::from(i % 5) * 0.15,
        );
        let depth = f64::from((i * 37) % 100);
        let temperature = 28.0 - depth * 0.1 + f64::from(i % 11) * 0.01;
        out.push(Obs { lat, lon, month: 1 + (i / 3) % 3, depth, temperature });
    }
    for i in 0..6 {
        out.push(Obs { lat: 11.5, lon: 101.5, month: 2, depth: 5.0, temperature: 26.0 + f64::from(i) });
    }
    out
}

fn write_dataset(path: &std::path::Path, rows: &[Obs]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("station_id", DataType::Utf8, false),
        Field::new("time", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("depth_m", DataType::Float64, false),
        Field::new("temperature_c", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values((0..rows.len()).map(|i| format!("ST{:03}", i % 40)))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().enumerate().map(|(i, r)| format!("2025-{:02}-{:02}T06:00:00Z", r.month, 1 + i % 28)),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lat))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lon))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.depth))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.temperature))),
        ],
    )
    .unwrap();
    stayput_node::dataset::write_parquet(path, &[batch]).unwrap();
}

/// A group's keys (south, west, month) and its (count, mean).
type Row = ((i64, i64, String), (i64, f64));

/// The plain computation: (south, west, month) → (count, mean), groups of
/// at least 10 rows.
fn plain(rows: &[Obs]) -> Vec<Row> {
    let mut groups: std::collections::BTreeMap<(i64, i64, String), (i64, f64)> = Default::default();
    for r in rows.iter().filter(|r| r.depth <= 50.0) {
        let key = (r.lat.floor() as i64, r.lon.floor() as i64, format!("2025-{:02}", r.month));
        let e = groups.entry(key).or_default();
        e.0 += 1;
        e.1 += (r.temperature * 100.0).round() / 100.0;
    }
    groups.into_iter().filter(|(_, (n, _))| *n >= 10).map(|(k, (n, s))| (k, (n, s / n as f64))).collect()
}

fn grant(id: &str, dataset: &str, epsilon_budget: u32) -> Record {
    Record::Grant(Grant {
        id: id.into(),
        dataset: dataset.into(),
        grantee: "scientist".into(),
        computations: vec![Computation::ComputeOnly],
        columns: ["time", "lat", "lon", "depth_m", "temperature_c"].map(String::from).to_vec(),
        min_cohort: 10,
        max_uses: 20,
        max_items: 1_000_000,
        max_items_per_use: 10_000,
        expires_at: u64::MAX,
        epsilon_budget,
    })
}

fn params(dataset: &str, query: &str, epsilon: u32, format: ResultFormat) -> TaskParams {
    let query = CohortQuery::from_toml(query).unwrap().to_canonical_json();
    TaskParams::ComputeOnly(ComputeOnlyParams { dataset: dataset.into(), query, epsilon, format })
}

fn spec(dataset: &str, query: &str, epsilon: u32, format: ResultFormat) -> TaskSpec {
    TaskSpec {
        kind: Computation::ComputeOnly,
        datasets: vec![dataset.into()],
        receiver: "scientist".into(),
        params: params(dataset, query, epsilon, format),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scientist_gets_aggregates_and_never_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows = observations();
    let path = d.join("ctd.parquet");
    write_dataset(&path, &rows);
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
    let net = LocalConsortium::start(d, &[ocean, scientist], clock).await.unwrap();
    for name in ["ctd", "ctd-open"] {
        net.publish_dataset("ocean", name).await.unwrap();
    }
    net.write("ocean", grant("g-dp", "ctd", 1_000)).await.unwrap();
    net.write("ocean", grant("g-open", "ctd-open", 0)).await.unwrap();
    let out = net.net.state("scientist").config.output_dir.clone();

    // Without noise: the table equals the plain computation; the sparse
    // cell (6 rows) and empty cell-months are left out.
    let submitted = net.submit("scientist", &spec("ctd-open", QUERY, 0, ResultFormat::Csv)).await.unwrap();
    let report = net.client("scientist").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    let text = std::fs::read_to_string(stayput_node::results::result_file(&out, &submitted.task_id)).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("lat_south,lon_west,time_month,count,mean(temperature_c)"));
    let got: Vec<Row> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let key = (f[0].parse::<f64>().unwrap() as i64, f[1].parse::<f64>().unwrap() as i64, f[2].to_owned());
            (key, (f[3].parse().unwrap(), f[4].parse().unwrap()))
        })
        .collect();
    let expected = plain(&rows);
    assert_eq!(got.len(), expected.len());
    assert_eq!(report.result_count, expected.len() as u64);
    for ((gk, (gn, gm)), (ek, (en, em))) in got.iter().zip(&expected) {
        assert_eq!((gk, gn), (ek, en));
        assert!((gm - em).abs() < 1e-9, "{gk:?}: {gm} vs {em}");
    }
    assert!(!got.iter().any(|(k, _)| k.0 == 11 && k.1 == 101), "the 6-row cell is suppressed");

    // With noise: ε = 0.4 twice from a budget of 1.0, each recorded in the
    // owner's use record; the table (Arrow IPC) says what it spent.
    for spent in [400, 800] {
        let submitted = net.submit("scientist", &spec("ctd", QUERY, 400, ResultFormat::ArrowIpc)).await.unwrap();
        let report = net.client("scientist").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
        assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
        let file = stayput_node::results::result_file(&out, &submitted.task_id);
        assert_eq!(file.extension().unwrap(), "arrow");
        let reader = arrow::ipc::reader::FileReader::try_new(std::fs::File::open(&file).unwrap(), None).unwrap();
        assert_eq!(reader.schema().metadata()["stayput.epsilon"], "0.400");
        let task = net.ledger.task(&submitted.task_id).await.unwrap().unwrap();
        assert_eq!(task.uses.len(), 1);
        assert_eq!((task.uses[0].1.epsilon, task.uses[0].1.items), (400, rows.len() as u64));
        assert_eq!(net.ledger.grant("g-dp").await.unwrap().unwrap().epsilon_spent, spent);
    }
    let before = net.ledger.grant("g-dp").await.unwrap().unwrap();

    // Over the budget: refused with what is left; nothing recorded.
    let err = net.submit("scientist", &spec("ctd", QUERY, 400, ResultFormat::Csv)).await.unwrap_err().to_string();
    assert!(err.contains("ε = 0.200 left of 1.000"), "{err}");
    // Pulling rows: a PSI task on the compute-only dataset is refused.
    let psi = TaskSpec {
        kind: Computation::Psi,
        datasets: vec!["ctd".into()],
        receiver: "scientist".into(),
        params: TaskParams::Psi(PsiParams {
            requester_dataset: "mine".into(),
            peer_dataset: "ctd".into(),
            columns: vec!["station_id".into()],
            protocol: PsiProtocol::Ecdh,
            delivery: PsiDelivery::ToRequester,
            shards: 1,
        }),
    };
    let err = net.submit("scientist", &psi).await.unwrap_err().to_string();
    assert!(err.contains("allows compute_only but not psi"), "{err}");

    // The owner's node refuses on its own, whatever admission let through:
    // tasks written straight to the ledger, asked of the node directly.
    let max = QUERY.replace("kind = \"mean\"", "kind = \"max\"");
    let station = QUERY.replace("column = \"depth_m\", le = 50", "column = \"station_id\", eq = \"ST001\"");
    let cases = [
        (params("ctd", &max, 100, ResultFormat::Csv), "aggregates only"),
        (params("ctd", QUERY, 300, ResultFormat::Csv), "ε = 0.200 left of 1.000"),
        (params("ctd", QUERY, 0, ResultFormat::Csv), "only with differential privacy"),
        (params("ctd", &station, 100, ResultFormat::Csv), "does not allow column 'station_id'"),
        (params("ctd-open", QUERY, 100, ResultFormat::Csv), "no privacy budget"),
    ];
    {
        use stayput_proto::v1::ComputeOnlyRequest;
        use stayput_proto::v1::compute_only_peer_client::ComputeOnlyPeerClient;
        let channel = stayput_node::peers::connect_peer(net.net.state("scientist"), "ocean").await.unwrap();
        let mut client = ComputeOnlyPeerClient::new(channel);
        for (p, expected) in cases {
            let TaskParams::ComputeOnly(c) = &p else { unreachable!() };
            let grant = if c.dataset == "ctd" { "g-dp" } else { "g-open" };
            let bytes = p.encode();
            let id = net
                .record_task("scientist", Computation::ComputeOnly, &[c.dataset.as_str()], bytes.clone(), &[grant])
                .await
                .unwrap();
            let err = client.query(ComputeOnlyRequest { task_id: id.clone(), params: bytes.into() }).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{expected}: {err:?}");
            assert!(err.message().contains(expected), "{expected}: {err:?}");
            assert!(net.ledger.task(&id).await.unwrap().unwrap().uses.is_empty());
        }
    }
    let after = net.ledger.grant("g-dp").await.unwrap().unwrap();
    assert_eq!((after.uses, after.epsilon_spent, after.items), (before.uses, before.epsilon_spent, before.items));
    net.shutdown().await.unwrap();
}
