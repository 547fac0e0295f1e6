//! A PSI task run in parts, remembered on each node's disk, so a task
//! interrupted by either node's death resumes from its last completed part
//! instead of starting again (which the owner could not allow: its use is
//! recorded once).
//!
//! **Requester** (`<state_dir>/psi-progress/requester/<task>/`): `plan`
//! holds the task's partition key (secret: it decides which part each key
//! falls in; 0600, removed with the folder once the result is written),
//! the number of parts and the SHA-256 of the requester's key list, so a
//! dataset changed since the task started is refused rather than mixed;
//! `part-<i>` holds part `i`'s common keys as indices into that key list.
//!
//! **Responder** (`<state_dir>/psi-progress/responder/<task>-<dataset>/`):
//! `plan` holds a digest of the partition key (never the key), the parts,
//! the requester's announced size and its part sizes, the mode, the
//! SHA-256 of this node's key list, and three counters: parts `served`
//! (outputs started), parts `finished`, and `resumes` used; `part-<i>`
//! holds this node's own common keys of part `i` in intersection-to-both
//! mode.
//!
//! **What a resumption may cost the owner.** Each part's OPRF outputs are
//! served once, except that a resumption may serve again the one part
//! under way when the session broke (`served - resume_from ≤ 1`), at most
//! [`kkrt::MAX_RESUMES`] times per task; the use record written at the
//! start metered that allowance ([`kkrt::metered_bins`]). A requester
//! cannot resume with another key, split, size, part sizes or mode than
//! the plan's (moving keys between parts would have more bins served).
//!
//! Every file is written atomically (a temporary file renamed into place),
//! so a node killed mid-write leaves the previous state.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stayput_psi::ecdh::OutputMode;
use stayput_psi::keys::KeyList;
use stayput_psi::kkrt;
use stayput_psi::partition::PartitionKey;

use crate::NodeError;
use crate::state_files::{read, write_atomic};

/// SHA-256 over a key list (each key length-prefixed): what ties a plan to
/// the keys it was made for.
pub(crate) fn keys_digest(keys: &KeyList) -> [u8; 32] {
    let mut digest = KeysDigest::new();
    keys.iter().for_each(|key| digest.update(key));
    digest.finish()
}

/// [`keys_digest`], one key at a time.
pub(crate) struct KeysDigest(Sha256);

impl KeysDigest {
    pub(crate) fn new() -> Self {
        let mut h = Sha256::new();
        h.update(b"stayput/psi/progress/keys/v1");
        Self(h)
    }

    pub(crate) fn update(&mut self, key: &[u8]) {
        self.0.update((key.len() as u64).to_le_bytes());
        self.0.update(key);
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

fn read_fields(path: &Path) -> Result<std::collections::HashMap<String, String>, NodeError> {
    let text = String::from_utf8(read(path)?).map_err(|_| damaged(path, "not UTF-8"))?;
    text.lines()
        .map(|line| {
            line.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| damaged(path, "a line without '='"))
        })
        .collect()
}

fn damaged(path: &Path, what: &str) -> NodeError {
    NodeError::InvalidConfig(format!(
        "{} is damaged ({what}); the task cannot resume from it — remove its folder and submit the task again",
        path.display()
    ))
}

fn field<T: std::str::FromStr>(
    fields: &std::collections::HashMap<String, String>,
    path: &Path,
    name: &str,
) -> Result<T, NodeError> {
    fields.get(name).and_then(|v| v.parse().ok()).ok_or_else(|| damaged(path, name))
}

fn digest_field(
    fields: &std::collections::HashMap<String, String>,
    path: &Path,
    name: &str,
) -> Result<[u8; 32], NodeError> {
    fields
        .get(name)
        .and_then(|v| hex::decode(v).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| damaged(path, name))
}

fn write_indices(path: &Path, indices: &[u32]) -> Result<(), NodeError> {
    let bytes: Vec<u8> = indices.iter().flat_map(|i| i.to_le_bytes()).collect();
    write_atomic(path, &[&bytes])
}

fn read_indices(path: &Path, below: usize) -> Result<Vec<u32>, NodeError> {
    let bytes = read(path)?;
    if bytes.len() % 4 != 0 {
        return Err(damaged(path, "not a list of 32-bit indices"));
    }
    let indices: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if indices.iter().any(|&i| i as usize >= below) {
        return Err(damaged(path, "an index beyond the key list"));
    }
    Ok(indices)
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, "cannot remove a finished task's progress folder");
    }
}

/// The requester's progress of one task.
#[derive(Debug)]
pub(crate) struct RequesterProgress {
    dir: PathBuf,
    /// The task's split key.
    pub key: PartitionKey,
    /// Parts.
    pub parts: u32,
    keys_sha256: [u8; 32],
    keys_len: usize,
}

impl RequesterProgress {
    fn dir(state_dir: &Path, task: &str) -> PathBuf {
        state_dir.join("psi-progress").join("requester").join(task)
    }

    /// The progress of `task` left by an earlier run, or `None`; its keys
    /// are checked with [`Self::for_keys`] once they are loaded (by its
    /// split, which the plan holds).
    pub fn load(state_dir: &Path, task: &str) -> Result<Option<Self>, NodeError> {
        let dir = Self::dir(state_dir, task);
        let plan = dir.join("plan");
        if !plan.exists() {
            return Ok(None);
        }
        let fields = read_fields(&plan)?;
        let key = PartitionKey::from_bytes(digest_field(&fields, &plan, "key")?);
        let parts: u32 = field(&fields, &plan, "parts")?;
        let keys_sha256 = digest_field(&fields, &plan, "keys_sha256")?;
        Ok(Some(Self { dir, key, parts, keys_sha256, keys_len: 0 }))
    }

    /// Binds a loaded plan to the session's keys: they must be the keys it
    /// started with (SHA-256 of the session's key list, see
    /// [`keys_digest`]).
    pub fn for_keys(mut self, task: &str, keys_sha256: [u8; 32], keys_len: u64) -> Result<Self, NodeError> {
        if keys_sha256 != self.keys_sha256 {
            return Err(NodeError::InvalidConfig(format!(
                "the dataset's keys changed since task '{task}' started here; it cannot resume on other keys \
                 (its progress is in {})",
                self.dir.display()
            )));
        }
        self.keys_len = usize::try_from(keys_len).unwrap_or(usize::MAX);
        Ok(self)
    }

    /// Starts the progress of `task`: a fresh split key, kept before the
    /// first message.
    pub fn start(
        state_dir: &Path,
        task: &str,
        parts: u32,
        (keys_sha256, keys_len): ([u8; 32], u64),
        key: PartitionKey,
    ) -> Result<Self, NodeError> {
        let dir = Self::dir(state_dir, task);
        remove_dir(&dir);
        let plan =
            format!("key={}\nparts={parts}\nkeys_sha256={}\n", hex::encode(key.to_bytes()), hex::encode(keys_sha256));
        let path = dir.join("plan");
        write_atomic(&path, &[plan.as_bytes()])?;
        restrict(&path)?;
        Ok(Self { dir, key, parts, keys_sha256, keys_len: usize::try_from(keys_len).unwrap_or(usize::MAX) })
    }

    /// Whether the owner accepted a session of this plan: only then is
    /// a later session a resumption (the owner's use is recorded).
    pub fn accepted(&self) -> bool {
        self.dir.join("accepted").exists()
    }

    /// The owner accepted the session.
    pub fn accepted_now(&self) -> Result<(), NodeError> {
        write_atomic(&self.dir.join("accepted"), &[b"accepted\n"])
    }

    /// Parts completed in order from the first.
    pub fn parts_done(&self) -> u32 {
        (0..self.parts).find(|i| !self.part_path(*i).exists()).unwrap_or(self.parts)
    }

    fn part_path(&self, part: u32) -> PathBuf {
        self.dir.join(format!("part-{part}"))
    }

    /// Part `part`'s common keys, as indices into the whole key list.
    pub fn part(&self, part: u32) -> Result<Vec<u32>, NodeError> {
        read_indices(&self.part_path(part), self.keys_len)
    }

    /// Records part `part` complete.
    pub fn complete(&self, part: u32, indices: &[u32]) -> Result<(), NodeError> {
        write_indices(&self.part_path(part), indices)
    }

    /// Forgets parts from `part` on: they run again.
    pub fn forget_from(&self, part: u32) -> Result<(), NodeError> {
        for i in part..self.parts {
            let path = self.part_path(i);
            if let Err(source) = std::fs::remove_file(&path)
                && source.kind() != std::io::ErrorKind::NotFound
            {
                return Err(NodeError::WriteFile { path, source });
            }
        }
        Ok(())
    }

    /// The task's result is written: the key and parts go.
    pub fn finish(self) {
        remove_dir(&self.dir);
    }

    /// The task failed for good: its key and parts go.
    pub fn discard(state_dir: &Path, task: &str) {
        remove_dir(&Self::dir(state_dir, task));
    }
}

#[cfg(unix)]
fn restrict(path: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| NodeError::WriteFile { path: path.into(), source })
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> Result<(), NodeError> {
    Ok(())
}

/// What a responder's plan is made for: a resumption must match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponderPlan {
    /// SHA-256 of the partition key.
    pub key_digest: [u8; 32],
    pub parts: u32,
    pub requester_size: u64,
    pub mode: OutputMode,
    pub keys_sha256: [u8; 32],
}

impl ResponderPlan {
    /// The plan of a session: its split key's digest, never the key.
    pub fn new(key: &PartitionKey, parts: u32, requester_size: u64, mode: OutputMode, keys_sha256: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"stayput/psi/progress/partition-key/v1");
        h.update(key.to_bytes());
        Self { key_digest: h.finalize().into(), parts, requester_size, mode, keys_sha256 }
    }
}

/// The responder's progress of one task on one dataset.
#[derive(Debug)]
pub(crate) struct ResponderProgress {
    dir: PathBuf,
    plan: ResponderPlan,
    /// Parts whose outputs were started.
    pub served: u32,
    /// Parts finished (outputs sent; in both mode, the matches received).
    pub finished: u32,
    /// Resumptions used.
    pub resumes: u32,
    /// The requester's part sizes, as its first session claimed them.
    their_sizes: Vec<u64>,
    keys_len: usize,
}

impl ResponderProgress {
    fn dir(state_dir: &Path, task: &str, dataset: &str) -> PathBuf {
        state_dir.join("psi-progress").join("responder").join(format!("{task}-{dataset}"))
    }

    /// Starts a task's progress, right after its use record.
    pub fn start(
        state_dir: &Path,
        task: &str,
        dataset: &str,
        plan: ResponderPlan,
        keys_len: usize,
    ) -> Result<Self, NodeError> {
        let dir = Self::dir(state_dir, task, dataset);
        remove_dir(&dir);
        let progress = Self { dir, plan, served: 0, finished: 0, resumes: 0, their_sizes: vec![], keys_len };
        progress.save()?;
        Ok(progress)
    }

    /// Resumes a task: the plan must be the one it started with, a
    /// resumption must be left, and at most the part under way runs
    /// again. Returns the part both continue from; the resumption is
    /// counted on disk before anything is served.
    pub fn resume(
        state_dir: &Path,
        task: &str,
        dataset: &str,
        plan: &ResponderPlan,
        parts_done: u32,
        keys_len: usize,
    ) -> Result<(Self, u32), String> {
        let dir = Self::dir(state_dir, task, dataset);
        let path = dir.join("plan");
        if !path.exists() {
            return Err(
                "this node holds no interrupted session of it to resume (never started here, or finished)".into()
            );
        }
        let mut progress = Self::load(dir, keys_len).map_err(|e| e.to_string())?;
        // The terms first: this node's key list (split into parts by the
        // key) differs under another split key too.
        if (ResponderPlan { keys_sha256: plan.keys_sha256, ..progress.plan.clone() }) != *plan {
            return Err(
                "the resumed session's split key, parts, set size or mode are not the ones it started with".into()
            );
        }
        if progress.plan.keys_sha256 != plan.keys_sha256 {
            return Err("this node's dataset changed since the task started; it cannot resume on other keys".into());
        }
        if progress.resumes >= kkrt::MAX_RESUMES {
            return Err(format!("it was resumed {} times already, the most a task may be", progress.resumes));
        }
        let from = parts_done.min(progress.finished);
        if progress.served.saturating_sub(from) > 1 {
            return Err(format!(
                "resuming from part {from} would serve {} parts again; only the part under way may run again",
                progress.served - from
            ));
        }
        progress.resumes += 1;
        progress.served = from;
        progress.finished = from;
        progress.save().map_err(|e| e.to_string())?;
        Ok((progress, from))
    }

    fn load(dir: PathBuf, keys_len: usize) -> Result<Self, NodeError> {
        let path = dir.join("plan");
        let f = read_fields(&path)?;
        let mode = match f.get("mode").map(String::as_str) {
            Some("intersection") => OutputMode::IntersectionToRequester,
            Some("intersection-both") => OutputMode::IntersectionToBoth,
            _ => return Err(damaged(&path, "mode")),
        };
        let plan = ResponderPlan {
            key_digest: digest_field(&f, &path, "key_sha256")?,
            parts: field(&f, &path, "parts")?,
            requester_size: field(&f, &path, "requester_size")?,
            mode,
            keys_sha256: digest_field(&f, &path, "keys_sha256")?,
        };
        Ok(Self {
            dir,
            plan,
            served: field(&f, &path, "served")?,
            finished: field(&f, &path, "finished")?,
            resumes: field(&f, &path, "resumes")?,
            their_sizes: match f.get("their_sizes").map(String::as_str) {
                None | Some("") => vec![],
                Some(list) => list
                    .split(',')
                    .map(|v| v.parse().map_err(|_| damaged(&path, "their_sizes")))
                    .collect::<Result<_, _>>()?,
            },
            keys_len,
        })
    }

    fn save(&self) -> Result<(), NodeError> {
        let p = &self.plan;
        let text = format!(
            "key_sha256={}\nparts={}\nrequester_size={}\nmode={}\nkeys_sha256={}\nserved={}\nfinished={}\nresumes={}\ntheir_sizes={}\n",
            hex::encode(p.key_digest),
            p.parts,
            p.requester_size,
            p.mode,
            hex::encode(p.keys_sha256),
            self.served,
            self.finished,
            self.resumes,
            self.their_sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        );
        write_atomic(&self.dir.join("plan"), &[text.as_bytes()])
    }

    /// The requester's part sizes: those of its first session, which every
    /// resumption must claim again — a requester moving keys between parts
    /// on resumption could otherwise have more bins served than its use
    /// record metered.
    pub fn their_sizes(&mut self, sizes: &[u64]) -> Result<(), String> {
        if self.their_sizes.is_empty() {
            self.their_sizes = sizes.to_vec();
            return self.save().map_err(|e| e.to_string());
        }
        if self.their_sizes != sizes {
            return Err("the resumed session's part sizes are not the ones it started with".into());
        }
        Ok(())
    }

    /// Part `part`'s outputs are about to leave this node.
    pub fn serving(&mut self, part: u32) -> Result<(), NodeError> {
        self.served = self.served.max(part + 1);
        self.save()
    }

    /// Part `part` is finished; in both mode with this node's own common
    /// keys of it (indices into the whole key list).
    pub fn finished(&mut self, part: u32, own: Option<&[u32]>) -> Result<(), NodeError> {
        if let Some(indices) = own {
            write_indices(&self.dir.join(format!("part-{part}")), indices)?;
        }
        self.finished = self.finished.max(part + 1);
        self.save()
    }

    /// This node's own common keys of a finished part (both mode).
    pub fn own_part(&self, part: u32) -> Result<Vec<u32>, NodeError> {
        read_indices(&self.dir.join(format!("part-{part}")), self.keys_len)
    }

    /// The session completed: the progress goes.
    pub fn finish(self) {
        remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u32) -> KeyList {
        let mut list = KeyList::new();
        for i in 0..n {
            list.push(format!("k{i}").as_bytes());
        }
        list
    }

    #[test]
    fn a_requester_resumes_with_its_key_and_completed_parts() {
        let dir = tempfile::tempdir().unwrap();
        let list = keys(100);
        let key = PartitionKey::from_bytes([7; 32]);
        let progress = RequesterProgress::start(dir.path(), "t-1", 4, (keys_digest(&list), 100), key).unwrap();
        progress.complete(0, &[1, 5]).unwrap();
        progress.complete(1, &[]).unwrap();
        progress.complete(3, &[9]).unwrap();
        let loaded = |list: &KeyList| {
            let plan = RequesterProgress::load(dir.path(), "t-1").unwrap().unwrap();
            plan.for_keys("t-1", keys_digest(list), list.len() as u64)
        };
        let again = loaded(&list).unwrap();
        assert_eq!((again.key.to_bytes(), again.parts, again.parts_done()), ([7; 32], 4, 2), "in order from the first");
        assert_eq!(again.part(0).unwrap(), vec![1, 5]);
        again.forget_from(1).unwrap();
        assert_eq!(again.parts_done(), 1);
        let err = loaded(&keys(101)).unwrap_err().to_string();
        assert!(err.contains("keys changed"), "{err}");
        again.finish();
        assert!(RequesterProgress::load(dir.path(), "t-1").unwrap().is_none());
    }

    #[test]
    fn a_responder_resumes_only_its_own_plan_and_serves_one_part_again_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let list = keys(50);
        let key = PartitionKey::from_bytes([3; 32]);
        let plan = ResponderPlan::new(&key, 4, 1000, OutputMode::IntersectionToBoth, keys_digest(&list));
        let resume = |plan: &ResponderPlan, done| ResponderProgress::resume(dir.path(), "t-1", "d", plan, done, 50);
        assert!(resume(&plan, 0).unwrap_err().contains("no interrupted session"));
        let mut progress = ResponderProgress::start(dir.path(), "t-1", "d", plan.clone(), 50).unwrap();
        progress.serving(0).unwrap();
        progress.finished(0, Some(&[4, 8])).unwrap();
        progress.serving(1).unwrap();
        // Another key, size or mode is another session.
        let other = ResponderPlan::new(
            &PartitionKey::from_bytes([4; 32]),
            4,
            1000,
            OutputMode::IntersectionToBoth,
            keys_digest(&list),
        );
        assert!(resume(&other, 1).unwrap_err().contains("not the ones it started with"));
        let bigger = ResponderPlan { requester_size: 1001, ..plan.clone() };
        assert!(resume(&bigger, 1).unwrap_err().contains("not the ones it started with"));
        // The part sizes are the first session's, always.
        progress.their_sizes(&[300, 200, 250, 250]).unwrap();
        progress.their_sizes(&[300, 200, 250, 250]).unwrap();
        assert!(progress.their_sizes(&[200, 300, 250, 250]).unwrap_err().contains("part sizes"));
        // The requester claims more than this node finished: part 1 runs again.
        let (mut progress, from) = resume(&plan, 3).unwrap();
        assert_eq!((from, progress.resumes), (1, 1));
        assert!(progress.their_sizes(&[0, 0, 500, 500]).unwrap_err().contains("part sizes"), "kept on disk");
        assert_eq!(progress.own_part(0).unwrap(), vec![4, 8]);
        // A requester that lost its parts would have two parts served again.
        progress.serving(1).unwrap();
        progress.finished(1, Some(&[])).unwrap();
        progress.serving(2).unwrap();
        assert!(resume(&plan, 0).unwrap_err().contains("only the part under way"));
        let (_, from) = resume(&plan, 2).unwrap();
        assert_eq!(from, 2);
        // The allowance is spent.
        let err = resume(&plan, 2).unwrap_err();
        assert!(err.contains("resumed 2 times already"), "{err}");
    }
}
