//! The event-sourced channel store on Postgres (see `store::channels` for the semantics). Reads come
//! from the `channels` projection; writes append to the channel's stream and update `channels` and
//! `claims` in the same serializable transaction.

use std::sync::Arc;

use sqlx::{PgConnection, PgPool};

use crate::domain::fold::ClaimFinish;
use crate::domain::{
    Amount, BlockNumber, ChannelEvent, ChannelId, ChannelProjection, ChannelState, Claim, ClaimOutcome,
    EthAddress, Event, GroupId, PaymentChannelData, PaymentChannelKey, Signature, StreamId,
};
use crate::store::StoreError;
use crate::store::channels::{ChannelStore, PlannedChange, check_same_channel, plan_change};
use crate::store::retry::{StoreMetrics, serializable};

use super::log::{StreamHead, append, stream_head};
pub use super::projection::load_projection;

#[derive(Clone)]
pub struct PgChannelStore {
    pool: PgPool,
    metrics: Arc<StoreMetrics>,
}

/// How a write treats the current state.
enum Condition<'a> {
    Always,
    IfAbsent,
    IfEquals(&'a PaymentChannelData),
}

impl PgChannelStore {
    pub fn new(pool: PgPool, metrics: Arc<StoreMetrics>) -> Self {
        Self { pool, metrics }
    }

    async fn write(
        &self,
        operation: &'static str,
        condition: Condition<'_>,
        requested: &PaymentChannelData,
    ) -> Result<bool, StoreError> {
        let condition = &condition;
        serializable(&self.pool, &self.metrics, operation, |mut tx| {
            Box::pin(async move {
                let current = load_projection(&mut tx, requested.channel_id).await?.map(|(state, _)| state);
                let allowed = match (condition, &current) {
                    (Condition::Always, _) => true,
                    (Condition::IfAbsent, current) => current.is_none(),
                    (Condition::IfEquals(prev), Some(current)) => current.channel == **prev,
                    (Condition::IfEquals(_), None) => false,
                };
                if !allowed {
                    return Ok((tx, false));
                }
                if let Some(change) = plan_change(current.as_ref(), requested)? {
                    commit_change(&mut tx, current.as_ref(), change).await?;
                }
                Ok((tx, true))
            })
        })
        .await
    }
}

/// Appends a planned change to the channel's stream and writes its projection.
async fn commit_change(
    conn: &mut PgConnection,
    before: Option<&ChannelProjection>,
    change: PlannedChange,
) -> Result<StreamHead, StoreError> {
    let stream = StreamId::Channel(change.after.channel.channel_id);
    let head = stream_head(conn, &stream).await?;
    let events: Vec<Event> = change.events.into_iter().map(Event::Channel).collect();
    let head = append(conn, &stream, head, &events).await?;
    write_projection(conn, before, &change.after, head.version).await?;
    Ok(head)
}

/// Writes the `channels` row and every claim that differs from `before`.
pub async fn write_projection(
    conn: &mut PgConnection,
    before: Option<&ChannelProjection>,
    after: &ChannelProjection,
    version: u64,
) -> Result<(), StoreError> {
    let c = &after.channel;
    sqlx::query!(
        "INSERT INTO ledger.channels (channel_id, nonce, state, sender, recipient, signer, group_id,
                                      full_amount, expiration, authorized_amount, signature, stream_version)
         VALUES ($1::text::numeric, $2::text::numeric, $3, $4, $5, $6, $7,
                 $8::text::numeric, $9::text::numeric, $10::text::numeric, $11, $12)
         ON CONFLICT (channel_id) DO UPDATE SET
            nonce = EXCLUDED.nonce, state = EXCLUDED.state, sender = EXCLUDED.sender,
            recipient = EXCLUDED.recipient, signer = EXCLUDED.signer, group_id = EXCLUDED.group_id,
            full_amount = EXCLUDED.full_amount, expiration = EXCLUDED.expiration,
            authorized_amount = EXCLUDED.authorized_amount, signature = EXCLUDED.signature,
            stream_version = EXCLUDED.stream_version",
        c.channel_id.to_string(),
        c.nonce.to_string(),
        c.state.as_str(),
        c.sender.as_bytes().as_slice(),
        c.recipient.as_bytes().as_slice(),
        c.signer.as_bytes().as_slice(),
        &c.group_id.0[..],
        c.full_amount.to_string(),
        c.expiration.to_string(),
        c.authorized_amount.to_string(),
        c.signature.as_ref().map(|s| s.as_bytes()),
        super::log::version_to_db(version),
    )
    .execute(&mut *conn)
    .await?;
    write_claims(conn, before, after).await
}

/// Writes every claim of `after` that differs from `before`.
pub async fn write_claims(
    conn: &mut PgConnection,
    before: Option<&ChannelProjection>,
    after: &ChannelProjection,
) -> Result<(), StoreError> {
    let c = &after.channel;
    for claim in after.claims.values() {
        if before.and_then(|b| b.claims.get(&claim.nonce)) == Some(claim) {
            continue;
        }
        let finish = claim.finished.as_ref();
        sqlx::query!(
            "INSERT INTO ledger.claims (channel_id, nonce, amount, signature, finish_outcome,
                                        finish_transaction_hash, finish_block_number, finish_amount,
                                        finish_planned_amount)
             VALUES ($1::text::numeric, $2::text::numeric, $3::text::numeric, $4, $5, $6, $7,
                     $8::text::numeric, $9::text::numeric)
             ON CONFLICT (channel_id, nonce) DO UPDATE SET
                amount = EXCLUDED.amount, signature = EXCLUDED.signature,
                finish_outcome = EXCLUDED.finish_outcome,
                finish_transaction_hash = EXCLUDED.finish_transaction_hash,
                finish_block_number = EXCLUDED.finish_block_number, finish_amount = EXCLUDED.finish_amount,
                finish_planned_amount = EXCLUDED.finish_planned_amount",
            c.channel_id.to_string(),
            claim.nonce.to_string(),
            claim.amount.to_string(),
            claim.signature.as_bytes(),
            finish.map(|f| outcome_to_db(f.outcome)),
            finish.map(|f| f.transaction_hash.as_slice()),
            finish.map(|f| i64::try_from(f.block_number).unwrap_or(i64::MAX)),
            finish.map(|f| f.amount.to_string()),
            finish.and_then(|f| f.planned_amount).map(|a| a.to_string()),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub fn outcome_to_db(outcome: ClaimOutcome) -> &'static str {
    match outcome {
        ClaimOutcome::ClaimedByRecipient => "claimed_by_recipient",
        ClaimOutcome::ReclaimedBySender => "reclaimed_by_sender",
    }
}

/// A `channels` row as stored, still in column form (verify compares these field by field).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelRow {
    pub channel_id: String,
    pub nonce: String,
    pub state: String,
    pub sender: Vec<u8>,
    pub recipient: Vec<u8>,
    pub signer: Vec<u8>,
    pub group_id: Vec<u8>,
    pub full_amount: String,
    pub expiration: String,
    pub authorized_amount: String,
    pub signature: Option<Vec<u8>>,
    pub stream_version: i64,
}

/// A `claims` row as stored.
#[derive(Debug, Clone)]
pub struct ClaimRow {
    pub channel_id: String,
    pub nonce: String,
    pub amount: String,
    pub signature: Vec<u8>,
    pub finish_outcome: Option<String>,
    pub finish_transaction_hash: Option<Vec<u8>>,
    pub finish_block_number: Option<i64>,
    pub finish_amount: Option<String>,
    pub finish_planned_amount: Option<String>,
}

impl ChannelRow {
    pub fn to_domain(&self) -> Result<PaymentChannelData, StoreError> {
        let bad = |field: &str, reason: String| StoreError::CorruptLog {
            stream: format!("channel/{}", self.channel_id),
            reason: format!("projection column {field}: {reason}"),
        };
        Ok(PaymentChannelData {
            channel_id: self.channel_id.parse().map_err(|e| bad("channel_id", format!("{e}")))?,
            nonce: self.nonce.parse().map_err(|e| bad("nonce", format!("{e}")))?,
            state: ChannelState::parse(&self.state).ok_or_else(|| bad("state", self.state.clone()))?,
            sender: EthAddress::from_slice(&self.sender).map_err(|e| bad("sender", format!("{e}")))?,
            recipient: EthAddress::from_slice(&self.recipient)
                .map_err(|e| bad("recipient", format!("{e}")))?,
            group_id: GroupId::from_slice(&self.group_id).map_err(|e| bad("group_id", format!("{e}")))?,
            full_amount: self
                .full_amount
                .parse::<Amount>()
                .map_err(|e| bad("full_amount", format!("{e}")))?,
            expiration: self
                .expiration
                .parse::<BlockNumber>()
                .map_err(|e| bad("expiration", format!("{e}")))?,
            signer: EthAddress::from_slice(&self.signer).map_err(|e| bad("signer", format!("{e}")))?,
            authorized_amount: self
                .authorized_amount
                .parse::<Amount>()
                .map_err(|e| bad("authorized_amount", format!("{e}")))?,
            signature: self
                .signature
                .as_deref()
                .map(Signature::from_slice)
                .transpose()
                .map_err(|e| bad("signature", format!("{e}")))?,
        })
    }
}

impl ClaimRow {
    pub fn to_domain(&self) -> Result<Claim, StoreError> {
        let bad = |field: &str, reason: String| StoreError::CorruptLog {
            stream: format!("channel/{}", self.channel_id),
            reason: format!("claims column {field}: {reason}"),
        };
        let finished = match (&self.finish_outcome, &self.finish_transaction_hash) {
            (None, None) => None,
            (Some(outcome), Some(hash)) => Some(ClaimFinish {
                outcome: match outcome.as_str() {
                    "claimed_by_recipient" => ClaimOutcome::ClaimedByRecipient,
                    "reclaimed_by_sender" => ClaimOutcome::ReclaimedBySender,
                    other => return Err(bad("finish_outcome", other.to_owned())),
                },
                transaction_hash: alloy_primitives::B256::try_from(hash.as_slice())
                    .map_err(|e| bad("finish_transaction_hash", format!("{e}")))?,
                block_number: self
                    .finish_block_number
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| bad("finish_block_number", format!("{:?}", self.finish_block_number)))?,
                amount: self
                    .finish_amount
                    .as_deref()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| bad("finish_amount", format!("{e}")))?,
                planned_amount: self
                    .finish_planned_amount
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| bad("finish_planned_amount", format!("{e}")))?,
            }),
            _ => return Err(bad("finish_outcome", "half-finished claim".to_owned())),
        };
        Ok(Claim {
            nonce: self.nonce.parse().map_err(|e| bad("nonce", format!("{e}")))?,
            amount: self.amount.parse().map_err(|e| bad("amount", format!("{e}")))?,
            signature: Signature::from_slice(&self.signature)
                .map_err(|e| bad("signature", format!("{e}")))?,
            finished,
        })
    }
}

/// Every `channels` row, ordered by channel id (`None` = all) .
pub async fn channel_rows(
    conn: &mut PgConnection,
    only: Option<ChannelId>,
) -> Result<Vec<ChannelRow>, StoreError> {
    let rows = sqlx::query_as!(
        ChannelRow,
        r#"SELECT channel_id::text AS "channel_id!", nonce::text AS "nonce!", state, sender, recipient, signer,
                  group_id, full_amount::text AS "full_amount!", expiration::text AS "expiration!",
                  authorized_amount::text AS "authorized_amount!", signature, stream_version
           FROM ledger.channels
           WHERE $1::text IS NULL OR channel_id = $1::text::numeric
           ORDER BY channel_id"#,
        only.map(|id| id.to_string()),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// Every `claims` row, ordered by channel id and nonce (`None` = all channels).
pub async fn claim_rows(
    conn: &mut PgConnection,
    only: Option<ChannelId>,
) -> Result<Vec<ClaimRow>, StoreError> {
    let rows = sqlx::query_as!(
        ClaimRow,
        r#"SELECT channel_id::text AS "channel_id!", nonce::text AS "nonce!", amount::text AS "amount!",
                  signature, finish_outcome, finish_transaction_hash, finish_block_number,
                  finish_amount::text AS finish_amount,
                  finish_planned_amount::text AS finish_planned_amount
           FROM ledger.claims
           WHERE $1::text IS NULL OR channel_id = $1::text::numeric
           ORDER BY channel_id, nonce"#,
        only.map(|id| id.to_string()),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

impl ChannelStore for PgChannelStore {
    async fn get(&self, key: &PaymentChannelKey) -> Result<Option<PaymentChannelData>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row = channel_rows(&mut conn, Some(key.id)).await?.into_iter().next();
        row.map(|row| row.to_domain()).transpose()
    }

    async fn get_all(&self) -> Result<Vec<PaymentChannelData>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        channel_rows(&mut conn, None).await?.iter().map(ChannelRow::to_domain).collect()
    }

    async fn put(&self, channel: &PaymentChannelData) -> Result<(), StoreError> {
        self.write("channels.put", Condition::Always, channel).await.map(|_| ())
    }

    async fn put_if_absent(&self, channel: &PaymentChannelData) -> Result<bool, StoreError> {
        self.write("channels.put_if_absent", Condition::IfAbsent, channel).await
    }

    async fn compare_and_swap(
        &self,
        prev: &PaymentChannelData,
        new: &PaymentChannelData,
    ) -> Result<bool, StoreError> {
        check_same_channel(prev, new)?;
        self.write("channels.compare_and_swap", Condition::IfEquals(prev), new).await
    }

    async fn events(&self, key: &PaymentChannelKey) -> Result<Vec<ChannelEvent>, StoreError> {
        channel_events(&self.pool, key.id).await
    }
}

/// Every event of one channel's stream, in stream order.
pub async fn channel_events(
    pool: &sqlx::PgPool,
    channel_id: ChannelId,
) -> Result<Vec<ChannelEvent>, StoreError> {
    let stream = StreamId::Channel(channel_id);
    let rows = sqlx::query!(
        "SELECT event_type, payload FROM ledger.events WHERE stream = $1 ORDER BY stream_version",
        stream.to_string()
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| match Event::from_json(&row.event_type, &row.payload) {
            Ok(Event::Channel(event)) => Ok(event),
            Ok(other) => Err(StoreError::CorruptLog {
                stream: stream.to_string(),
                reason: format!("{} event in a channel stream", other.event_type()),
            }),
            Err(e) => Err(StoreError::CorruptLog { stream: stream.to_string(), reason: e.to_string() }),
        })
        .collect()
}
