//! The identity crate's one error type. Messages say what was wrong and
//! what to do; they never carry a private key.

use std::path::PathBuf;

/// Everything identity and dialling can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    /// A certificate or key file could not be written.
    #[error("cannot write {path}: {source}")]
    WriteFile { path: PathBuf, source: std::io::Error },
    /// A TLS path names a file that is not what it should hold.
    #[error(
        "{path} holds no PEM {what}; point the [tls] section at the files `stayput keys` wrote under the consortium CA"
    )]
    NotPem { path: PathBuf, what: &'static str },
    /// Generating or signing a certificate failed.
    #[error("cannot create certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// An organisation name that cannot be a DNS name in a certificate.
    #[error(
        "organisation name '{org}' must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-' (it is the DNS name in the organisation's certificate)"
    )]
    BadOrgName { org: String },
    /// A call without a client certificate (TLS without mutual
    /// authentication).
    #[error(
        "the caller presented no client certificate; call with mutual TLS and a certificate issued by the consortium CA"
    )]
    NoClientCertificate,
    /// A verified client certificate that names no organisation.
    #[error("the caller's client certificate {0}; use a certificate issued by `stayput keys org`")]
    BadClientCertificate(String),
    /// Dialling a member failed: unreachable, or TLS did not verify.
    #[error(
        "cannot connect to peer '{peer}' at {endpoint}: {detail}. Check that the peer's process runs at that address and that both certificates come from the same consortium CA"
    )]
    Connect { peer: String, endpoint: String, detail: String },
}

impl IdentityError {
    /// The gRPC code of this failure when it ends a call: a caller without
    /// a usable certificate is denied, an unreachable peer is unavailable,
    /// a failure of this process's own TLS files is internal.
    pub fn code(&self) -> tonic::Code {
        match self {
            IdentityError::NoClientCertificate | IdentityError::BadClientCertificate(_) => {
                tonic::Code::PermissionDenied
            }
            IdentityError::Connect { .. } => tonic::Code::Unavailable,
            IdentityError::BadOrgName { .. } => tonic::Code::InvalidArgument,
            IdentityError::ReadFile { .. }
            | IdentityError::WriteFile { .. }
            | IdentityError::NotPem { .. }
            | IdentityError::Certificate(_) => tonic::Code::Internal,
        }
    }

    /// Whether the failure is about this process's own files or key
    /// material — something a remote caller is told only as "local", with
    /// the cause left in this process's log.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            IdentityError::ReadFile { .. }
                | IdentityError::WriteFile { .. }
                | IdentityError::NotPem { .. }
                | IdentityError::Certificate(_)
        )
    }
}

/// The status a remote caller is sent: the message as it is, except for a
/// failure of this process's own TLS files, which is said to be local.
impl From<IdentityError> for tonic::Status {
    fn from(err: IdentityError) -> Self {
        let message = if err.is_local() {
            "this process could not use its own TLS material; its operator has the cause in its log".to_owned()
        } else {
            err.to_string()
        };
        tonic::Status::new(err.code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_told_no_local_path() {
        let read = IdentityError::ReadFile {
            path: "/srv/operator/keys/operator.key".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let status = tonic::Status::from(read);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("/srv/operator"), "{status:?}");
        let status = tonic::Status::from(IdentityError::NoClientCertificate);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("client certificate"), "{status:?}");
    }
}
