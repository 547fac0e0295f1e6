//! A dataset's keys split into a task's parts **on disk**, so a set bigger
//! than memory runs part by part and a node holds one part's keys at a
//! time.
//!
//! A KKRT task in parts pairs part `i` of each side
//! ([`stayput_psi::partition`]: a keyed hash per task, the key drawn by the
//! requester's node and sent only inside mTLS). Both nodes stream their
//! dataset once, append each encoded key to its part's file, then
//! deduplicate part by part — equal keys always fall in the same part, so
//! per-part deduplication is exact — and rewrite each part's distinct keys.
//! The session reads one part at a time; the common keys are gathered at
//! the end from the parts that hold them.
//!
//! **Order and indices.** A node's key list for the session is part 0's
//! distinct keys, then part 1's, and so on, each in order of first
//! appearance; the index of a key is its position in that list, which is
//! what the progress files of [`super::progress`] record, and
//! [`KeyBuckets::digest`] is [`super::progress::keys_digest`] of it.
//!
//! **Files.** `<state_dir>/psi-buckets/<random>/part-<i>`, the folder 0700,
//! each key as a 4-byte little-endian length and its bytes. The keys are
//! the owner's own (normalised) ids, on its own disk beside the dataset
//! they come from; the folder is removed when the buckets are dropped, and
//! what a killed node left behind is removed when the node starts
//! ([`remove_stale`]). Reading a part back bounds every length by what
//! remains of the file before allocating.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use stayput_psi::keys::KeyList;
use stayput_psi::partition::Partition;
use zeroize::{Zeroize, Zeroizing};

use crate::NodeError;
use crate::dataset::{Dataset, DatasetKeys, FileFormat, Fingerprint, WrittenFile};

/// The folder under `state_dir` that holds every task's buckets.
pub const BUCKETS_DIR: &str = "psi-buckets";

/// Most part files written at once.
const OPEN_FILES: u32 = 256;

/// A dataset's distinct keys in a task's parts, on disk.
#[derive(Debug)]
pub struct KeyBuckets {
    dir: tempfile::TempDir,
    sizes: Vec<u64>,
    digest: [u8; 32],
    /// Data rows read.
    pub rows_read: u64,
    /// Rows whose key repeated an earlier row's.
    pub duplicates: u64,
    /// Rows skipped for a null or empty key part.
    pub null_keys: u64,
    /// The file version the keys came from.
    pub fingerprint: Fingerprint,
}

impl KeyBuckets {
    /// Streams `dataset` into `split`'s parts under `state_dir`, then
    /// deduplicates each part.
    pub fn build(dataset: &Dataset, split: &Partition, state_dir: &Path) -> Result<Self, NodeError> {
        let under = state_dir.join(BUCKETS_DIR);
        std::fs::create_dir_all(&under).map_err(|source| NodeError::WriteFile { path: under.clone(), source })?;
        let dir = tempfile::Builder::new()
            .prefix("task-")
            .tempdir_in(&under)
            .map_err(|source| NodeError::WriteFile { path: under.clone(), source })?;
        restrict(dir.path())?;
        let raw_path = |i: u32| dir.path().join(format!("raw-{i}"));
        // At most OPEN_FILES part files are written at once: a session of
        // many small parts (a requester may ask for up to one part per
        // key) reads the dataset once per window of parts instead of
        // opening a file per part at once.
        let mut read = None;
        for window in (0..split.parts()).step_by(OPEN_FILES as usize) {
            let window = window..(window + OPEN_FILES).min(split.parts());
            let mut raw: Vec<BufWriter<File>> = window
                .clone()
                .map(|i| {
                    let path = raw_path(i);
                    File::create(&path).map(BufWriter::new).map_err(|source| NodeError::WriteFile { path, source })
                })
                .collect::<Result<_, _>>()?;
            let this = dataset.for_each_key_batch(|mut keys| {
                let parts: Vec<u32> = keys.par_iter().map(|k| split.part_of(k)).collect();
                for (key, part) in keys.iter().zip(parts).filter(|(_, part)| window.contains(part)) {
                    write_key(&mut raw[(part - window.start) as usize], key)
                        .map_err(|source| NodeError::WriteFile { path: raw_path(part), source })?;
                }
                keys.iter_mut().for_each(Zeroize::zeroize);
                Ok(())
            })?;
            // Every window must have read the same version of the file.
            if read.is_some_and(|first: crate::dataset::KeysRead| first.fingerprint != this.fingerprint) {
                return Err(NodeError::DatasetChanged { path: dataset.path.clone() });
            }
            read = Some(this);
            for (i, writer) in window.zip(raw) {
                writer.into_inner().map_err(|e| NodeError::WriteFile { path: raw_path(i), source: e.into_error() })?;
            }
        }
        let read = read.expect("a split has at least one part");

        let mut digest = super::progress::KeysDigest::new();
        let (mut sizes, mut duplicates) = (Vec::new(), 0u64);
        for i in 0..split.parts() {
            let all = read_part(&raw_path(i))?;
            let (distinct, dropped) = all.dedup();
            drop(all);
            let path = dir.path().join(format!("part-{i}"));
            let mut out = BufWriter::new(
                File::create(&path).map_err(|source| NodeError::WriteFile { path: path.clone(), source })?,
            );
            for key in distinct.iter() {
                write_key(&mut out, key).map_err(|source| NodeError::WriteFile { path: path.clone(), source })?;
                digest.update(key);
            }
            out.into_inner().map_err(|e| NodeError::WriteFile { path: path.clone(), source: e.into_error() })?;
            std::fs::remove_file(raw_path(i)).map_err(|source| NodeError::WriteFile { path: raw_path(i), source })?;
            sizes.push(distinct.len() as u64);
            duplicates += dropped as u64;
        }
        Ok(Self {
            dir,
            sizes,
            digest: digest.finish(),
            rows_read: read.rows_read,
            duplicates,
            null_keys: read.null_keys,
            fingerprint: read.fingerprint,
        })
    }

    /// Distinct keys in every part together.
    pub fn len(&self) -> u64 {
        self.sizes.iter().sum()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct keys per part.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// The session key list's digest (see the module docs).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The index of part `i`'s first key in the session's key list.
    pub fn offset(&self, part: u32) -> u64 {
        self.sizes[..part as usize].iter().sum()
    }

    /// Part `i`'s distinct keys, read back from disk.
    pub fn part(&self, part: u32) -> Result<KeyList, NodeError> {
        read_part(&self.dir.path().join(format!("part-{part}")))
    }

    /// The keys at `indices` (into the session's key list), reading only
    /// the parts that hold one.
    pub fn keys_at(&self, indices: &[u32]) -> Result<HashSet<Vec<u8>>, NodeError> {
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        let mut out = HashSet::with_capacity(sorted.len());
        let mut rest = sorted.as_slice();
        for part in 0..u32::try_from(self.sizes.len()).expect("at most MAX_PARTS parts") {
            let (start, end) = (self.offset(part), self.offset(part + 1));
            let here = rest.partition_point(|&i| u64::from(i) < end);
            let (mine, later) = rest.split_at(here);
            rest = later;
            if mine.is_empty() {
                continue;
            }
            let keys = self.part(part)?;
            out.extend(mine.iter().map(|&i| keys.get(usize::try_from(u64::from(i) - start).expect("fits")).to_vec()));
        }
        if !rest.is_empty() {
            return Err(NodeError::Worker(format!("a common key index {} is beyond the key list", rest[0])));
        }
        Ok(out)
    }
}

/// A node's keys for one PSI session.
#[derive(Debug)]
pub enum SessionKeys {
    /// Every distinct key in memory: ECDH, and KKRT in one part.
    Whole(DatasetKeys),
    /// The distinct keys in the task's parts on disk: KKRT in parts.
    Parts(KeyBuckets),
}

impl SessionKeys {
    /// `dataset`'s keys: whole, or split by `split` onto disk under
    /// `state_dir`.
    pub fn load(dataset: &Dataset, split: Option<&Partition>, state_dir: &Path) -> Result<Self, NodeError> {
        Ok(match split {
            None => Self::Whole(dataset.load_keys()?),
            Some(split) => Self::Parts(KeyBuckets::build(dataset, split, state_dir)?),
        })
    }

    /// Distinct keys.
    pub fn len(&self) -> u64 {
        match self {
            Self::Whole(k) => k.keys.len() as u64,
            Self::Parts(b) => b.len(),
        }
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SHA-256 of the session's key list, in session order.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            Self::Whole(k) => super::progress::keys_digest(&k.keys),
            Self::Parts(b) => b.digest(),
        }
    }

    /// What reading the dataset counted: rows, duplicate and null keys,
    /// and the file version.
    pub fn counts(&self) -> (u64, u64, u64, Fingerprint) {
        match self {
            Self::Whole(k) => (k.rows_read, k.duplicates, k.null_keys, k.fingerprint),
            Self::Parts(b) => (b.rows_read, b.duplicates, b.null_keys, b.fingerprint),
        }
    }

    /// Writes `dataset`'s rows whose keys are at `indices` into the
    /// session's key list to `target`: for keys in memory straight from
    /// the rows' key indices, for keys in parts by encoding the rows again.
    pub fn write_rows(
        &self,
        dataset: &Dataset,
        indices: &[u32],
        target: &Path,
        format: FileFormat,
    ) -> Result<WrittenFile, NodeError> {
        match self {
            Self::Whole(k) => {
                let mut selected = vec![false; k.keys.len()];
                for &i in indices {
                    *selected
                        .get_mut(i as usize)
                        .ok_or_else(|| NodeError::Worker(format!("a common key index {i} is beyond the key list")))? =
                        true;
                }
                dataset.write_rows_of_keys(&k.rows, &selected, k.fingerprint, target, format)
            }
            Self::Parts(b) => dataset.write_rows_with_keys(&b.keys_at(indices)?, b.fingerprint, target, format),
        }
    }

    /// The keys at `indices` into the session's key list.
    pub fn keys_at(&self, indices: &[u32]) -> Result<HashSet<Vec<u8>>, NodeError> {
        match self {
            Self::Whole(k) => Ok(indices.iter().map(|&i| k.keys.get(i as usize).to_vec()).collect()),
            Self::Parts(b) => b.keys_at(indices),
        }
    }

    /// The whole key list (a session in one part).
    pub fn whole(&self) -> Result<&DatasetKeys, NodeError> {
        match self {
            Self::Whole(k) => Ok(k),
            Self::Parts(_) => Err(NodeError::Worker("a session in one part was given keys split in parts".into())),
        }
    }
}

/// The bucket folder is its owner's only: 0700.
fn restrict(dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|source| NodeError::WriteFile { path: dir.into(), source })
}

fn write_key(out: &mut impl Write, key: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(key.len()).map_err(|_| std::io::Error::other("key longer than 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(key)
}

/// Reads a part file: every length is checked against what remains before
/// a key is taken.
fn read_part(path: &PathBuf) -> Result<KeyList, NodeError> {
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|source| NodeError::ReadFile { path: path.clone(), source })?);
    let damaged = || NodeError::ReadFile { path: path.clone(), source: std::io::Error::other("truncated key bucket") };
    let mut keys = KeyList::new();
    let mut rest: &[u8] = &bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(damaged)?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(damaged());
        }
        let (key, tail) = tail.split_at(len);
        keys.push(key);
        rest = tail;
    }
    Ok(keys)
}

/// Removes buckets a killed node left under `state_dir` (called when the
/// node starts, before it serves anything).
pub fn remove_stale(state_dir: &Path) {
    let under = state_dir.join(BUCKETS_DIR);
    if under.exists()
        && let Err(err) = std::fs::remove_dir_all(&under)
    {
        tracing::warn!(path = %under.display(), error = %err, "cannot remove stale PSI key buckets");
    }
}

#[cfg(test)]
mod tests {
    use stayput_psi::group::TaskId;
    use stayput_psi::partition::PartitionKey;

    use super::*;

    fn dataset(dir: &Path, rows: &[&str]) -> Dataset {
        let path = dir.join("ids.csv");
        std::fs::write(&path, format!("id\n{}\n", rows.join("\n"))).unwrap();
        Dataset {
            name: "ids".into(),
            format: crate::dataset::FileFormat::from_path(&path).unwrap(),
            path,
            key_columns: vec!["id".into()],
            rules: stayput_psi::keys::KeyRules::parse(&["trim"]).unwrap(),
            null_values: Vec::new(),
            labels: None,
            pir: None,
            shard: None,
        }
    }

    fn split(parts: u32) -> Partition {
        let key = PartitionKey::from_bytes([4; 32]);
        Partition::new(&key, &TaskId::new("bucket-test").unwrap(), parts).unwrap()
    }

    #[test]
    fn parts_hold_the_distinct_keys_of_the_split_and_map_indices_back() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..500).map(|i| format!("id-{}", i % 400)).collect();
        let rows: Vec<&str> = ids.iter().map(String::as_str).chain(["  ", "id-7"]).collect();
        let data = dataset(dir.path(), &rows);
        let split = split(4);
        let buckets = KeyBuckets::build(&data, &split, dir.path()).unwrap();
        let whole = data.load_keys().unwrap();
        assert_eq!((buckets.len(), buckets.duplicates, buckets.null_keys), (400, 101, 1));
        assert_eq!((whole.keys.len(), whole.duplicates, whole.null_keys), (400, 101, 1));
        assert_eq!((buckets.rows_read, buckets.fingerprint), (whole.rows_read, whole.fingerprint));
        // Each part is exactly the split's part of the distinct keys.
        let mut list = KeyList::new();
        for (i, expected) in (0u32..).zip(split.split(&whole.keys)) {
            let part = buckets.part(i).unwrap();
            let mut got: Vec<&[u8]> = part.iter().collect();
            let mut want: Vec<&[u8]> = expected.keys.iter().collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "part {i}");
            assert_eq!(buckets.sizes()[i as usize], part.len() as u64);
            part.iter().for_each(|k| list.push(k));
        }
        assert_eq!(buckets.digest(), super::super::progress::keys_digest(&list));
        let picked = [0u32, 5, 399, 123];
        let expected: HashSet<Vec<u8>> = picked.iter().map(|&i| list.get(i as usize).to_vec()).collect();
        assert_eq!(buckets.keys_at(&picked).unwrap(), expected);
        assert!(buckets.keys_at(&[400]).is_err(), "an index beyond the list is refused");
    }

    #[test]
    fn more_parts_than_open_files_take_several_passes() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..2000).map(|i| format!("id-{i}")).collect();
        let data = dataset(dir.path(), &ids.iter().map(String::as_str).collect::<Vec<_>>());
        let split = split(OPEN_FILES * 2 + 3);
        let buckets = KeyBuckets::build(&data, &split, dir.path()).unwrap();
        assert_eq!((buckets.len(), buckets.sizes().len()), (2000, (OPEN_FILES * 2 + 3) as usize));
        assert_eq!(buckets.rows_read, 2000);
        for (i, expected) in (0u32..).zip(split.split(&data.load_keys().unwrap().keys)) {
            assert_eq!(buckets.part(i).unwrap().len(), expected.keys.len(), "part {i}");
        }
    }

    #[test]
    fn folder_is_private_and_removed_on_drop_and_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let data = dataset(dir.path(), &["a", "b", "c"]);
        let buckets = KeyBuckets::build(&data, &split(2), dir.path()).unwrap();
        let folder = buckets.dir.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777, 0o700);
        drop(buckets);
        assert!(!folder.exists());
        std::fs::create_dir_all(dir.path().join(BUCKETS_DIR).join("task-left")).unwrap();
        remove_stale(dir.path());
        assert!(!dir.path().join(BUCKETS_DIR).exists());
    }

    #[test]
    fn a_truncated_bucket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0");
        std::fs::write(&path, [5, 0, 0, 0, b'a', b'b']).unwrap();
        assert!(read_part(&path).unwrap_err().to_string().contains("truncated key bucket"));
        std::fs::write(&path, [1, 0]).unwrap();
        assert!(read_part(&path).is_err());
    }
}
