//! What a version of one of this node's datasets says on the ledger, by how
//! the dataset is served: a plain dataset by its file's digest, a blacklist
//! by its encoded set ([`crate::blacklist`]), a lookup table by its PIR
//! hint and layout ([`crate::lookup`]).

use stayput_chain_connector::records::DatasetVersion;

use crate::dataset::Dataset;
use crate::{NodeConfig, NodeError};

/// The record that publishes `version` of `dataset`: the schema's and the
/// file's digests, or for a blacklist the encoded set's digest and K, or
/// for a lookup table the version digest and the layout (preparing that
/// version). Blocking: it reads and hashes the whole file, and a lookup
/// table's hint is heavy.
pub fn version_record(config: &NodeConfig, dataset: &Dataset, version: u32) -> Result<DatasetVersion, NodeError> {
    let (schema_digest, file_digest) = dataset.digests()?;
    let (content_digest, protocol_key) = if dataset.labels.is_some() {
        let prepared = crate::blacklist::prepare_version(config, dataset, version)?;
        (prepared.digest, Some(prepared.public_key.to_vec()))
    } else if dataset.pir.is_some() {
        let prepared = crate::lookup::prepare_version(config, dataset, version)?;
        (prepared.digest, Some(prepared.published.to_bytes()))
    } else {
        (file_digest, None)
    };
    Ok(DatasetVersion {
        dataset: dataset.name.clone(),
        owner: config.org.clone(),
        version,
        schema_digest,
        content_digest,
        protocol_key,
    })
}
