//! Two `stayput node` processes on loopback with mutual TLS, driven by the
//! `stayput` command as an operator would: keys from `stayput keys`,
//! hand-written TOML, CSV and Parquet inputs. Every mode is checked against
//! the plain intersection; then the failure cases.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

const BIN: &str = env!("CARGO_BIN_EXE_stayput");

fn stayput(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("STAYPUT_LOG", "warn").output().expect("run stayput")
}

fn ok(args: &[&str]) -> String {
    let out = stayput(args);
    assert!(out.status.success(), "stayput {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = stayput(args);
    assert!(!out.status.success(), "stayput {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A node process, killed when dropped.
struct NodeProcess(Child);

impl NodeProcess {
    fn start(config: &Path, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(BIN)
            .args(["node", "--config", config.to_str().unwrap()])
            .env("STAYPUT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node");
        let node = Self(child);
        // Ready when its own organisation can list its datasets (a full mTLS round trip).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stayput(&["datasets", "--config", config.to_str().unwrap()]).status.success() {
            assert!(Instant::now() < deadline, "node {} did not come up", config.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Org {
    name: &'static str,
    port: u16,
    keys: PathBuf,
}

fn write_config(dir: &Path, org: &Org, peers: &[&Org], datasets: &str) -> PathBuf {
    let mut text = format!(
        "[node]\norg = \"{}\"\nlisten = \"127.0.0.1:{}\"\noutput_dir = \"results-{}\"\nbatch_size = 1024\n\n[tls]\nca = \"{}/ca.pem\"\ncert = \"{}/{}.pem\"\nkey = \"{}/{}.key\"\n\n[peers]\n",
        org.name,
        org.port,
        org.name,
        org.keys.display(),
        org.keys.display(),
        org.name,
        org.keys.display(),
        org.name
    );
    for peer in peers {
        text += &format!("{} = \"https://127.0.0.1:{}\"\n", peer.name, peer.port);
    }
    text += datasets;
    let path = dir.join(format!("{}.toml", org.name));
    std::fs::write(&path, text).unwrap();
    path
}

fn id(i: u32) -> String {
    format!("CUST-{i:08}")
}

/// Bank: CSV, ids 0..10000 written in lower case with stray spaces.
/// Bureau: Parquet, ids 7000..17000 in upper case. 3,000 in common.
fn write_data(dir: &Path) -> BTreeSet<String> {
    let mut csv = String::from("customer_id,segment\n");
    for i in 0..10_000 {
        csv += &format!(" {} ,retail\n", id(i).to_lowercase());
    }
    csv += "CUST-00000001,retail-duplicate\n,no-id\n";
    std::fs::write(dir.join("bank.csv"), csv).unwrap();
    let ids: Vec<String> = (7_000..17_000).map(id).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("cust", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(ids.iter())),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|_| "listed"))),
        ],
    )
    .unwrap();
    stayput_node::dataset::write_parquet(&dir.join("bureau.parquet"), &[batch]).unwrap();
    // Large inputs for the kill test.
    let big: String = std::iter::once("id\n".to_string()).chain((0..150_000).map(|i| format!("{}\n", id(i)))).collect();
    std::fs::write(dir.join("big.csv"), big).unwrap();
    (7_000..10_000).map(id).collect()
}

fn result_ids(path: &str) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().trim().to_uppercase())
        .collect()
}

fn field<'a>(stdout: &'a str, label: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no '{label}' in {stdout}"));
    line.trim_start()[label.len()..].trim()
}

#[test]
fn two_nodes_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = d.join("keys");
    let k = keys.to_str().unwrap();
    ok(&["keys", "ca", "--dir", k]);
    ok(&["keys", "org", "--dir", k, "--org", "bank"]);
    ok(&["keys", "org", "--dir", k, "--org", "bureau"]);
    let expected = write_data(d);

    let bank = Org { name: "bank", port: free_port(), keys: keys.clone() };
    let bureau = Org { name: "bureau", port: free_port(), keys: keys.clone() };
    let bank_datasets = format!(
        "\n[datasets.customers]\npath = \"{0}/bank.csv\"\nkey_columns = [\"customer_id\"]\nnormalise = [\"trim\", \"uppercase\"]\n\
         \n[datasets.misconfigured]\npath = \"{0}/bank.csv\"\nkey_columns = [\"national_id\"]\nnormalise = [\"trim\", \"uppercase\"]\n\
         \n[datasets.big]\npath = \"{0}/big.csv\"\nkey_columns = [\"id\"]\nnormalise = []\n",
        d.display()
    );
    let bureau_datasets = format!(
        "\n[datasets.blacklist]\npath = \"{0}/bureau.parquet\"\nkey_columns = [\"cust\"]\nnormalise = [\"trim\", \"uppercase\"]\n\
         \n[datasets.big]\npath = \"{0}/big.csv\"\nkey_columns = [\"id\"]\nnormalise = []\n",
        d.display()
    );
    let bank_toml = write_config(d, &bank, &[&bureau], &bank_datasets);
    let bureau_toml = write_config(d, &bureau, &[&bank], &bureau_datasets);
    let bank_cfg = bank_toml.to_str().unwrap();
    let mut bureau_node = Some(NodeProcess::start(&bureau_toml, &d.join("bureau.log")));
    let _bank_node = NodeProcess::start(&bank_toml, &d.join("bank.log"));

    let psi = |task: &str, mode: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "psi",
            "--config",
            bank_cfg,
            "--dataset",
            "customers",
            "--peer",
            "bureau",
            "--peer-dataset",
            "blacklist",
            "--task-id",
            task,
            "--mode",
            mode,
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    let run = |args: Vec<String>| ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // Intersection to the requester, CSV result.
    let out = run(psi("e2e-1", "intersection", &[]));
    assert_eq!(field(&out, "common keys:"), "3000", "{out}");
    assert!(
        field(&out, "your keys:").starts_with("10000 distinct from 10002 rows (1 duplicate, 1 without a key)"),
        "{out}"
    );
    let path = field(&out, "result:").split(" (").next().unwrap().to_string();
    assert_eq!(result_ids(&path), expected);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1 + 3000);

    // Intersection to both: each side writes its own rows.
    let out = run(psi("e2e-2", "intersection-both", &["--format", "parquet"]));
    assert_eq!(field(&out, "common keys:"), "3000");
    let bank_result = field(&out, "result:").split(" (").next().unwrap().to_string();
    assert!(bank_result.ends_with("e2e-2.parquet"), "{bank_result}");
    let theirs = d.join("results-bureau").join("from-bank").join("e2e-2-blacklist.csv");
    assert_eq!(result_ids(theirs.to_str().unwrap()), expected);

    // Cardinality only: a count and no file.
    let out = run(psi("e2e-3", "cardinality", &[]));
    assert_eq!(field(&out, "common keys:"), "3000");
    assert!(!out.contains("result:"));
    assert!(!d.join("results-bank").join("e2e-3.csv").exists());

    // Unknown dataset at the peer: named, and not what the peer serves.
    let err = fails(
        &psi("e2e-4", "intersection", &[])
            .iter()
            .map(|s| if s == "blacklist" { "nope" } else { s.as_str() })
            .collect::<Vec<_>>(),
    );
    assert!(err.contains("unknown dataset 'nope'") && !err.contains("blacklist"), "{err}");

    // Missing column in our own dataset: file and column named.
    let err = fails(
        &psi("e2e-5", "intersection", &[])
            .iter()
            .map(|s| if s == "customers" { "misconfigured" } else { s.as_str() })
            .collect::<Vec<_>>(),
    );
    assert!(err.contains("bank.csv") && err.contains("'national_id'"), "{err}");

    // Different normalisation on the two sides is refused before any key is sent.
    let err = fails(
        &psi("e2e-8", "intersection", &[])
            .iter()
            .map(|s| if s == "customers" { "big" } else { s.as_str() })
            .collect::<Vec<_>>(),
    );
    assert!(err.contains("dataset 'blacklist' declares 1 key column(s) normalised with [trim, uppercase]"), "{err}");
    assert!(err.contains("normalised with [(none)]"), "{err}");

    // A peer certificate from another CA is refused at the TLS handshake.
    let rogue_keys = d.join("rogue-keys");
    let rk = rogue_keys.to_str().unwrap();
    ok(&["keys", "ca", "--dir", rk, "--consortium", "rogue"]);
    ok(&["keys", "org", "--dir", rk, "--org", "mallory"]);
    let mallory = Org { name: "mallory", port: free_port(), keys: rogue_keys.clone() };
    let mallory_toml = write_config(d, &mallory, &[&bureau], &bank_datasets);
    let _mallory_node = NodeProcess::start(&mallory_toml, &d.join("mallory.log"));
    let args = psi("e2e-6", "intersection", &[]);
    let args: Vec<&str> =
        args.iter().map(|s| if s == bank_cfg { mallory_toml.to_str().unwrap() } else { s.as_str() }).collect();
    let err = fails(&args);
    assert!(err.contains("cannot connect to peer 'bureau'") && err.contains("consortium CA"), "{err}");

    // The peer is killed mid-protocol: reported promptly, no result file.
    let args = psi("e2e-7", "intersection", &[]);
    let args: Vec<&str> = args
        .iter()
        .map(|s| match s.as_str() {
            "customers" | "blacklist" => "big",
            other => other,
        })
        .collect();
    let mut session = Command::new(BIN).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    if let Some(status) = session.try_wait().unwrap() {
        let mut err = String::new();
        std::io::Read::read_to_string(session.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("the session should still be running, but ended with {status}: {err}");
    }
    drop(bureau_node.take()); // SIGKILL
    let killed_at = Instant::now();
    let status = loop {
        if let Some(status) = session.try_wait().unwrap() {
            break status;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "the requester hung after its peer died");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(session.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("bureau") && (err.contains("went away") || err.contains("cannot connect")), "{err}");
    assert!(killed_at.elapsed() < Duration::from_secs(10), "reported after {:?}", killed_at.elapsed());
    let leftovers: Vec<String> = std::fs::read_dir(d.join("results-bank"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("e2e-7") || n.starts_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
