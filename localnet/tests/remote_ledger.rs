//! The embedded ledger served by the coordinator over mutual TLS on
//! loopback, used through a node's verifying client: the conformance suite
//! unchanged; submissions of other organisations' records refused; and a
//! write acknowledged but dropped by the service caught.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stayput_chain_connector::Ledger;
use stayput_chain_connector::conformance::{self, Backend};
use stayput_chain_connector::embedded::EmbeddedLedger;
use stayput_chain_connector::records::{Member, OrgKey, Record, SignedRecord};
use stayput_coordinator::ledger_service::LedgerServer;
use stayput_identity::{TlsMaterial, TlsPaths, generate_ca, issue_org_certificate, write_certified_key};
use stayput_node::ledger_client::RemoteLedger;
use stayput_proto::v1::ledger_service_server::LedgerServiceServer;

/// Certificates for `orgs` under one CA in `dir`.
fn certificates(dir: &Path, orgs: &[&str]) {
    let ca = generate_ca("test").unwrap();
    write_certified_key(dir, "ca", &ca).unwrap();
    for org in orgs {
        write_certified_key(dir, org, &issue_org_certificate(&ca, org, &["127.0.0.1".into()]).unwrap()).unwrap();
    }
}

fn tls(dir: &Path, org: &str) -> TlsMaterial {
    TlsMaterial::load(&TlsPaths {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{org}.pem")),
        key: dir.join(format!("{org}.key")),
    })
    .unwrap()
}

/// Serves `ledger` as the operator on a loopback port; returns its URL.
async fn serve(dir: &Path, ledger: Arc<EmbeddedLedger>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .tls_config(tls(dir, "operator").server())
        .unwrap()
        .add_service(LedgerServiceServer::new(LedgerServer::new(ledger, "operator")));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    url
}

async fn client(dir: &Path, as_org: &str, url: &str, operator: [u8; 32]) -> RemoteLedger {
    let channel = stayput_identity::dial(&tls(dir, as_org), "operator", url).await.unwrap();
    RemoteLedger::new(channel, operator)
}

struct Served {
    dir: tempfile::TempDir,
    clock: Arc<AtomicU64>,
    counter: AtomicU64,
}

#[async_trait::async_trait]
impl Backend for Served {
    async fn fresh(&self, operator: OrgKey, operator_member: Member) -> Arc<dyn Ledger> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let public = operator.public_key();
        let clock = self.clock.clone();
        let path = self.dir.path().join(format!("ledger-{n}.redb"));
        let ledger =
            EmbeddedLedger::create(&path, operator, operator_member, Arc::new(move || clock.load(Ordering::SeqCst)))
                .unwrap();
        let url = serve(self.dir.path(), Arc::new(ledger)).await;
        // The suite submits every organisation's records, so it speaks as the operator.
        Arc::new(client(self.dir.path(), "operator", &url, public).await)
    }

    async fn now(&self, _: &Arc<dyn Ledger>) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    async fn advance(&self, _: &Arc<dyn Ledger>, seconds: u64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_through_the_service() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), &["operator", "bank"]);
    let backend = Served { dir, clock: Arc::new(AtomicU64::new(1_800_000_000)), counter: AtomicU64::new(0) };
    conformance::run_all(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_submit_only_their_own_records() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), &["operator", "bank"]);
    let (operator, bank) = (OrgKey::generate(), OrgKey::generate());
    let member = |org: &str, key: &OrgKey, roles| Member {
        org: org.into(),
        name: org.into(),
        roles,
        signing_key: key.public_key(),
        endpoint: String::new(),
    };
    use stayput_chain_connector::records::Role;
    let ledger = EmbeddedLedger::create(
        &dir.path().join("ledger.redb"),
        OrgKey::from_bytes(&operator.to_secret_bytes()),
        member("operator", &operator, vec![Role::Operator]),
        Arc::new(|| 1_800_000_000),
    )
    .unwrap();
    let url = serve(dir.path(), Arc::new(ledger)).await;
    let as_operator = client(dir.path(), "operator", &url, operator.public_key()).await;
    let id = as_operator.identity().await.unwrap();
    let admit =
        SignedRecord::sign(Record::Member(member("bank", &bank, vec![Role::Requester])), "operator", &operator, &id);
    as_operator.submit(admit).await.unwrap();

    // The bank's connection may not pass off the operator's record as its own.
    let as_bank = client(dir.path(), "bank", &url, operator.public_key()).await;
    assert_eq!(as_bank.members().await.unwrap().len(), 2, "the bank reads the verified replica");
    let other =
        SignedRecord::sign(Record::Member(member("bank", &bank, vec![Role::Regulator])), "operator", &operator, &id);
    let err = as_bank.submit(other).await.unwrap_err();
    assert!(err.to_string().contains("may submit only its own records"), "{err}");

    // A client that trusts another operator key refuses the whole chain.
    let misled = client(dir.path(), "bank", &url, OrgKey::generate().public_key()).await;
    let err = misled.members().await.unwrap_err();
    assert!(matches!(err, stayput_chain_connector::LedgerError::Corrupt { height: 0, .. }), "{err}");
}

/// A ledger service that acknowledges every write and keeps none of them,
/// serving the real chain otherwise.
struct Forgetful(LedgerServer);

#[tonic::async_trait]
impl stayput_proto::v1::ledger_service_server::LedgerService for Forgetful {
    async fn submit(
        &self,
        _: tonic::Request<stayput_proto::v1::SubmitRecordRequest>,
    ) -> Result<tonic::Response<stayput_proto::v1::SubmitRecordResponse>, tonic::Status> {
        Ok(tonic::Response::new(stayput_proto::v1::SubmitRecordResponse {
            height: 1,
            index: 0,
            record_hash: vec![0; 32].into(),
        }))
    }

    async fn blocks(
        &self,
        request: tonic::Request<stayput_proto::v1::BlocksRequest>,
    ) -> Result<tonic::Response<stayput_proto::v1::BlocksResponse>, tonic::Status> {
        self.0.blocks(request).await
    }
}

/// A hostile operator's service acknowledges a write and drops it: the
/// member's client checks its verified chain and says the record was not
/// written, rather than going on as if it were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_write_counts_only_once_the_verified_chain_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), &["operator", "bank"]);
    let operator = OrgKey::generate();
    let member = |org: &str, key: &OrgKey| Member {
        org: org.into(),
        name: org.into(),
        roles: vec![stayput_chain_connector::records::Role::Operator],
        signing_key: key.public_key(),
        endpoint: String::new(),
    };
    let ledger = Arc::new(
        EmbeddedLedger::create(
            &dir.path().join("ledger.redb"),
            OrgKey::from_bytes(&operator.to_secret_bytes()),
            member("operator", &operator),
            Arc::new(|| 1_800_000_000),
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .tls_config(tls(dir.path(), "operator").server())
        .unwrap()
        .add_service(LedgerServiceServer::new(Forgetful(LedgerServer::new(ledger, "operator"))));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    let client = client(dir.path(), "operator", &url, operator.public_key()).await;
    let bank = OrgKey::generate();
    let admit = SignedRecord::sign(
        Record::Member(Member {
            roles: vec![stayput_chain_connector::records::Role::Requester],
            ..member("bank", &bank)
        }),
        "operator",
        &operator,
        &client.identity().await.unwrap(),
    );
    let err = client.submit(admit).await.unwrap_err();
    assert!(err.to_string().contains("does not hold it: it was not written"), "{err}");
    assert_eq!(client.members().await.unwrap().len(), 1, "nothing was written");
    // (The honest service's acknowledgements pass the same check: the
    // conformance suite above runs every write through it.)
}

/// A member cannot make the chain unfetchable by writing large records:
/// blocks stop at `MAX_BLOCK_BYTES` of records, a page of the service at
/// `MAX_PAGE_BYTES`, and a fresh replica syncs the whole chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_keep_blocks_and_pages_bounded() {
    use stayput_chain_connector::block::MAX_BLOCK_BYTES;
    use stayput_coordinator::ledger_service::MAX_PAGE_BYTES;
    use stayput_proto::v1::ledger_service_server::LedgerService as _;
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), &["operator"]);
    let operator = OrgKey::generate();
    let member = |org: String, name: String, roles| Member {
        org,
        name,
        roles,
        signing_key: operator.public_key(),
        endpoint: String::new(),
    };
    use stayput_chain_connector::records::Role;
    let ledger = Arc::new(
        EmbeddedLedger::create(
            &dir.path().join("ledger.redb"),
            OrgKey::from_bytes(&operator.to_secret_bytes()),
            member("operator".into(), "operator".into(), vec![Role::Operator]),
            Arc::new(|| 1_800_000_000),
        )
        .unwrap(),
    );
    // 8,400 records of about 4 KB (a field's limit), all at once: 36 MB
    // that one block would otherwise hold.
    const RECORDS: usize = 8_400;
    let writes = (0..RECORDS).map(|i| {
        let record = Record::Member(member(format!("org-{i:04}"), "n".repeat(4_000), vec![Role::Requester]));
        let ledger = ledger.clone();
        let signed = SignedRecord::sign(record, "operator", &operator, &ledger.id());
        tokio::spawn(async move { ledger.submit(signed).await })
    });
    for write in writes.collect::<Vec<_>>() {
        write.await.unwrap().unwrap();
    }
    let (blocks, _) = ledger.blocks_after(None, usize::MAX, usize::MAX).unwrap();
    assert!(blocks.len() >= 5, "{} blocks", blocks.len());
    for block in &blocks {
        assert!(block.len() <= MAX_BLOCK_BYTES + (1 << 16), "a block of {} bytes", block.len());
    }
    // One page of the service is bounded in bytes, not only in blocks.
    let service = LedgerServer::new(ledger.clone(), "operator");
    let page = service
        .blocks(tonic::Request::new(stayput_proto::v1::BlocksRequest { after: None, limit: 256 }))
        .await
        .unwrap()
        .into_inner();
    let bytes: usize = page.blocks.iter().map(|b| b.len()).sum();
    assert!(bytes <= MAX_PAGE_BYTES && page.blocks.len() < blocks.len(), "{bytes} bytes in one page");
    // A fresh replica fetches and verifies all of it.
    let url = serve(dir.path(), ledger).await;
    let replica = client(dir.path(), "operator", &url, operator.public_key()).await;
    assert_eq!(replica.members().await.unwrap().len(), RECORDS + 1);
}
