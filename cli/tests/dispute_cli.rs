//! `stayput dispute file|show|rule` against a consortium on loopback: the
//! bank files from its blacklist result, only the arbitrator reads the
//! sealed id, the bureau cannot rule, the arbitrator overturns.

use std::process::{Command, Output};

use stayput_chain_connector::records::{Computation, Role};
use stayput_chain_connector::tasks::{BlacklistParams, TaskParams};
use stayput_coordinator::client::{Phase, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};

const BIN: &str = env!("CARGO_BIN_EXE_stayput");

async fn stayput(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(&args).env("STAYPUT_LOG", "warn").output().expect("run stayput")
    })
    .await
    .unwrap()
}

fn csv(path: &std::path::Path, header: &str, rows: impl Iterator<Item = String>) -> std::path::PathBuf {
    let text: Vec<String> = std::iter::once(header.to_owned()).chain(rows).collect();
    std::fs::write(path, text.join("\n")).unwrap();
    path.into()
}

fn participant(name: &str, role: Role, datasets: Vec<DatasetSpec>) -> Participant {
    Participant { spec: OrgSpec { name: name.into(), datasets }, display: name.into(), roles: vec![role] }
}

fn dataset(name: &str, path: std::path::PathBuf, labels: Option<&str>) -> DatasetSpec {
    DatasetSpec {
        name: name.into(),
        path,
        key_columns: vec!["national_id".into()],
        normalise: vec!["trim".into(), "uppercase".into()],
        labels: labels.map(str::to_owned),
        pir: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_is_contested_and_overturned_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let applicants = csv(&d.join("applicants.csv"), "national_id,amount", (0..50).map(|i| format!("c{i:05},1")));
    let listed = csv(&d.join("blacklist.csv"), "national_id,reason", (40..90).map(|i| format!("C{i:05},default")));
    let participants = [
        participant("bank", Role::Requester, vec![dataset("applicants", applicants, None)]),
        participant("bureau", Role::DataOwner, vec![dataset("blacklist", listed, Some("reason"))]),
        participant("court", Role::Arbitrator, vec![]),
    ];
    let net =
        LocalConsortium::start(d, &participants, stayput_chain_connector::embedded::system_clock()).await.unwrap();
    net.publish_dataset("bureau", "blacklist").await.unwrap();
    let allow = vec![Computation::Blacklist];
    net.grant("bureau", "g-bank", "blacklist", "bank", allow, &["national_id", "reason"], 10, 3600).await.unwrap();
    let spec = TaskSpec {
        kind: Computation::Blacklist,
        datasets: vec!["blacklist".into()],
        receiver: "bank".into(),
        params: TaskParams::Blacklist(BlacklistParams {
            requester_dataset: "applicants".into(),
            bureau_datasets: vec!["blacklist".into()],
        }),
    };
    let task = net.submit("bank", &spec).await.unwrap().task_id;
    let report = net.client("bank").await.unwrap().follow(&task, |_| {}).await.unwrap();
    assert_eq!((report.phase, report.result_count), (Phase::Succeeded, 10), "{}", report.error);

    let config = |org: &str| net.net.configs[org].display().to_string();
    let evidence = d.join("letter.txt");
    std::fs::write(&evidence, "the court's letter").unwrap();
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (bank, bureau, court) = (config("bank"), config("bureau"), config("court"));
    let evidence = evidence.display().to_string();
    let file = |key: &str| {
        let head = args(&["dispute", "file", "--config", &bank, "--task", &task, "--key", key]);
        [head, args(&["--dataset", "blacklist", "--arbitrator", "court", "--evidence", &evidence])].concat()
    };
    let out = stayput(file("C00042")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = said.split_whitespace().nth(1).unwrap().to_owned();
    assert!(id.starts_with("d-") && said.contains("v1"), "{said}");
    // An applicant the query did not list cannot be filed.
    let out = stayput(file("C00001")).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("lists no 'C00001'"), "{out:?}");

    // Only the arbitrator reads the id.
    let shown = stayput(args(&["dispute", "show", "--config", &court, "--open"])).await;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains(&id) && shown.contains("filed") && shown.contains("C00042"), "{shown}");
    let shown = stayput(args(&["dispute", "show", "--config", &bank, "--open"])).await;
    assert!(!String::from_utf8_lossy(&shown.stdout).contains("C00042"));

    // The bureau cannot rule; the arbitrator takes it up and overturns it.
    let out =
        stayput(args(&["dispute", "rule", "--config", &bureau, "--dispute", &id, "--state", "under_review"])).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not rule"), "{out:?}");
    for state in ["under_review", "overturned"] {
        let out = stayput(args(&["dispute", "rule", "--config", &court, "--dispute", &id, "--state", state])).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let shown = stayput(args(&["dispute", "show", "--config", &bank, "--dataset", "blacklist"])).await;
    assert!(String::from_utf8_lossy(&shown.stdout).contains("overturned"), "{shown:?}");
    net.shutdown().await.unwrap();
}
