//! The EVM backend against a real anvil node (the pinned npm build, started
//! on a free loopback port like a FISCO BCOS chain — paris, chain id 20200,
//! gas price 0 — and stopped by the test), reached through a loopback proxy
//! that answers as FISCO BCOS's web3 endpoint does (`eth_getLogs` clipped to
//! 10 blocks, no `eth_feeHistory`, `eth_sendTransaction` or `eth_sign`): the
//! same conformance suite as the embedded ledger, unchanged; a hostile
//! endpoint's forged answers, each caught; a reorganisation rolled back;
//! and the committed contract artifacts are what the pinned solc makes of
//! the source.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::signers::local::PrivateKeySigner;
use stayput_chain_connector::Ledger;
use stayput_chain_connector::conformance::{self, Backend};
use stayput_chain_connector::evm::{Anvil, EndpointTls, EvmConfig, EvmLedger};
use stayput_chain_connector::records::{Member, OrgKey, Record, Role, SignedRecord};
use support::fisco_proxy::{FiscoProxy, Tamper};

/// A member record for `org` with `key` and `roles`.
fn member(org: &str, key: &OrgKey, roles: &[Role]) -> Member {
    Member {
        org: org.into(),
        name: org.into(),
        roles: roles.to_vec(),
        signing_key: key.public_key(),
        endpoint: String::new(),
    }
}

struct AnvilBackend {
    anvil: Anvil,
    proxy: FiscoProxy,
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
        let proxy = FiscoProxy::start(&anvil.url, None).await;
        Self { anvil, proxy, signers }
    }

    fn accounts(&self) -> BTreeMap<String, alloy::primitives::Address> {
        self.signers.iter().map(|(o, s)| (o.clone(), s.address())).collect()
    }

    /// Deploys a consortium whose operator is `operator`.
    async fn deploy(&self, operator: &OrgKey) -> EvmConfig {
        let operator_member = member("operator", operator, &[Role::Operator]);
        EvmLedger::deploy(&self.proxy.url, None, self.signers["operator"].clone(), operator, operator_member)
            .await
            .unwrap()
    }
}

#[async_trait::async_trait]
impl Backend for AnvilBackend {
    async fn fresh(&self, operator: OrgKey, operator_member: Member) -> Arc<dyn Ledger> {
        let org = operator_member.org.clone();
        let config = EvmLedger::deploy(&self.proxy.url, None, self.signers[&org].clone(), &operator, operator_member)
            .await
            .unwrap();
        Arc::new(EvmLedger::connect(config, self.signers.clone(), self.accounts()).unwrap())
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
    use stayput_chain_connector::records::DatasetVersion;

    let backend = AnvilBackend::start().await;
    let (operator, bureau) = (OrgKey::generate(), OrgKey::generate());
    let operator_member = member("operator", &operator, &[Role::Operator]);
    let config =
        EvmLedger::deploy(&backend.proxy.url, None, backend.signers["operator"].clone(), &operator, operator_member)
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
    let provider = ProviderBuilder::new()
        .wallet(wallet)
        .connect_reqwest(support::fisco_proxy::plain_http_client(), backend.anvil.url.parse().unwrap());
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

/// A consortium on the chain: operator, bureau (data owner) and bank, a
/// dataset and a grant to the bank, written through the honest proxy.
async fn small_consortium(backend: &AnvilBackend) -> (EvmConfig, OrgKey, EvmLedger) {
    use stayput_chain_connector::records::{Computation, DatasetVersion, Grant};
    let (operator, bureau, bank) = (OrgKey::generate(), OrgKey::generate(), OrgKey::generate());
    let config = backend.deploy(&operator).await;
    let id = config.ledger_id();
    let ledger = EvmLedger::connect(config.clone(), backend.signers.clone(), backend.accounts()).unwrap();
    for (org, key, role) in [("bureau", &bureau, Role::DataOwner), ("bank", &bank, Role::Requester)] {
        let admit = SignedRecord::sign(Record::Member(member(org, key, &[role])), "operator", &operator, &id);
        ledger.submit(admit).await.unwrap();
    }
    let version = DatasetVersion {
        dataset: "blacklist".into(),
        owner: "bureau".into(),
        version: 1,
        schema_digest: [1; 32],
        content_digest: [2; 32],
        protocol_key: None,
    };
    ledger.submit(SignedRecord::sign(Record::DatasetVersion(version), "bureau", &bureau, &id)).await.unwrap();
    let grant = Grant {
        id: "g".into(),
        dataset: "blacklist".into(),
        grantee: "bank".into(),
        computations: vec![Computation::Psi],
        columns: vec![],
        min_cohort: 0,
        max_uses: 5,
        max_items: 100,
        max_items_per_use: 100,
        expires_at: u64::MAX,
        epsilon_budget: 0,
    };
    ledger.submit(SignedRecord::sign(Record::Grant(grant), "bureau", &bureau, &id)).await.unwrap();
    (config, bureau, ledger)
}

/// A reader of `config` through a proxy that tampers with answers.
async fn tampered_reader(backend: &AnvilBackend, config: &EvmConfig, tamper: Tamper) -> (FiscoProxy, EvmLedger) {
    let proxy = FiscoProxy::start(&backend.anvil.url, Some(tamper)).await;
    let config = EvmConfig { rpc_url: proxy.url.clone(), ..config.clone() };
    (proxy, EvmLedger::connect(config, BTreeMap::new(), backend.accounts()).unwrap())
}

/// The sequence number a `Recorded` log carries (its first indexed topic).
fn topic_seq(log: &serde_json::Value) -> Option<u64> {
    let topic = log["topics"][1].as_str()?.trim_start_matches("0x");
    u64::from_str_radix(&topic[topic.len().saturating_sub(16)..], 16).ok()
}

/// What a hostile RPC endpoint answers is checked against the trust anchor
/// a reader pins (chain id, contract, deployment block, operator key) and
/// the contract's own count: a hidden revocation, another chain, an
/// invented consortium and a faked acknowledgement are each caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_endpoint_is_caught() {
    let backend = AnvilBackend::start().await;
    let (config, bureau, ledger) = small_consortium(&backend).await;
    let id = config.ledger_id();
    let revoke = SignedRecord::sign(Record::RevokeGrant { grant: "g".into() }, "bureau", &bureau, &id);
    ledger.submit(revoke).await.unwrap();
    assert!(ledger.grant("g").await.unwrap().unwrap().revoked);

    // Hiding the revocation — the newest record, sequence number 5 after
    // the genesis, two members, the version and the grant — from
    // eth_getLogs: the page falls short of the contract's count, and the
    // blocks' receipts give the record back.
    let hide_log: Tamper = Arc::new(move |method, _, answer| {
        if method == "eth_getLogs"
            && let Some(logs) = answer["result"].as_array_mut()
        {
            logs.retain(|l| topic_seq(l) != Some(5));
        }
    });
    let (_proxy, reader) = tampered_reader(&backend, &config, hide_log).await;
    assert!(reader.grant("g").await.unwrap().unwrap().revoked, "the receipts hold the revocation");
    // Hidden from the receipts too: the reader refuses the endpoint.
    let hide_everywhere: Tamper = Arc::new(move |method, _, answer| {
        let logs = match method {
            "eth_getLogs" => answer["result"].as_array_mut(),
            "eth_getTransactionReceipt" => answer["result"]["logs"].as_array_mut(),
            _ => None,
        };
        if let Some(logs) = logs {
            logs.retain(|l| topic_seq(l) != Some(5));
        }
    });
    let (_proxy, reader) = tampered_reader(&backend, &config, hide_everywhere).await;
    let err = reader.grant("g").await.unwrap_err().to_string();
    assert!(err.contains("omits records"), "{err}");

    // Another chain behind the same address.
    let other_chain: Tamper = Arc::new(|method, _, answer| {
        if method == "eth_chainId" {
            answer["result"] = serde_json::json!("0x1");
        }
    });
    let (_proxy, reader) = tampered_reader(&backend, &config, other_chain).await;
    let err = reader.members().await.unwrap_err().to_string();
    assert!(err.contains("not the pinned chain 20200"), "{err}");

    // An invented consortium: a contract whose genesis admits another operator.
    let invented = backend.deploy(&OrgKey::generate()).await;
    let pinned = EvmConfig { operator_key: config.operator_key, ..invented };
    let reader = EvmLedger::connect(pinned, BTreeMap::new(), backend.accounts()).unwrap();
    let err = reader.members().await.unwrap_err().to_string();
    assert!(err.contains("does not admit the pinned operator key"), "{err}");

    // A receipt stripped of the record's log is no acknowledgement.
    let strip: Tamper = Arc::new(|method, _, answer| {
        if method == "eth_getTransactionReceipt" && answer["result"].is_object() {
            answer["result"]["logs"] = serde_json::json!([]);
        }
    });
    let proxy = FiscoProxy::start(&backend.anvil.url, Some(strip)).await;
    let stripped = EvmConfig { rpc_url: proxy.url.clone(), ..config.clone() };
    let writer = EvmLedger::connect(stripped, backend.signers.clone(), backend.accounts()).unwrap();
    let version = stayput_chain_connector::records::DatasetVersion {
        dataset: "blacklist".into(),
        owner: "bureau".into(),
        version: 2,
        schema_digest: [1; 32],
        content_digest: [3; 32],
        protocol_key: None,
    };
    let record = SignedRecord::sign(Record::DatasetVersion(version), "bureau", &bureau, &id);
    let err = writer.submit(record).await.unwrap_err().to_string();
    assert!(err.contains("no Recorded event of this contract carries the record"), "{err}");
}

/// A reorganisation that takes away a record the replica applied rolls the
/// replica back: the revocation it held is gone once the chain drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorganisation_rolls_the_replica_back() {
    let backend = AnvilBackend::start().await;
    let (config, bureau, ledger) = small_consortium(&backend).await;
    let snapshot = backend.anvil.snapshot().await.unwrap();
    let revoke = SignedRecord::sign(Record::RevokeGrant { grant: "g".into() }, "bureau", &bureau, &config.ledger_id());
    ledger.submit(revoke).await.unwrap();
    let reader = EvmLedger::connect(config, BTreeMap::new(), backend.accounts()).unwrap();
    assert!(reader.grant("g").await.unwrap().unwrap().revoked);
    backend.anvil.revert(snapshot).await.unwrap();
    backend.anvil.advance(1).await.unwrap();
    backend.anvil.advance(1).await.unwrap();
    assert!(!reader.grant("g").await.unwrap().unwrap().revoked, "the dropped revocation is rolled back");
}

/// An https endpoint that asks for a client certificate, as a chain node
/// across a network does: reached with the consortium's CA pinned and the
/// organisation's certificate; an endpoint whose certificate another CA
/// issued is refused, and so is a client without a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_is_reached_under_the_pinned_ca() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use stayput_identity::{generate_ca, issue_org_certificate};

    let backend = AnvilBackend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = generate_ca("chain").unwrap();
    let server = issue_org_certificate(&ca, "rpc", &["localhost".into()]).unwrap();
    let client = issue_org_certificate(&ca, "operator", &[]).unwrap();
    let ring = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring.clone()).build().unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(ring)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(server.key_pem.expose().as_bytes()).unwrap(),
        )
        .unwrap();
    let proxy =
        FiscoProxy::start_tls(&backend.anvil.url, tokio_rustls::TlsAcceptor::from(Arc::new(server_config))).await;
    assert!(proxy.url.starts_with("https://"));
    let tls = EndpointTls {
        ca: write("ca.pem", &ca.cert_pem),
        cert: Some(write("client.pem", &client.cert_pem)),
        key: Some(write("client.key", client.key_pem.expose())),
    };

    let operator = OrgKey::generate();
    let operator_member = member("operator", &operator, &[Role::Operator]);
    let config = EvmLedger::deploy(
        &proxy.url,
        Some(tls.clone()),
        backend.signers["operator"].clone(),
        &operator,
        operator_member,
    )
    .await
    .unwrap();
    let ledger = EvmLedger::connect(config.clone(), backend.signers.clone(), backend.accounts()).unwrap();
    let bank = member("bank", &OrgKey::generate(), &[Role::Requester]);
    let admit = SignedRecord::sign(Record::Member(bank.clone()), "operator", &operator, &config.ledger_id());
    ledger.submit(admit).await.unwrap();
    assert_eq!(ledger.member("bank").await.unwrap(), Some(bank));

    let other_ca = generate_ca("elsewhere").unwrap();
    let elsewhere = EndpointTls { ca: write("other-ca.pem", &other_ca.cert_pem), ..tls.clone() };
    let wrong_ca = EvmConfig { tls: Some(elsewhere), ..config.clone() };
    let err = EvmLedger::connect(wrong_ca, BTreeMap::new(), backend.accounts())
        .unwrap()
        .member("bank")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("eth_chainId"), "the first call fails on the handshake: {err}");
    let anonymous = EvmConfig { tls: Some(EndpointTls { cert: None, key: None, ..tls }), ..config };
    let refused = EvmLedger::connect(anonymous, BTreeMap::new(), backend.accounts()).unwrap().member("bank").await;
    assert!(refused.is_err(), "an endpoint that asks for a client certificate refuses a client without one");
}
