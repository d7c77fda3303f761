//! The escrow's writes to a channel: one serializable transaction that checks the caller still
//! holds the channel's lease, checks the channel has not changed since the caller read it (stream
//! version), applies the events through the fold (so no invariant can be broken), appends them,
//! updates the projections and releases the lease.
//!
//! Invariants this module keeps:
//! - **Nothing counted twice.** A payment commit is recognised by (channel, nonce, amount) and the
//!   signer recovered from the recorded signature (design.md §8): when the channel is at exactly that
//!   authorisation the answer is `AlreadyRecorded`; another signer is `ConflictingPayment`; without
//!   a lease, a stale version makes the log be searched for the payment. A commit retried after its
//!   first attempt committed unacknowledged (which deleted the lease and moved the version) is
//!   resolved by what the server recorded: the last event that attempt wrote is in the log, written
//!   by that attempt's transaction ([`earlier_attempt_committed`]), never guessed. With a lease,
//!   finding the same payment in the
//!   log is not enough: after this lease expired, the same signed payment may have paid for another
//!   call, and this call gets "lost its lease".
//! - **No false conflicts between channels.** Every read and write of the commit is a lookup on the
//!   channel's own unique keys (stream head, `channels` row, lease row), sequential scans are off
//!   for the transaction (`Begin::PointLookups`), and the log is searched by channel only on the
//!   rare path above; so SSI's predicate locks of two commits on different channels never overlap
//!   (proved with the retry counter in `tests/payment_load.rs`). Claims are read only when the
//!   events touch them.
//! - **Few round trips.** BEGIN, one read, one write statement (head moved, events appended,
//!   `channels` row written, lease released), COMMIT. The events' hash links are computed here.
//! - A refusal writes nothing; the retry policy is the caller's (`Retry::Until` for a payment whose
//!   service ran).

use std::sync::{Arc, Mutex, OnceLock};

use sqlx::{PgConnection, PgPool};

use crate::domain::fold::replay;
use crate::domain::signature::{payment_message, recover_signer};
use crate::domain::{
    Amount, ChannelEvent, ChannelId, ChannelProjection, Claim, EthAddress, Event, FoldError, Nonce,
    PaymentChannelData, StreamId,
};
use crate::store::StoreError;
use crate::store::leases::Lease;
use crate::store::retry::{Begin, Retry, StoreMetrics, serializable_with};

use super::batch::{BatchOutcome, BatchedCommit, CommitBatcher};
use super::channel_write::{append_channel_events, read_current};
use super::channels::{channel_rows, claim_rows, load_projection, write_claims};
use super::log::{StreamHead, version_to_db};

/// Who signed a payment being committed: what makes a retried commit recognisable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIdentity {
    pub mpe: EthAddress,
    pub nonce: Nonce,
    pub amount: Amount,
    pub signer: EthAddress,
}

/// One write to one channel.
#[derive(Debug, Clone)]
pub struct ChannelCommit<'a> {
    pub channel_id: ChannelId,
    /// The stream version the caller's decision was based on (0: the channel was not stored).
    pub expected_version: u64,
    /// The lease the caller holds; it is checked, and released with the write.
    pub lease: Option<&'a Lease>,
    pub events: Vec<ChannelEvent>,
    /// For a payment commit: its identity, for idempotency.
    pub payment: Option<PaymentIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Recorded {
        version: u64,
    },
    /// The same payment (channel, nonce, amount, signer) is already in the log: nothing written.
    AlreadyRecorded,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the lease on channel {channel_id} is no longer held by this transaction")]
    LeaseLost { channel_id: ChannelId },
    #[error("channel {channel_id} changed since it was read (version {expected}, now {actual})")]
    StaleState { channel_id: ChannelId, expected: u64, actual: u64 },
    #[error(
        "payment {channel_id}/{nonce} of {amount} is already recorded signed by {recorded_signer}; this one is signed by {signer}"
    )]
    ConflictingPayment {
        channel_id: ChannelId,
        nonce: Nonce,
        amount: Amount,
        recorded_signer: EthAddress,
        signer: EthAddress,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CommitError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(error))
    }
}

impl From<FoldError> for CommitError {
    fn from(error: FoldError) -> Self {
        Self::Store(StoreError::Transition(error))
    }
}

#[derive(Clone)]
pub struct PgLedger {
    pool: PgPool,
    metrics: Arc<StoreMetrics>,
    /// Group commit of payments, started on first use (`batch`).
    batcher: Arc<OnceLock<CommitBatcher>>,
}

impl PgLedger {
    pub fn new(pool: PgPool, metrics: Arc<StoreMetrics>) -> Self {
        Self { pool, metrics, batcher: Arc::new(OnceLock::new()) }
    }

    /// Commits a payment validated against a known state together with other channels' payments
    /// (see `batch`). `NotApplied` means: commit it alone with [`Self::commit_with`], which answers
    /// the precise refusal or records it.
    pub async fn commit_batched(&self, commit: BatchedCommit) -> BatchOutcome {
        let batcher =
            self.batcher.get_or_init(|| CommitBatcher::start(self.pool.clone(), self.metrics.clone()));
        batcher.commit(commit).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The channel's projection and stream version.
    pub async fn channel(
        &self,
        channel_id: ChannelId,
    ) -> Result<Option<(ChannelProjection, u64)>, StoreError> {
        Ok(self.channel_with_head(channel_id).await?.map(|(state, head)| (state, head.version)))
    }

    /// The channel's projection and stream head (what a batched payment commit builds on).
    pub async fn channel_with_head(
        &self,
        channel_id: ChannelId,
    ) -> Result<Option<(ChannelProjection, StreamHead)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_projection(&mut conn, channel_id).await
    }

    /// Channels with a non-zero authorised amount, by id (the provider's unclaimed payments).
    pub async fn unclaimed_channels(&self) -> Result<Vec<PaymentChannelData>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows = channel_rows(&mut conn, None).await?;
        let channels: Result<Vec<_>, _> = rows.iter().map(|row| row.to_domain()).collect();
        Ok(channels?.into_iter().filter(|c| c.authorized_amount != Amount::ZERO).collect())
    }

    /// Every event of one channel's stream, in stream order.
    pub async fn channel_events(&self, channel_id: ChannelId) -> Result<Vec<ChannelEvent>, StoreError> {
        super::channels::channel_events(&self.pool, channel_id).await
    }

    /// Every claim started and not yet seen finished on chain, by channel and nonce.
    pub async fn claims_in_progress(&self) -> Result<Vec<(ChannelId, Claim)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut claims = Vec::new();
        for row in claim_rows(&mut conn, None).await? {
            let claim = row.to_domain()?;
            if claim.finished.is_none() {
                let channel_id = row.channel_id.parse().map_err(|e| StoreError::CorruptLog {
                    stream: format!("channel/{}", row.channel_id),
                    reason: format!("{e}"),
                })?;
                claims.push((channel_id, claim));
            }
        }
        Ok(claims)
    }

    /// Applies one write (module doc) under the default retry policy. A refusal writes nothing.
    pub async fn commit(&self, commit: ChannelCommit<'_>) -> Result<CommitOutcome, CommitError> {
        self.commit_with(commit, Retry::default()).await
    }

    /// Applies one write, retried as `retry` says (a payment whose service ran retries until its
    /// lease's deadline; its earlier attempt, if it committed unacknowledged, is recognised).
    pub async fn commit_with(
        &self,
        commit: ChannelCommit<'_>,
        retry: Retry,
    ) -> Result<CommitOutcome, CommitError> {
        let commit = &commit;
        // What the last attempt that wrote wrote, and its outcome: if its COMMIT went
        // unacknowledged, the next attempt looks for it in the log.
        let in_doubt: &Mutex<Option<(Attempt, CommitOutcome)>> = &Mutex::new(None);
        serializable_with(&self.pool, &self.metrics, "ledger.commit", Begin::PointLookups, retry, |mut tx| {
            Box::pin(async move {
                // Forgotten only once answered: a question lost with its connection is asked again.
                let earlier = in_doubt.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some((attempt, outcome)) = earlier {
                    if earlier_attempt_committed(&mut tx, &attempt).await? {
                        return Ok((tx, Ok(outcome)));
                    }
                    *in_doubt.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                match commit_in(&mut tx, commit).await {
                    Ok((outcome, written)) => {
                        if let Some(attempt) = written {
                            *in_doubt.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some((attempt, outcome.clone()));
                        }
                        Ok((tx, Ok(outcome)))
                    }
                    // Database errors go to the retry helper; refusals end the (unwritten) transaction.
                    Err(CommitError::Store(error)) => Err(error),
                    Err(refusal) => Ok((tx, Err(refusal))),
                }
            })
        })
        .await?
    }
}

/// A commit attempt that wrote: its transaction, and the last event it appended (stream and head).
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub transaction_id: String,
    pub stream: String,
    pub head: StreamHead,
}

/// Whether the attempt committed: the last event it wrote is in the log, with its hash, written by
/// its transaction (`xmin`). The transaction's status alone (`pg_xact_status`) is not enough: after
/// a crash, Postgres hands out again the ids of transactions whose WAL it lost, so the id of an
/// attempt lost in the crash soon names another transaction, which may have committed
/// (`tests/commit_after_crash.rs`). An attempt not found whose transaction is still in progress
/// (the server has not yet noticed that its connection died) is asked about again after a pause,
/// as a connection failure; one not found otherwise did not commit, and is written again.
pub(super) async fn earlier_attempt_committed(
    conn: &mut PgConnection,
    attempt: &Attempt,
) -> Result<bool, StoreError> {
    let transaction_id = attempt.transaction_id.as_str();
    // An id at or past the snapshot's xmax was lost in a crash and not yet handed out again:
    // pg_xact_status would refuse it ("in the future").
    let row = sqlx::query!(
        r#"SELECT CASE WHEN $1::text::xid8 < pg_snapshot_xmax(pg_current_snapshot())
                       THEN pg_xact_status($1::text::xid8) END AS status,
                  EXISTS (SELECT 1 FROM ledger.events
                          WHERE stream = $2 AND stream_version = $3 AND hash = $4
                            AND xmin = $1::text::xid8::xid) AS "written!""#,
        transaction_id,
        attempt.stream,
        version_to_db(attempt.head.version),
        &attempt.head.last_hash[..],
    )
    .fetch_one(&mut *conn)
    .await?;
    tracing::warn!(transaction_id, status = ?row.status, written = row.written, "the last commit attempt was not acknowledged");
    if row.written {
        return Ok(true);
    }
    match row.status.as_deref() {
        Some("in progress") => Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "transaction {transaction_id} of an unacknowledged commit is still in progress"
        )))),
        // Aborted, lost in a crash, or its id reused by another transaction: write again.
        _ => Ok(false),
    }
}

/// One attempt; with what it wrote when it wrote (for an unacknowledged COMMIT).
async fn commit_in(
    conn: &mut PgConnection,
    commit: &ChannelCommit<'_>,
) -> Result<(CommitOutcome, Option<Attempt>), CommitError> {
    let channel_id = commit.channel_id;
    let stream = StreamId::Channel(channel_id);
    let needs_claims = commit.events.iter().any(ChannelEvent::changes_claims);
    let current = read_current(conn, channel_id, commit.lease.is_some(), needs_claims).await?;
    let actual = current.head.map_or(0, |head| head.version);
    let lease_held = commit.lease.is_none_or(|lease| current.lease_token == Some(lease.token));
    if !lease_held || actual != commit.expected_version {
        // Without a lease (the generic store), the same payment found in the log is this one. With
        // a lease it is not: the same signed payment may have paid for another call on another
        // replica after this lease expired, and answering "recorded" would serve this call for
        // nothing. (This caller's own unacknowledged commit is recognised by its transaction id.)
        if commit.lease.is_none()
            && let Some(payment) = &commit.payment
            && let Some(outcome) = find_recorded_payment(conn, channel_id, payment).await?
        {
            return Ok((outcome, None));
        }
        if !lease_held {
            return Err(CommitError::LeaseLost { channel_id });
        }
        return Err(CommitError::StaleState { channel_id, expected: commit.expected_version, actual });
    }
    if let (Some(payment), Some(before)) = (&commit.payment, &current.projection)
        && let Some(outcome) = already_authorised(channel_id, &before.channel, payment)?
    {
        release(conn, commit.lease).await?;
        return Ok((outcome, None));
    }
    let before = current.projection;
    let after = replay(channel_id, before.clone(), &commit.events)?
        .ok_or(FoldError::ChannelNotOpened { channel_id })?;
    if commit.events.is_empty() {
        release(conn, commit.lease).await?;
        return Ok((CommitOutcome::Recorded { version: actual }, None));
    }
    let events: Vec<Event> = commit.events.iter().cloned().map(Event::Channel).collect();
    let signer = commit.payment.as_ref().map(|payment| payment.signer);
    let (head, transaction_id) =
        append_channel_events(conn, &stream, current.head, &events, &after, commit.lease, signer).await?;
    if needs_claims {
        write_claims(conn, before.as_ref(), &after).await?;
    }
    let attempt = Attempt { transaction_id, stream: stream.to_string(), head };
    Ok((CommitOutcome::Recorded { version: head.version }, Some(attempt)))
}

async fn release(conn: &mut PgConnection, lease: Option<&Lease>) -> Result<(), CommitError> {
    if let Some(lease) = lease {
        sqlx::query!(
            "UPDATE ledger.leases SET token = NULL WHERE channel_id = $1::text::numeric AND token = $2",
            lease.channel_id.to_string(),
            lease.token
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The payment is the channel's current authorisation already (same nonce and amount): the same
/// signer means it is this payment, recorded; another signer is a conflict. Pure: the state was read
/// in the transaction.
fn already_authorised(
    channel_id: ChannelId,
    channel: &PaymentChannelData,
    payment: &PaymentIdentity,
) -> Result<Option<CommitOutcome>, CommitError> {
    let Some(signature) = &channel.signature else { return Ok(None) };
    if channel.nonce != payment.nonce || channel.authorized_amount != payment.amount {
        return Ok(None);
    }
    let message = payment_message(&payment.mpe, channel_id, payment.nonce, payment.amount);
    let recorded_signer = recover_signer(&message, signature.as_bytes()).map_err(|e| {
        CommitError::Store(StoreError::CorruptLog {
            stream: format!("channel/{channel_id}"),
            reason: format!("recorded payment signature does not recover: {e}"),
        })
    })?;
    if recorded_signer == payment.signer {
        Ok(Some(CommitOutcome::AlreadyRecorded))
    } else {
        Err(CommitError::ConflictingPayment {
            channel_id,
            nonce: payment.nonce,
            amount: payment.amount,
            recorded_signer,
            signer: payment.signer,
        })
    }
}

/// A payment with the same (channel, nonce, amount) already in the log: the same signer means the
/// same payment; another signer is a conflict.
async fn find_recorded_payment(
    conn: &mut PgConnection,
    channel_id: ChannelId,
    payment: &PaymentIdentity,
) -> Result<Option<CommitOutcome>, CommitError> {
    let signatures = sqlx::query_scalar!(
        r#"SELECT signature AS "signature!" FROM ledger.events
           WHERE channel_id = $1::text::numeric AND event_type = 'payment_accepted'
             AND nonce = $2::text::numeric AND amount = $3::text::numeric AND signature IS NOT NULL
           ORDER BY stream_version"#,
        channel_id.to_string(),
        payment.nonce.to_string(),
        payment.amount.to_string(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let message = payment_message(&payment.mpe, channel_id, payment.nonce, payment.amount);
    let mut recorded_signers = Vec::new();
    for signature in signatures {
        let recorded_signer = recover_signer(&message, &signature).map_err(|e| {
            CommitError::Store(StoreError::CorruptLog {
                stream: format!("channel/{channel_id}"),
                reason: format!("recorded payment signature does not recover: {e}"),
            })
        })?;
        if recorded_signer == payment.signer {
            return Ok(Some(CommitOutcome::AlreadyRecorded));
        }
        recorded_signers.push(recorded_signer);
    }
    match recorded_signers.first() {
        None => Ok(None),
        Some(recorded_signer) => Err(CommitError::ConflictingPayment {
            channel_id,
            nonce: payment.nonce,
            amount: payment.amount,
            recorded_signer: *recorded_signer,
            signer: payment.signer,
        }),
    }
}
