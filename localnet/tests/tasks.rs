//! The task lifecycle end to end on loopback: a requester's signed task
//! through the coordinator, nodes checking the ledger themselves, the
//! result digest on the ledger matching the receiver's file; bad input
//! refused before anything is recorded; grants that are exhausted,
//! expired, revoked or for another dataset refused by the data owner's
//! node; a restarted coordinator finishing each task exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, LedgerId, Record, Role, Task, TaskStatus};
use stayput_chain_connector::tasks::{PsiDelivery, PsiParams, PsiProtocol, SignedTaskRequest, TaskParams, TaskRequest};
use stayput_coordinator::client::{TaskSpec, sign};
use stayput_coordinator::store::{Phase, Store, StoredTask};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};
use stayput_node::dataset::FileFormat;
use stayput_node::psi::requester::PsiRequest;
use stayput_psi::Protocol;
use stayput_psi::ecdh::OutputMode;

fn ids(path: &std::path::Path, range: std::ops::Range<u32>) -> std::path::PathBuf {
    let text: Vec<String> =
        std::iter::once("id,score".to_string()).chain(range.map(|i| format!("C{i:05},{i}"))).collect();
    std::fs::write(path, text.join("\n")).unwrap();
    path.into()
}

fn participant(name: &str, roles: Vec<Role>, dataset: &str, path: std::path::PathBuf) -> Participant {
    Participant {
        spec: OrgSpec {
            name: name.into(),
            datasets: vec![DatasetSpec {
                name: dataset.into(),
                path,
                key_columns: vec!["id".into()],
                normalise: vec!["trim".into()],
                labels: None,
                pir: None,
            }],
        },
        display: name.into(),
        roles,
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    net: LocalConsortium,
    time: Arc<AtomicU64>,
}

async fn consortium() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let time = Arc::new(AtomicU64::new(stayput_coordinator::client::unix_now()));
    let t = time.clone();
    let clock: stayput_chain_connector::embedded::Clock = Arc::new(move || t.load(Ordering::SeqCst));
    let participants = [
        participant("bank", vec![Role::Requester], "applicants", ids(&d.join("bank.csv"), 0..200)),
        participant("bureau", vec![Role::DataOwner], "blacklist", ids(&d.join("bureau.csv"), 100..400)),
        participant("bureau2", vec![Role::DataOwner], "watchlist", ids(&d.join("bureau2.csv"), 150..160)),
    ];
    let net = LocalConsortium::start(d, &participants, clock).await.unwrap();
    net.publish_dataset("bureau", "blacklist").await.unwrap();
    net.publish_dataset("bureau2", "watchlist").await.unwrap();
    Fixture { dir, net, time }
}

fn psi(kind: Computation, dataset: &str, columns: &[&str], receiver: &str) -> TaskSpec {
    TaskSpec {
        kind,
        datasets: vec![dataset.into()],
        receiver: receiver.into(),
        params: TaskParams::Psi(PsiParams {
            requester_dataset: "applicants".into(),
            peer_dataset: dataset.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            protocol: PsiProtocol::Ecdh,
            delivery: PsiDelivery::ToRequester,
            shards: 1,
        }),
    }
}

async fn run(f: &Fixture, spec: &TaskSpec) -> stayput_coordinator::client::TaskReport {
    let submitted = f.net.submit("bank", spec).await.unwrap();
    f.net.client("bank").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_end_to_end_and_bad_input_costs_nothing() {
    let f = consortium().await;
    let net = &f.net;
    let both = vec![Computation::Psi, Computation::PsiCardinality];
    net.grant("bureau", "g-bl", "blacklist", "bank", both, &["id"], 10, 3600).await.unwrap();

    // Two tasks at once: neither waits for the other.
    let spec = psi(Computation::Psi, "blacklist", &["id"], "bank");
    let count_spec = psi(Computation::PsiCardinality, "blacklist", &["id"], "bank");
    let (done, counted) = tokio::join!(run(&f, &spec), run(&f, &count_spec));
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.error);
    assert_eq!(done.result_count, 100);
    assert_eq!(counted.phase, Phase::Succeeded, "{}", counted.error);
    assert_eq!(counted.result_count, 0, "a cardinality is the result: the coordinator is told none");

    // The result is on the bank's node only; a salted commitment to it is
    // on the ledger, never its plain digest.
    let bank_out = net.net.state("bank").config.output_dir.clone();
    let file = stayput_node::results::result_path(&bank_out, &done.task_id);
    let file_sha256 = stayput_node::results::file_sha256(&file).unwrap();
    let salt: [u8; 32] =
        hex::decode(std::fs::read_to_string(stayput_node::results::salt_path(&bank_out, &done.task_id)).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
    let digest = stayput_node::results::salted_commitment(&salt, &file_sha256);
    assert_ne!(digest, file_sha256);
    let trail = net.ledger.task(&done.task_id).await.unwrap().unwrap();
    assert_eq!(trail.status, TaskStatus::Succeeded);
    assert_eq!(trail.results.len(), 1);
    assert_eq!(trail.results[0].result_digest, digest);
    assert_eq!(trail.results[0].receiver, "bank");
    assert_eq!(trail.uses.len(), 1);
    assert_eq!(trail.uses[0].0, "bureau");
    assert_eq!(hex::encode(digest), done.result_digest);
    let count_file = stayput_node::results::result_path(&bank_out, &counted.task_id);
    assert_eq!(std::fs::read_to_string(count_file).unwrap(), "intersection_keys\n100\n");
    let bureau_out = net.net.state("bureau").config.output_dir.clone();
    assert!(!stayput_node::results::result_path(&bureau_out, &done.task_id).exists(), "the bureau gets no result");

    // The same signed request again is the same task, not a second one.
    let key = net.key("bank");
    let signed = sign(&spec, "bank", key, f.time.load(Ordering::SeqCst), net.ledger.id());
    let mut client = net.client("bank").await.unwrap();
    let first = client.submit(&signed).await.unwrap();
    let again = client.submit(&signed).await.unwrap();
    assert_eq!(first.task_id, again.task_id);
    assert!(again.existing && !first.existing);
    client.follow(&first.task_id, |_| {}).await.unwrap();
    let grant_uses = net.ledger.grant("g-bl").await.unwrap().unwrap().uses;
    let tasks_before = net.ledger.tasks(None).await.unwrap().len();

    // Bad input: a clear error, and nothing recorded or used.
    let refuse = |spec: TaskSpec| async move { net.submit("bank", &spec).await.unwrap_err().to_string() };
    let err = refuse(psi(Computation::Psi, "no-such-set", &["id"], "bank")).await;
    assert!(err.contains("unknown dataset 'no-such-set'"), "{err}");
    let err = refuse(psi(Computation::Psi, "blacklist", &["phone"], "bank")).await;
    assert!(err.contains("does not allow column 'phone'"), "{err}");
    let err = refuse(psi(Computation::Psi, "blacklist", &["id"], "bureau2")).await;
    assert!(err.contains("not a participant"), "{err}");
    let err = refuse(psi(Computation::Psi, "blacklist", &["id"], "bureau")).await;
    assert!(err.contains("requester's node only"), "{err}");
    let err = refuse(psi(Computation::Psi, "watchlist", &["id"], "bank")).await;
    assert!(err.contains("no grant lets 'bank' use dataset 'watchlist'"), "{err}");
    // Parameters of one kind under another kind's name.
    let err = refuse(TaskSpec { kind: Computation::Lookup, ..spec.clone() }).await;
    assert!(err.contains("parameters of type 1 are not for a lookup task"), "{err}");

    // Replays, stale requests, requests signed for someone else, oversized
    // parameters.
    let mut replay = signed.request.clone();
    replay.issued_at += 1;
    let err = client.submit(&replay.sign(key)).await.unwrap_err().to_string();
    assert!(err.contains("nonce was used before"), "{err}");
    let stale = sign(&spec, "bank", key, f.time.load(Ordering::SeqCst) - 3600, net.ledger.id());
    let err = client.submit(&stale).await.unwrap_err().to_string();
    assert!(err.contains("sign a new request"), "{err}");
    let forged = sign(&spec, "bureau", net.key("bureau"), f.time.load(Ordering::SeqCst), net.ledger.id());
    let err = client.submit(&forged).await.unwrap_err().to_string();
    assert!(err.contains("may only submit its own requests"), "{err}");
    let elsewhere = sign(&spec, "bank", key, f.time.load(Ordering::SeqCst), LedgerId([7; 32]));
    let err = client.submit(&elsewhere).await.unwrap_err().to_string();
    assert!(err.contains("signed for ledger") && err.contains("not this consortium's ledger"), "{err}");
    let mut badly_signed = sign(&spec, "bank", key, f.time.load(Ordering::SeqCst), net.ledger.id());
    badly_signed.signature[0] ^= 1;
    let err = client.submit(&badly_signed).await.unwrap_err().to_string();
    assert!(err.contains("signature does not verify"), "{err}");
    let huge = TaskRequest { params: vec![0; 20_000], ..sign(&spec, "bank", key, 0, net.ledger.id()).request };
    let huge = SignedTaskRequest { request: huge, signature: [0; 64] };
    let err = client.submit(&huge).await.unwrap_err().to_string();
    assert!(err.contains("malformed") && err.contains("exceeds"), "{err}");

    assert_eq!(net.ledger.tasks(None).await.unwrap().len(), tasks_before, "no refused task was recorded");
    assert_eq!(net.ledger.grant("g-bl").await.unwrap().unwrap().uses, grant_uses, "no use was consumed");
    drop(client);
    f.net.shutdown().await.unwrap();
    drop(f.dir);
}

/// Records a task straight on the ledger, as its requester may; returns its id.
async fn record_task(net: &LocalConsortium, datasets: &[&str], grants: &[&str]) -> String {
    net.record_task("bank", Computation::Psi, datasets, Vec::new(), grants).await.unwrap()
}

async fn psi_direct(net: &LocalConsortium, task: &str) -> Result<u64, String> {
    psi_direct_mode(net, task, OutputMode::IntersectionToRequester).await
}

async fn psi_direct_mode(net: &LocalConsortium, task: &str, mode: OutputMode) -> Result<u64, String> {
    psi_direct_with(net, task, mode, Protocol::Ecdh).await
}

async fn psi_direct_with(
    net: &LocalConsortium,
    task: &str,
    mode: OutputMode,
    protocol: Protocol,
) -> Result<u64, String> {
    psi_direct_parts(net, task, mode, protocol, 0).await
}

async fn psi_direct_parts(
    net: &LocalConsortium,
    task: &str,
    mode: OutputMode,
    protocol: Protocol,
    parts: u32,
) -> Result<u64, String> {
    let request = PsiRequest {
        task_id: task.into(),
        dataset: "applicants".into(),
        peer: "bureau".into(),
        peer_dataset: "blacklist".into(),
        mode,
        protocol,
        parts,
        output_format: FileFormat::Csv,
        shard: None,
    };
    stayput_node::control::request_psi(net.net.state("bank"), &request, |_| {})
        .await
        .map(|r| r.intersection_keys)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_owners_refuse_what_the_ledger_does_not_allow() {
    let f = consortium().await;
    let net = &f.net;
    let psi_only = || vec![Computation::Psi];
    net.grant("bureau", "g-once", "blacklist", "bank", psi_only(), &["id"], 1, 3600).await.unwrap();
    net.grant("bureau", "g-revoked", "blacklist", "bank", psi_only(), &["id"], 5, 3600).await.unwrap();
    net.grant("bureau", "g-short", "blacklist", "bank", psi_only(), &["id"], 5, 100).await.unwrap();
    net.grant("bureau2", "g-other", "watchlist", "bank", psi_only(), &["id"], 5, 3600).await.unwrap();
    let first = record_task(net, &["blacklist"], &["g-once"]).await;
    let second = record_task(net, &["blacklist"], &["g-once"]).await;
    let revoked = record_task(net, &["blacklist"], &["g-revoked"]).await;
    let expired = record_task(net, &["blacklist"], &["g-short"]).await;
    let borrow = record_task(net, &["blacklist", "watchlist"], &["g-other"]).await;

    assert_eq!(psi_direct(net, &first).await, Ok(100));
    // Served once: the same task again is refused by the bureau's node.
    let err = psi_direct_mode(net, &first, OutputMode::CardinalityOnly).await.unwrap_err();
    assert!(err.contains("served it under grant 'g-once' already"), "{err}");
    let err = psi_direct(net, &second).await.unwrap_err();
    assert!(err.contains("used all of its 1 uses"), "{err}");
    net.write("bureau", Record::RevokeGrant { grant: "g-revoked".into() }).await.unwrap();
    let err = psi_direct(net, &revoked).await.unwrap_err();
    assert!(err.contains("'g-revoked' is revoked"), "{err}");
    f.time.fetch_add(200, Ordering::SeqCst);
    let err = psi_direct(net, &expired).await.unwrap_err();
    assert!(err.contains("'g-short' expired"), "{err}");
    let err = psi_direct(net, &borrow).await.unwrap_err();
    assert!(err.contains("none of its grants covers dataset 'blacklist'"), "{err}");
    let err = psi_direct(net, "t-forged").await.unwrap_err();
    assert!(err.contains("not on the ledger"), "{err}");

    for (grant, uses) in [("g-once", 1), ("g-revoked", 0), ("g-short", 0), ("g-other", 0)] {
        assert_eq!(net.ledger.grant(grant).await.unwrap().unwrap().uses, uses, "{grant}");
    }
    f.net.shutdown().await.unwrap();
}

/// Records a PSI task to the requester with parameters naming `protocol`.
async fn record_psi_task(net: &LocalConsortium, protocol: PsiProtocol, grant: &str) -> String {
    record_psi_task_to(net, protocol, PsiDelivery::ToRequester, grant).await
}

/// Records a PSI task naming `protocol` and `delivery`.
async fn record_psi_task_to(
    net: &LocalConsortium,
    protocol: PsiProtocol,
    delivery: PsiDelivery,
    grant: &str,
) -> String {
    let TaskParams::Psi(p) = psi(Computation::Psi, "blacklist", &["id"], "bank").params else { unreachable!() };
    let params = TaskParams::Psi(PsiParams { protocol, delivery, ..p }).encode();
    net.record_task("bank", Computation::Psi, &["blacklist"], params, &[grant]).await.unwrap()
}

/// The bureau's rows of a task to both, checked against the salted
/// commitment its node recorded on the ledger; returns the rows.
async fn peer_rows_checked(net: &LocalConsortium, task: &str) -> String {
    let folder = net.net.state("bureau").config.output_dir.join("from-bank");
    let name = format!("{task}-blacklist");
    let rows = std::fs::read_to_string(folder.join(format!("{name}.csv"))).unwrap();
    let outcome = stayput_node::results::read_outcome(&folder, &name).unwrap().expect("the bureau's outcome");
    let trail = net.ledger.task(task).await.unwrap().unwrap();
    let recorded = trail.peer_result().expect("the bureau's result on the ledger");
    assert_eq!(recorded.receiver, "bureau");
    assert_eq!(recorded.result_digest, outcome.result_sha256, "the ledger holds the bureau's own commitment");
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kkrt_tasks_run_end_to_end_and_the_ledger_fixes_the_protocol() {
    let f = consortium().await;
    let net = &f.net;
    let both = vec![Computation::Psi, Computation::PsiCardinality];
    net.grant("bureau", "g-fast", "blacklist", "bank", both, &["id"], 10, 3600).await.unwrap();

    // Through the coordinator: the same answer as ECDH, one use, metered
    // in cuckoo bins (1.27 × 200 keys, in blocks of 128).
    let mut spec = psi(Computation::Psi, "blacklist", &["id"], "bank");
    let TaskParams::Psi(p) = &mut spec.params else { unreachable!() };
    p.protocol = PsiProtocol::Kkrt;
    let done = run(&f, &spec).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.error);
    assert_eq!(done.result_count, 100);
    let trail = net.ledger.task(&done.task_id).await.unwrap().unwrap();
    assert_eq!(trail.uses.len(), 1);
    assert_eq!(trail.uses[0].1.items, 256);
    let bank_out = net.net.state("bank").config.output_dir.clone();
    let rows = std::fs::read_to_string(stayput_node::results::result_path(&bank_out, &done.task_id)).unwrap();
    assert_eq!(rows.lines().count(), 101, "a header and the 100 common rows");
    assert!(rows.contains("C00100,100") && rows.contains("C00199,199") && !rows.contains("C00099"));

    // Cardinality only is ECDH's: refused before anything is recorded.
    let tasks_before = net.ledger.tasks(None).await.unwrap().len();
    let mut count_spec = spec.clone();
    count_spec.kind = Computation::PsiCardinality;
    let err = net.submit("bank", &count_spec).await.unwrap_err().to_string();
    assert!(err.contains("needs the ecdh protocol"), "{err}");
    assert_eq!(net.ledger.tasks(None).await.unwrap().len(), tasks_before);

    // Intersection to both, straight between the nodes.
    let kkrt_task = record_psi_task_to(net, PsiProtocol::Kkrt, PsiDelivery::ToBoth, "g-fast").await;
    assert_eq!(psi_direct_with(net, &kkrt_task, OutputMode::IntersectionToBoth, Protocol::Kkrt).await, Ok(100));
    let bureau_out = net.net.state("bureau").config.output_dir.clone();
    let theirs = bureau_out.join("from-bank").join(format!("{kkrt_task}-blacklist.csv"));
    assert_eq!(std::fs::read_to_string(theirs).unwrap().lines().count(), 101);

    // The same in four parts: the same rows on both sides, metered with
    // the bound on four parts' bins.
    let parted = record_psi_task_to(net, PsiProtocol::Kkrt, PsiDelivery::ToBoth, "g-fast").await;
    assert_eq!(psi_direct_parts(net, &parted, OutputMode::IntersectionToBoth, Protocol::Kkrt, 4).await, Ok(100));
    let theirs_parted = bureau_out.join("from-bank").join(format!("{parted}-blacklist.csv"));
    let theirs_whole = bureau_out.join("from-bank").join(format!("{kkrt_task}-blacklist.csv"));
    assert_eq!(std::fs::read_to_string(theirs_parted).unwrap(), std::fs::read_to_string(theirs_whole).unwrap());
    let trail = net.ledger.task(&parted).await.unwrap().unwrap();
    assert_eq!(trail.uses[0].1.items, stayput_psi::kkrt::metered_bins(200, 4));
    // Neither node keeps a finished task's progress (the bank's split key).
    let kept = |org: &str, side: &str| net.net.state(org).config.state_dir.join("psi-progress").join(side);
    let leftovers = |dir: std::path::PathBuf| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers(kept("bank", "requester")), 0);
    assert_eq!(leftovers(kept("bureau", "responder")), 0);
    let err = psi_direct_parts(
        net,
        &record_psi_task(net, PsiProtocol::Kkrt, "g-fast").await,
        OutputMode::IntersectionToRequester,
        Protocol::Kkrt,
        201,
    )
    .await
    .unwrap_err();
    assert!(err.contains("201 parts for 200 keys"), "{err}");

    // A hostile requester cannot pick another protocol than its
    // organisation signed for, either way; nothing is used.
    let uses = net.ledger.grant("g-fast").await.unwrap().unwrap().uses;
    let ecdh_task = record_psi_task(net, PsiProtocol::Ecdh, "g-fast").await;
    let err = psi_direct_with(net, &ecdh_task, OutputMode::IntersectionToRequester, Protocol::Kkrt).await.unwrap_err();
    assert!(err.contains("runs the ecdh protocol, the session asked for kkrt"), "{err}");
    // Refused for good in parts: the bank drops the split key it kept.
    let err = psi_direct_parts(net, &ecdh_task, OutputMode::IntersectionToRequester, Protocol::Kkrt, 2).await;
    assert!(err.unwrap_err().contains("runs the ecdh protocol"));
    assert_eq!(leftovers(kept("bank", "requester")), 0, "no split key left behind");
    let kkrt_task = record_psi_task(net, PsiProtocol::Kkrt, "g-fast").await;
    let err = psi_direct(net, &kkrt_task).await.unwrap_err();
    assert!(err.contains("runs the kkrt protocol, the session asked for ecdh"), "{err}");
    let err = psi_direct_with(net, &kkrt_task, OutputMode::CardinalityOnly, Protocol::Kkrt).await.unwrap_err();
    assert!(err.contains("does not offer the cardinality mode"), "{err}");
    assert_eq!(net.ledger.grant("g-fast").await.unwrap().unwrap().uses, uses, "no use was consumed");
    f.net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rr22_tasks_run_whole_in_parts_and_to_both_and_the_ledger_fixes_the_protocol() {
    let f = consortium().await;
    let net = &f.net;
    net.grant("bureau", "g-vole", "blacklist", "bank", vec![Computation::Psi], &["id"], 10, 3600).await.unwrap();

    // Through the coordinator: the answer ECDH gives, one use, metered in
    // store elements (1.1 × 200 keys + 128, in multiples of 64).
    let mut spec = psi(Computation::Psi, "blacklist", &["id"], "bank");
    let TaskParams::Psi(p) = &mut spec.params else { unreachable!() };
    p.protocol = PsiProtocol::Rr22;
    let done = run(&f, &spec).await;
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.error);
    assert_eq!(done.result_count, 100);
    let trail = net.ledger.task(&done.task_id).await.unwrap().unwrap();
    assert_eq!(trail.uses.len(), 1);
    assert_eq!(trail.uses[0].1.items, 384);
    assert_eq!(stayput_psi::rr22::metered_keys(200, 1), 384);
    let bank_out = net.net.state("bank").config.output_dir.clone();
    let rows = std::fs::read_to_string(stayput_node::results::result_path(&bank_out, &done.task_id)).unwrap();
    assert_eq!(rows.lines().count(), 101, "a header and the 100 common rows");
    assert!(rows.contains("C00100,100") && rows.contains("C00199,199") && !rows.contains("C00099"));

    // To both, straight between the nodes, whole and in four parts: the
    // same rows on the bureau's side, the parts metered with their bound.
    let whole = record_psi_task_to(net, PsiProtocol::Rr22, PsiDelivery::ToBoth, "g-vole").await;
    assert_eq!(psi_direct_with(net, &whole, OutputMode::IntersectionToBoth, Protocol::Rr22).await, Ok(100));
    let parted = record_psi_task_to(net, PsiProtocol::Rr22, PsiDelivery::ToBoth, "g-vole").await;
    assert_eq!(psi_direct_parts(net, &parted, OutputMode::IntersectionToBoth, Protocol::Rr22, 4).await, Ok(100));
    let theirs = |task: &str| {
        let path = net.net.state("bureau").config.output_dir.join("from-bank").join(format!("{task}-blacklist.csv"));
        std::fs::read_to_string(path).unwrap()
    };
    assert_eq!(theirs(&whole).lines().count(), 101);
    assert_eq!(theirs(&parted), theirs(&whole));
    let trail = net.ledger.task(&parted).await.unwrap().unwrap();
    assert_eq!(trail.uses[0].1.items, stayput_psi::rr22::metered_keys(200, 4));

    // A hostile requester cannot run another protocol than the task's, nor
    // ask RR22 for the cardinality; nothing is used.
    let uses = net.ledger.grant("g-vole").await.unwrap().unwrap().uses;
    let rr22_task = record_psi_task(net, PsiProtocol::Rr22, "g-vole").await;
    let err = psi_direct_with(net, &rr22_task, OutputMode::IntersectionToRequester, Protocol::Kkrt).await.unwrap_err();
    assert!(err.contains("runs the rr22 protocol, the session asked for kkrt"), "{err}");
    let err = psi_direct(net, &rr22_task).await.unwrap_err();
    assert!(err.contains("runs the rr22 protocol, the session asked for ecdh"), "{err}");
    let err = psi_direct_with(net, &rr22_task, OutputMode::CardinalityOnly, Protocol::Rr22).await.unwrap_err();
    assert!(err.contains("does not offer the cardinality mode"), "{err}");
    let kkrt_task = record_psi_task(net, PsiProtocol::Kkrt, "g-vole").await;
    let err = psi_direct_with(net, &kkrt_task, OutputMode::IntersectionToRequester, Protocol::Rr22).await.unwrap_err();
    assert!(err.contains("runs the kkrt protocol, the session asked for rr22"), "{err}");
    assert_eq!(net.ledger.grant("g-vole").await.unwrap().unwrap().uses, uses, "no use was consumed");
    f.net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_to_both_deliver_to_both_and_record_both_results() {
    let f = consortium().await;
    let net = &f.net;
    net.grant("bureau", "g-both", "blacklist", "bank", vec![Computation::Psi], &["id"], 20, 3600).await.unwrap();

    // Through the coordinator, with either protocol: each side its own
    // common rows, each result's commitment on the ledger by its receiver.
    let bank_out = net.net.state("bank").config.output_dir.clone();
    for protocol in [PsiProtocol::Ecdh, PsiProtocol::Kkrt, PsiProtocol::Rr22] {
        let mut spec = psi(Computation::Psi, "blacklist", &["id"], "bank");
        let TaskParams::Psi(p) = &mut spec.params else { unreachable!() };
        p.protocol = protocol;
        p.delivery = PsiDelivery::ToBoth;
        let done = run(&f, &spec).await;
        assert_eq!(done.phase, Phase::Succeeded, "{}", done.error);
        assert_eq!(done.result_count, 100);
        let trail = net.ledger.task(&done.task_id).await.unwrap().unwrap();
        assert_eq!(trail.status, TaskStatus::Succeeded);
        assert_eq!(trail.results.len(), 2, "{protocol:?}: both receivers' digests");
        assert_eq!(trail.uses.len(), 1, "one use, by the bureau");
        let mine = trail.result().unwrap();
        assert_eq!((mine.receiver.as_str(), hex::encode(mine.result_digest)), ("bank", done.result_digest.clone()));
        let bank_rows = std::fs::read_to_string(stayput_node::results::result_path(&bank_out, &done.task_id)).unwrap();
        let bureau_rows = peer_rows_checked(net, &done.task_id).await;
        for rows in [&bank_rows, &bureau_rows] {
            assert_eq!(rows.lines().count(), 101, "a header and the 100 common rows");
            assert!(rows.contains("C00100,100") && rows.contains("C00199,199"));
            assert!(!rows.contains("C00099,") && !rows.contains("C00200,"));
        }
    }

    // A hostile requester cannot keep the bureau from the rows a task to
    // both promises it (intersection or cardinality mode), nor make a task
    // to the requester deliver to the bureau; nothing is used.
    let uses = net.ledger.grant("g-both").await.unwrap().unwrap().uses;
    for protocol in [Protocol::Ecdh, Protocol::Kkrt] {
        let code = if protocol == Protocol::Ecdh { PsiProtocol::Ecdh } else { PsiProtocol::Kkrt };
        let to_both = record_psi_task_to(net, code, PsiDelivery::ToBoth, "g-both").await;
        let err = psi_direct_with(net, &to_both, OutputMode::IntersectionToRequester, protocol).await.unwrap_err();
        assert!(err.contains("delivers the intersection to both parties, the session asked for intersection"), "{err}");
        let to_bank = record_psi_task_to(net, code, PsiDelivery::ToRequester, "g-both").await;
        let err = psi_direct_with(net, &to_bank, OutputMode::IntersectionToBoth, protocol).await.unwrap_err();
        assert!(err.contains("delivers its result to the requester only"), "{err}");
        let trail = net.ledger.task(&to_bank).await.unwrap().unwrap();
        assert!(trail.results.is_empty() && trail.uses.is_empty());
    }
    let to_both = record_psi_task_to(net, PsiProtocol::Ecdh, PsiDelivery::ToBoth, "g-both").await;
    let err = psi_direct_with(net, &to_both, OutputMode::CardinalityOnly, Protocol::Ecdh).await.unwrap_err();
    assert!(err.contains("the session asked for cardinality"), "{err}");
    assert_eq!(net.ledger.grant("g-both").await.unwrap().unwrap().uses, uses, "no use was consumed");

    // The requester cannot write the bureau's result for it, and the bureau
    // records its own once.
    let digest = stayput_chain_connector::records::ResultRecord {
        task: to_both.clone(),
        result_digest: [9; 32],
        receiver: "bureau".into(),
        intermediates: vec![],
    };
    let err = net.write("bank", Record::Result(digest.clone())).await.unwrap_err().to_string();
    assert!(err.contains("only 'bureau' records its own"), "{err}");
    assert_eq!(psi_direct_with(net, &to_both, OutputMode::IntersectionToBoth, Protocol::Ecdh).await, Ok(100));
    peer_rows_checked(net, &to_both).await;
    let err = net.write("bureau", Record::Result(digest)).await.unwrap_err().to_string();
    assert!(err.contains("already has its result for 'bureau'"), "{err}");
    f.net.shutdown().await.unwrap();
}

/// Opens a KKRT session in two parts as the bank straight at the bureau's
/// peer service, and hangs up as soon as it is accepted (as a requester
/// that dies would): the accept's resume point, or the refusal.
async fn open_in_parts(
    net: &LocalConsortium,
    task: &str,
    key: [u8; 32],
    size: u64,
    resume: bool,
    sizes: Option<Vec<u64>>,
) -> Result<u32, tonic::Status> {
    use stayput_proto::v1::psi_peer_client::PsiPeerClient;
    use stayput_proto::v1::{PsiMode, PsiOpen, PsiRequesterMessage, psi_requester_message::Body};
    let open = PsiOpen {
        protocol_version: stayput_node::psi::PROTOCOL_VERSION,
        task_id: task.into(),
        dataset: "blacklist".into(),
        mode: PsiMode::Intersection as i32,
        requester_size: size,
        key_columns: 1,
        normalisation: vec!["trim".into()],
        batch_size: 16,
        protocol: stayput_proto::v1::PsiProtocol::Kkrt as i32,
        parts: 2,
        partition_key: key.to_vec().into(),
        resume,
        parts_done: u32::from(resume),
        shard: 0,
        shards: 0,
    };
    let addr = net.net.nodes["bureau"].addr;
    // A resumption waits for the earlier session to end: retried while the
    // bureau says so, within a bound.
    for _ in 0..50 {
        let channel =
            stayput_node::peers::connect(net.net.state("bank"), "bureau", &format!("https://{addr}")).await.unwrap();
        let message = PsiRequesterMessage { body: Some(Body::Open(open.clone())) };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(message).await.unwrap();
        let mut inbound =
            match PsiPeerClient::new(channel).exchange(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
                Ok(response) => response.into_inner(),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                Err(status) => return Err(status),
            };
        match inbound.message().await {
            Ok(Some(m)) => match m.body {
                Some(stayput_proto::v1::psi_responder_message::Body::Accept(a)) => {
                    // Then, if asked, its part sizes, and the bureau's answer.
                    if let Some(sizes) = &sizes {
                        let bytes = stayput_psi::kkrt::messages::PartSizes { sizes: sizes.clone() }.to_bytes();
                        tx.send(PsiRequesterMessage { body: Some(Body::Kkrt(bytes.into())) }).await.unwrap();
                        inbound.message().await?;
                    }
                    return Ok(a.resume_from);
                }
                other => panic!("{other:?} where an accept was expected"),
            },
            Ok(None) => panic!("the bureau ended the session without a word"),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status),
        }
    }
    panic!("the bureau kept saying the task is being served")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_requester_cannot_resume_its_way_to_more() {
    let f = consortium().await;
    let net = &f.net;
    net.grant("bureau", "g-parts", "blacklist", "bank", vec![Computation::Psi], &["id"], 10, 3600).await.unwrap();
    let task = record_psi_task(net, PsiProtocol::Kkrt, "g-parts").await;
    let uses = || async { net.ledger.grant("g-parts").await.unwrap().unwrap().uses };

    // Nothing to resume before the task was served here.
    let err = open_in_parts(net, &task, [1; 32], 200, true, None).await.unwrap_err();
    assert!(err.message().contains("never served; start it afresh"), "{err:?}");
    assert_eq!(uses().await, 0);
    // The first session records the use and keeps the plan; the
    // requester vanishes after the accept.
    assert_eq!(open_in_parts(net, &task, [1; 32], 200, false, Some(vec![100, 100])).await.unwrap(), 0);
    assert_eq!(uses().await, 1);
    // Served once: a fresh session is refused.
    let err = open_in_parts(net, &task, [1; 32], 200, false, None).await.unwrap_err();
    assert!(err.message().contains("served it under grant 'g-parts' already"), "{err:?}");
    // A resumption with another split key or set size is another session.
    let err = open_in_parts(net, &task, [2; 32], 200, true, None).await.unwrap_err();
    assert!(err.message().contains("not the ones it started with"), "{err:?}");
    let err = open_in_parts(net, &task, [1; 32], 199, true, None).await.unwrap_err();
    assert!(err.message().contains("not the ones it started with"), "{err:?}");
    // Moving keys between parts on resumption would have more bins served
    // than metered: the part sizes are the first session's.
    let err = open_in_parts(net, &task, [1; 32], 200, true, Some(vec![0, 200])).await.unwrap_err();
    assert!(err.message().contains("part sizes are not the ones it started with"), "{err:?}");
    // The same plan resumes where the bureau finished (nothing yet), until
    // the allowance is spent (the refused one above counted).
    for _ in 1..stayput_psi::kkrt::MAX_RESUMES {
        assert_eq!(open_in_parts(net, &task, [1; 32], 200, true, None).await.unwrap(), 0);
    }
    let err = open_in_parts(net, &task, [1; 32], 200, true, None).await.unwrap_err();
    assert!(err.message().contains("resumed 2 times already"), "{err:?}");
    assert_eq!(uses().await, 1, "one use for the task, whatever the sessions");
    let trail = net.ledger.task(&task).await.unwrap().unwrap();
    assert_eq!(trail.uses[0].1.items, stayput_psi::kkrt::metered_bins(200, 2), "resumptions metered up front");
    f.net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_outside_the_grant_are_refused_by_the_node() {
    let f = consortium().await;
    let net = &f.net;
    net.grant("bureau", "g-cols", "blacklist", "bank", vec![Computation::Psi], &["score"], 5, 3600).await.unwrap();
    let columns = record_task(net, &["blacklist"], &["g-cols"]).await;
    let err = psi_direct(net, &columns).await.unwrap_err();
    assert!(err.contains("does not allow column 'id'"), "{err}");
    assert_eq!(net.ledger.grant("g-cols").await.unwrap().unwrap().uses, 0);
    f.net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_finishes_each_task_exactly_once() {
    let mut f = consortium().await;
    let both = vec![Computation::Psi, Computation::PsiCardinality];
    f.net.grant("bureau", "g-bl", "blacklist", "bank", both, &["id"], 10, 3600).await.unwrap();
    let now = f.time.load(Ordering::SeqCst);
    let key = f.net.key("bank");

    // Crash state 1: accepted and stored, the task record never written.
    let accepted = sign(&psi(Computation::Psi, "blacklist", &["id"], "bank"), "bank", key, now, f.net.ledger.id());
    // Crash state 2: recorded and running on the ledger, and the bank's
    // node already ran it (the bureau's use is consumed), result unrecorded.
    let ran =
        sign(&psi(Computation::PsiCardinality, "blacklist", &["id"], "bank"), "bank", key, now, f.net.ledger.id());
    let ran_id = ran.task_id();
    let task = Task::new(ran.clone(), vec!["g-bl".into()]);
    f.net.write("operator", Record::Task(task)).await.unwrap();
    f.net.write("operator", Record::TaskStatus { task: ran_id.clone(), status: TaskStatus::Running }).await.unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let bank = f.net.net.state("bank").clone();
    let outcome = stayput_node::tasks::run_task(bank, ran_id.clone(), ran.request.params.clone(), 0, tx).await.unwrap();
    assert_eq!(f.net.ledger.task(&ran_id).await.unwrap().unwrap().uses.len(), 1);

    // The coordinator goes down; its store holds both tasks mid-way.
    let addr = f.net.coordinator.addr;
    let config = stayput_coordinator::CoordinatorConfig::load(&f.net.coordinator_config).unwrap();
    let stored = |signed: &SignedTaskRequest, phase| StoredTask {
        id: signed.task_id(),
        signed_request: hex::encode(signed.to_bytes()),
        grants: vec!["g-bl".into()],
        phase,
        result_digest: None,
        result_count: 0,
        error: None,
    };
    let placeholder = placeholder_after_abort(&f.net).await;
    let old = std::mem::replace(&mut f.net.coordinator, placeholder);
    old.abort();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    {
        let store = Store::open(&config.state).unwrap();
        store.accept(&stored(&accepted, Phase::Accepted), b"bank\0a", now).unwrap();
        store.accept(&stored(&ran, Phase::Running), b"bank\0r", now).unwrap();
    }

    // It comes back on the same address and resumes both.
    let listener = rebind(addr).await;
    let t = f.time.clone();
    let clock: stayput_chain_connector::embedded::Clock = Arc::new(move || t.load(Ordering::SeqCst));
    let restarted =
        stayput_coordinator::spawn_on(&config, listener, f.net.ledger.clone(), Some(f.net.ledger.clone()), clock)
            .await
            .unwrap();
    let placeholder = std::mem::replace(&mut f.net.coordinator, restarted);
    placeholder.abort();
    let mut client = f.net.client("bank").await.unwrap();
    let first = client.follow(&accepted.task_id(), |_| {}).await.unwrap();
    assert_eq!(first.phase, Phase::Succeeded, "{}", first.error);
    assert_eq!(first.result_count, 100);
    let second = client.follow(&ran_id, |_| {}).await.unwrap();
    assert_eq!(second.phase, Phase::Succeeded, "{}", second.error);
    assert_eq!(second.result_digest, hex::encode(outcome.result_sha256), "the node's first result is the one recorded");

    for id in [accepted.task_id(), ran_id] {
        let trail = f.net.ledger.task(&id).await.unwrap().unwrap();
        assert_eq!(trail.status, TaskStatus::Succeeded);
        assert_eq!(trail.uses.len(), 1, "served exactly once");
        assert_eq!(trail.results.len(), 1);
    }
    assert_eq!(f.net.ledger.grant("g-bl").await.unwrap().unwrap().uses, 2);
    f.net.shutdown().await.unwrap();
}

/// A stand-in coordinator on a throwaway port, so the real one can be
/// taken out of the fixture and aborted.
async fn placeholder_after_abort(net: &LocalConsortium) -> stayput_coordinator::RunningCoordinator {
    let dir = net.dir.join("placeholder");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = std::fs::read_to_string(&net.coordinator_config).unwrap();
    text = text.replace("coordinator.redb", &dir.join("c.redb").display().to_string());
    let path = dir.join("coordinator.toml");
    std::fs::write(&path, text).unwrap();
    let config = stayput_coordinator::CoordinatorConfig::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ledger = net.ledger.clone();
    let clock = stayput_chain_connector::embedded::system_clock();
    stayput_coordinator::spawn_on(&config, listener, ledger, None, clock).await.unwrap()
}

async fn rebind(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..50 {
        if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("cannot rebind {addr}");
}
