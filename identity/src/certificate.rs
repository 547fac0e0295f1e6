//! The consortium CA and each organisation's certificate.
//!
//! Keys are ECDSA P-256, generated with `rcgen` (ring). An organisation's
//! certificate names it as subject common name and as DNS name (plus the
//! hosts its process is reached at) and is valid as both TLS server and
//! client, so one certificate serves an organisation's node both ways.
//! Private keys are written with mode 0600, zeroized on drop and never
//! logged.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use zeroize_pem::SecretPem;

use crate::IdentityError;

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
pub fn generate_ca(consortium: &str) -> Result<CertifiedKey, IdentityError> {
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
/// or IP addresses the organisation's process is reached at).
pub fn issue_org_certificate(ca: &CertifiedKey, org: &str, hosts: &[String]) -> Result<CertifiedKey, IdentityError> {
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

/// Organisation names double as DNS names in certificates: 1-63 characters
/// of `a-z 0-9 -`, not starting or ending with `-`.
pub fn check_org_name(org: &str) -> Result<(), IdentityError> {
    let ok = !org.is_empty()
        && org.len() <= 63
        && org.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !org.starts_with('-')
        && !org.ends_with('-');
    if ok { Ok(()) } else { Err(IdentityError::BadOrgName { org: org.to_owned() }) }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Stayput consortium");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes a certificate (0644) and its key (0600) as `<stem>.pem` and
/// `<stem>.key` in `dir`.
pub fn write_certified_key(dir: &Path, stem: &str, ck: &CertifiedKey) -> Result<(), IdentityError> {
    std::fs::create_dir_all(dir).map_err(|source| IdentityError::WriteFile { path: dir.into(), source })?;
    write_file(&dir.join(format!("{stem}.pem")), ck.cert_pem.as_bytes(), 0o644)?;
    write_file(&dir.join(format!("{stem}.key")), ck.key_pem.expose().as_bytes(), 0o600)
}

/// Reads a certificate and key written by [`write_certified_key`].
pub fn read_certified_key(dir: &Path, stem: &str) -> Result<CertifiedKey, IdentityError> {
    let cert_pem = read_text(&dir.join(format!("{stem}.pem")))?;
    let key_pem = SecretPem::new(read_text(&dir.join(format!("{stem}.key")))?);
    Ok(CertifiedKey { cert_pem, key_pem })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| IdentityError::WriteFile { path: path.into(), source };
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

pub(crate) fn read_text(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::ReadFile { path: path.into(), source })
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
            let err = check_org_name(bad).unwrap_err();
            assert!(matches!(&err, IdentityError::BadOrgName { org } if org == bad), "{bad}: {err}");
        }
        let ca = generate_ca("test").unwrap();
        assert!(matches!(issue_org_certificate(&ca, "Bank", &[]), Err(IdentityError::BadOrgName { .. })));
    }
}
