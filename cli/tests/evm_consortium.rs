//! `examples/consortium/` followed step by step, as its README tells an
//! operator to, on a copy whose ports are moved to free ones: a real anvil
//! chain, `stayput consortium deploy|admit|publish|grant`, `stayput
//! coordinator` and three `stayput node` processes on the EVM backend, each
//! organisation writing from its own account; the bank's `stayput task psi`
//! end to end; `stayput audit task` checking the result against the digest
//! on chain; a task without a grant refused with nothing recorded.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use stayput_chain_connector::evm::Anvil;

const BIN: &str = env!("CARGO_BIN_EXE_stayput");

fn stayput_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(dir).env("STAYPUT_LOG", "warn").output().expect("run stayput")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = stayput_in(dir, args);
    assert!(out.status.success(), "stayput {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `stayput` server process, killed when dropped.
struct Process(Child);

impl Process {
    fn start(dir: &Path, args: &[&str], log: &str, port: u16) -> Self {
        let log = dir.join(log);
        let child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("STAYPUT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start stayput");
        let process = Self(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{args:?} did not listen: {}", std::fs::read_to_string(&log).unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
        process
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies the example, moving its fixed ports to free ones.
fn copy_example(to: &Path, anvil_url: &str) -> [u16; 4] {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/consortium");
    let ports = [free_port(), free_port(), free_port(), free_port()];
    for sub in ["data", "evm"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).unwrap();
        }
    }
    for file in ["coordinator.toml", "bank.toml", "bureau-a.toml", "bureau-b.toml"] {
        let mut text = std::fs::read_to_string(from.join(file)).unwrap();
        text = text.replace("http://127.0.0.1:8545", anvil_url);
        for (fixed, port) in ["7000", "7101", "7102", "7103"].iter().zip(ports) {
            text = text.replace(&format!("127.0.0.1:{fixed}"), &format!("127.0.0.1:{port}"));
        }
        std::fs::write(to.join(file), text).unwrap();
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_consortium_runs_psi_across_processes_on_anvil() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let anvil = Anvil::start().await.expect("anvil (installed by ./scripts/test)");
    let [coordinator_port, bank_port, bureau_a_port, bureau_b_port] = copy_example(d, &anvil.url);

    // Keys and certificates.
    ok(d, &["keys", "ca", "--dir", "keys"]);
    for org in ["operator", "bank", "bureau-a", "bureau-b"] {
        ok(d, &["keys", "org", "--dir", "keys", "--org", org, "--host", "127.0.0.1"]);
    }
    // The operator deploys the contract; its address is the one configured.
    let deployed = ok(d, &["consortium", "deploy", "--config", "coordinator.toml"]);
    assert!(deployed.contains("0x5FbDB2315678afecb367f032d93F642f64180aa3"), "{deployed}");
    let _coordinator =
        Process::start(d, &["coordinator", "--config", "coordinator.toml"], "coordinator.log", coordinator_port);

    // The operator admits the members, each with its EVM account.
    for (org, roles, port) in [
        ("bank", "requester", bank_port),
        ("bureau-a", "data_owner", bureau_a_port),
        ("bureau-b", "data_owner", bureau_b_port),
    ] {
        let address = ok(d, &["consortium", "account", "--dir", "evm", "--org", org]);
        let signing_key = format!("keys/{org}.ed25519.pub");
        let endpoint = format!("https://127.0.0.1:{port}");
        ok(
            d,
            &[
                "consortium",
                "admit",
                "--config",
                "coordinator.toml",
                "--org",
                org,
                "--name",
                org,
                "--roles",
                roles,
                "--signing-key",
                &signing_key,
                "--endpoint",
                &endpoint,
                "--evm-address",
                address.trim(),
            ],
        );
    }
    let _nodes = [("bank", bank_port), ("bureau-a", bureau_a_port), ("bureau-b", bureau_b_port)].map(|(org, port)| {
        Process::start(d, &["node", "--config", &format!("{org}.toml")], &format!("{org}.log"), port)
    });

    // The bureaus publish their datasets; bureau-a grants the bank PSI.
    ok(d, &["consortium", "publish", "--config", "bureau-a.toml", "--dataset", "blacklist-a"]);
    ok(d, &["consortium", "publish", "--config", "bureau-b.toml", "--dataset", "blacklist-b"]);
    ok(
        d,
        &[
            "consortium",
            "grant",
            "--config",
            "bureau-a.toml",
            "--id",
            "g-a",
            "--dataset",
            "blacklist-a",
            "--grantee",
            "bank",
            "--allow",
            "psi,psi_cardinality",
            "--columns",
            "national_id",
            "--max-uses",
            "5",
        ],
    );

    // The bank's task, end to end.
    let psi = |peer_dataset: &str| {
        stayput_in(
            d,
            &[
                "task",
                "psi",
                "--config",
                "bank.toml",
                "--dataset",
                "applicants",
                "--peer-dataset",
                peer_dataset,
                "--columns",
                "national_id",
            ],
        )
    };
    let out = psi("blacklist-a");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("succeeded: 50 common keys"), "{text}");
    let task = text.split_whitespace().nth(1).unwrap().to_owned();
    assert!(d.join("results/bank").join(format!("{task}.csv")).exists());
    assert!(!d.join("results/bureau-a").join(format!("{task}.csv")).exists());

    // The chain holds the trail; the bank's result matches its digest.
    let trail = ok(d, &["audit", "task", &task, "--config", "bank.toml"]);
    assert!(trail.contains("psi by bank, succeeded"), "{trail}");
    assert!(trail.contains("use of grant g-a for 100 items") && trail.contains("by bureau-a"), "{trail}");
    assert!(trail.contains("matches the digest on the ledger"), "{trail}");

    // No grant from bureau-b: refused before anything ran.
    let out = psi("blacklist-b");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no grant lets 'bank' use dataset 'blacklist-b'"), "{err}");
    // A revoked grant stops the next task at admission.
    ok(d, &["consortium", "revoke", "--config", "bureau-a.toml", "--grant", "g-a"]);
    let out = psi("blacklist-a");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'g-a' is revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
