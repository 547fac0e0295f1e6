//! Mutual TLS: where a process's TLS material lives, the loaded material as
//! tonic server and client configurations, and who is calling.
//!
//! A server requires a client certificate under the consortium CA; a
//! client requires the server's certificate to chain to the CA *and* name
//! the organisation it meant to reach. Either way the other side's
//! organisation is the name in its certificate, and nothing else.

use std::path::PathBuf;

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::IdentityError;
use crate::certificate::{PrivateKeyPem, read_text};

/// Paths of a process's TLS material: the `[tls]` section of a node's or
/// the coordinator's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The consortium CA certificate (PEM).
    pub ca: PathBuf,
    /// This organisation's certificate (PEM).
    pub cert: PathBuf,
    /// This organisation's private key (PEM).
    pub key: PathBuf,
}

/// TLS material loaded from disk, ready for servers and clients.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Certificate,
    identity: Identity,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial(<redacted>)")
    }
}

impl TlsMaterial {
    /// Loads the CA certificate, own certificate and own key.
    pub fn load(paths: &TlsPaths) -> Result<Self, IdentityError> {
        let ca = read_text(&paths.ca)?;
        let cert = read_text(&paths.cert)?;
        let key = PrivateKeyPem::new(read_text(&paths.key)?);
        for (path, text) in [(&paths.ca, &ca), (&paths.cert, &cert)] {
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                return Err(IdentityError::NotPem { path: path.clone(), what: "certificate" });
            }
        }
        if !key.expose().contains("PRIVATE KEY-----") {
            return Err(IdentityError::NotPem { path: paths.key.clone(), what: "private key" });
        }
        Ok(Self { ca: Certificate::from_pem(ca), identity: Identity::from_pem(cert, key.expose()) })
    }

    /// Server side: our identity, and client certificates required under the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone()).client_ca_root(self.ca.clone())
    }

    /// Client side: the peer must present a certificate for `org` under the CA.
    pub fn client(&self, org: &str) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone()).domain_name(org)
    }
}

/// The organisation a verified client certificate names (its subject CN).
pub fn caller_org<T>(request: &tonic::Request<T>) -> Result<String, IdentityError> {
    let certs = request.peer_certs().ok_or(IdentityError::NoClientCertificate)?;
    let leaf = certs.first().ok_or(IdentityError::NoClientCertificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| IdentityError::BadClientCertificate(format!("cannot be parsed ({e})")))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| IdentityError::BadClientCertificate("has no common name".into()))?;
    Ok(cn.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate_ca, issue_org_certificate, write_certified_key};

    #[test]
    fn loads_what_was_written_and_names_a_file_that_is_not_pem() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_ca("test").unwrap();
        write_certified_key(dir.path(), "ca", &ca).unwrap();
        write_certified_key(dir.path(), "bank", &issue_org_certificate(&ca, "bank", &[]).unwrap()).unwrap();
        let paths = |cert: &str| TlsPaths {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join(cert),
            key: dir.path().join("bank.key"),
        };
        TlsMaterial::load(&paths("bank.pem")).unwrap();
        let err = TlsMaterial::load(&paths("bank.key")).unwrap_err();
        assert!(matches!(&err, IdentityError::NotPem { what: "certificate", .. }), "{err}");
        assert!(err.to_string().contains("bank.key"), "{err}");
        let err = TlsMaterial::load(&paths("missing.pem")).unwrap_err();
        assert!(matches!(err, IdentityError::ReadFile { .. }), "{err}");
    }

    #[test]
    fn a_request_without_a_client_certificate_has_no_caller() {
        let err = caller_org(&tonic::Request::new(())).unwrap_err();
        assert!(matches!(err, IdentityError::NoClientCertificate), "{err}");
    }
}
