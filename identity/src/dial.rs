//! Dialling a member of the consortium by organisation name, and the
//! deadline every call between processes shares.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::{IdentityError, TlsMaterial};

/// The deadline of every call between processes, on both ends (a client's
/// call and a server's handling of it, until the response begins): the
/// longest honest call — a site's contribution waiting for its peers'
/// shares, the coordinator's homomorphic evaluation — ends well within it,
/// and nothing waits longer on a peer that stopped answering. Streams are
/// bounded further by the node's idle timeout between messages.
pub const CALL_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// Opens a mutually authenticated channel to `endpoint`, which must present
/// a certificate for organisation `org` under the consortium CA: TLS
/// verifies the peer's certificate names that organisation, so reaching
/// the endpoint proves whom it reached. Calls on the channel carry
/// [`CALL_DEADLINE`]; HTTP/2 keep-alives notice a dead connection sooner.
pub async fn dial(tls: &TlsMaterial, org: &str, endpoint: &str) -> Result<Channel, IdentityError> {
    let connect_err = |detail: String| IdentityError::Connect { peer: org.into(), endpoint: endpoint.into(), detail };
    Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| connect_err(e.to_string()))?
        .tls_config(tls.client(org))
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(CALL_DEADLINE)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|e| connect_err(error_chain(&e)))
}

/// What a member's endpoint says where its shard's index goes: an
/// organisation that runs a task as shards runs one node per shard, and
/// its endpoint names them all, e.g. `https://psi-{shard}.bank.svc:7101`
/// for the pods of a Kubernetes Indexed Job.
pub const SHARD_PLACEHOLDER: &str = "{shard}";

/// The endpoint of shard `shard` of a member whose endpoint is `endpoint`
/// (an endpoint without [`SHARD_PLACEHOLDER`] is the same for every shard;
/// a task of one session goes to shard 0).
pub fn shard_endpoint(endpoint: &str, shard: u32) -> String {
    endpoint.replace(SHARD_PLACEHOLDER, &shard.to_string())
}

/// Whether `endpoint` names one node per shard.
pub fn names_shards(endpoint: &str) -> bool {
    endpoint.contains(SHARD_PLACEHOLDER)
}

/// An error and its sources on one line (TLS failures hide the useful part
/// in a source).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TlsPaths, generate_ca, issue_org_certificate, write_certified_key};

    #[tokio::test]
    async fn a_member_that_does_not_answer_is_named_with_its_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca("test").unwrap();
        write_certified_key(dir.path(), "ca", &ca).unwrap();
        write_certified_key(dir.path(), "bank", &issue_org_certificate(&ca, "bank", &[]).unwrap()).unwrap();
        let tls = TlsMaterial::load(&TlsPaths {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("bank.pem"),
            key: dir.path().join("bank.key"),
        })
        .unwrap();
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = format!("https://127.0.0.1:{port}");
        let err = dial(&tls, "bureau", &endpoint).await.unwrap_err();
        assert!(matches!(&err, IdentityError::Connect { peer, .. } if peer == "bureau"), "{err}");
        assert!(err.to_string().contains(&endpoint), "{err}");
        let err = dial(&tls, "bureau", "not a url").await.unwrap_err();
        assert!(matches!(err, IdentityError::Connect { .. }), "{err}");
    }

    #[test]
    fn shards_are_dialled_by_index() {
        let template = "https://psi-{shard}.bank.svc:7101";
        assert!(names_shards(template));
        assert_eq!(shard_endpoint(template, 3), "https://psi-3.bank.svc:7101");
        assert_eq!(shard_endpoint("https://127.0.{shard}.2:7101", 0), "https://127.0.0.2:7101");
        assert!(!names_shards("https://bank:7101"));
        assert_eq!(shard_endpoint("https://bank:7101", 2), "https://bank:7101");
    }
}
