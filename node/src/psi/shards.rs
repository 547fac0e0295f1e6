//! PSI tasks run as shards: an organisation with more rows than one
//! machine serves runs `N` nodes, and shard `i` of the requester runs an
//! independent session with shard `i` of the data owner.
//!
//! Both sides keep, of their own keys, those that a keyed hash
//! ([`stayput_psi::partition`]) puts in shard `i`, so equal keys meet in
//! the same shard pair and the intersection is the union of the `N`
//! sessions' intersections. The hash's key is never sent: each side
//! derives it alone from the two organisations' ledger keys and the task
//! id ([`OrgKey::agree`](stayput_chain_connector::records::OrgKey::agree)),
//! so it is the same on every shard of both organisations, unknown to
//! anyone else (the operator and the chain included), and new for every
//! task. Each shard pair's protocol is bound to the task, the shard and the
//! count, so no message of one shard's session is accepted in another's.
//!
//! On the ledger, each of the owner's shards writes its own use (the first
//! one counts the grant's use; all of them together stay within one use's
//! items), and the coordinator records one result: the `N` shard digests
//! and their combination.

use stayput_psi::group::TaskId;
use stayput_psi::partition::PartitionKey;

use crate::config::ShardOf;
use crate::dataset::ShardFilter;
use crate::{NodeError, NodeState};

/// The label the shard key is derived under.
const SHARD_KEY_LABEL: &[u8] = b"stayput/psi/shard-key/v1";

/// The task id a shard pair's protocol is bound to (the task itself when it
/// runs as one session).
pub fn session_task(task: &str, shard: Option<ShardOf>) -> Result<TaskId, NodeError> {
    Ok(match shard {
        None => TaskId::new(task)?,
        Some(s) => TaskId::new(format!("{task}/shard-{}-of-{}", s.index, s.count))?,
    })
}

/// The shard this node runs of a task run as `count` shards: its own
/// configuration must say it is a shard of that many, and `asked` (the
/// shard the caller means, when it names one) must be its index.
pub fn own_shard(state: &NodeState, task: &str, count: u32, asked: Option<u32>) -> Result<Option<ShardOf>, NodeError> {
    let refuse = |reason: String| NodeError::NotAuthorised { task: task.to_owned(), reason };
    match (count, state.config.shard) {
        (0 | 1, _) => match asked {
            Some(shard) if shard != 0 => {
                Err(refuse(format!("the task runs as one session, and shard {shard} of it was asked for")))
            }
            _ => Ok(None),
        },
        (count, None) => Err(refuse(format!(
            "the task runs as {count} shards, and this node is not configured as a shard (set shard = \"i/{count}\" under [node])"
        ))),
        (count, Some(own)) if own.count != count => Err(refuse(format!(
            "the task runs as {count} shards, and this node is shard {own} of another split; deploy {count} shard nodes"
        ))),
        (_, Some(own)) => match asked {
            Some(shard) if shard != own.index => Err(refuse(format!(
                "shard {shard} was asked for, and this node is shard {own}; check the {{shard}} endpoint of the organisation"
            ))),
            _ => Ok(Some(own)),
        },
    }
}

/// The filter of this node's `shard` of `task`, run with organisation
/// `peer`: the key agreed between this organisation's ledger key and the
/// peer's, as the ledger holds it.
pub async fn filter(state: &NodeState, task: &str, peer: &str, shard: ShardOf) -> Result<ShardFilter, NodeError> {
    let access = crate::serve::ledger_access(state, "a task run as shards")?;
    let member = access.ledger.member(peer).await.map_err(NodeError::from_ledger)?.ok_or_else(|| {
        NodeError::NotAuthorised { task: task.to_owned(), reason: format!("'{peer}' is not a member") }
    })?;
    let secret = access.key.agree(&member.signing_key, SHARD_KEY_LABEL, task.as_bytes()).map_err(|e| {
        NodeError::NotAuthorised { task: task.to_owned(), reason: format!("no shard key with '{peer}': {e}") }
    })?;
    ShardFilter::new(&PartitionKey::from_bytes(*secret), task, shard.index, shard.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shards_of_a_task_split_every_key_set_the_same_way() {
        let key = PartitionKey::from_bytes([7; 32]);
        let filters: Vec<ShardFilter> = (0..4).map(|index| ShardFilter::new(&key, "t-1", index, 4).unwrap()).collect();
        let mut sizes = [0u32; 4];
        for k in 0u32..4000 {
            let key = k.to_le_bytes();
            let owners: Vec<usize> = (0..4).filter(|&i| filters[i].keeps(&key)).collect();
            assert_eq!(owners.len(), 1, "every key falls in exactly one shard");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| (850..1150).contains(&s)), "about a quarter each: {sizes:?}");
        let other = ShardFilter::new(&key, "t-2", 0, 4).unwrap();
        let moved = (0u32..4000).filter(|k| other.keeps(&k.to_le_bytes()) != filters[0].keeps(&k.to_le_bytes()));
        assert!(moved.count() > 1000, "another task splits the keys anew");
        assert_ne!(
            session_task("t-1", Some(ShardOf { index: 1, count: 4 })).unwrap().as_bytes(),
            session_task("t-1", Some(ShardOf { index: 2, count: 4 })).unwrap().as_bytes()
        );
    }
}
