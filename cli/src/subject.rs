//! `stayput subject`: a person's own keys, made on their own device.
//!
//! `stayput subject keys` creates the TFHE key pair under which
//! institutions encrypt the person's features for a credit score
//! ([`stayput_mpc_engine::score`]): `subject.key`, the secret key (0600,
//! never to leave the device), and `subject.pub`, the public key and the
//! server key a scorer evaluates with (to publish). `--rotate` replaces an
//! existing pair: scores computed under the old one can no longer be read
//! by anyone.

use std::path::{Path, PathBuf};

use stayput_mpc_engine::score::SubjectKeys;

use crate::error::CliError;

/// The secret key file's name.
pub const SECRET_FILE: &str = "subject.key";
/// The public file's name.
pub const PUBLIC_FILE: &str = "subject.pub";

/// Creates (or, with `rotate`, replaces) the key pair in `dir`; returns
/// what to tell the person.
pub fn keys(dir: &Path, rotate: bool) -> Result<String, CliError> {
    let (secret_path, public_path) = (dir.join(SECRET_FILE), dir.join(PUBLIC_FILE));
    if secret_path.exists() && !rotate {
        return Err(CliError::Usage(format!(
            "{} already holds a key pair; pass --rotate to replace it (scores made under the old pair become unreadable)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, &e))?;
    let (keys, public) = SubjectKeys::generate().map_err(|e| CliError::Usage(e.to_string()))?;
    let secret = keys.to_bytes().map_err(|e| CliError::Usage(e.to_string()))?;
    write_atomically(&secret_path, &secret, 0o600)?;
    write_atomically(&public_path, &public.to_bytes(), 0o644)?;
    Ok(format!(
        "key pair {} {}: secret key {} (keep it on this device), public file {} ({:.1} MB, to publish)",
        hex::encode(public.key_id),
        if rotate { "replaces the earlier one" } else { "created" },
        secret_path.display(),
        public_path.display(),
        std::fs::metadata(&public_path).map_err(|e| write_err(&public_path, &e))?.len() as f64 / 1e6
    ))
}

fn write_err(path: &Path, e: &std::io::Error) -> CliError {
    CliError::Usage(format!("cannot write {}: {e}", path.display()))
}

/// Writes beside `path` with `mode`, syncs, then renames into place: a
/// crash leaves the old file or the new one, never half of either.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary: PathBuf = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|e| write_err(&temporary, &e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| write_err(&temporary, &e))?;
    std::fs::rename(&temporary, path).map_err(|e| write_err(path, &e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use stayput_mpc_engine::score::SubjectPublic;

    use super::*;

    #[test]
    fn keys_are_made_private_and_replaced_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let said = keys(dir.path(), false).unwrap();
        let secret = dir.path().join(SECRET_FILE);
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        let first = SubjectKeys::from_bytes(&std::fs::read(&secret).unwrap()).unwrap();
        let public = SubjectPublic::from_bytes(&std::fs::read(dir.path().join(PUBLIC_FILE)).unwrap()).unwrap();
        assert_eq!(first.key_id(), public.key_id);
        assert!(said.contains(&hex::encode(public.key_id)), "{said}");

        let err = keys(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("pass --rotate"), "{err}");
        keys(dir.path(), true).unwrap();
        let second = SubjectKeys::from_bytes(&std::fs::read(&secret).unwrap()).unwrap();
        assert_ne!(second.key_id(), first.key_id(), "rotation makes a new pair");
    }
}
