//! Private record lookup end to end on loopback: an ocean data centre serves
//! its station registry for PIR; a lab fetches its stations' records with
//! the keys never leaving its node. Checks the records and "absent", the
//! metering by the grant (per task and in all) of the records a task's
//! answers can disclose at worst — every record of the 4n fullest columns
//! for n lookups, not n — a tampered hint cache, a key declaration that
//! does not match, a new version, and that nothing on the ledger names a
//! key.

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Grant, Record, Role};
use stayput_chain_connector::tasks::{PirParams, TaskParams};
use stayput_coordinator::client::{Phase, TaskReport, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};
use stayput_node::config::PirSettings;

/// Enough stations for about 60 columns, so that 4 lookups' worth of
/// columns is not the whole table.
const STATIONS: usize = 2_000;

fn registry_row(i: usize) -> String {
    format!("ST{i:04},\"Buoy {i} \"\"{}\"\"\",{}", ["north", "south", "east"][i % 3], 10 + i * 7)
}

fn write(path: &std::path::Path, header: &str, rows: &[String]) {
    std::fs::write(path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
}

fn lookup(keys: &str) -> TaskSpec {
    TaskSpec {
        kind: Computation::Pir,
        datasets: vec!["registry".into()],
        receiver: "lab".into(),
        params: TaskParams::Pir(PirParams { dataset: "registry".into(), requester_dataset: keys.into() }),
    }
}

/// What `lookups` lookups on the registry's latest version can disclose
/// at worst: the records of the 4·lookups fullest columns of its layout,
/// computed here from the public layout and the registry's keys.
async fn worst_case(net: &LocalConsortium, lookups: usize) -> u64 {
    let latest = net.ledger.dataset("registry").await.unwrap().pop().unwrap();
    let layout = stayput_node::pir::published_layout(&latest).unwrap();
    let mut loads = vec![0u64; layout.columns];
    for i in 0..STATIONS {
        let mut key = Vec::new();
        stayput_psi::keys::encode_key(&[format!("ST{i:04}")], &mut key).unwrap();
        loads[layout.column_of(&key)] += 1;
    }
    loads.sort_unstable_by(|a, b| b.cmp(a));
    assert!(layout.columns > 4 * 5, "the table is wider than five lookups can read");
    loads.iter().take(4 * lookups).sum()
}

async fn run(net: &LocalConsortium, keys: &str) -> TaskReport {
    let submitted = net.submit("lab", &lookup(keys)).await.unwrap();
    net.client("lab").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap()
}

fn result(net: &LocalConsortium, task: &str) -> String {
    let out = &net.net.state("lab").config.output_dir;
    std::fs::read_to_string(stayput_node::tasks::result_file(out, task)).unwrap()
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
    let worst: Vec<u64> = {
        let mut out = Vec::new();
        for lookups in 0..=5 {
            out.push(worst_case(&net, lookups).await);
        }
        out
    };
    assert!(worst[1] < worst[2] && worst[4] < worst[5] && worst[5] < STATIONS as u64);
    // Up to 4 lookups' worth per task; in all, a 3-lookup and a 1-lookup
    // task and not quite a 2-lookup one.
    let per_task = worst[4];
    let total = worst[3] + worst[1] + worst[2] - 1;
    net.write(
        "ocean",
        Record::Grant(Grant {
            id: "g-lookup".into(),
            dataset: "registry".into(),
            grantee: "lab".into(),
            computations: vec![Computation::Pir],
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
    // The use counts what the 3 answers could have read at worst, not 3.
    assert_eq!((task.uses[0].0.as_str(), task.uses[0].1.items), ("ocean", worst[3]));
    // The ledger holds a salted commitment to the result, not its digest.
    let out = net.net.state("lab").config.output_dir.clone();
    let file_sha = stayput_node::tasks::file_sha256(&stayput_node::tasks::result_file(&out, &report.task_id)).unwrap();
    let salt: [u8; 32] =
        hex::decode(std::fs::read_to_string(stayput_node::tasks::salt_path(&out, &report.task_id)).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
    let recorded = task.results.last().unwrap().result_digest;
    assert_ne!(recorded, file_sha);
    assert_eq!(recorded, stayput_node::pir::result_commitment(&salt, &file_sha));
    assert_eq!(used().await, worst[3]);

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
    let mut used_so_far = worst[3] + worst[1];
    assert_eq!(used().await, used_so_far);

    // Metering: more than a task may disclose, refused before any work.
    let report = run(&net, "too-many").await;
    assert_eq!(report.phase, Phase::Failed);
    let expected = format!(
        "5 lookups can disclose up to {} records (each answer can read the 4 fullest columns): {} records asked; grant 'g-lookup' allows at most {per_task} records per task",
        worst[5], worst[5]
    );
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
    // The ledger's reason names the records asked, which depend on the
    // table: the lab is told which grant refused, not the count.
    assert!(
        report.error.contains("the ledger refused this node's use record under grant 'g-lookup'"),
        "{}",
        report.error
    );
    assert!(
        !report.error.contains(&worst[2].to_string()) && !report.error.contains(&total.to_string()),
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
    // Metered on the new version's layout.
    used_so_far += worst_case(&net, 1).await;
    assert_eq!(used().await, used_so_far);

    // The owner's node refuses on its own, consuming nothing: queries for a
    // version that is no longer the latest, and queries of the wrong size.
    {
        use stayput_chain_connector::records::Task;
        use stayput_chain_connector::tasks::params_digest;
        use stayput_proto::v1::pir_peer_client::PirPeerClient;
        use stayput_proto::v1::{FetchHintRequest, PirQueryRequest};
        let channel = stayput_node::requester::connect_peer(net.net.state("lab"), "ocean").await.unwrap();
        let mut client = PirPeerClient::new(channel);
        let params = lookup("one").params.encode();
        let id = "t-direct-pir-0000000000000000".to_owned();
        let task = Task {
            id: id.clone(),
            requester: "lab".into(),
            kind: Computation::Pir,
            datasets: vec!["registry".into()],
            params_digest: params_digest(Computation::Pir, &params),
            grants: vec!["g-lookup".into()],
        };
        net.write("lab", Record::Task(task)).await.unwrap();
        for (version, query, expected) in [
            (1, vec![0u8; 8], "the ledger's latest is v2; fetch its hint and ask again"),
            (2, vec![0u8; 8], "query 1 is 8 bytes"),
        ] {
            let request = PirQueryRequest {
                task_id: id.clone(),
                dataset: "registry".into(),
                version,
                queries: vec![query.into()],
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
            let channel = stayput_node::requester::connect_peer(net.net.state("lab"), "ocean").await.unwrap();
            let request = FetchHintRequest { task_id: id.clone(), dataset: "registry".into() };
            unread.push(PirPeerClient::new(channel).fetch_hint(request).await.unwrap());
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

    // Nothing on the ledger names a key the lab looked up.
    let events = net.ledger.events_after(0, usize::MAX).await.unwrap();
    let trail = format!("{events:?}");
    for key in ["ST0042", "ST0299", "ST9999", "ST0007", "st0042"] {
        assert!(!trail.contains(key), "{key} appears on the ledger");
    }
    net.shutdown().await.unwrap();
}
