//! Nodes that check the ledger themselves: with a `[ledger]` section, a
//! bureau's node serves a PSI task only when the operator's ledger (served
//! by the coordinator over mTLS) shows it authorised, and records the use.

use std::sync::Arc;

use stayput_chain_connector::Ledger;
use stayput_chain_connector::embedded::EmbeddedLedger;
use stayput_chain_connector::keys;
use stayput_chain_connector::records::{
    Computation, DatasetVersion, Grant, Member, OrgKey, Record, Role, SignedRecord, Task,
};
use stayput_coordinator::ledger_service::LedgerServer;
use stayput_node::config::TlsPaths;
use stayput_node::dataset::FileFormat;
use stayput_node::identity::TlsMaterial;
use stayput_node::localnet::{DatasetSpec, LocalNet, OrgSpec};
use stayput_node::requester::PsiRequest;
use stayput_proto::v1::ledger_service_server::LedgerServiceServer;
use stayput_psi::ecdh::OutputMode;

fn org(name: &str, dataset: &str, path: std::path::PathBuf) -> OrgSpec {
    OrgSpec {
        name: name.into(),
        datasets: vec![DatasetSpec {
            name: dataset.into(),
            path,
            key_columns: vec!["id".into()],
            normalise: vec!["trim".into()],
        }],
    }
}

fn member(org: &str, key: &OrgKey, roles: Vec<Role>) -> Member {
    Member { org: org.into(), name: org.into(), roles, signing_key: key.public_key(), endpoint: String::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_only_what_the_ledger_authorises() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ids = |range: std::ops::Range<u32>| -> String {
        std::iter::once("id".to_string()).chain(range.map(|i| format!("C{i:05}"))).collect::<Vec<_>>().join("\n")
    };
    std::fs::write(d.join("bank.csv"), ids(0..100)).unwrap();
    std::fs::write(d.join("bureau.csv"), ids(50..150)).unwrap();

    // Each organisation's ledger signing key; the ledger service's port.
    let key_dir = d.join("keys");
    let (operator, bank, bureau) = (OrgKey::generate(), OrgKey::generate(), OrgKey::generate());
    for (name, key) in [("operator", &operator), ("bank", &bank), ("bureau", &bureau)] {
        keys::save(&key_dir, name, key).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let operator_hex = hex_key(&operator);
    let extra = |name: &str| {
        format!(
            "\n[ledger]\nendpoint = \"{endpoint}\"\noperator = \"operator\"\noperator_key = \"{operator_hex}\"\nsigning_key = \"{}\"\n",
            key_dir.join(format!("{name}.ed25519")).display()
        )
    };
    // The operator runs a node too; its certificate also serves the ledger.
    let orgs = [
        org("bank", "customers", d.join("bank.csv")),
        org("bureau", "blacklist", d.join("bureau.csv")),
        org("operator", "none", d.join("bank.csv")),
    ];
    let net = LocalNet::start_with(d, &orgs, None, &extra).await.unwrap();

    // The operator's ledger: members, the bureau's dataset, a grant, one task.
    let ledger = Arc::new(
        EmbeddedLedger::create(
            &d.join("ledger.redb"),
            OrgKey::from_bytes(&operator.to_secret_bytes()),
            member("operator", &operator, vec![Role::Operator]),
            stayput_chain_connector::embedded::system_clock(),
        )
        .unwrap(),
    );
    let submit = |record, writer: &str, key: &OrgKey| ledger.submit(SignedRecord::sign(record, writer, key));
    submit(Record::Member(member("bank", &bank, vec![Role::Requester])), "operator", &operator).await.unwrap();
    submit(Record::Member(member("bureau", &bureau, vec![Role::DataOwner])), "operator", &operator).await.unwrap();
    let version = DatasetVersion {
        dataset: "blacklist".into(),
        owner: "bureau".into(),
        version: 1,
        schema_digest: [1; 32],
        content_digest: [2; 32],
        protocol_key: None,
    };
    submit(Record::DatasetVersion(version), "bureau", &bureau).await.unwrap();
    let grant = Grant {
        id: "g1".into(),
        dataset: "blacklist".into(),
        grantee: "bank".into(),
        computations: vec![Computation::Psi],
        columns: vec!["id".into()],
        min_cohort: 0,
        max_uses: 5,
        max_items: 10_000,
        expires_at: u64::MAX,
    };
    submit(Record::Grant(grant), "bureau", &bureau).await.unwrap();
    let task = Task {
        id: "t-ok".into(),
        requester: "bank".into(),
        kind: Computation::Psi,
        datasets: vec!["blacklist".into()],
        params_digest: [3; 32],
        grants: vec!["g1".into()],
    };
    submit(Record::Task(task), "bank", &bank).await.unwrap();

    let tls = TlsMaterial::load(&TlsPaths {
        ca: key_dir.join("ca.pem"),
        cert: key_dir.join("operator.pem"),
        key: key_dir.join("operator.key"),
    })
    .unwrap();
    let service = tonic::transport::Server::builder()
        .tls_config(tls.server())
        .unwrap()
        .add_service(LedgerServiceServer::new(LedgerServer::new(ledger.clone(), "operator")));
    tokio::spawn(service.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));

    let run = |task: &str| PsiRequest {
        task_id: task.into(),
        dataset: "customers".into(),
        peer: "bureau".into(),
        peer_dataset: "blacklist".into(),
        mode: OutputMode::IntersectionToRequester,
        output_format: FileFormat::Csv,
    };
    let report = stayput_node::control::request_psi(net.state("bank"), &run("t-ok"), |_| {}).await.unwrap();
    assert_eq!(report.intersection_keys, 50);
    let trail = ledger.task("t-ok").await.unwrap().unwrap();
    assert_eq!(trail.uses.len(), 1, "the bureau's node recorded its use");
    assert_eq!(trail.uses[0].0, "bureau");
    assert_eq!(trail.uses[0].1.items, 100, "metered by the keys the bank sent");

    // A task the ledger does not know is refused by the bureau's node itself.
    let err = stayput_node::control::request_psi(net.state("bank"), &run("t-forged"), |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("not authorised on the ledger"), "{err}");
    assert!(err.to_string().contains("not on the ledger"), "{err}");
    assert_eq!(ledger.grant("g1").await.unwrap().unwrap().uses, 1, "a refusal consumes nothing");
    net.shutdown().await.unwrap();
}

fn hex_key(key: &OrgKey) -> String {
    key.public_key().iter().map(|b| format!("{b:02x}")).collect()
}
