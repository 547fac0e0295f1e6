//! `stayput audit task --config <shard node>` on a PSI task run as shards:
//! each shard's result file matches its own digest among the result's
//! intermediates, and the trail names each shard's use.

use std::process::Command;

use stayput_chain_connector::records::{Computation, Role};
use stayput_chain_connector::tasks::{PsiDelivery, PsiParams, PsiProtocol, TaskParams};
use stayput_coordinator::client::{Phase, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};

const BIN: &str = env!("CARGO_BIN_EXE_stayput");

fn participant(dir: &std::path::Path, name: &str, role: Role, dataset: &str, ids: std::ops::Range<u32>) -> Participant {
    let path = dir.join(format!("{name}.csv"));
    let rows: Vec<String> = std::iter::once("id".to_owned()).chain(ids.map(|i| format!("K{i:05}"))).collect();
    std::fs::write(&path, rows.join("\n")).unwrap();
    let dataset = DatasetSpec::plain(dataset, path, "id");
    Participant {
        spec: OrgSpec { name: name.into(), datasets: vec![dataset] },
        display: name.into(),
        roles: vec![role],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shard_checks_its_own_file_against_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let participants = [
        participant(d, "bank", Role::Requester, "applicants", 0..600),
        participant(d, "bureau", Role::DataOwner, "blacklist", 300..900),
    ];
    let clock = stayput_chain_connector::embedded::system_clock();
    let mut net = LocalConsortium::start(d, &participants, clock).await.unwrap();
    net.publish_dataset("bureau", "blacklist").await.unwrap();
    net.grant("bureau", "g", "blacklist", "bank", vec![Computation::Psi], &["id"], 5, 3600).await.unwrap();
    net.start_shards(&[("bank", 2), ("bureau", 2)]).await.unwrap();
    let spec = TaskSpec {
        kind: Computation::Psi,
        datasets: vec!["blacklist".into()],
        receiver: "bank".into(),
        params: TaskParams::Psi(PsiParams {
            requester_dataset: "applicants".into(),
            peer_dataset: "blacklist".into(),
            columns: vec!["id".into()],
            protocol: PsiProtocol::Kkrt,
            delivery: PsiDelivery::ToRequester,
            shards: 2,
        }),
    };
    let task = net.submit("bank", &spec).await.unwrap().task_id;
    let report = net.client("bank").await.unwrap().follow(&task, |_| {}).await.unwrap();
    assert_eq!((report.phase, report.result_count), (Phase::Succeeded, 300), "{}", report.error);
    for shard in 0..2 {
        let config = net.net.configs["bank"].with_file_name(format!("node-shard-{shard}.toml"));
        let args = ["audit", "task", &task, "--config", config.to_str().unwrap()].map(str::to_owned);
        let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(args).output().unwrap()).await.unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains(&format!("matches shard {shard}'s digest")), "{said}");
        assert!(said.contains("(shard 0)") && said.contains("(shard 1)"), "{said}");
    }
    net.shutdown().await.unwrap();
}
