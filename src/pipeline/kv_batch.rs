//! Batches Cloudflare KV writes and deletes across pages: jobs arriving within a short window
//! are grouped per client into bulk requests (within Cloudflare's pair and size limits), and
//! each job learns whether its own keys were written. Clients are sent concurrently, so one
//! client's failure (bad token, rate limit) never holds back or fails another's.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::infra::cloudflare::{KvClient, KvError, KvTarget, Pair, chunks};

enum Op {
    Write(Vec<Pair>),
    Delete(Vec<String>),
}

struct Job {
    client: Uuid,
    target: KvTarget,
    op: Op,
    done: oneshot::Sender<Result<(), KvError>>,
}

/// The batcher: cheap to clone, one background task.
#[derive(Clone)]
pub struct KvBatcher {
    tx: mpsc::Sender<Job>,
}

impl KvBatcher {
    /// Starts the batching task; jobs wait at most `linger` for company.
    pub fn start(client: KvClient, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(client, linger, rx));
        Self { tx }
    }

    /// Writes `pairs` for `client`; returns once they are written (or why not).
    pub async fn write(
        &self,
        client: Uuid,
        target: KvTarget,
        pairs: Vec<Pair>,
    ) -> Result<(), KvError> {
        self.submit(client, target, Op::Write(pairs)).await
    }

    /// Deletes `keys` for `client`.
    pub async fn delete(
        &self,
        client: Uuid,
        target: KvTarget,
        keys: Vec<String>,
    ) -> Result<(), KvError> {
        self.submit(client, target, Op::Delete(keys)).await
    }

    async fn submit(&self, client: Uuid, target: KvTarget, op: Op) -> Result<(), KvError> {
        let (done, result) = oneshot::channel();
        let stopped = || KvError::Unavailable("the KV batcher stopped".into());
        self.tx
            .send(Job {
                client,
                target,
                op,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

async fn run(client: KvClient, linger: Duration, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while let Ok(Some(job)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            jobs.push(job);
        }
        let mut groups: HashMap<(Uuid, bool), Vec<Job>> = HashMap::new();
        for job in jobs {
            let is_write = matches!(job.op, Op::Write(_));
            groups.entry((job.client, is_write)).or_default().push(job);
        }
        let sends = groups.into_values().map(|group| send(&client, group));
        futures::future::join_all(sends).await;
    }
}

/// Sends one client's jobs of one kind as few bulk requests, then answers each job.
async fn send(client: &KvClient, group: Vec<Job>) {
    let Some(target) = group.first().map(|j| j.target.clone()) else {
        return;
    };
    let mut failed: HashSet<String> = HashSet::new();
    let mut error: Option<KvError> = None;
    match group.first().map(|j| &j.op) {
        Some(Op::Write(_)) => {
            let pairs: Vec<Pair> = group
                .iter()
                .flat_map(|j| match &j.op {
                    Op::Write(p) => p.clone(),
                    Op::Delete(_) => Vec::new(),
                })
                .collect();
            for chunk in chunks(&pairs) {
                match client.bulk_write(&target, chunk).await {
                    Ok(result) => failed.extend(result.unsuccessful_keys),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        Some(Op::Delete(_)) => {
            let keys: Vec<String> = group
                .iter()
                .flat_map(|j| match &j.op {
                    Op::Delete(k) => k.clone(),
                    Op::Write(_) => Vec::new(),
                })
                .collect();
            for chunk in keys.chunks(10_000) {
                match client.bulk_delete(&target, chunk).await {
                    Ok(result) => failed.extend(result.unsuccessful_keys),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        None => return,
    }
    for job in group {
        let keys: Vec<&String> = match &job.op {
            Op::Write(p) => p.iter().map(|p| &p.key).collect(),
            Op::Delete(k) => k.iter().collect(),
        };
        let result = match (&error, keys.iter().find(|k| failed.contains(**k))) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(k)) => Err(KvError::Unavailable(format!(
                "cloudflare did not write {k}"
            ))),
            (None, None) => Ok(()),
        };
        let _ = job.done.send(result);
    }
}
