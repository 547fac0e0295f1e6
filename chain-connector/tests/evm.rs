//! The EVM backend against a real anvil node (the pinned npm build, started
//! on a free loopback port and stopped by the test): the same conformance
//! suite as the embedded ledger, unchanged; and the committed contract
//! artifacts are what the pinned solc makes of the source.

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::signers::local::PrivateKeySigner;
use stayput_chain_connector::Ledger;
use stayput_chain_connector::conformance::{self, Backend};
use stayput_chain_connector::evm::{Anvil, EvmLedger};
use stayput_chain_connector::records::{Member, OrgKey, Record, SignedRecord};

struct AnvilBackend {
    anvil: Anvil,
    signers: BTreeMap<String, PrivateKeySigner>,
}

impl AnvilBackend {
    async fn start() -> Self {
        let anvil = Anvil::start().expect("anvil starts (./scripts/test installs it)");
        let mut signers = BTreeMap::new();
        for org in ["operator", "bank", "bureau", "hospital", "stranger"] {
            let signer = PrivateKeySigner::random();
            anvil.fund(signer.address()).await.unwrap();
            signers.insert(org.to_owned(), signer);
        }
        Self { anvil, signers }
    }
}

#[async_trait::async_trait]
impl Backend for AnvilBackend {
    async fn fresh(&self, operator: OrgKey, operator_member: Member) -> Arc<dyn Ledger> {
        let org = operator_member.org.clone();
        let genesis = SignedRecord::sign(Record::Member(operator_member), &org, &operator);
        let config = EvmLedger::deploy(&self.anvil.url, self.signers[&org].clone(), &genesis).await.unwrap();
        let accounts = self.signers.iter().map(|(o, s)| (o.clone(), s.address())).collect();
        Arc::new(EvmLedger::connect(config, self.signers.clone(), accounts).unwrap())
    }

    async fn now(&self, _: &Arc<dyn Ledger>) -> u64 {
        self.anvil.now().await.unwrap()
    }

    async fn advance(&self, _: &Arc<dyn Ledger>, seconds: u64) {
        self.anvil.advance(seconds).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_anvil() {
    conformance::run_all(&AnvilBackend::start().await).await;
}

#[test]
fn contract_artifacts_match_the_source() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts");
    let out = std::process::Command::new("node")
        .arg(dir.join("build.mjs"))
        .arg("--check")
        .output()
        .expect("node runs (./scripts/test installs the pinned solc)");
    assert!(
        out.status.success(),
        "recompiling StayputLedger.sol with the pinned solc does not reproduce the committed ABI and bytecode:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
