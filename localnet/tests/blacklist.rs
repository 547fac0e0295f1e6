//! The blacklist query end to end on loopback: two bureaus publish their
//! blacklists as encoded sets (digest and OPRF key on the ledger); a bank's
//! signed task queries both in parallel; the bank's node syncs its caches
//! (whole, then by delta after a bureau's update), verifies every DLEQ
//! proof and writes which bureau listed whom with which label; every query
//! is metered in the bureau's use record; a bureau that refuses makes the
//! result partial, named, never a silent miss.

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Grant, Record, Role, TaskStatus};
use stayput_chain_connector::tasks::{BlacklistParams, TaskParams};
use stayput_coordinator::client::{Phase, TaskReport, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};

fn write_csv(path: &std::path::Path, header: &str, rows: impl Iterator<Item = String>) -> std::path::PathBuf {
    let text: Vec<String> = std::iter::once(header.to_owned()).chain(rows).collect();
    std::fs::write(path, text.join("\n")).unwrap();
    path.into()
}

fn blacklist(path: &std::path::Path, ids: impl Iterator<Item = u32>, tag: &str) -> std::path::PathBuf {
    write_csv(path, "national_id,reason", ids.map(|i| format!("C{i:05},{tag}-{}", i % 7)))
}

fn org(name: &str, roles: Vec<Role>, dataset: &str, path: std::path::PathBuf, labels: Option<&str>) -> Participant {
    Participant {
        spec: OrgSpec {
            name: name.into(),
            datasets: vec![DatasetSpec {
                name: dataset.into(),
                path,
                key_columns: vec!["national_id".into()],
                normalise: vec!["trim".into(), "uppercase".into()],
                labels: labels.map(str::to_owned),
                pir: None,
            }],
        },
        display: name.into(),
        roles,
    }
}

fn grant(owner: &str, dataset: &str, max_items: u64) -> Record {
    grant_with(&format!("g-{owner}"), dataset, max_items, 1_000)
}

fn grant_with(id: &str, dataset: &str, max_items: u64, max_items_per_use: u64) -> Record {
    Record::Grant(Grant {
        id: id.into(),
        dataset: dataset.into(),
        grantee: "bank".into(),
        computations: vec![Computation::Blacklist],
        columns: vec!["national_id".into(), "reason".into()],
        min_cohort: 0,
        max_uses: 10,
        max_items,
        max_items_per_use,
        expires_at: stayput_coordinator::client::unix_now() + 3600,
        epsilon_budget: 0,
    })
}

fn spec(bureaus: &[&str]) -> TaskSpec {
    TaskSpec {
        kind: Computation::Blacklist,
        datasets: bureaus.iter().map(|b| (*b).to_owned()).collect(),
        receiver: "bank".into(),
        params: TaskParams::Blacklist(BlacklistParams {
            requester_dataset: "applicants".into(),
            bureau_datasets: bureaus.iter().map(|b| (*b).to_owned()).collect(),
        }),
    }
}

async fn run(net: &LocalConsortium, spec: &TaskSpec) -> (TaskReport, String) {
    let submitted = net.submit("bank", spec).await.unwrap();
    let report = net.client("bank").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    let out = &net.net.state("bank").config.output_dir;
    let text = std::fs::read_to_string(stayput_node::results::result_path(out, &submitted.task_id)).unwrap_or_default();
    (report, text)
}

fn listed_by(text: &str, bureau: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.split(',').nth(1) == Some(bureau) && l.split(',').nth(5) == Some("listed"))
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_checks_applicants_against_two_bureaus() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 300 applicants; bureau-a lists 50 of them (and 950 others), bureau-b 10.
    let applicants =
        write_csv(&d.join("applicants.csv"), "national_id,amount", (0..300).map(|i| format!("c{i:05},1000")));
    let participants = [
        org("bank", vec![Role::Requester], "applicants", applicants, None),
        org(
            "bureau-a",
            vec![Role::DataOwner],
            "blacklist-a",
            blacklist(&d.join("a.csv"), 250..1250, "default"),
            Some("reason"),
        ),
        org(
            "bureau-b",
            vec![Role::DataOwner],
            "blacklist-b",
            blacklist(&d.join("b.csv"), 290..1290, "fraud"),
            Some("reason"),
        ),
    ];
    let clock = stayput_chain_connector::embedded::system_clock();
    let mut net = LocalConsortium::start(d, &participants, clock).await.unwrap();
    net.publish_dataset("bureau-a", "blacklist-a").await.unwrap();
    net.publish_dataset("bureau-b", "blacklist-b").await.unwrap();
    // The version on the ledger carries the encoded set's digest and K.
    let version = net.ledger.dataset("blacklist-a").await.unwrap().pop().unwrap();
    assert_eq!(version.protocol_key.as_ref().map(Vec::len), Some(32));
    // bureau-a meters 700 ids in total: two tasks of 300, not three.
    net.write("bureau-a", grant("bureau-a", "blacklist-a", 700)).await.unwrap();
    net.write("bureau-b", grant("bureau-b", "blacklist-b", 100_000)).await.unwrap();

    let (report, text) = run(&net, &spec(&["blacklist-a", "blacklist-b"])).await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert_eq!(report.result_count, 60, "{text}");
    let a = listed_by(&text, "bureau-a");
    let b = listed_by(&text, "bureau-b");
    assert_eq!(a.len(), 50);
    assert_eq!(b, (290..300).map(|i| format!("C{i:05}")).collect::<Vec<_>>());
    assert!(
        text.contains("C00293,bureau-b,blacklist-b,1,") && text.contains(",listed,fraud-6"),
        "labels decrypt\n{text}"
    );
    assert!(!text.contains("unavailable"));
    // Each bureau metered the 300 ids in its use record.
    let trail = net.ledger.task(&report.task_id).await.unwrap().unwrap();
    assert_eq!(trail.status, TaskStatus::Succeeded);
    assert_eq!(trail.uses.len(), 2);
    assert!(trail.uses.iter().all(|(_, u)| u.items == 300));

    // bureau-b delists 295..299 and lists applicant 10: a new version; the
    // bank's cache follows by delta and checks it against the ledger.
    let b_path = d.join("b.csv");
    blacklist(&b_path, (290..295).chain(std::iter::once(10)).chain(300..1290), "fraud");
    net.publish_dataset("bureau-b", "blacklist-b").await.unwrap();
    let cache = net.net.state("bank").config.state_dir.join("cache");
    assert!(cache.join("blacklist-b.v1.set").exists());
    let (report, text) = run(&net, &spec(&["blacklist-a", "blacklist-b"])).await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    let b = listed_by(&text, "bureau-b");
    assert_eq!(b, ["C00010", "C00290", "C00291", "C00292", "C00293", "C00294"]);
    assert!(cache.join("blacklist-b.v2.set").exists() && !cache.join("blacklist-b.v1.set").exists());
    let bureau_b_sets = net.net.state("bureau-b").config.state_dir.join("labeled/blacklist-b");
    assert!(bureau_b_sets.join("v2.delta").exists());

    // A third task would take bureau-a past its 700 ids: it refuses, the
    // result is partial and says so; bureau-b's answer is still delivered.
    let (report, text) = run(&net, &spec(&["blacklist-a", "blacklist-b"])).await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    let line = text.lines().find(|l| l.contains("unavailable")).unwrap_or_else(|| panic!("partial result\n{text}"));
    assert!(line.starts_with(",bureau-a,blacklist-a,,,unavailable,"), "{line}");
    assert!(line.contains("700"), "the refusal says why: {line}");
    assert!(listed_by(&text, "bureau-a").is_empty());
    assert_eq!(listed_by(&text, "bureau-b").len(), 6);
    let trail = net.ledger.task(&report.task_id).await.unwrap().unwrap();
    assert_eq!(trail.uses.len(), 1, "the refusing bureau recorded no use");

    // A tampered cache is discarded and fetched again whole.
    let cached = cache.join("blacklist-b.v2.set");
    let mut bytes = std::fs::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&cached, bytes).unwrap();
    net.write("bureau-a", Record::RevokeGrant { grant: "g-bureau-a".into() }).await.unwrap();
    let (report, text) = run(&net, &spec(&["blacklist-b"])).await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert_eq!(listed_by(&text, "bureau-b").len(), 6);

    // A bureau's node refuses malformed or oversized queries and callers
    // without a task before it touches its key or the ledger's grants.
    {
        use stayput_proto::v1::EvaluateRequest;
        use stayput_proto::v1::blacklist_peer_client::BlacklistPeerClient;
        let bank = net.net.state("bank").clone();
        let channel = stayput_node::peers::connect_peer(&bank, "bureau-b").await.unwrap();
        let mut client = BlacklistPeerClient::new(channel);
        let ask = |blinded: Vec<u8>, task: &str| EvaluateRequest {
            task_id: task.into(),
            dataset: "blacklist-b".into(),
            blinded: blinded.into(),
        };
        let uses_before = net.ledger.task(&report.task_id).await.unwrap().unwrap().uses.len();
        for (blinded, expected) in
            [(vec![], "32-byte points"), (vec![7; 33], "32-byte points"), (vec![0; 32], "is succeeded")]
        {
            let err = client.evaluate(ask(blinded, &report.task_id)).await.unwrap_err();
            assert!(err.message().contains(expected), "{expected}: {err:?}");
        }
        let err = client.evaluate(ask(vec![0; 32], "t-000000000000000000000000")).await.unwrap_err();
        assert!(err.message().contains("not on the ledger"), "{err:?}");
        assert_eq!(net.ledger.task(&report.task_id).await.unwrap().unwrap().uses.len(), uses_before);
    }

    // A grant that allows fewer ids per task than the bank asks: the bureau
    // refuses before any work, records nothing, and with no bureau
    // answering the task fails saying why.
    net.write("bureau-b", Record::RevokeGrant { grant: "g-bureau-b".into() }).await.unwrap();
    net.write("bureau-b", grant_with("g-b-small", "blacklist-b", 100_000, 100)).await.unwrap();
    let (report, _) = run(&net, &spec(&["blacklist-b"])).await;
    assert_eq!(report.phase, Phase::Failed);
    assert!(report.error.contains("at most 100 ids per task"), "{}", report.error);
    let trail = net.ledger.task(&report.task_id).await.unwrap().unwrap();
    assert!(trail.uses.is_empty());

    // Bad input costs nothing: a dataset that is not a blacklist, a bureau
    // without a grant.
    let tasks_before = net.ledger.tasks(None).await.unwrap().len();
    let err = net.submit("bank", &spec(&["applicants"])).await.unwrap_err().to_string();
    assert!(err.contains("applicants"), "{err}");
    let err = net.submit("bank", &spec(&["blacklist-a"])).await.unwrap_err().to_string();
    assert!(err.contains("grant"), "{err}");
    assert_eq!(net.ledger.tasks(None).await.unwrap().len(), tasks_before);

    // A bureau whose node is down: the task still delivers the other
    // bureau's listings, and the result names the one that did not answer.
    net.write("bureau-a", grant_with("g-a-again", "blacklist-a", 100_000, 1_000)).await.unwrap();
    net.net.nodes.remove("bureau-b").unwrap().shutdown().await.unwrap();
    let (report, text) = run(&net, &spec(&["blacklist-a", "blacklist-b"])).await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert_eq!(listed_by(&text, "bureau-a").len(), 50);
    let line = text.lines().find(|l| l.contains("unavailable")).unwrap_or_else(|| panic!("partial result\n{text}"));
    assert!(line.starts_with(",bureau-b,blacklist-b,,,unavailable,") && line.contains("connect"), "{line}");
    net.shutdown().await.unwrap();
}
