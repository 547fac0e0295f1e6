//! The PSI journey across separate processes on the EVM backend: a real
//! anvil chain, `stayput coordinator` and three `stayput node` processes
//! configured with `[ledger.evm]`, each organisation writing from its own
//! EVM account; the bank submits a signed task with `stayput task`, the
//! bureau's node checks the chain before serving and records its use there,
//! and `stayput audit task` checks the result against the digest on chain.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use stayput_chain_connector::evm::{Anvil, EvmLedger, create_account};
use stayput_chain_connector::records::{Computation, DatasetVersion, Grant, Member, Record, Role, SignedRecord};
use stayput_chain_connector::{Ledger, keys};

const BIN: &str = env!("CARGO_BIN_EXE_stayput");

fn stayput(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("STAYPUT_LOG", "warn").output().expect("run stayput")
}

fn ok(args: &[&str]) -> String {
    let out = stayput(args);
    assert!(out.status.success(), "stayput {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `stayput` server process, killed when dropped.
struct Process(Child);

impl Process {
    fn start(args: &[&str], log: &Path, port: u16) -> Self {
        let child = Command::new(BIN)
            .args(args)
            .env("STAYPUT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start stayput");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{args:?} did not listen: {}", std::fs::read_to_string(log).unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ids(path: &Path, range: std::ops::Range<u32>) {
    let rows: Vec<String> = std::iter::once("id".to_string()).chain(range.map(|i| format!("C{i:05}"))).collect();
    std::fs::write(path, rows.join("\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psi_journey_across_processes_on_the_evm_backend() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = d.join("keys");
    let orgs = ["operator", "bank", "bureau-a", "bureau-b"];
    ok(&["keys", "ca", "--dir", k.to_str().unwrap()]);
    for org in orgs {
        ok(&["keys", "org", "--dir", k.to_str().unwrap(), "--org", org, "--host", "127.0.0.1"]);
    }
    let anvil = Anvil::start().await.expect("anvil (installed by ./scripts/test)");
    let mut accounts = BTreeMap::new();
    for org in orgs {
        let signer = create_account(&k.join(format!("{org}.evm"))).unwrap();
        anvil.fund(signer.address()).await.unwrap();
        accounts.insert(org.to_owned(), signer);
    }
    let key = |org: &str| keys::load(&k.join(format!("{org}.ed25519"))).unwrap();
    let ports: BTreeMap<&str, u16> = orgs.iter().map(|o| (*o, free_port())).collect();
    let member = |org: &str, roles: Vec<Role>| Member {
        org: org.into(),
        name: org.into(),
        roles,
        signing_key: key(org).public_key(),
        endpoint: format!("https://127.0.0.1:{}", ports[org]),
    };

    // Setup as each organisation would do it from its own account: the
    // operator deploys and admits members; owners publish and grant.
    let genesis =
        SignedRecord::sign(Record::Member(member("operator", vec![Role::Operator])), "operator", &key("operator"));
    let config = EvmLedger::deploy(&anvil.url, accounts["operator"].clone(), &genesis).await.unwrap();
    let addresses = accounts.iter().map(|(o, s)| (o.clone(), s.address())).collect();
    let admin = EvmLedger::connect(config.clone(), accounts.clone(), addresses).unwrap();
    let write = |org: &'static str, record| {
        let signed = SignedRecord::sign(record, org, &key(org));
        let admin = &admin;
        async move { admin.submit(signed).await.unwrap() }
    };
    write("operator", Record::Member(member("bank", vec![Role::Requester]))).await;
    write("operator", Record::Member(member("bureau-a", vec![Role::DataOwner]))).await;
    write("operator", Record::Member(member("bureau-b", vec![Role::DataOwner]))).await;
    for (owner, dataset) in [("bureau-a", "blacklist-a"), ("bureau-b", "blacklist-b")] {
        let version = DatasetVersion {
            dataset: dataset.into(),
            owner: owner.into(),
            version: 1,
            schema_digest: [1; 32],
            content_digest: [2; 32],
            protocol_key: None,
        };
        write(owner, Record::DatasetVersion(version)).await;
    }
    let grant = Grant {
        id: "g-a".into(),
        dataset: "blacklist-a".into(),
        grantee: "bank".into(),
        computations: vec![Computation::Psi],
        columns: vec!["id".into()],
        min_cohort: 0,
        max_uses: 5,
        max_items: 1_000_000,
        expires_at: anvil.now().await.unwrap() + 3600,
    };
    write("bureau-a", Record::Grant(grant)).await;

    // Configurations: every process reads and writes the chain itself.
    let evm = |org: &str| {
        format!(
            "rpc_url = \"{}\"\ncontract = \"{}\"\ndeployed_at = {}\naccount_key = {:?}\n",
            anvil.url,
            config.contract,
            config.deployed_at,
            k.join(format!("{org}.evm")).display().to_string()
        )
    };
    let path = |f: &str| k.join(f).display().to_string();
    std::fs::write(
        d.join("coordinator.toml"),
        format!(
            "[coordinator]\norg = \"operator\"\nlisten = \"127.0.0.1:{}\"\nstate = \"coordinator.redb\"\nsigning_key = {:?}\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n[ledger]\nbackend = \"evm\"\n{}",
            ports["operator"],
            path("operator.ed25519"),
            path("ca.pem"),
            path("operator.pem"),
            path("operator.key"),
            evm("operator")
        ),
    )
    .unwrap();
    for (org, dataset, range) in
        [("bank", "applicants", 0..100), ("bureau-a", "blacklist-a", 50..300), ("bureau-b", "blacklist-b", 0..10)]
    {
        let org_dir = d.join(org);
        std::fs::create_dir_all(&org_dir).unwrap();
        ids(&org_dir.join("data.csv"), range);
        let peers: String = orgs
            .iter()
            .filter(|p| **p != org && **p != "operator")
            .map(|p| format!("{p} = \"https://127.0.0.1:{}\"\n", ports[p]))
            .collect();
        std::fs::write(
            org_dir.join("node.toml"),
            format!(
                "[node]\norg = \"{org}\"\nlisten = \"127.0.0.1:{}\"\noutput_dir = \"results\"\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n[peers]\n{peers}\n[datasets.{dataset}]\npath = \"data.csv\"\nkey_columns = [\"id\"]\nnormalise = [\"trim\"]\n\n[ledger]\nendpoint = \"https://127.0.0.1:{}\"\noperator = \"operator\"\noperator_key = {:?}\nsigning_key = {:?}\n\n[ledger.evm]\n{}",
                ports[org],
                path("ca.pem"),
                path(&format!("{org}.pem")),
                path(&format!("{org}.key")),
                ports["operator"],
                path("operator.ed25519.pub"),
                path(&format!("{org}.ed25519")),
                evm(org)
            ),
        )
        .unwrap();
    }

    let config_of = |org: &str| d.join(org).join("node.toml").display().to_string();
    let _coordinator = Process::start(
        &["coordinator", "--config", d.join("coordinator.toml").to_str().unwrap()],
        &d.join("coordinator.log"),
        ports["operator"],
    );
    let _nodes: Vec<Process> = ["bank", "bureau-a", "bureau-b"]
        .iter()
        .map(|org| Process::start(&["node", "--config", &config_of(org)], &d.join(format!("{org}.log")), ports[org]))
        .collect();

    let out = ok(&[
        "task",
        "psi",
        "--config",
        &config_of("bank"),
        "--dataset",
        "applicants",
        "--peer-dataset",
        "blacklist-a",
        "--columns",
        "id",
    ]);
    assert!(out.contains("succeeded: 50 common keys"), "{out}");
    let task = out.split_whitespace().nth(1).unwrap().to_owned();
    assert!(task.starts_with("t-"), "{out}");
    assert!(d.join("bank/results").join(format!("{task}.csv")).exists());

    // The chain holds the trail; the bank's result matches its digest.
    let trail = ok(&["audit", "task", &task, "--config", &config_of("bank")]);
    assert!(trail.contains("psi by bank, succeeded"), "{trail}");
    assert!(trail.contains("use of grant g-a for 100 items") && trail.contains("by bureau-a"), "{trail}");
    assert!(trail.contains("matches the digest on the ledger"), "{trail}");
    let on_chain = admin.task(&task).await.unwrap().unwrap();
    assert_eq!(on_chain.uses.len(), 1);
    assert_eq!(on_chain.results.len(), 1);

    // No grant from bureau-b: refused before anything ran, nothing recorded.
    let out = stayput(&[
        "task",
        "psi",
        "--config",
        &config_of("bank"),
        "--dataset",
        "applicants",
        "--peer-dataset",
        "blacklist-b",
        "--columns",
        "id",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no grant lets 'bank' use dataset 'blacklist-b'"), "{err}");
    assert_eq!(admin.tasks(None).await.unwrap().len(), 1);
}
