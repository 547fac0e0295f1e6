//! PSI run as shards on loopback: both organisations run four shard nodes
//! beside their first node, the coordinator runs the four shard pairs, and
//! the union of the requester's shard results is the result of one session;
//! the ledger holds one use per shard and a result of four shard digests
//! and their combination. Then the attacks: a shard asked for another
//! shard, a split the task does not have, a sharded session for a task of
//! one session, a node that is no shard, an endpoint that names no shards.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Role};
use stayput_chain_connector::tasks::{PsiDelivery, PsiParams, PsiProtocol, TaskParams, combine_shard_digests};
use stayput_coordinator::client::TaskSpec;
use stayput_coordinator::store::Phase;
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};
use stayput_node::NodeState;
use stayput_node::results::{file_sha256, result_path, salt_path, salted_commitment};

fn ids(path: &Path, range: std::ops::Range<u32>) -> PathBuf {
    let rows = range.map(|i| format!("C{i:06},{i}"));
    let text: Vec<String> = std::iter::once("id,score".to_string()).chain(rows).collect();
    std::fs::write(path, text.join("\n")).unwrap();
    path.into()
}

fn participant(name: &str, role: Role, dataset: &str, path: PathBuf) -> Participant {
    let dataset = DatasetSpec::plain(dataset, path, "id");
    Participant {
        spec: OrgSpec { name: name.into(), datasets: vec![dataset] },
        display: name.into(),
        roles: vec![role],
    }
}

/// Bank: 3,000 applicants; bureau: 4,000 listings, 2,000 of them common.
async fn consortium(dir: &Path) -> LocalConsortium {
    let now = stayput_coordinator::client::unix_now();
    let clock: stayput_chain_connector::embedded::Clock = Arc::new(move || now);
    let participants = [
        participant("bank", Role::Requester, "applicants", ids(&dir.join("bank.csv"), 0..3000)),
        participant("bureau", Role::DataOwner, "blacklist", ids(&dir.join("bureau.csv"), 1000..5000)),
    ];
    let net = LocalConsortium::start(dir, &participants, clock).await.unwrap();
    net.publish_dataset("bureau", "blacklist").await.unwrap();
    net.grant("bureau", "g", "blacklist", "bank", vec![Computation::Psi], &["id"], 10, 3600).await.unwrap();
    net
}

fn params(protocol: PsiProtocol, shards: u32) -> TaskParams {
    TaskParams::Psi(PsiParams {
        requester_dataset: "applicants".into(),
        peer_dataset: "blacklist".into(),
        columns: vec!["id".into()],
        protocol,
        delivery: PsiDelivery::ToRequester,
        shards,
    })
}

fn spec(protocol: PsiProtocol, shards: u32) -> TaskSpec {
    TaskSpec {
        kind: Computation::Psi,
        datasets: vec!["blacklist".into()],
        receiver: "bank".into(),
        params: params(protocol, shards),
    }
}

async fn run(net: &LocalConsortium, spec: &TaskSpec) -> stayput_coordinator::client::TaskReport {
    let submitted = net.submit("bank", spec).await.unwrap();
    net.client("bank").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap()
}

/// The data rows of a result file.
fn rows(state: &NodeState, task: &str) -> Vec<String> {
    let text = std::fs::read_to_string(result_path(&state.config.output_dir, task)).unwrap();
    text.lines().skip(1).map(str::to_owned).collect()
}

/// The digest a node reports for its result file: the salted commitment.
fn commitment(state: &NodeState, task: &str) -> [u8; 32] {
    let dir = &state.config.output_dir;
    let salt: [u8; 32] =
        hex::decode(std::fs::read_to_string(salt_path(dir, task)).unwrap().trim()).unwrap().try_into().unwrap();
    salted_commitment(&salt, &file_sha256(&result_path(dir, task)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_give_the_result_of_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = consortium(dir.path()).await;

    // Before any shard node runs, the member's endpoint names no shards: a
    // sharded task fails at the coordinator, and nothing is used.
    let early = run(&net, &spec(PsiProtocol::Kkrt, 4)).await;
    assert_eq!(early.phase, Phase::Failed);
    assert!(early.error.contains("does not name them") && early.error.contains("{shard}"), "{}", early.error);
    assert!(net.ledger.task(&early.task_id).await.unwrap().unwrap().uses.is_empty());

    // One session, on the organisations' first nodes.
    let one = run(&net, &spec(PsiProtocol::Kkrt, 1)).await;
    assert_eq!((one.phase, one.result_count), (Phase::Succeeded, 2000), "{}", one.error);
    let mut expected = rows(net.net.state("bank"), &one.task_id);
    expected.sort();

    net.start_shards(&[("bank", 4), ("bureau", 4)]).await.unwrap();
    for protocol in [PsiProtocol::Kkrt, PsiProtocol::Rr22, PsiProtocol::Ecdh] {
        let sharded = run(&net, &spec(protocol, 4)).await;
        assert_eq!((sharded.phase, sharded.result_count), (Phase::Succeeded, 2000), "{}", sharded.error);
        let id = &sharded.task_id;
        // The union of the four shard results is the one session's result,
        // and every shard holds part of it.
        let shard_nodes = &net.shards["bank"];
        let mut union = Vec::new();
        for node in shard_nodes {
            let part = rows(&node.state, id);
            assert!((300..700).contains(&part.len()), "about a quarter per shard: {}", part.len());
            union.extend(part);
        }
        union.sort();
        assert_eq!(union, expected, "{protocol:?}: the shards' union is the intersection");
        let distinct: BTreeSet<&String> = union.iter().collect();
        assert_eq!(distinct.len(), union.len(), "no row in two shards");

        // The ledger: one use per shard of the bureau, one result holding
        // each shard's commitment and their combination.
        let trail = net.ledger.task(id).await.unwrap().unwrap();
        let mut shards: Vec<Option<u32>> = trail
            .uses
            .iter()
            .map(|(by, u)| {
                assert_eq!(by, "bureau");
                u.shard
            })
            .collect();
        shards.sort();
        assert_eq!(shards, [Some(0), Some(1), Some(2), Some(3)]);
        let result = trail.result().unwrap();
        let each: Vec<[u8; 32]> = shard_nodes.iter().map(|n| commitment(&n.state, id)).collect();
        assert_eq!(result.intermediates, each, "shard i's digest is shard i's file");
        assert_eq!(result.result_digest, combine_shard_digests(&each));
    }
    // One use of the grant per task, however many shards served it.
    assert_eq!(net.ledger.grant("g").await.unwrap().unwrap().uses, 4);
    net.shutdown().await.unwrap();
}

/// Opens a PSI session to `endpoint` (the bureau's node) as the bank's
/// shard 0 would, and returns the bureau's refusal.
async fn open_refused(net: &LocalConsortium, endpoint: &str, task: &str, shard: u32, shards: u32) -> String {
    use stayput_proto::v1::psi_peer_client::PsiPeerClient;
    use stayput_proto::v1::{PsiMode, PsiOpen, PsiRequesterMessage, psi_requester_message::Body};
    let open = PsiOpen {
        protocol_version: stayput_node::psi::PROTOCOL_VERSION,
        task_id: task.into(),
        dataset: "blacklist".into(),
        mode: PsiMode::Intersection as i32,
        requester_size: 700,
        key_columns: 1,
        normalisation: vec!["trim".into()],
        batch_size: 16,
        protocol: stayput_proto::v1::PsiProtocol::Kkrt as i32,
        parts: 0,
        partition_key: Default::default(),
        resume: false,
        parts_done: 0,
        shard,
        shards,
    };
    let channel = stayput_node::peers::connect(&net.shards["bank"][0].state, "bureau", endpoint).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(PsiRequesterMessage { body: Some(Body::Open(open)) }).await.unwrap();
    match PsiPeerClient::new(channel).exchange(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Err(status) => status.message().to_owned(),
        Ok(response) => match response.into_inner().message().await {
            Err(status) => status.message().to_owned(),
            Ok(other) => panic!("the bureau should refuse, and answered {other:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_serves_only_its_own_shard_of_a_task_that_runs_as_shards() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = consortium(dir.path()).await;
    net.start_shards(&[("bank", 4), ("bureau", 4)]).await.unwrap();
    let sharded = params(PsiProtocol::Kkrt, 4).encode();
    let task = net.record_task("bank", Computation::Psi, &["blacklist"], sharded.clone(), &["g"]).await.unwrap();
    let single = params(PsiProtocol::Kkrt, 1).encode();
    let plain = net.record_task("bank", Computation::Psi, &["blacklist"], single, &["g"]).await.unwrap();
    let bureau = |i: usize| format!("https://{}", net.shards["bureau"][i].addr);

    // A hostile requester asks the bureau's shard 2 for shard 1, for a
    // split of 2, and for shards of a task of one session.
    let err = open_refused(&net, &bureau(2), &task, 1, 4).await;
    assert!(err.contains("shard 1 was asked for, and this node is shard 2/4"), "{err}");
    let err = open_refused(&net, &bureau(2), &task, 0, 2).await;
    assert!(err.contains("runs as 2 shards, and this node is shard 2/4 of another split"), "{err}");
    let err = open_refused(&net, &bureau(2), &plain, 2, 4).await;
    assert!(err.contains("runs as 1 shard(s), the session asked for 4"), "{err}");
    // The bureau's first node is no shard: a sharded session is refused.
    let first = format!("https://{}", net.net.nodes["bureau"].addr);
    let err = open_refused(&net, &first, &task, 0, 4).await;
    assert!(err.contains("not configured as a shard"), "{err}");
    for id in [&task, &plain] {
        assert!(net.ledger.task(id).await.unwrap().unwrap().uses.is_empty(), "nothing was served or metered");
    }

    // The bank's nodes: its first node is no shard, and its shard 1 runs
    // shard 1 only.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let first_bank = net.net.state("bank").clone();
    let err =
        stayput_node::tasks::run_task(first_bank, task.clone(), sharded.clone(), 0, tx.clone()).await.unwrap_err();
    assert!(err.to_string().contains("not configured as a shard"), "{err}");
    let shard_one = net.shards["bank"][1].state.clone();
    let err = stayput_node::tasks::run_task(shard_one, task.clone(), sharded, 2, tx).await.unwrap_err();
    assert!(err.to_string().contains("shard 2 was asked for, and this node is shard 1/4"), "{err}");
    net.shutdown().await.unwrap();
}
