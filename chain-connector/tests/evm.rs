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
        let anvil = Anvil::start().await.expect("anvil starts (./scripts/test installs it)");
        let mut signers = BTreeMap::new();
        for org in ["operator", "bank", "bureau", "hospital", "stranger", "bureau-twin"] {
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
        let config =
            EvmLedger::deploy(&self.anvil.url, self.signers[&org].clone(), &operator, operator_member).await.unwrap();
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

alloy::sol!(
    #[sol(rpc)]
    #[allow(missing_docs, clippy::all)]
    RawLedger,
    "contracts/StayputLedger.abi.json"
);

/// A member that bypasses the client and puts a badly signed record on
/// chain (the contract cannot check ed25519) cannot halt readers: the
/// record is quarantined and everything else still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badly_signed_record_on_chain_is_quarantined() {
    use alloy::network::EthereumWallet;
    use alloy::providers::{Provider, ProviderBuilder};
    use stayput_chain_connector::records::{DatasetVersion, Role};

    let backend = AnvilBackend::start().await;
    let (operator, bureau) = (OrgKey::generate(), OrgKey::generate());
    let member = |org: &str, key: &OrgKey, roles: &[Role]| Member {
        org: org.into(),
        name: org.into(),
        roles: roles.to_vec(),
        signing_key: key.public_key(),
        endpoint: String::new(),
    };
    let operator_member = member("operator", &operator, &[Role::Operator]);
    let config = EvmLedger::deploy(&backend.anvil.url, backend.signers["operator"].clone(), &operator, operator_member)
        .await
        .unwrap();
    let id = config.ledger_id();
    let accounts: BTreeMap<String, _> = backend.signers.iter().map(|(o, s)| (o.clone(), s.address())).collect();
    let ledger = EvmLedger::connect(config.clone(), backend.signers.clone(), accounts.clone()).unwrap();
    let admit = |org: &str, key: &OrgKey, roles: &[Role]| {
        SignedRecord::sign(Record::Member(member(org, key, roles)), "operator", &operator, &id)
    };
    ledger.submit(admit("bureau", &bureau, &[Role::DataOwner])).await.unwrap();

    // Straight to the contract from the bureau's account, signed with a stranger's ed25519 key.
    let forged = SignedRecord::sign(
        Record::DatasetVersion(DatasetVersion {
            dataset: "blacklist".into(),
            owner: "bureau".into(),
            version: 1,
            schema_digest: [1; 32],
            content_digest: [2; 32],
            protocol_key: None,
        }),
        "bureau",
        &OrgKey::generate(),
        &id,
    );
    assert!(matches!(
        ledger.submit(forged.clone()).await,
        Err(stayput_chain_connector::LedgerError::BadSignature { .. })
    ));
    let wallet = EthereumWallet::from(backend.signers["bureau"].clone());
    let provider = ProviderBuilder::new().wallet(wallet).connect_http(backend.anvil.url.parse().unwrap());
    let raw = RawLedger::new(config.contract, provider.clone());
    let pending = raw.submit(forged.to_bytes().into(), alloy::primitives::Address::ZERO).send().await.unwrap();
    assert!(pending.get_receipt().await.unwrap().status(), "the contract cannot see the bad signature");
    assert!(provider.get_block_number().await.unwrap() > config.deployed_at);

    // A fresh reader sets it aside and keeps going.
    let reader = EvmLedger::connect(config, BTreeMap::new(), accounts).unwrap();
    assert!(reader.datasets().await.unwrap().is_empty(), "the forged version is not applied");
    let quarantined = reader.quarantined().await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert!(quarantined[0].reason.contains("signature"), "{quarantined:?}");
    let hospital = OrgKey::generate();
    ledger.submit(admit("hospital", &hospital, &[Role::DataOwner])).await.unwrap();
    assert_eq!(reader.members().await.unwrap().len(), 3, "later records still apply");
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
