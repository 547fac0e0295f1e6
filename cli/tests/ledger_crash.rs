//! The embedded ledger across a crash: a writer process is SIGKILLed while
//! records stream in; on reopening, every record it acknowledged is there,
//! the chain verifies (no half-written block is visible) and it takes new
//! records. Then the audit commands on the survivor.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stayput_chain_connector::Ledger;
use stayput_chain_connector::embedded::{EmbeddedLedger, Snapshot, system_clock};
use stayput_chain_connector::keys;
use stayput_chain_connector::records::{Record, SignedRecord};

const BIN: &str = env!("CARGO_BIN_EXE_stayput");

#[test]
fn acknowledged_records_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut writer = Command::new(BIN)
        .args(["bench", "ledger", "--records", "300000", "--writers", "64", "--print-acks", "--dir"])
        .arg(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.len() < 5000 {
        assert!(Instant::now() < deadline, "the writer acknowledged too little in time");
        let line = lines.next().expect("the writer is still running").unwrap();
        if let Some(hash) = line.strip_prefix("ack ") {
            acked.push(hash.to_owned());
        }
    }
    writer.kill().unwrap(); // SIGKILL, mid-stream
    writer.wait().unwrap();
    // Acknowledgements already in the pipe were given before the kill.
    acked.extend(lines.map_while(Result::ok).filter_map(|l| l.strip_prefix("ack ").map(str::to_owned)));
    assert!(acked.len() < 300_000, "the kill came too late to test anything");

    let ledger_path = d.join("ledger.redb");
    let operator_public = keys::public_key(d.join("keys/operator.ed25519.pub").to_str().unwrap()).unwrap();
    // An auditor's read-only open does not modify the file; it says who recovers it.
    let err = Snapshot::open(&ledger_path, &operator_public).unwrap_err();
    assert!(err.to_string().contains("not closed cleanly"), "{err}");
    // The operator's process restarts: redb recovers, the chain re-verifies.
    let operator = keys::load(&d.join("keys/operator.ed25519")).unwrap();
    drop(EmbeddedLedger::open(&ledger_path, operator, system_clock()).expect("the chain verifies after the crash"));
    let snapshot = Snapshot::open(&ledger_path, &operator_public).unwrap();
    let mut hash = [0u8; 32];
    for h in &acked {
        hex::decode_to_slice(h, &mut hash).unwrap();
        assert!(snapshot.locate(&hash).is_some(), "acknowledged record {h} was lost");
    }
    let summary = snapshot.summary();
    assert!(summary.records >= acked.len() as u64);
    drop(snapshot);

    // The survivor takes new records.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let operator = keys::load(&d.join("keys/operator.ed25519")).unwrap();
        let ledger = Arc::new(EmbeddedLedger::open(&ledger_path, operator, system_clock()).unwrap());
        let bank = keys::load(&d.join("keys/bank.ed25519")).unwrap();
        // Some of the benchmark's tasks may have landed before the kill.
        let landed = ledger.tasks(Some("bank")).await.unwrap();
        let task = landed.first().map_or_else(|| "t-000000000000000000000000".to_owned(), |t| t.task.id.clone());
        let record = Record::TaskStatus { task, status: stayput_chain_connector::records::TaskStatus::Cancelled };
        let receipt = ledger.submit(SignedRecord::sign(record, "bank", &bank, &ledger.id())).await;
        match receipt {
            Ok(r) => assert_eq!(r.height, summary.blocks),
            Err(e) => assert!(e.to_string().contains("unknown task"), "{e}"),
        }
    });

    // Audit commands on the survivor.
    let out = Command::new(BIN)
        .args(["audit", "verify", "--ledger"])
        .arg(&ledger_path)
        .args(["--operator", d.join("keys/operator.ed25519.pub").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verifies"));
    let proof = d.join("proof.bin");
    let out = Command::new(BIN)
        .args(["audit", "prove", "--ledger"])
        .arg(&ledger_path)
        .args(["--operator", d.join("keys/operator.ed25519.pub").to_str().unwrap(), "--record", &acked[0], "--out"])
        .arg(&proof)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verify = |key: &str| {
        Command::new(BIN).args(["audit", "verify", "--proof"]).arg(&proof).args(["--operator", key]).output().unwrap()
    };
    let out = verify(d.join("keys/operator.ed25519.pub").to_str().unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&acked[0]));
    let out = verify(d.join("keys/bank.ed25519.pub").to_str().unwrap());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seal does not verify"));
}
