//! The main job and the read-only ledger commands, run as a user would.

use std::process::Command;
#[cfg(unix)]
use std::process::Stdio;

const BIN: &str = env!("CARGO_BIN_EXE_stayput");

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run stayput");
    assert!(out.status.success(), "stayput {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts `stayput <args>`, waits until it listens, sends it SIGTERM and
/// checks it shuts down cleanly and exits 0 (within 60 s).
#[cfg(unix)]
fn stop_with_sigterm(args: &[&str]) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.last().is_some_and(|l: &String| l.contains("listening on")) {
        match lines.next() {
            Some(line) => seen.push(line.unwrap()),
            None => panic!("stayput {args:?} stopped before it listened: {seen:?}"),
        }
    }
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("stayput {args:?} did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    seen.extend(lines.map_while(Result::ok));
    assert!(status.success(), "stayput {args:?} exited with {status}: {seen:?}");
    assert!(seen.iter().any(|l| l.contains("SIGTERM: shutting down")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("stopped cleanly")), "{seen:?}");
}

#[test]
fn demo_runs_every_journey_and_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("demo");
    let out = run(&["demo", "--dir", kept.to_str().unwrap()]);
    assert!(out.contains("10 members, 13 dataset versions"), "{out}");
    assert!(out.contains("trained on the 2700 customers both hold"), "{out}");
    assert!(out.contains("scored 450 of 500 applicants") && out.contains("not held by bureau-a"), "{out}");
    assert!(out.contains("use of grant g-profiles-bank for 500 items") && out.contains("model share used"), "{out}");
    assert!(out.contains("bureau-a lists 40 of them (40 planted)"), "{out}");
    assert!(out.contains("bureau-b lists 25 of them (25 planted)"), "{out}");
    assert!(out.contains("10 applicants are on both lists (10 planted)"), "{out}");
    assert!(out.contains("the overturned one no longer"), "{out}");
    assert!(out.contains("recorded a use of 1000 ids"), "{out}");
    assert!(out.contains("matches the merged tables") && out.contains("regression(systolic_bp ~ age + bmi)"), "{out}");
    assert!(out.contains("300 applicants listed — matches the 300 planted"), "{out}");
    assert!(out.contains("120 applicants — matches the 120 planted"), "{out}");
    assert!(out.contains("refused before anything ran") && out.contains("allows psi_cardinality but not psi"), "{out}");
    assert!(out.contains("matches the digest on the ledger"), "{out}");
    assert!(out.contains("recorded a use of 2 records under grant g-stations-climate: one per lookup"), "{out}");
    assert!(out.contains("ST9999,absent"), "{out}");
    assert!(out.contains("no node's log line names the station"), "{out}");
    assert!(out.contains("All journeys checked"), "{out}");
    // Results were written on the receiver's node only; secrets are 0600.
    let results: Vec<_> =
        std::fs::read_dir(kept.join("bank/results")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(results.iter().filter(|n| n.to_string_lossy().ends_with(".csv")).count(), 6, "{results:?}");
    assert!(!kept.join("bureau-a/results").exists(), "the bureau holds no result");
    assert!(!kept.join("hospital-a/results").exists(), "no hospital holds a result");
    assert_eq!(
        std::fs::read_dir(kept.join("research/results")).unwrap().count(),
        4,
        "result, evidence, the salt of its commitment, outcome marker"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for secret in ["keys/bank.ed25519", "keys/bank.key", "keys/operator.ed25519", "keys/ca.key"] {
            let mode = std::fs::metadata(kept.join(secret)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{secret}");
        }
    }
    // Started from the kept folder as a service manager would, the
    // coordinator and a node stop cleanly on SIGTERM: the ledger is closed,
    // so the read-only audit below opens it (it refuses a ledger that was
    // not closed cleanly).
    #[cfg(unix)]
    {
        stop_with_sigterm(&["coordinator", "--config", kept.join("operator/coordinator.toml").to_str().unwrap()]);
        stop_with_sigterm(&["node", "--config", kept.join("bank/node.toml").to_str().unwrap()]);
    }
    // The kept ledger verifies offline and audits the task with its result.
    let (ledger, operator) = (kept.join("operator/ledger.redb"), kept.join("keys/operator.ed25519.pub"));
    let verified =
        run(&["audit", "verify", "--ledger", ledger.to_str().unwrap(), "--operator", operator.to_str().unwrap()]);
    assert!(verified.contains("verifies"), "{verified}");
    let task = out.split("task t-").nth(1).unwrap().split(':').next().unwrap();
    let task = format!("t-{task}");
    let audit = |task: &str, result: std::path::PathBuf| {
        run(&[
            "audit",
            "task",
            task,
            "--ledger",
            ledger.to_str().unwrap(),
            "--operator",
            operator.to_str().unwrap(),
            "--result",
            result.to_str().unwrap(),
        ])
    };
    let trail = audit(&task, kept.join(format!("bank/results/{task}.csv")));
    assert!(trail.contains("use of grant g-a-bank") && trail.contains("matches the digest"), "{trail}");
    // The lookup's result is checked against the salted commitment.
    let before = out.split("lab's node asked").next().unwrap();
    let lookup = before.rsplit("task ").next().unwrap().split(':').next().unwrap().to_owned();
    let trail = audit(&lookup, kept.join(format!("climate/results/{lookup}.csv")));
    // Metered as one record per lookup: the records are sealed, and each
    // OPRF evaluation opens at most one.
    let expected = "use of grant g-stations-climate for 2 items";
    assert!(trail.contains(expected) && trail.contains("matches"), "{trail}");
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
    let task = tasks.lines().nth(7).and_then(|l| l.split_whitespace().next()).unwrap().to_owned();
    let trail = run(&["audit", "task", &task, "--ledger", ledger, "--operator", operator]);
    assert!(trail.contains(&format!("task {task}: psi by bank, submitted")), "{trail}");
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

#[test]
fn bench_stats_prints_every_phase() {
    let out = run(&["bench", "stats", "--sites", "2", "--rows", "5000"]);
    for phase in ["local scan", "commitments + proofs", "sharing + aggregation", "verify proofs", "end to end"] {
        assert!(out.contains(phase), "{out}");
    }
}

#[test]
fn bench_blacklist_prints_its_figures() {
    let out = run(&["bench", "blacklist", "--entries", "2000", "--query", "100", "--bureaus", "2"]);
    for figure in ["bureau precompute", "encoded set", "online, one bureau", "(50 listed ids found)", "balanced PSI"] {
        assert!(out.contains(figure), "{out}");
    }
}
