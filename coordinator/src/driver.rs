//! The task lifecycle: record, start, drive the receiver's node, record the
//! result digest — each step committed to the store before the next, each
//! safe to repeat after a crash.
//!
//! | stored phase | on (re)start the coordinator … |
//! |---|---|
//! | accepted | writes the task record unless the ledger has it (a refusal fails the task before anything ran) |
//! | recorded | moves the ledger's status to running (unless it is already) |
//! | running | asks the receiver's node to run the task — idempotent: a node that has the result returns it, one still running is joined; a node that (or whose peer) went away is asked again, a bounded number of times, and a PSI in parts resumes from its last completed part — then writes the result record (unless the ledger has one) and the status `succeeded` |
//!
//! A task the ledger shows ended is settled from the ledger. A node that
//! refuses or fails the task ends it as `failed` on the ledger. Uses are
//! written by the data owners' nodes only, for a task the ledger holds, and
//! each node serves a task once, so no restart can serve a task twice or
//! consume a use without a task record.

use std::sync::Arc;
use std::time::Duration;

use stayput_chain_connector::LedgerError;
use stayput_chain_connector::records::{Record, ResultRecord, SignedRecord, Task, TaskStatus};
use stayput_chain_connector::rules::Refusal;
use stayput_chain_connector::tasks::{SignedTaskRequest, combine_shard_digests};
use stayput_proto::v1::RunTaskRequest;
use stayput_proto::v1::node_control_client::NodeControlClient;
use stayput_proto::v1::task_event::Event;

use crate::CoordinatorError;
use crate::service::{Inner, Progress};
use crate::store::{Phase, StoredTask};

/// Attempts to reach a node before the task fails.
const CONNECT_ATTEMPTS: u32 = 4;
/// Runs of a task on its node before a node that keeps going away fails
/// it.
const RUN_ATTEMPTS: u32 = 7;
/// Attempts at a ledger write before the task is left for a restart.
const LEDGER_ATTEMPTS: u32 = 6;

/// Writes `record` as the operator, treating "already there" as done.
async fn record(inner: &Inner, record: Record) -> Result<(), CoordinatorError> {
    let signed = SignedRecord::sign(record, &inner.org, &inner.key, &inner.ledger.identity().await?);
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=LEDGER_ATTEMPTS {
        match inner.ledger.submit(signed.clone()).await {
            Ok(_) | Err(LedgerError::Refused(Refusal::Replayed { .. })) => return Ok(()),
            Err(LedgerError::Rpc(detail)) if attempt < LEDGER_ATTEMPTS => {
                tracing::warn!(attempt, detail = %detail, "ledger unavailable; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// Drives `task` to its end, publishing every step.
pub async fn drive(inner: Arc<Inner>, mut task: StoredTask) {
    let id = task.id.clone();
    match step(&inner, &mut task).await {
        Ok(()) => {}
        // The ledger could not be reached: nothing is settled; the stored
        // phase stands and a restart resumes the task from the ledger.
        Err(CoordinatorError::Ledger(LedgerError::Rpc(detail))) => {
            tracing::error!(task = %id, detail = %detail, "ledger unavailable; the task is left for a restart");
        }
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(task = %id, error = %message, "task failed");
            // End it on the ledger when it is there and may still move.
            let may_fail =
                matches!(inner.ledger.task(&id).await, Ok(Some(s)) if s.status.may_become(TaskStatus::Failed));
            let failed = Record::TaskStatus { task: id.clone(), status: TaskStatus::Failed };
            if may_fail && let Err(e) = record(&inner, failed).await {
                tracing::error!(task = %id, error = %e, "cannot record the failure; a restart will retry");
                return;
            }
            task.phase = Phase::Failed;
            task.error = Some(message);
            inner.save(&task).await;
        }
    }
}

async fn step(inner: &Arc<Inner>, task: &mut StoredTask) -> Result<(), CoordinatorError> {
    let request = SignedTaskRequest::from_bytes(&hex::decode(&task.signed_request).unwrap_or_default())?;
    let record_of = || Task::new(request.clone(), task.grants.clone());
    let mut on_ledger = inner.ledger.task(&task.id).await?;
    if on_ledger.is_none() {
        if task.phase != Phase::Accepted {
            return Err(CoordinatorError::UnknownTask(format!(
                "{} (stored as recorded, missing from the ledger)",
                task.id
            )));
        }
        record(inner, Record::Task(record_of())).await?;
        on_ledger = inner.ledger.task(&task.id).await?;
    }
    let state = on_ledger.ok_or_else(|| CoordinatorError::UnknownTask(task.id.clone()))?;
    if task.phase == Phase::Accepted {
        task.phase = Phase::Recorded;
        inner.save(task).await;
    }
    match state.status {
        TaskStatus::Succeeded => {
            let result = state.result();
            task.result_digest = result.map(|r| hex::encode(r.result_digest));
            task.phase = Phase::Succeeded;
            inner.save(task).await;
            return Ok(());
        }
        TaskStatus::Failed | TaskStatus::Cancelled => {
            return Err(CoordinatorError::NodeFailed {
                org: request.request.receiver.clone(),
                message: format!("the ledger shows the task {}", state.status),
            });
        }
        TaskStatus::Submitted => {
            record(inner, Record::TaskStatus { task: task.id.clone(), status: TaskStatus::Running }).await?;
        }
        TaskStatus::Running => {}
    }
    if task.phase != Phase::Running {
        task.phase = Phase::Running;
        inner.save(task).await;
    }

    let receiver = request.request.receiver.clone();
    let shards = state.task.shards().unwrap_or(1);
    let (digest, count, intermediates) = if shards > 1 {
        run_shards(inner, &task.id, &receiver, &request.request.params, shards).await?
    } else {
        run_until_done(inner, &task.id, &receiver, &request.request.params, 0).await?
    };
    // One result per task on the ledger: a rerun after a crash finds the
    // node's recorded outcome, whose digest must be the one on the ledger.
    match state.result() {
        None => {
            let result = ResultRecord { task: task.id.clone(), result_digest: digest, receiver, intermediates };
            record(inner, Record::Result(result)).await?;
        }
        Some(recorded) if recorded.result_digest == digest => {}
        Some(_) => {
            return Err(CoordinatorError::NodeFailed {
                org: receiver,
                message: "the node reports a result other than the one the ledger holds for this task".into(),
            });
        }
    }
    // A PSI task to both ends only with both results on the ledger: the
    // peer's node records its own before the requester's result is whole,
    // so a missing one means the peer did not get (or attest) its rows.
    if state.task.delivers_to_both() {
        let now = inner.ledger.task(&task.id).await?.ok_or_else(|| CoordinatorError::UnknownTask(task.id.clone()))?;
        if now.peer_result().is_none() {
            let dataset = state.task.datasets().first().cloned().unwrap_or_default();
            let peer = inner.ledger.dataset(&dataset).await?.last().map(|v| v.owner.clone()).unwrap_or(dataset);
            return Err(CoordinatorError::NodeFailed {
                org: peer,
                message: "the task delivers to both, and this peer's node recorded no result of its own".into(),
            });
        }
    }
    record(inner, Record::TaskStatus { task: task.id.clone(), status: TaskStatus::Succeeded }).await?;
    task.result_digest = Some(hex::encode(digest));
    task.result_count = count;
    task.phase = Phase::Succeeded;
    inner.save(task).await;
    tracing::info!(task = %task.id, "task succeeded; result digest recorded");
    Ok(())
}

/// `org`'s member record.
async fn member(inner: &Inner, org: &str) -> Result<stayput_chain_connector::records::Member, CoordinatorError> {
    inner
        .ledger
        .member(org)
        .await?
        .ok_or_else(|| CoordinatorError::NodeFailed { org: org.into(), message: "not a member".into() })
}

/// Runs a task of `shards` shards on each of `org`'s shard nodes at once;
/// its result is the union of theirs: their digests, in shard order, and
/// their combination ([`combine_shard_digests`]), and the sum of their
/// counts. Each shard is retried on its own; one that fails for good fails
/// the task (the others' uses stay on the ledger, as any served use does).
async fn run_shards(
    inner: &Arc<Inner>,
    task: &str,
    org: &str,
    params: &[u8],
    shards: u32,
) -> Result<([u8; 32], u64, Vec<[u8; 32]>), CoordinatorError> {
    let member = member(inner, org).await?;
    if !stayput_identity::names_shards(&member.endpoint) {
        return Err(CoordinatorError::NodeFailed {
            org: org.into(),
            message: format!(
                "the task runs as {shards} shards, and the member's endpoint '{}' does not name them; \
                 register an endpoint with {{shard}} where each shard node's index goes",
                member.endpoint
            ),
        });
    }
    let mut runs = tokio::task::JoinSet::new();
    for shard in 0..shards {
        let (inner, task, org, params) = (inner.clone(), task.to_owned(), org.to_owned(), params.to_vec());
        runs.spawn(async move { (shard, run_until_done(&inner, &task, &org, &params, shard).await) });
    }
    let mut digests = vec![[0u8; 32]; shards as usize];
    let mut count = 0u64;
    while let Some(joined) = runs.join_next().await {
        let (shard, outcome) = joined.map_err(|e| CoordinatorError::NodeFailed {
            org: org.into(),
            message: format!("a shard's run ended abnormally: {e}"),
        })?;
        let (digest, shard_count, _) = outcome?;
        digests[shard as usize] = digest;
        count = count.saturating_add(shard_count);
    }
    Ok((combine_shard_digests(&digests), count, digests))
}

/// Runs the task on `org`'s node, again after a node or its peer went
/// away — at most [`RUN_ATTEMPTS`] times, waiting longer each time (about
/// a minute in all), so a node restarted by its operator or scheduler
/// picks the task up again; a protocol in parts resumes from its last
/// completed part, and every owner's node serves a task once, so a rerun
/// never serves more than the first run's use record allows.
async fn run_until_done(
    inner: &Arc<Inner>,
    task: &str,
    org: &str,
    params: &[u8],
    shard: u32,
) -> Result<([u8; 32], u64, Vec<[u8; 32]>), CoordinatorError> {
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=RUN_ATTEMPTS {
        match run_on_node(inner, task, org, params.to_vec(), shard).await {
            Err(e) if e.is_transient() && attempt < RUN_ATTEMPTS => {
                tracing::warn!(task = %task, org = %org, attempt, error = %e, "task interrupted; running it again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(16));
            }
            done => return done,
        }
    }
    unreachable!("the last attempt returns")
}

/// Asks `org`'s node (its shard `shard`) to run the task; returns the
/// result digest, count and intermediate digests.
async fn run_on_node(
    inner: &Arc<Inner>,
    task: &str,
    org: &str,
    params: Vec<u8>,
    shard: u32,
) -> Result<([u8; 32], u64, Vec<[u8; 32]>), CoordinatorError> {
    let member = member(inner, org).await?;
    let mut delay = Duration::from_millis(250);
    let mut attempt = 0;
    let channel = loop {
        attempt += 1;
        let endpoint = stayput_identity::shard_endpoint(&member.endpoint, shard);
        match stayput_identity::dial(&inner.tls, org, &endpoint).await {
            Ok(channel) => break channel,
            Err(e) if attempt < CONNECT_ATTEMPTS => {
                tracing::warn!(task = %task, org = %org, attempt, error = %e, "node unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    };
    // A node that went away, or whose peer did, may finish on a later run.
    let failed = |status: tonic::Status| {
        let (org, message) = (org.into(), status.message().into());
        match status.code() {
            tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded => CoordinatorError::NodeUnavailable { org, message },
            _ => CoordinatorError::NodeFailed { org, message },
        }
    };
    let mut events = NodeControlClient::new(channel)
        .run_task(RunTaskRequest { task_id: task.into(), params: params.into(), shard })
        .await
        .map_err(failed)?
        .into_inner();
    while let Some(event) = events.message().await.map_err(failed)? {
        match event.event {
            Some(Event::Progress(p)) => inner.progress(task, Progress { phase: p.phase, done: p.done, total: p.total }),
            Some(Event::Result(r)) => {
                let digest =
                    <[u8; 32]>::try_from(r.result_digest.as_ref()).map_err(|_| CoordinatorError::NodeFailed {
                        org: org.into(),
                        message: "it reported no 32-byte result digest".into(),
                    })?;
                let intermediates = r
                    .intermediate_digests
                    .iter()
                    .map(|d| <[u8; 32]>::try_from(d.as_ref()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| CoordinatorError::NodeFailed {
                        org: org.into(),
                        message: "it reported a malformed intermediate digest".into(),
                    })?;
                return Ok((digest, r.count, intermediates));
            }
            None => {}
        }
    }
    Err(CoordinatorError::NodeFailed { org: org.into(), message: "it ended the task without a result".into() })
}
