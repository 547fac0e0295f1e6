//! The main job and the read-only ledger commands, run as a user would.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_stayput");

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run stayput");
    assert!(out.status.success(), "stayput {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn demo_runs_every_journey_and_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("demo");
    let out = run(&["demo", "--dir", kept.to_str().unwrap()]);
    for task in ["demo-psi-001", "demo-psi-002", "demo-psi-003"] {
        assert!(out.contains(task), "{out}");
    }
    assert_eq!(out.matches("matches the 300 planted").count(), 3, "{out}");
    assert!(out.contains("All journeys checked"), "{out}");
    // Results were written on each organisation's own node only.
    assert!(kept.join("bank/results/demo-psi-001.csv").exists());
    assert!(!kept.join("bank/results/demo-psi-002.csv").exists(), "cardinality mode writes no rows");
    assert!(kept.join("bureau/results/from-bank/demo-psi-003-blacklist.csv").exists());
    // A kept folder is never reused.
    let again = Command::new(BIN).args(["demo", "--dir", kept.to_str().unwrap()]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn ledger_commands_list_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(&["bench", "ledger", "--records", "20", "--writers", "4", "--dir", d.to_str().unwrap()]);
    let ledger = d.join("ledger.redb");
    let (ledger, operator) = (ledger.to_str().unwrap(), d.join("keys/operator.ed25519.pub"));
    let operator = operator.to_str().unwrap();
    let members = run(&["ledger", "members", "--ledger", ledger, "--operator", operator]);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!(members.contains("bureau") && members.contains("[data_owner]"), "{members}");
    let grants = run(&["ledger", "grants", "--ledger", ledger, "--operator", operator, "--grantee", "bank"]);
    assert!(grants.starts_with("g-bench") && grants.contains("blacklist → bank"), "{grants}");
    let none = run(&["ledger", "grants", "--ledger", ledger, "--operator", operator, "--grantee", "bureau"]);
    assert!(none.is_empty(), "{none}");
    let tasks = run(&["ledger", "tasks", "--ledger", ledger, "--operator", operator, "--requester", "bank"]);
    assert_eq!(tasks.lines().count(), 20, "{tasks}");
    let datasets = run(&["ledger", "datasets", "--ledger", ledger, "--operator", operator]);
    assert!(
        datasets.contains("blacklist") && datasets.contains("owner bureau") && datasets.contains("v1"),
        "{datasets}"
    );
    let trail = run(&["audit", "task", "bench-000000007", "--ledger", ledger, "--operator", operator]);
    assert!(trail.contains("task bench-000000007: psi by bank, submitted"), "{trail}");
    assert!(trail.contains("grant g-bench: blacklist → bank"), "{trail}");
    assert!(trail.contains("submitted") && trail.contains("by bank"), "{trail}");
    // The wrong operator key, and an unknown task, are refused with clear errors.
    let bank_key = d.join("keys/bank.ed25519.pub");
    let out = Command::new(BIN)
        .args(["ledger", "members", "--ledger", ledger, "--operator", bank_key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sealed by operator key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out =
        Command::new(BIN).args(["audit", "task", "nope", "--ledger", ledger, "--operator", operator]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("task 'nope' is not on the ledger"));
}
