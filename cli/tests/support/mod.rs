//! Helpers of the tests that run `examples/consortium/` as separate
//! processes on a real anvil chain.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stayput");

pub fn stayput_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(dir).env("STAYPUT_LOG", "warn").output().expect("run stayput")
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = stayput_in(dir, args);
    assert!(out.status.success(), "stayput {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `stayput` server process, killed when dropped.
pub struct Process {
    child: Child,
    dir: PathBuf,
    args: Vec<String>,
    log: String,
    port: u16,
}

impl Process {
    /// Starts `stayput <args>` in `dir`, logging to `dir/<log>`, and waits
    /// until it listens on `port`.
    pub fn start(dir: &Path, args: &[&str], log: &str, port: u16) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let child = Self::spawn(dir, &args, log, port);
        Self { child, dir: dir.into(), args, log: log.into(), port }
    }

    fn spawn(dir: &Path, args: &[String], log: &str, port: u16) -> Child {
        let log = dir.join(log);
        let child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("STAYPUT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start stayput");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{args:?} did not listen: {}", std::fs::read_to_string(&log).unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// Kills the process at once (SIGKILL: no clean shutdown), as a
    /// crashed machine would, and starts it again with the same arguments;
    /// its log goes on in `<log>.restarted`.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log.push_str(".restarted");
        self.child = Self::spawn(&self.dir, &self.args, &self.log, self.port);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the example, moving its fixed ports to free ones.
pub fn copy_example(to: &Path, anvil_url: &str) -> [u16; 4] {
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

/// Keys and certificates, the contract deployed (at the address the
/// example configures), the coordinator, the members admitted each with
/// its EVM account, and the three nodes: the example's README up to
/// publishing. The processes run until the returned value is dropped.
pub fn start_consortium(d: &Path, ports: [u16; 4]) -> Vec<Process> {
    let [coordinator_port, bank_port, bureau_a_port, bureau_b_port] = ports;
    // Keys and certificates.
    ok(d, &["keys", "ca", "--dir", "keys"]);
    for org in ["operator", "bank", "bureau-a", "bureau-b"] {
        ok(d, &["keys", "org", "--dir", "keys", "--org", org, "--host", "127.0.0.1"]);
    }
    // The operator deploys the contract; its address is the one configured.
    let deployed = ok(d, &["consortium", "deploy", "--config", "coordinator.toml"]);
    assert!(deployed.contains("0x5FbDB2315678afecb367f032d93F642f64180aa3"), "{deployed}");
    let coordinator =
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
    let nodes = [("bank", bank_port), ("bureau-a", bureau_a_port), ("bureau-b", bureau_b_port)].map(|(org, port)| {
        Process::start(d, &["node", "--config", &format!("{org}.toml")], &format!("{org}.log"), port)
    });

    let mut running = vec![coordinator];
    running.extend(nodes);
    running
}

/// The bank's `stayput task psi` on its applicants against `peer_dataset`
/// of the example, matching on `national_id`, with `extra` arguments.
pub fn bank_psi(d: &Path, peer_dataset: &str, extra: &[&str]) -> Output {
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    stayput_in(d, &args)
}
