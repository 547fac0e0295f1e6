//! Organisation signing keys on disk: `<org>.ed25519` holds the secret key
//! as hex (mode 0600), `<org>.ed25519.pub` the public key as hex.

use std::path::{Path, PathBuf};

use crate::LedgerError;
use crate::records::OrgKey;

fn key_err(path: &Path, reason: impl Into<String>) -> LedgerError {
    LedgerError::KeyFile { path: path.into(), reason: reason.into() }
}

/// Writes `<dir>/<org>.ed25519` (0600) and `<dir>/<org>.ed25519.pub`;
/// returns the secret key's path.
pub fn save(dir: &Path, org: &str, key: &OrgKey) -> Result<PathBuf, LedgerError> {
    std::fs::create_dir_all(dir).map_err(|e| key_err(dir, e.to_string()))?;
    let secret_path = dir.join(format!("{org}.ed25519"));
    let secret = zeroize::Zeroizing::new(hex::encode(key.to_secret_bytes().as_ref()));
    write_secret(&secret_path, secret.as_bytes())?;
    let public_path = dir.join(format!("{org}.ed25519.pub"));
    std::fs::write(&public_path, hex::encode(key.public_key())).map_err(|e| key_err(&public_path, e.to_string()))?;
    Ok(secret_path)
}

/// Creates `path` with mode 0600 (never replacing a file) and writes a
/// secret to it durably.
pub fn write_secret(path: &Path, secret: &[u8]) -> Result<(), LedgerError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| key_err(path, e.to_string()))?;
    file.write_all(secret).and_then(|()| file.sync_all()).map_err(|e| key_err(path, e.to_string()))
}

/// Reads a secret key file.
pub fn load(path: &Path) -> Result<OrgKey, LedgerError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?);
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), bytes.as_mut_slice())
        .map_err(|_| key_err(path, "not a 32-byte hex ed25519 secret key"))?;
    Ok(OrgKey::from_bytes(&bytes))
}

/// A public key given as 64 hex characters or as the path of a `.pub` file.
pub fn public_key(hex_or_path: &str) -> Result<[u8; 32], LedgerError> {
    let path = Path::new(hex_or_path);
    let text = if path.exists() {
        std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?
    } else {
        hex_or_path.to_owned()
    };
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|_| key_err(path, "give 64 hex characters or the path of a .ed25519.pub file"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let key = OrgKey::generate();
        let path = save(dir.path(), "bank", &key).unwrap();
        assert_eq!(load(&path).unwrap().public_key(), key.public_key());
        let public = dir.path().join("bank.ed25519.pub");
        assert_eq!(public_key(public.to_str().unwrap()).unwrap(), key.public_key());
        assert_eq!(public_key(&hex::encode(key.public_key())).unwrap(), key.public_key());
        assert!(public_key("nonsense").is_err());
        assert!(save(dir.path(), "bank", &key).is_err(), "never overwrites a key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
