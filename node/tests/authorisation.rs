//! The node's own authorisation check against a real (embedded) ledger:
//! forged tasks, the wrong peer, a dataset borrowing another's grant, and
//! exhausted, expired and revoked grants are refused; serving writes the
//! use record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stayput_chain_connector::Ledger;
use stayput_chain_connector::conformance::{Backend, Consortium};
use stayput_chain_connector::embedded::EmbeddedLedger;
use stayput_chain_connector::records::{DatasetVersion, Member, OrgKey, Record, Task};
use stayput_node::NodeError;
use stayput_node::authorisation::{ServeRequest, check, kinds_for, record_use};
use stayput_psi::ecdh::OutputMode;

struct Embedded {
    dir: tempfile::TempDir,
    clock: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Backend for Embedded {
    async fn fresh(&self, operator: OrgKey, operator_member: Member) -> Arc<dyn Ledger> {
        let clock = self.clock.clone();
        let path = self.dir.path().join("ledger.redb");
        Arc::new(
            EmbeddedLedger::create(&path, operator, operator_member, Arc::new(move || clock.load(Ordering::SeqCst)))
                .unwrap(),
        )
    }

    async fn now(&self, _: &Arc<dyn Ledger>) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    async fn advance(&self, _: &Arc<dyn Ledger>, seconds: u64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
    }
}

/// What the serve path does with the ledger before a PSI session: the
/// check, then the use record.
async fn authorise(
    ledger: &dyn Ledger,
    own_org: &str,
    own_key: &OrgKey,
    request: &ServeRequest<'_>,
) -> Result<String, NodeError> {
    let grant = check(ledger, own_org, request).await?;
    record_use(ledger, own_org, own_key, request.task, &grant, (request.items, request.shard)).await?;
    Ok(grant)
}

fn request<'a>(task: &'a str, peer: &'a str, dataset: &'a str) -> ServeRequest<'a> {
    ServeRequest {
        task,
        peer,
        dataset,
        kinds: kinds_for(OutputMode::IntersectionToRequester),
        items: 10,
        columns: &[],
        key_columns: &[],
        shard: None,
    }
}

async fn refused(c: &Consortium, req: ServeRequest<'_>) -> String {
    match authorise(c.ledger.as_ref(), "bureau", &c.bureau.key, &req).await {
        Err(e @ NodeError::NotAuthorised { .. }) => e.to_string(),
        other => panic!("task '{}' should be refused, got {other:?}", req.task),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_only_what_the_ledger_authorises() {
    let backend = Embedded { dir: tempfile::tempdir().unwrap(), clock: Arc::new(AtomicU64::new(1_800_000_000)) };
    let c = Consortium::new(&backend).await;
    let now = backend.now(&c.ledger).await;
    c.ok(&c.bureau, c.grant("g", 2, 100, now + 86_400)).await;
    for t in ["t1", "t2", "t3"] {
        c.ok(&c.bank, c.task(t, &["g"])).await;
    }
    let [t1, t2, t3, t_rev, t_exp] = ["t1", "t2", "t3", "t-rev", "t-exp"].map(|t| c.task_id(t));

    // Authorised: the use is recorded, counting the items.
    let grant =
        authorise(c.ledger.as_ref(), "bureau", &c.bureau.key, &request(&t1, "bank", "blacklist")).await.unwrap();
    assert_eq!(grant, "g");
    let trail = c.ledger.task(&t1).await.unwrap().unwrap();
    assert_eq!(trail.uses.len(), 1);
    assert_eq!(trail.uses[0].0, "bureau");
    assert_eq!(c.ledger.grant("g").await.unwrap().unwrap().items, 10);
    // The same task is never served twice.
    assert!(refused(&c, request(&t1, "bank", "blacklist")).await.contains("served it under grant 'g' already"));
    // Cardinality output is allowed under a PSI task too.
    let mut card = request(&t2, "bank", "blacklist");
    card.kinds = kinds_for(OutputMode::CardinalityOnly);
    authorise(c.ledger.as_ref(), "bureau", &c.bureau.key, &card).await.unwrap();

    // A forged task, sent straight to the node.
    assert!(refused(&c, request("forged", "bank", "blacklist")).await.contains("not on the ledger"));
    // The right task, the wrong peer.
    assert!(refused(&c, request(&t1, "hospital", "blacklist")).await.contains("requested by 'bank'"));
    // Uses exhausted (two of two taken above).
    assert!(refused(&c, request(&t3, "bank", "blacklist")).await.contains("used all of its 2 uses"));

    // A task for another dataset cannot borrow a grant.
    c.ok(
        &c.hospital,
        Record::DatasetVersion(DatasetVersion {
            dataset: "records".into(),
            owner: "hospital".into(),
            version: 1,
            schema_digest: [1; 32],
            content_digest: [2; 32],
            protocol_key: None,
        }),
    )
    .await;
    c.ok(&c.bureau, c.grant("g2", 5, 100, now + 86_400)).await;
    let both = Task::new(c.request_for("t-both", &["blacklist", "records"]), vec!["g2".into()]);
    let t_both = both.id.clone();
    c.ok(&c.bank, Record::Task(both)).await;
    assert!(refused(&c, request(&t1, "bank", "records")).await.contains("does not read dataset 'records'"));
    let by_hospital = ServeRequest {
        task: &t_both,
        peer: "bank",
        dataset: "records",
        kinds: kinds_for(OutputMode::IntersectionToRequester),
        items: 1,
        columns: &[],
        key_columns: &[],
        shard: None,
    };
    let err = authorise(c.ledger.as_ref(), "hospital", &c.hospital.key, &by_hospital).await.unwrap_err();
    assert!(err.to_string().contains("none of its grants covers dataset 'records'"), "{err}");

    // Revoked, then expired.
    c.ok(&c.bank, c.task("t-rev", &["g2"])).await;
    c.ok(&c.bureau, Record::RevokeGrant { grant: "g2".into() }).await;
    assert!(refused(&c, request(&t_rev, "bank", "blacklist")).await.contains("revoked"));
    c.ok(&c.bureau, c.grant("g3", 5, 100, now + 100)).await;
    c.ok(&c.bank, c.task("t-exp", &["g3"])).await;
    backend.advance(&c.ledger, 200).await;
    assert!(refused(&c, request(&t_exp, "bank", "blacklist")).await.contains("expired"));
    // Nothing refused left a use behind.
    assert!(c.ledger.task(&t_rev).await.unwrap().unwrap().uses.is_empty());
    assert!(c.ledger.task(&t_exp).await.unwrap().unwrap().uses.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_ledger_means_unavailable_not_refused() {
    // Nothing listens on this port: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect_lazy();
    let ledger = stayput_node::ledger_client::RemoteLedger::new(channel, OrgKey::generate().public_key());
    let err = authorise(&ledger, "bureau", &OrgKey::generate(), &request("t1", "bank", "blacklist")).await.unwrap_err();
    assert!(matches!(err, NodeError::LedgerUnavailable(_)), "{err:?}");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
}
