//! Organisation identity on the wire: the consortium CA, each
//! organisation's TLS certificate, and who is calling.
//!
//! Every process-to-process call is mutually authenticated TLS 1.3 (rustls)
//! under one consortium CA. An organisation's certificate carries its name
//! as the subject common name and as a DNS name, so a node dials a peer by
//! organisation name and the TLS handshake proves it reached that
//! organisation; servers read the caller's organisation from its client
//! certificate ([`caller_org`]).
//!
//! Keys are ECDSA P-256, generated with `rcgen` (ring). Private keys are
//! written with mode 0600 and never logged.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use zeroize_pem::SecretPem;

use crate::NodeError;
use crate::config::TlsPaths;

/// A PEM certificate and its PEM private key.
pub struct CertifiedKey {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM; zeroized on drop.
    pub key_pem: SecretPem,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// A new self-signed consortium CA.
pub fn generate_ca(consortium: &str) -> Result<CertifiedKey, NodeError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(&format!("{consortium} consortium CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: SecretPem::new(key.serialize_pem()) })
}

/// A certificate for organisation `org`, signed by the CA, valid as both
/// TLS server and client, for the organisation name plus `hosts` (DNS names
/// or IP addresses the node is reached at).
pub fn issue_org_certificate(ca: &CertifiedKey, org: &str, hosts: &[String]) -> Result<CertifiedKey, NodeError> {
    check_org_name(org)?;
    let ca_key = KeyPair::from_pem(ca.key_pem.expose())?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::new(vec![org.to_owned()])?;
    for host in hosts {
        params.subject_alt_names.push(match host.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into()?),
        });
    }
    params.distinguished_name = name(org);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: SecretPem::new(key.serialize_pem()) })
}

/// Organisation names double as DNS names in certificates.
pub fn check_org_name(org: &str) -> Result<(), NodeError> {
    let ok = !org.is_empty()
        && org.len() <= 63
        && org.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !org.starts_with('-')
        && !org.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NodeError::InvalidConfig(format!(
            "organisation name '{org}' must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        )))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Stayput consortium");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes a certificate (0644) and its key (0600) as `<stem>.pem` and
/// `<stem>.key` in `dir`.
pub fn write_certified_key(dir: &Path, stem: &str, ck: &CertifiedKey) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir).map_err(|source| NodeError::WriteFile { path: dir.into(), source })?;
    write_file(&dir.join(format!("{stem}.pem")), ck.cert_pem.as_bytes(), 0o644)?;
    write_file(&dir.join(format!("{stem}.key")), ck.key_pem.expose().as_bytes(), 0o600)
}

/// Reads a certificate and key written by [`write_certified_key`].
pub fn read_certified_key(dir: &Path, stem: &str) -> Result<CertifiedKey, NodeError> {
    let cert_pem = read_text(&dir.join(format!("{stem}.pem")))?;
    let key_pem = SecretPem::new(read_text(&dir.join(format!("{stem}.key")))?);
    Ok(CertifiedKey { cert_pem, key_pem })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NodeError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| NodeError::WriteFile { path: path.into(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(mode);
    let mut file = options.open(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

fn read_text(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|source| NodeError::ReadFile { path: path.into(), source })
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
    pub fn load(paths: &TlsPaths) -> Result<Self, NodeError> {
        let ca = read_text(&paths.ca)?;
        let cert = read_text(&paths.cert)?;
        let key = SecretPem::new(read_text(&paths.key)?);
        for (path, text, what) in [(&paths.ca, &ca, "CERTIFICATE"), (&paths.cert, &cert, "CERTIFICATE")] {
            if !text.contains(&format!("-----BEGIN {what}-----")) {
                return Err(NodeError::Tls(format!("{} holds no PEM certificate", path.display())));
            }
        }
        if !key.expose().contains("PRIVATE KEY-----") {
            return Err(NodeError::Tls(format!("{} holds no PEM private key", paths.key.display())));
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
pub fn caller_org<T>(request: &tonic::Request<T>) -> Result<String, NodeError> {
    let certs = request.peer_certs().ok_or(NodeError::NoClientCertificate)?;
    let leaf = certs.first().ok_or(NodeError::NoClientCertificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| NodeError::Tls(format!("unparsable client certificate: {e}")))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| NodeError::Tls("client certificate has no common name".into()))?;
    Ok(cn.to_owned())
}

mod zeroize_pem {
    use zeroize::Zeroizing;

    /// A PEM private key: zeroized on drop, redacted in `Debug`.
    #[derive(Clone)]
    pub struct SecretPem(Zeroizing<String>);

    impl SecretPem {
        /// Wraps a PEM string.
        pub fn new(pem: String) -> Self {
            Self(Zeroizing::new(pem))
        }

        /// The PEM text, for handing to a TLS library.
        pub fn expose(&self) -> &str {
            &self.0
        }
    }

    impl std::fmt::Debug for SecretPem {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SecretPem(<redacted>)")
        }
    }
}

pub use zeroize_pem::SecretPem as PrivateKeyPem;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_certificates_and_writes_keys_privately() {
        let ca = generate_ca("test").unwrap();
        let org = issue_org_certificate(&ca, "bank", &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(org.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(format!("{:?}", org.key_pem), "SecretPem(<redacted>)");
        let dir = tempfile::tempdir().unwrap();
        write_certified_key(dir.path(), "bank", &org).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("bank.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = read_certified_key(dir.path(), "bank").unwrap();
        assert_eq!(back.cert_pem, org.cert_pem);
    }

    #[test]
    fn org_names_are_dns_labels() {
        assert!(check_org_name("bureau-a").is_ok());
        for bad in ["", "Bank", "a b", "-x", "x-", "bank.com"] {
            assert!(check_org_name(bad).is_err(), "{bad}");
        }
    }
}
