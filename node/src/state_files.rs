//! Files under a node's `state_dir`: the versions it serves and its caches
//! of other organisations' published data, read and written atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::{NodeConfig, NodeError};

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|source| NodeError::ReadFile { path: path.into(), source })
}

/// Writes `parts` one after another to `path` atomically (replacing it).
pub(crate) fn write_atomic(path: &Path, parts: &[&[u8]]) -> Result<(), NodeError> {
    let io_err = |source| NodeError::WriteFile { path: path.into(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let mut temp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir).map_err(io_err)?;
    for bytes in parts {
        temp.write_all(bytes).map_err(io_err)?;
    }
    temp.as_file().sync_all().map_err(io_err)?;
    temp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// The cache file (`<dataset>.v<version>.<extension>` under
/// `<state_dir>/cache/`) of another organisation's dataset; the name comes
/// from the ledger, so it is checked to be a plain name first.
pub(crate) fn cache_file(
    config: &NodeConfig,
    dataset: &str,
    version: u32,
    extension: &str,
) -> Result<PathBuf, NodeError> {
    crate::wire::check_task_id(dataset).map_err(|_| {
        NodeError::InvalidConfig(format!(
            "a dataset name on the ledger is not a plain name ({} bytes); refusing to cache it",
            dataset.len()
        ))
    })?;
    Ok(config.state_dir.join("cache").join(format!("{dataset}.v{version}.{extension}")))
}

/// Files a node serves to peers whole (encoded sets, PIR hints), read and
/// checked against the ledger once and then shared by every call: a stream
/// hands out slices of one buffer, so neither memory nor a session permit
/// grows with the number of callers — or with callers that open a stream
/// and do not read it. A few versions are kept, the oldest loaded dropped
/// first.
#[derive(Debug, Default)]
pub struct ServedFiles {
    files: std::sync::Mutex<Vec<(PathBuf, tonic::codegen::Bytes)>>,
}

/// Versions kept in memory at once (a dataset's current and previous one,
/// for a few datasets).
const SERVED_FILES_KEPT: usize = 6;

impl ServedFiles {
    /// The bytes of `path`: from memory, or by `load` (which reads and
    /// checks them; run it off the async executor), kept only if it
    /// succeeds.
    pub(crate) fn get_or_load(
        &self,
        path: &Path,
        load: impl FnOnce() -> Result<Vec<u8>, NodeError>,
    ) -> Result<tonic::codegen::Bytes, NodeError> {
        if let Some((_, bytes)) = self.files.lock().expect("served files").iter().find(|(p, _)| p == path) {
            return Ok(bytes.clone());
        }
        let bytes = tonic::codegen::Bytes::from(load()?);
        let mut files = self.files.lock().expect("served files");
        if !files.iter().any(|(p, _)| p == path) {
            if files.len() >= SERVED_FILES_KEPT {
                files.remove(0);
            }
            files.push((path.to_owned(), bytes.clone()));
        }
        Ok(bytes)
    }
}

/// An OPRF key file (0600), created on first use.
pub fn oprf_key(path: &Path) -> Result<stayput_psi::oprf::OprfKey, NodeError> {
    match read_oprf_key(path) {
        Err(NodeError::ReadFile { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let key = stayput_psi::oprf::OprfKey::random(&mut rand::rngs::OsRng);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| NodeError::WriteFile { path: dir.into(), source })?;
            }
            stayput_chain_connector::keys::write_secret(path, key.to_bytes().as_slice())
                .map_err(|e| NodeError::InvalidConfig(format!("cannot write the OPRF key {}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "created an OPRF key");
            Ok(key)
        }
        other => other,
    }
}

/// An existing OPRF key file.
pub fn read_oprf_key(path: &Path) -> Result<stayput_psi::oprf::OprfKey, NodeError> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|source| NodeError::ReadFile { path: path.into(), source })?,
    );
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| NodeError::InvalidConfig(format!("{} is not a 32-byte OPRF key", path.display())))?;
    Ok(stayput_psi::oprf::OprfKey::from_bytes(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_files_load_once_and_keep_only_checked_bytes() {
        let served = ServedFiles::default();
        let mut loads = 0;
        for _ in 0..3 {
            let bytes = served
                .get_or_load(Path::new("/a"), || {
                    loads += 1;
                    Ok(vec![1, 2, 3])
                })
                .unwrap();
            assert_eq!(&bytes[..], &[1, 2, 3]);
        }
        assert_eq!(loads, 1, "read once, shared afterwards");
        // A load that fails its check is not kept.
        assert!(served.get_or_load(Path::new("/b"), || Err(NodeError::Busy { max: 1 })).is_err());
        assert_eq!(&served.get_or_load(Path::new("/b"), || Ok(vec![9])).unwrap()[..], &[9]);
        // Old versions make way.
        for i in 0..SERVED_FILES_KEPT + 2 {
            served.get_or_load(&PathBuf::from(format!("/v{i}")), || Ok(vec![0])).unwrap();
        }
        assert_eq!(served.files.lock().unwrap().len(), SERVED_FILES_KEPT);
    }
}
