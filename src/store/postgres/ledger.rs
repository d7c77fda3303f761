//! The escrow's writes to a channel: one serializable transaction that checks the caller still
//! holds the channel's lease, checks the channel has not changed since the caller read it (stream
//! version), applies the events through the fold (so no invariant can be broken), appends them,
//! updates the projections and releases the lease. A retried payment commit is recognised by
//! (channel, nonce, amount) and the signer, and counted once (design.md §8).

use std::sync::Arc;

use sqlx::{PgConnection, PgPool};

use crate::domain::fold::replay;
use crate::domain::signature::{payment_message, recover_signer};
use crate::domain::{
    Amount, ChannelEvent, ChannelId, ChannelProjection, Claim, EthAddress, FoldError, Nonce,
    PaymentChannelData,
};
use crate::store::StoreError;
use crate::store::channels::PlannedChange;
use crate::store::leases::Lease;
use crate::store::retry::{StoreMetrics, serializable};

use super::channels::{channel_rows, claim_rows, commit_change, load_projection};

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
}

impl PgLedger {
    pub fn new(pool: PgPool, metrics: Arc<StoreMetrics>) -> Self {
        Self { pool, metrics }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The channel's projection and stream version.
    pub async fn channel(
        &self,
        channel_id: ChannelId,
    ) -> Result<Option<(ChannelProjection, u64)>, StoreError> {
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

    /// Applies one write (module doc). A refusal writes nothing.
    pub async fn commit(&self, commit: ChannelCommit<'_>) -> Result<CommitOutcome, CommitError> {
        let commit = &commit;
        serializable(&self.pool, &self.metrics, "ledger.commit", |mut tx| {
            Box::pin(async move {
                match commit_in(&mut tx, commit).await {
                    // Database errors go to the retry helper; refusals end the (unwritten) transaction.
                    Err(CommitError::Store(error)) => Err(error),
                    answer => Ok((tx, answer)),
                }
            })
        })
        .await?
    }
}

async fn commit_in(
    conn: &mut PgConnection,
    commit: &ChannelCommit<'_>,
) -> Result<CommitOutcome, CommitError> {
    let channel_id = commit.channel_id;
    let id = channel_id.to_string();
    if let Some(lease) = commit.lease {
        let holder =
            sqlx::query_scalar!("SELECT token FROM ledger.leases WHERE channel_id = $1::text::numeric", id)
                .fetch_optional(&mut *conn)
                .await?;
        if holder != Some(lease.token) {
            return Err(CommitError::LeaseLost { channel_id });
        }
    }
    if let Some(payment) = &commit.payment
        && let Some(outcome) = find_recorded_payment(conn, channel_id, payment).await?
    {
        release(conn, commit.lease).await?;
        return Ok(outcome);
    }
    let current = load_projection(conn, channel_id).await?;
    let actual = current.as_ref().map_or(0, |(_, version)| *version);
    if actual != commit.expected_version {
        return Err(CommitError::StaleState { channel_id, expected: commit.expected_version, actual });
    }
    let before = current.map(|(state, _)| state);
    let after = replay(channel_id, before.clone(), &commit.events)?
        .ok_or(FoldError::ChannelNotOpened { channel_id })?;
    let head = if commit.events.is_empty() {
        None
    } else {
        Some(
            commit_change(conn, before.as_ref(), PlannedChange { events: commit.events.clone(), after })
                .await?,
        )
    };
    release(conn, commit.lease).await?;
    Ok(CommitOutcome::Recorded { version: head.map_or(actual, |h| h.version) })
}

async fn release(conn: &mut PgConnection, lease: Option<&Lease>) -> Result<(), CommitError> {
    if let Some(lease) = lease {
        sqlx::query!(
            "DELETE FROM ledger.leases WHERE channel_id = $1::text::numeric AND token = $2",
            lease.channel_id.to_string(),
            lease.token
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
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
