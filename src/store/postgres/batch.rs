//! Group commit of payments: the payment commits of several channels in one serializable
//! transaction, one write statement, one WAL flush, each channel's outcome independent.
//!
//! A payment commit that knows the state it was validated against (the channel's projection and
//! stream head, read when the payment started) is queued here instead of running its own
//! transaction. The committer task ([`COMMITTERS`]) takes what is queued (up to
//! [`MAX_BATCH`] payments, never two of one channel: a later one waits for the next batch) and write
//! them with one statement: for each payment, the stream head moves only if it is still at the
//! version and hash the payment was validated against **and** the payment's lease is still held;
//! only those payments' events, `channels` rows and lease releases are written. The statement
//! returns which streams moved.
//!
//! What this module keeps true:
//! - **Money writes stay SERIALIZABLE**: the batch is one serializable transaction
//!   (`Begin::PointLookups`: every lookup is on a channel's unique key, so payments on different
//!   channels do not conflict); a serialization failure retries the whole batch until the earliest
//!   deadline of its payments, a COMMIT whose acknowledgement was lost is resolved by looking for
//!   what the transaction wrote in the log (`ledger::earlier_attempt_committed`), as for a single
//!   commit.
//! - **Each channel's outcome is independent**: a payment whose state moved on or whose lease was
//!   lost is simply not written by the batch, and is handed back to its caller as `NotApplied`; the
//!   caller then commits it alone (`PgLedger::commit_with`), which reads the channel and answers
//!   the precise refusal (lost lease, stale state) or records it. A batch that fails for any other
//!   reason hands every payment back the same way, so one bad payment cannot sink the others.
//! - **Bounded**: at most [`QUEUE_CAPACITY`] payments wait; a full queue makes the caller commit
//!   alone rather than wait without bound.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::domain::{ChannelId, ChannelProjection, EthAddress, Event, StreamId};
use crate::store::StoreError;
use crate::store::retry::{Begin, Retry, StoreMetrics, serializable_with};

use super::ledger::{Attempt, earlier_attempt_committed};
use super::log::{ChainLink, StreamHead, attribution, chain_links, version_to_db};

/// Committer tasks. One is fastest here (`cargo bench --bench ledger`, quick mode, 16 clients: 1
/// committer 0.29× pgbench `-N` end to end and 0.46× at store level; 2: 0.25× and 0.40×; 3: 0.27×
/// and 0.42×; 5: 0.23× and 0.32×): while a batch waits for its WAL flush the next one grows, and
/// batches of one committer never overlap, so SSI has nothing to track between them.
pub const COMMITTERS: usize = 1;
/// Most payments in one transaction.
pub const MAX_BATCH: usize = 64;
/// Most payments waiting for a committer.
pub const QUEUE_CAPACITY: usize = 4096;

/// One channel's payment commit, ready to be written: events with their hash links from the head
/// the payment was validated against, and the projection they fold to.
#[derive(Debug, Clone)]
pub struct BatchedCommit {
    pub channel_id: ChannelId,
    /// The stream head the payment was validated against (`None`: the channel was not stored).
    pub head: Option<StreamHead>,
    pub events: Vec<Event>,
    /// The channel's projection after the events (its claims are not written: payments and merges
    /// never change them).
    pub after: ChannelProjection,
    pub lease_token: Uuid,
    /// The lease holder: the replica serving the call (the events' `replica` column).
    pub lease_holder: String,
    /// Whom the payment's signature recovered to (its event's `signer` column).
    pub signer: EthAddress,
    /// The latest moment the caller waits for a serialization retry (its lease's lifetime).
    pub deadline: Instant,
}

impl BatchedCommit {
    fn stream(&self) -> StreamId {
        StreamId::Channel(self.channel_id)
    }

    fn links(&self) -> Vec<ChainLink> {
        chain_links(&self.stream(), self.head, &self.events)
    }
}

/// What became of one batched commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Written; the stream is at this version.
    Recorded { version: u64 },
    /// Not written (state moved, lease lost, queue full or the batch failed): commit it alone.
    NotApplied,
}

struct Queued {
    commit: BatchedCommit,
    answer: oneshot::Sender<BatchOutcome>,
}

/// The queue and its committer tasks; cheap to clone.
#[derive(Clone)]
pub struct CommitBatcher {
    queue: mpsc::Sender<Queued>,
}

impl CommitBatcher {
    /// Starts the committer tasks on the current runtime.
    pub fn start(pool: PgPool, metrics: Arc<StoreMetrics>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let deferred = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..COMMITTERS {
            let committer = Committer {
                pool: pool.clone(),
                metrics: metrics.clone(),
                receiver: receiver.clone(),
                deferred: deferred.clone(),
            };
            tokio::spawn(committer.run());
        }
        Self { queue }
    }

    /// Queues `commit` and waits for its batch.
    pub async fn commit(&self, commit: BatchedCommit) -> BatchOutcome {
        let (answer, outcome) = oneshot::channel();
        if self.queue.try_send(Queued { commit, answer }).is_err() {
            return BatchOutcome::NotApplied;
        }
        outcome.await.unwrap_or(BatchOutcome::NotApplied)
    }
}

struct Committer {
    pool: PgPool,
    metrics: Arc<StoreMetrics>,
    receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    /// Commits taken from the queue that could not join their batch (another of the same channel
    /// was in it): first in the next batch.
    deferred: Arc<Mutex<Vec<Queued>>>,
}

impl Committer {
    async fn run(self) {
        while let Some(batch) = self.next_batch().await {
            self.write(batch).await;
        }
    }

    /// Waits for at least one commit, then takes what is there, one per channel.
    async fn next_batch(&self) -> Option<Vec<Queued>> {
        let mut receiver = self.receiver.lock().await;
        let mut waiting: Vec<Queued> =
            std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        if waiting.is_empty() {
            waiting.push(receiver.recv().await?);
        }
        while waiting.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(queued) => waiting.push(queued),
                Err(_) => break,
            }
        }
        drop(receiver);
        let mut channels = HashSet::new();
        let (batch, later): (Vec<_>, Vec<_>) =
            waiting.into_iter().partition(|queued| channels.insert(queued.commit.channel_id));
        if !later.is_empty() {
            self.deferred.lock().unwrap_or_else(|p| p.into_inner()).extend(later);
        }
        Some(batch)
    }

    async fn write(&self, batch: Vec<Queued>) {
        let commits: Vec<&BatchedCommit> = batch.iter().map(|queued| &queued.commit).collect();
        let deadline = commits.iter().map(|commit| commit.deadline).min().unwrap_or_else(Instant::now);
        let moved = match write_batch(&self.pool, &self.metrics, &commits, deadline).await {
            Ok(moved) => moved,
            Err(error) => {
                tracing::warn!(%error, payments = commits.len(), "batched payment commit failed; committing each alone");
                HashSet::new()
            }
        };
        for queued in batch {
            let stream = queued.commit.stream().to_string();
            let outcome = match moved.contains(&stream) {
                true => {
                    BatchOutcome::Recorded { version: queued.commit.links().last().map_or(0, |l| l.version) }
                }
                false => BatchOutcome::NotApplied,
            };
            let _ = queued.answer.send(outcome);
        }
    }
}

/// The batch in one serializable transaction (module doc); the streams that moved.
async fn write_batch(
    pool: &PgPool,
    metrics: &StoreMetrics,
    commits: &[&BatchedCommit],
    deadline: Instant,
) -> Result<HashSet<String>, StoreError> {
    let arrays = &Arrays::of(commits);
    let in_doubt: &Mutex<Option<(Attempt, HashSet<String>)>> = &Mutex::new(None);
    serializable_with(
        pool,
        metrics,
        "ledger.commit_batch",
        Begin::PointLookups,
        Retry::Until(deadline),
        |mut tx| {
            Box::pin(async move {
                // Forgotten only once answered: a question lost with its connection is asked again.
                let earlier = in_doubt.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some((attempt, moved)) = earlier {
                    if earlier_attempt_committed(&mut tx, &attempt).await? {
                        return Ok((tx, moved));
                    }
                    *in_doubt.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                let (moved, transaction_id) = arrays.write(&mut tx).await?;
                // One stream's head witnesses the whole transaction; a batch that moved none
                // wrote nothing, and writing it again is the same.
                let witness = commits.iter().find(|commit| moved.contains(&commit.stream().to_string()));
                if let Some(commit) = witness
                    && let Some(last) = commit.links().last()
                {
                    let head = StreamHead { version: last.version, last_hash: last.hash };
                    let attempt = Attempt { transaction_id, stream: commit.stream().to_string(), head };
                    *in_doubt.lock().unwrap_or_else(|p| p.into_inner()) = Some((attempt, moved.clone()));
                }
                Ok((tx, moved))
            })
        },
    )
    .await
}

/// The batch as the statement's array parameters: one entry per channel, one per event.
#[derive(Default)]
struct Arrays {
    streams: Vec<String>,
    channel_ids: Vec<String>,
    expected: Vec<i64>,
    versions: Vec<i64>,
    hashes: Vec<Vec<u8>>,
    prev_hashes: Vec<Vec<u8>>,
    tokens: Vec<Uuid>,
    nonces: Vec<String>,
    states: Vec<String>,
    senders: Vec<Vec<u8>>,
    recipients: Vec<Vec<u8>>,
    signers: Vec<Vec<u8>>,
    group_ids: Vec<Vec<u8>>,
    full_amounts: Vec<String>,
    expirations: Vec<String>,
    authorized_amounts: Vec<String>,
    signatures: Vec<Option<Vec<u8>>>,
    event_streams: Vec<String>,
    event_channel_ids: Vec<String>,
    event_versions: Vec<i64>,
    event_types: Vec<String>,
    event_payloads: Vec<String>,
    event_nonces: Vec<Option<String>>,
    event_amounts: Vec<Option<String>>,
    event_signatures: Vec<Option<Vec<u8>>>,
    event_prev_hashes: Vec<Vec<u8>>,
    event_hashes: Vec<Vec<u8>>,
    event_signers: Vec<Option<Vec<u8>>>,
    event_replicas: Vec<Option<String>>,
}

impl Arrays {
    fn of(commits: &[&BatchedCommit]) -> Self {
        let mut a = Self::default();
        for commit in commits {
            let stream = commit.stream().to_string();
            let channel_id = commit.channel_id.to_string();
            let links = commit.links();
            let (Some(first), Some(last)) = (links.first(), links.last()) else { continue };
            a.streams.push(stream.clone());
            a.channel_ids.push(channel_id.clone());
            a.expected.push(version_to_db(commit.head.map_or(0, |h| h.version)));
            a.versions.push(version_to_db(last.version));
            a.hashes.push(last.hash.to_vec());
            a.prev_hashes.push(first.prev_hash.to_vec());
            a.tokens.push(commit.lease_token);
            let c = &commit.after.channel;
            a.nonces.push(c.nonce.to_string());
            a.states.push(c.state.as_str().to_owned());
            a.senders.push(c.sender.as_bytes().to_vec());
            a.recipients.push(c.recipient.as_bytes().to_vec());
            a.signers.push(c.signer.as_bytes().to_vec());
            a.group_ids.push(c.group_id.0.to_vec());
            a.full_amounts.push(c.full_amount.to_string());
            a.expirations.push(c.expiration.to_string());
            a.authorized_amounts.push(c.authorized_amount.to_string());
            a.signatures.push(c.signature.as_ref().map(|s| s.as_bytes().to_vec()));
            for (event, link) in commit.events.iter().zip(&links) {
                let (nonce, amount, signature) = event.amount_columns();
                a.event_streams.push(stream.clone());
                a.event_channel_ids.push(channel_id.clone());
                a.event_versions.push(version_to_db(link.version));
                a.event_types.push(event.event_type().to_owned());
                a.event_payloads.push(event.to_json().to_string());
                a.event_nonces.push(nonce.map(|n| n.to_string()));
                a.event_amounts.push(amount.map(|a| a.to_string()));
                a.event_signatures.push(signature.map(|s| s.as_bytes().to_vec()));
                a.event_prev_hashes.push(link.prev_hash.to_vec());
                a.event_hashes.push(link.hash.to_vec());
                let (signer, replica) = attribution(event, Some(commit.signer), Some(&commit.lease_holder));
                a.event_signers.push(signer);
                a.event_replicas.push(replica);
            }
        }
        a
    }

    /// The write statement; the streams that moved and the transaction's id.
    async fn write(&self, conn: &mut sqlx::PgConnection) -> Result<(HashSet<String>, String), StoreError> {
        let row = sqlx::query!(
            r#"WITH c AS (
                   SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[],
                                        $6::bytea[], $7::uuid[], $8::text[], $9::text[], $10::bytea[],
                                        $11::bytea[], $12::bytea[], $13::bytea[], $14::text[], $15::text[],
                                        $16::text[], $17::bytea[])
                       AS c (stream, channel_id, expected, version, hash, prev_hash, token, nonce, state,
                             sender, recipient, signer, group_id, full_amount, expiration,
                             authorized_amount, signature)
               ), leased AS (
                   SELECT c.stream FROM c
                   JOIN ledger.leases l ON l.channel_id = c.channel_id::numeric AND l.token = c.token
               ), moved AS (
                   UPDATE ledger.streams s SET version = c.version, last_hash = c.hash
                   FROM c
                   WHERE s.stream = c.stream AND s.version = c.expected AND s.last_hash = c.prev_hash
                     AND c.expected > 0 AND c.stream IN (SELECT stream FROM leased)
                   RETURNING s.stream
               ), created AS (
                   INSERT INTO ledger.streams (stream, version, last_hash)
                   SELECT c.stream, c.version, c.hash FROM c
                   WHERE c.expected = 0 AND c.stream IN (SELECT stream FROM leased)
                   ON CONFLICT (stream) DO NOTHING
                   RETURNING stream
               ), head AS (
                   SELECT stream FROM moved UNION ALL SELECT stream FROM created
               ), appended AS (
                   INSERT INTO ledger.events (stream, stream_version, event_type, payload, channel_id, nonce,
                                              amount, signature, prev_hash, hash, signer, replica)
                   SELECT e.stream, e.version, e.event_type, e.payload::jsonb, e.channel_id::numeric,
                          e.nonce::numeric, e.amount::numeric, e.signature, e.prev_hash, e.hash, e.signer,
                          e.replica
                   FROM unnest($18::text[], $19::text[], $20::bigint[], $21::text[], $22::text[], $23::text[],
                               $24::text[], $25::bytea[], $26::bytea[], $27::bytea[], $28::bytea[], $29::text[])
                        AS e (stream, channel_id, version, event_type, payload, nonce, amount, signature,
                              prev_hash, hash, signer, replica)
                   WHERE e.stream IN (SELECT stream FROM head)
                   RETURNING 1
               ), opened AS (
                   INSERT INTO ledger.channels (channel_id, nonce, state, sender, recipient, signer, group_id,
                                                full_amount, expiration, authorized_amount, signature,
                                                stream_version)
                   SELECT c.channel_id::numeric, c.nonce::numeric, c.state, c.sender, c.recipient, c.signer,
                          c.group_id, c.full_amount::numeric, c.expiration::numeric,
                          c.authorized_amount::numeric, c.signature, c.version
                   FROM c WHERE c.expected = 0 AND c.stream IN (SELECT stream FROM head)
                   RETURNING 1
               ), changed AS (
                   UPDATE ledger.channels ch SET nonce = c.nonce::numeric, state = c.state, sender = c.sender,
                          recipient = c.recipient, signer = c.signer, group_id = c.group_id,
                          full_amount = c.full_amount::numeric, expiration = c.expiration::numeric,
                          authorized_amount = c.authorized_amount::numeric, signature = c.signature,
                          stream_version = c.version
                   FROM c
                   WHERE ch.channel_id = c.channel_id::numeric AND c.expected > 0
                     AND c.stream IN (SELECT stream FROM head)
                   RETURNING 1
               ), released AS (
                   UPDATE ledger.leases l SET token = NULL FROM c
                   WHERE l.channel_id = c.channel_id::numeric AND l.token = c.token
                     AND c.stream IN (SELECT stream FROM head)
                   RETURNING 1
               )
               SELECT ARRAY(SELECT stream FROM head) AS "moved!",
                      (SELECT count(*) FROM appended) AS "appended!",
                      (SELECT count(*) FROM opened) + (SELECT count(*) FROM changed) AS "projected!",
                      (SELECT count(*) FROM released) AS "released!",
                      pg_current_xact_id()::text AS "transaction_id!""#,
            &self.streams,
            &self.channel_ids,
            &self.expected,
            &self.versions,
            &self.hashes,
            &self.prev_hashes,
            &self.tokens,
            &self.nonces,
            &self.states,
            &self.senders,
            &self.recipients,
            &self.signers,
            &self.group_ids,
            &self.full_amounts,
            &self.expirations,
            &self.authorized_amounts,
            &self.signatures as &[Option<Vec<u8>>],
            &self.event_streams,
            &self.event_channel_ids,
            &self.event_versions,
            &self.event_types,
            &self.event_payloads,
            &self.event_nonces as &[Option<String>],
            &self.event_amounts as &[Option<String>],
            &self.event_signatures as &[Option<Vec<u8>>],
            &self.event_prev_hashes,
            &self.event_hashes,
            &self.event_signers as &[Option<Vec<u8>>],
            &self.event_replicas as &[Option<String>],
        )
        .fetch_one(&mut *conn)
        .await?;
        let moved: HashSet<String> = row.moved.into_iter().collect();
        let expected_events =
            self.event_streams.iter().filter(|stream| moved.contains(*stream)).count() as i64;
        let complete = row.appended == expected_events
            && row.projected == moved.len() as i64
            && row.released == moved.len() as i64;
        if !complete {
            // Serializable isolation reports concurrent writers as 40001 first: reaching this means
            // a bug or a manual edit.
            return Err(StoreError::CorruptLog {
                stream: moved.iter().next().cloned().unwrap_or_default(),
                reason: format!(
                    "batched commit moved {} stream(s) but appended {} of {expected_events} event(s), wrote {} projection(s), released {} lease(s)",
                    moved.len(),
                    row.appended,
                    row.projected,
                    row.released
                ),
            });
        }
        Ok((moved, row.transaction_id))
    }
}
