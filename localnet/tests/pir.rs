//! Private record lookup end to end on loopback: an ocean data centre serves
//! its station registry for PIR; a lab fetches its stations' records with
//! the keys never leaving its node. Checks the records and "absent", the
//! metering by the grant (per task and in all) of one record per lookup —
//! the most a lookup can open, since records are sealed under an OPRF of
//! their key — a crafted query that reads four whole columns and gets only
//! sealed bytes, a tampered hint cache, a key declaration that does not
//! match, a new version, requests the owner refuses before recording
//! anything, and that nothing on the ledger names a key.

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Grant, Record, Role};
use stayput_chain_connector::tasks::{LookupParams, TaskParams};
use stayput_coordinator::client::{Phase, TaskReport, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};
use stayput_node::config::PirSettings;

/// Enough stations for about 60 columns: a table whose hint determines
/// its matrix (at most 1,024 columns), so only the sealing keeps it.
const STATIONS: usize = 2_000;

fn registry_row(i: usize) -> String {
    format!("ST{i:04},\"Buoy {i} \"\"{}\"\"\",{}", ["north", "south", "east"][i % 3], 10 + i * 7)
}

fn write(path: &std::path::Path, header: &str, rows: &[String]) {
    std::fs::write(path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
}

fn lookup(keys: &str) -> TaskSpec {
    TaskSpec {
        kind: Computation::Lookup,
        datasets: vec!["registry".into()],
        receiver: "lab".into(),
        params: TaskParams::Lookup(LookupParams { dataset: "registry".into(), requester_dataset: keys.into() }),
    }
}

/// Records a lookup task of the lab's straight on the ledger, as a
/// requester can, for calls made to the owner's node without the
/// coordinator.
async fn record_direct_task(net: &LocalConsortium, grant: &str) -> String {
    let params = lookup("one").params.encode();
    net.record_task("lab", Computation::Lookup, &["registry"], params, &[grant]).await.unwrap()
}

async fn run(net: &LocalConsortium, keys: &str) -> TaskReport {
    let submitted = net.submit("lab", &lookup(keys)).await.unwrap();
    net.client("lab").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap()
}

fn result(net: &LocalConsortium, task: &str) -> String {
    let out = &net.net.state("lab").config.output_dir;
    std::fs::read_to_string(stayput_node::results::result_file(out, task)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_fetches_station_records_without_the_owner_learning_which() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let registry = d.join("registry.csv");
    let rows: Vec<String> = (0..STATIONS).map(registry_row).collect();
    write(&registry, "station_id,name,depth_m", &rows);
    let keys = [
        ("wanted", vec![" st0042 ", "ST0299", "ST9999"]),
        ("one", vec!["ST0007"]),
        ("too-many", vec!["ST0001", "ST0002", "ST0003", "ST0004", "ST0005"]),
        ("pair", vec!["ST0010", "ST0011"]),
    ];
    let mut lab_datasets = Vec::new();
    for (name, list) in &keys {
        let path = d.join(format!("{name}.csv"));
        write(&path, "station_id", &list.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>());
        lab_datasets.push(DatasetSpec {
            name: (*name).into(),
            path,
            key_columns: vec!["station_id".into()],
            normalise: vec!["trim".into(), "uppercase".into()],
            labels: None,
            pir: None,
        });
    }
    // Keys the lab does not normalise as the registry does.
    lab_datasets.push(DatasetSpec { name: "raw".into(), normalise: vec![], ..lab_datasets[1].clone() });
    let ocean = Participant {
        spec: OrgSpec {
            name: "ocean".into(),
            datasets: vec![DatasetSpec {
                name: "registry".into(),
                path: registry.clone(),
                key_columns: vec!["station_id".into()],
                normalise: vec!["trim".into(), "uppercase".into()],
                labels: None,
                pir: Some(PirSettings { columns: vec!["name".into(), "depth_m".into()], record_bytes: 64 }),
            }],
        },
        display: "Ocean data centre".into(),
        roles: vec![Role::DataOwner],
    };
    let lab = Participant {
        spec: OrgSpec { name: "lab".into(), datasets: lab_datasets },
        display: "Climate lab".into(),
        roles: vec![Role::Requester],
    };
    let clock = stayput_chain_connector::embedded::system_clock();
    let net = LocalConsortium::start(d, &[ocean, lab], clock).await.unwrap();
    net.publish_dataset("ocean", "registry").await.unwrap();
    // Up to 4 lookups per task; in all, a 3-lookup and a 1-lookup task and
    // not quite a 2-lookup one.
    let per_task = 4;
    let total = 3 + 1 + 2 - 1;
    net.write(
        "ocean",
        Record::Grant(Grant {
            id: "g-lookup".into(),
            dataset: "registry".into(),
            grantee: "lab".into(),
            computations: vec![Computation::Lookup],
            columns: vec!["name".into(), "depth_m".into()],
            min_cohort: 0,
            max_uses: 20,
            max_items: total,
            max_items_per_use: per_task,
            expires_at: stayput_coordinator::client::unix_now() + 3600,
            epsilon_budget: 0,
        }),
    )
    .await
    .unwrap();
    let used = || async { net.ledger.grant("g-lookup").await.unwrap().unwrap().items };

    // Two present keys (one written as the registry would not) and one absent.
    let report = run(&net, "wanted").await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert_eq!(report.result_count, 3, "the count reported is the lookups made, not the hits");
    let text = result(&net, &report.task_id);
    assert_eq!(
        text,
        "key,status,name,depth_m\nST0042,found,\"Buoy 42 \"\"north\"\"\",304\nST0299,found,\"Buoy 299 \"\"east\"\"\",2103\nST9999,absent,,\n"
    );
    let task = net.ledger.task(&report.task_id).await.unwrap().unwrap();
    assert_eq!(task.uses.len(), 1);
    // One record per lookup: the most 3 OPRF evaluations can open.
    assert_eq!((task.uses[0].0.as_str(), task.uses[0].1.items), ("ocean", 3));
    // The ledger holds a salted commitment to the result, not its digest.
    let out = net.net.state("lab").config.output_dir.clone();
    let file_sha =
        stayput_node::results::file_sha256(&stayput_node::results::result_file(&out, &report.task_id)).unwrap();
    let salt: [u8; 32] =
        hex::decode(std::fs::read_to_string(stayput_node::results::salt_path(&out, &report.task_id)).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
    let recorded = task.result().unwrap().result_digest;
    assert_ne!(recorded, file_sha);
    assert_eq!(recorded, stayput_node::results::salted_commitment(&salt, &file_sha));
    assert_eq!(used().await, 3);

    // A tampered hint cache is discarded and fetched again.
    let cache = net.net.state("lab").config.state_dir.join("cache").join("registry.v1.pirhint");
    let mut bytes = std::fs::read(&cache).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x40;
    std::fs::write(&cache, &bytes).unwrap();
    let report = run(&net, "one").await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert!(result(&net, &report.task_id).contains("ST0007,found,\"Buoy 7 \"\"south\"\"\",59"));
    assert_ne!(std::fs::read(&cache).unwrap(), bytes, "the cache was replaced by a verified hint");
    let mut used_so_far = 3 + 1;
    assert_eq!(used().await, used_so_far);

    // Metering: more than a task may disclose, refused before any work.
    let report = run(&net, "too-many").await;
    assert_eq!(report.phase, Phase::Failed);
    let expected = format!("5 lookups asked; grant 'g-lookup' allows at most {per_task} lookups per task");
    assert!(report.error.contains(&expected), "{}", report.error);
    assert_eq!(used().await, used_so_far);
    // Keys encoded differently from the registry's: refused before a query.
    let report = run(&net, "raw").await;
    assert_eq!(report.phase, Phase::Failed);
    assert!(report.error.contains("normalised with [trim, uppercase]"), "{}", report.error);
    assert_eq!(used().await, used_so_far);

    // The grant's total: a task of 2 lookups would pass it, so the ledger
    // refuses its use when the owner records it, and the owner does not
    // answer.
    let report = run(&net, "pair").await;
    assert_eq!(report.phase, Phase::Failed);
    assert!(
        report.error.contains("the ledger refused this node's use record under grant 'g-lookup'"),
        "{}",
        report.error
    );
    assert_eq!(used().await, used_so_far);

    // A new version (one record changed): the lab's next lookup fetches the
    // new hint, and the old cache is gone.
    let mut changed = rows.clone();
    changed[7] = "ST0007,Buoy 7 (moved),61".into();
    write(&registry, "station_id,name,depth_m", &changed);
    net.publish_dataset("ocean", "registry").await.unwrap();
    let report = run(&net, "one").await;
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.error);
    assert!(result(&net, &report.task_id).contains("ST0007,found,Buoy 7 (moved),61"));
    assert!(!cache.exists());
    assert!(cache.with_file_name("registry.v2.pirhint").exists());
    used_so_far += 1;
    assert_eq!(used().await, used_so_far);

    // The owner's node refuses on its own, consuming nothing: a requester
    // of the protocol before sealed records, a lookup without its blinded
    // key or with one that is not a point, queries for a version that is
    // no longer the latest, and queries of the wrong size.
    let blinded = |key: &[u8]| {
        let domain = stayput_pir::oprf_domain("registry").unwrap();
        let (_, points) = stayput_psi::oprf::Blinding::blind(&domain, &[key.to_vec()], &mut rand::rngs::OsRng).unwrap();
        tonic::codegen::Bytes::copy_from_slice(points[0].as_bytes())
    };
    {
        use stayput_proto::v1::lookup_peer_client::LookupPeerClient;
        use stayput_proto::v1::{FetchHintRequest, LookupRequest};
        let channel = stayput_node::peers::connect_peer(net.net.state("lab"), "ocean").await.unwrap();
        let mut client = LookupPeerClient::new(channel);
        let id = record_direct_task(&net, "g-lookup").await;
        let point = blinded(b"ST0001");
        let not_a_point = tonic::codegen::Bytes::from(vec![0xffu8; 32]);
        for (version, protocol, blinded, expected) in [
            (2, 0, vec![point.clone()], "this node answers protocol 2 (sealed records) only"),
            (2, 2, vec![], "1 queries came with 0 blinded keys"),
            (2, 2, vec![not_a_point], "blinded key 1 is not a 32-byte curve point"),
            (1, 2, vec![point.clone()], "the ledger's latest is v2; fetch its hint and ask again"),
            (2, 2, vec![point.clone()], "query 1 is 8 bytes"),
        ] {
            let request = LookupRequest {
                task_id: id.clone(),
                dataset: "registry".into(),
                version,
                queries: vec![vec![0u8; 8].into()],
                protocol,
                blinded,
            };
            let err = client.answer(request).await.unwrap_err();
            assert!(err.message().contains(expected), "{expected}: {err:?}");
        }
        assert!(net.ledger.task(&id).await.unwrap().unwrap().uses.is_empty());
        // Hint streams opened and never read hold neither a session permit
        // nor a copy of the hint: more of them than the owner has permits,
        // and the next caller is still served.
        let mut unread = Vec::new();
        for _ in 0..net.net.state("ocean").config.max_sessions + 2 {
            // One connection each, as separate callers would open them.
            let channel = stayput_node::peers::connect_peer(net.net.state("lab"), "ocean").await.unwrap();
            let request = FetchHintRequest { task_id: id.clone(), dataset: "registry".into() };
            unread.push(LookupPeerClient::new(channel).fetch_hint(request).await.unwrap());
        }
        let read_all = async {
            let mut stream = client
                .fetch_hint(FetchHintRequest { task_id: id.clone(), dataset: "registry".into() })
                .await
                .unwrap()
                .into_inner();
            let mut chunks = 0;
            while stream.message().await.unwrap().is_some() {
                chunks += 1;
            }
            chunks
        };
        let chunks = tokio::time::timeout(std::time::Duration::from_secs(60), read_all).await.expect("served in time");
        assert!(chunks > 1, "header and hint");
        drop(unread);
        assert_eq!(used().await, used_so_far);
    }

    // A hostile grantee crafts a "lookup" that is no LWE query at all:
    // q = u_0 + 2^8·u_1 + 2^16·u_2 + 2^24·u_3 reads four whole columns of
    // the matrix byte for byte. It is metered as one lookup, and the bytes
    // it gets are sealed: no record of the registry is in them.
    {
        use stayput_proto::v1::LookupRequest;
        use stayput_proto::v1::lookup_peer_client::LookupPeerClient;
        let channel = stayput_node::peers::connect_peer(net.net.state("lab"), "ocean").await.unwrap();
        let mut client = LookupPeerClient::new(channel).max_decoding_message_size(64 << 20);
        net.write(
            "ocean",
            Record::Grant(Grant {
                id: "g-crafted".into(),
                dataset: "registry".into(),
                grantee: "lab".into(),
                computations: vec![Computation::Lookup],
                columns: vec!["name".into(), "depth_m".into()],
                min_cohort: 0,
                max_uses: 2,
                max_items: 2,
                max_items_per_use: 1,
                expires_at: stayput_coordinator::client::unix_now() + 3600,
                epsilon_budget: 0,
            }),
        )
        .await
        .unwrap();
        let id = record_direct_task(&net, "g-crafted").await;
        let latest = net.ledger.dataset("registry").await.unwrap().pop().unwrap();
        let layout = stayput_node::lookup::published(&latest).unwrap().layout;
        let mut q = vec![0u32; layout.columns];
        for (i, word) in q.iter_mut().take(4).enumerate() {
            *word = 1 << (8 * i);
        }
        let request = LookupRequest {
            task_id: id.clone(),
            dataset: "registry".into(),
            version: latest.version,
            queries: vec![q.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>().into()],
            protocol: 2,
            blinded: vec![blinded(b"ST0001")],
        };
        let response = client.answer(request).await.unwrap().into_inner();
        let words: Vec<u32> =
            response.answers[0].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        let columns: Vec<Vec<u8>> = (0..4).map(|i| words.iter().map(|w| w.to_le_bytes()[i]).collect()).collect();
        assert!(columns.iter().any(|c| c.iter().any(|b| *b != 0)), "the columns hold records");
        for column in &columns {
            for needle in ["Buoy", "north", "south", "east"] {
                assert!(!column.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in the clear");
            }
        }
        let task = net.ledger.task(&id).await.unwrap().unwrap();
        assert_eq!(task.uses.iter().map(|(_, u)| u.items).collect::<Vec<_>>(), vec![1]);

        // The same task asked twice at once is served once: one answer,
        // one use, and the other call refused.
        let id = record_direct_task(&net, "g-crafted").await;
        let ask = || {
            let mut client = client.clone();
            let request = LookupRequest {
                task_id: id.clone(),
                dataset: "registry".into(),
                version: latest.version,
                queries: vec![vec![0u8; layout.columns * 4].into()],
                protocol: 2,
                blinded: vec![blinded(b"ST0002")],
            };
            async move { client.answer(request).await }
        };
        let (a, b) = tokio::join!(ask(), ask());
        assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1, "{a:?} {b:?}");
        let refused = a.err().or(b.err()).unwrap();
        assert!(
            refused.message().contains("being served already") || refused.message().contains("served once"),
            "{refused:?}"
        );
        let task = net.ledger.task(&id).await.unwrap().unwrap();
        assert_eq!(task.uses.len(), 1);
    }

    // Revoking the grant stops even the unmetered hint of a task recorded
    // before the revocation.
    {
        use stayput_proto::v1::FetchHintRequest;
        use stayput_proto::v1::lookup_peer_client::LookupPeerClient;
        let id = record_direct_task(&net, "g-lookup").await;
        net.write("ocean", Record::RevokeGrant { grant: "g-lookup".into() }).await.unwrap();
        let channel = stayput_node::peers::connect_peer(net.net.state("lab"), "ocean").await.unwrap();
        let request = FetchHintRequest { task_id: id, dataset: "registry".into() };
        let err = LookupPeerClient::new(channel).fetch_hint(request).await.map(drop).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("grant 'g-lookup' is revoked"), "{err:?}");
    }

    // Nothing on the ledger names a key the lab looked up.
    let events = net.ledger.events_after(0, usize::MAX).await.unwrap();
    let trail = format!("{events:?}");
    for key in ["ST0042", "ST0299", "ST9999", "ST0007", "st0042"] {
        assert!(!trail.contains(key), "{key} appears on the ledger");
    }
    net.shutdown().await.unwrap();
}
