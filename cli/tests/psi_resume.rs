//! A PSI task over 2^22 keys a side, run in parts, survives the death of
//! either node: `examples/consortium/` as separate processes on a real
//! anvil chain, the bank's `stayput task psi --protocol kkrt` (then
//! `rr22`), and while its parts run, one node killed with SIGKILL and
//! started again. The
//! coordinator runs the task again, both nodes resume from their last
//! completed part, and the task ends with the same rows as the plain
//! intersection and one use record by the bureau.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use stayput_chain_connector::evm::Anvil;
use support::{ok, stayput_in};

/// Keys a side: four parts of 2^20.
const KEYS: u32 = 1 << 22;
/// The bureau's keys start here, so the common keys are `OFFSET..KEYS`.
const OFFSET: u32 = 3 << 20;

fn write_ids(path: &Path, range: std::ops::Range<u32>) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "national_id,note").unwrap();
    for i in range {
        writeln!(out, "N{i:08},{}", i % 97).unwrap();
    }
    out.flush().unwrap();
}

/// Waits until `path` exists.
fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn submit(d: &Path, protocol: &str) -> String {
    let out = support::bank_psi(d, "blacklist-a", &["--protocol", protocol, "--no-wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).expect("the task id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psi_task_in_parts_resumes_after_either_node_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let anvil = Anvil::start().await.expect("anvil (installed by ./scripts/test)");
    let ports = support::copy_example(d, &anvil.url);
    write_ids(&d.join("data/applicants.csv"), 0..KEYS);
    write_ids(&d.join("data/blacklist-a.csv"), OFFSET..OFFSET + KEYS);
    let mut running = support::start_consortium(d, ports);
    ok(d, &["consortium", "publish", "--config", "bureau-a.toml", "--dataset", "blacklist-a"]);
    let grant = [
        "consortium",
        "grant",
        "--config",
        "bureau-a.toml",
        "--id",
        "g-big",
        "--dataset",
        "blacklist-a",
        "--grantee",
        "bank",
        "--allow",
        "psi",
        "--columns",
        "national_id",
        "--max-items",
        "100000000",
    ];
    ok(d, &grant);

    // Each OT protocol runs in parts the same way: KKRT loses the bureau,
    // RR22 the bank.
    for (victim, index, protocol) in [("bureau-a", 2, "kkrt"), ("bank", 1, "rr22")] {
        let task = submit(d, protocol);
        // Killed once the bank kept its second part: parts 0 and 1 are
        // done on its disk, the bureau may be serving part 2.
        let kept = d.join("state/bank/psi-progress/requester").join(&task);
        wait_for(&kept.join("part-1"), "the bank's second part");
        running[index].kill_and_restart();

        let out = stayput_in(d, &["task", "watch", &task, "--config", "bank.toml"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{victim} killed: {text}{}\nbank log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(d.join("bank.log")).unwrap_or_default()
        );
        let common = KEYS - OFFSET;
        assert!(text.contains(&format!("succeeded: {common} common keys")), "{victim} killed: {text}");

        // The same rows as the plain intersection.
        let rows = std::fs::read_to_string(d.join("results/bank").join(format!("{task}.csv"))).unwrap();
        let mut ids: Vec<&str> = rows.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids.len(), common as usize, "{victim} killed");
        assert_eq!(ids.first().copied(), Some(format!("N{OFFSET:08}").as_str()));
        assert_eq!(ids.last().copied(), Some(format!("N{:08}", KEYS - 1).as_str()));
        ids.dedup();
        assert_eq!(ids.len(), common as usize, "no row twice");

        // It resumed: the bureau says so in its log (its first log, or the
        // one it wrote after its restart).
        let bureau_logs: String = ["bureau-a.log", "bureau-a.log.restarted"]
            .iter()
            .map(|log| std::fs::read_to_string(d.join(log)).unwrap_or_default())
            .collect();
        assert!(
            bureau_logs.lines().any(|l| l.contains("psi session resumed") && l.contains(&task)),
            "{victim} killed: the bureau never resumed the task:\n{bureau_logs}"
        );

        // One use, by the bureau; the result checks against the ledger;
        // neither node keeps the split key once the task is done.
        let trail = ok(d, &["audit", "task", &task, "--config", "bank.toml"]);
        assert_eq!(trail.matches("use of grant g-big").count(), 1, "{trail}");
        assert!(trail.contains("matches the digest on the ledger"), "{trail}");
        assert!(!kept.exists(), "the bank's progress is removed with its key");
        let served = d.join("state/bureau-a/psi-progress/responder").join(format!("{task}-blacklist-a"));
        assert!(!served.exists(), "the bureau's progress is removed");
    }
}
