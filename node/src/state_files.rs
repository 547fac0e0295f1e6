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
