//! `examples/consortium/` followed step by step, as its README tells an
//! operator to, on a copy whose ports are moved to free ones: a real anvil
//! chain, `stayput consortium deploy|admit|publish|grant`, `stayput
//! coordinator` and three `stayput node` processes on the EVM backend, each
//! organisation writing from its own account; the bank's `stayput task psi`
//! end to end; `stayput audit task` checking the result against the digest
//! on chain; a task without a grant refused with nothing recorded.

mod support;

use stayput_chain_connector::evm::Anvil;
use support::{copy_example, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_consortium_runs_psi_across_processes_on_anvil() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let anvil = Anvil::start().await.expect("anvil (installed by ./scripts/test)");
    let [coordinator_port, bank_port, bureau_a_port, bureau_b_port] = copy_example(d, &anvil.url);

    let _running = support::start_consortium(d, [coordinator_port, bank_port, bureau_a_port, bureau_b_port]);

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
    let psi = |peer_dataset: &str| support::bank_psi(d, peer_dataset, &[]);
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
