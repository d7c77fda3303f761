//! Reading one channel's stored state for a payment or a query: its `channels` row, its stream head
//! and its claims in one round trip, optionally taking the channel's lease in the same statement.
//!
//! Invariants: the row, the head and the claims come from one statement, hence one snapshot; a
//! projection whose version is not its stream head's is refused as a corrupt log, never used.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{ChannelId, ChannelProjection, StreamId};
use crate::store::StoreError;
use crate::store::leases::{Acquisition, Lease, LeaseInfo};

use super::channels::{ChannelRow, ClaimRow};
use super::log::{StreamHead, hash_from_db, version_from_db};

/// A channel's stored projection and its stream head.
pub type StoredChannel = (ChannelProjection, StreamHead);

/// One row of the channel-with-claims join (and, when a lease was asked for, the lease's columns).
#[derive(Debug)]
struct StoredRow {
    taken: Option<Uuid>,
    holder: Option<String>,
    acquired_at: Option<String>,
    expires_at: Option<String>,
    expired: Option<bool>,
    nonce: Option<String>,
    state: Option<String>,
    sender: Option<Vec<u8>>,
    recipient: Option<Vec<u8>>,
    signer: Option<Vec<u8>>,
    group_id: Option<Vec<u8>>,
    full_amount: Option<String>,
    expiration: Option<String>,
    authorized_amount: Option<String>,
    signature: Option<Vec<u8>>,
    stream_version: Option<i64>,
    head_version: Option<i64>,
    head_hash: Option<Vec<u8>>,
    claim_nonce: Option<String>,
    claim_amount: Option<String>,
    claim_signature: Option<Vec<u8>>,
    finish_outcome: Option<String>,
    finish_transaction_hash: Option<Vec<u8>>,
    finish_block_number: Option<i64>,
    finish_amount: Option<String>,
    finish_planned_amount: Option<String>,
}

/// The stored projection of one channel and its stream head (`None` when not stored).
pub async fn load_projection(
    conn: &mut PgConnection,
    channel_id: ChannelId,
) -> Result<Option<StoredChannel>, StoreError> {
    let stream = StreamId::Channel(channel_id);
    let rows = sqlx::query_as!(
        StoredRow,
        r#"SELECT NULL::uuid AS taken, NULL::text AS holder, NULL::text AS acquired_at,
                  NULL::text AS expires_at, NULL::bool AS expired,
                  c.nonce::text AS nonce, c.state AS "state?", c.sender AS "sender?",
                  c.recipient AS "recipient?", c.signer AS "signer?", c.group_id AS "group_id?",
                  c.full_amount::text AS full_amount, c.expiration::text AS expiration,
                  c.authorized_amount::text AS authorized_amount, c.signature,
                  c.stream_version AS "stream_version?",
                  s.version AS "head_version?", s.last_hash AS "head_hash?",
                  k.nonce::text AS claim_nonce, k.amount::text AS "claim_amount?",
                  k.signature AS "claim_signature?", k.finish_outcome AS "finish_outcome?",
                  k.finish_transaction_hash AS "finish_transaction_hash?",
                  k.finish_block_number AS "finish_block_number?", k.finish_amount::text AS finish_amount,
                  k.finish_planned_amount::text AS finish_planned_amount
           FROM ledger.channels c
           LEFT JOIN ledger.streams s ON s.stream = $2
           LEFT JOIN ledger.claims k ON k.channel_id = c.channel_id
           WHERE c.channel_id = $1::text::numeric
           ORDER BY k.nonce"#,
        channel_id.to_string(),
        stream.to_string(),
    )
    .fetch_all(&mut *conn)
    .await?;
    projection_of(channel_id, rows)
}

/// Takes the channel's lease if it is free or expired (as `PgLeases::acquire`) and reads its stored
/// state, in one statement: a paid call's one round trip before validation. The state is read
/// whether or not the lease was taken (it is only used when it was).
pub async fn take_lease_and_load(
    conn: &mut PgConnection,
    channel_id: ChannelId,
    holder: &str,
    ttl: Duration,
) -> Result<(Acquisition, Option<StoredChannel>), StoreError> {
    let token = Uuid::new_v4();
    let stream = StreamId::Channel(channel_id);
    let rows = sqlx::query_as!(
        StoredRow,
        r#"WITH taken AS (
               INSERT INTO ledger.leases (channel_id, holder, token, acquired_at, expires_at)
               VALUES ($1::text::numeric, $3, $4, now(), now() + make_interval(secs => $5::float8))
               ON CONFLICT (channel_id) DO UPDATE
                  SET holder = EXCLUDED.holder, token = EXCLUDED.token,
                      acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
                  WHERE ledger.leases.token IS NULL OR ledger.leases.expires_at <= now()
               RETURNING token
           )
           SELECT (SELECT token FROM taken) AS taken, l.holder AS "holder?",
                  l.acquired_at::text AS acquired_at, l.expires_at::text AS expires_at,
                  l.expires_at <= now() AS expired,
                  c.nonce::text AS nonce, c.state AS "state?", c.sender AS "sender?",
                  c.recipient AS "recipient?", c.signer AS "signer?", c.group_id AS "group_id?",
                  c.full_amount::text AS full_amount, c.expiration::text AS expiration,
                  c.authorized_amount::text AS authorized_amount, c.signature AS "signature?",
                  c.stream_version AS "stream_version?",
                  s.version AS "head_version?", s.last_hash AS "head_hash?",
                  k.nonce::text AS claim_nonce, k.amount::text AS "claim_amount?",
                  k.signature AS "claim_signature?", k.finish_outcome AS "finish_outcome?",
                  k.finish_transaction_hash AS "finish_transaction_hash?",
                  k.finish_block_number AS "finish_block_number?", k.finish_amount::text AS finish_amount,
                  k.finish_planned_amount::text AS finish_planned_amount
           FROM (VALUES (1)) AS one (x)
           LEFT JOIN ledger.leases l ON l.channel_id = $1::text::numeric AND l.token IS NOT NULL
           LEFT JOIN ledger.channels c ON c.channel_id = $1::text::numeric
           LEFT JOIN ledger.streams s ON s.stream = $2
           LEFT JOIN ledger.claims k ON k.channel_id = c.channel_id
           ORDER BY k.nonce"#,
        channel_id.to_string(),
        stream.to_string(),
        holder,
        token,
        ttl.as_secs_f64(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let first = rows.first().ok_or_else(|| StoreError::CorruptLog {
        stream: stream.to_string(),
        reason: "lease statement returned no row".into(),
    })?;
    let acquisition = if first.taken == Some(token) {
        Acquisition::Acquired(Lease { channel_id, holder: holder.to_owned(), token })
    } else {
        Acquisition::HeldBy(LeaseInfo {
            channel_id,
            // Taken by a writer that committed after this statement's snapshot: not seen here.
            holder: first.holder.clone().unwrap_or_else(|| "(taken meanwhile)".to_owned()),
            acquired_at: first.acquired_at.clone().unwrap_or_default(),
            expires_at: first.expires_at.clone().unwrap_or_default(),
            expired: first.expired.unwrap_or(false),
        })
    };
    let stored = if first.stream_version.is_some() { projection_of(channel_id, rows)? } else { None };
    Ok((acquisition, stored))
}

/// The projection in `rows` (one per claim, or one with no claim); `None` when there is no channel.
fn projection_of(channel_id: ChannelId, rows: Vec<StoredRow>) -> Result<Option<StoredChannel>, StoreError> {
    let stream = StreamId::Channel(channel_id);
    let Some(first) = rows.first() else { return Ok(None) };
    let Some(stream_version) = first.stream_version else { return Ok(None) };
    let missing = |column: &str| StoreError::CorruptLog {
        stream: stream.to_string(),
        reason: format!("projection column {column} is NULL"),
    };
    let channel = ChannelRow {
        channel_id: channel_id.to_string(),
        nonce: first.nonce.clone().ok_or_else(|| missing("nonce"))?,
        state: first.state.clone().ok_or_else(|| missing("state"))?,
        sender: first.sender.clone().ok_or_else(|| missing("sender"))?,
        recipient: first.recipient.clone().ok_or_else(|| missing("recipient"))?,
        signer: first.signer.clone().ok_or_else(|| missing("signer"))?,
        group_id: first.group_id.clone().ok_or_else(|| missing("group_id"))?,
        full_amount: first.full_amount.clone().ok_or_else(|| missing("full_amount"))?,
        expiration: first.expiration.clone().ok_or_else(|| missing("expiration"))?,
        authorized_amount: first.authorized_amount.clone().ok_or_else(|| missing("authorized_amount"))?,
        signature: first.signature.clone(),
        stream_version,
    }
    .to_domain()?;
    let version = version_from_db(&stream, stream_version)?;
    let head = match (first.head_version, &first.head_hash) {
        (Some(head_version), Some(hash)) if head_version == stream_version => {
            StreamHead { version, last_hash: hash_from_db(&stream, hash)? }
        }
        (head_version, _) => {
            return Err(StoreError::CorruptLog {
                stream: stream.to_string(),
                reason: format!("projection at version {stream_version}, stream head at {head_version:?}"),
            });
        }
    };
    let mut claims = BTreeMap::new();
    for row in rows {
        let (Some(nonce), Some(amount), Some(signature)) =
            (row.claim_nonce, row.claim_amount, row.claim_signature)
        else {
            continue;
        };
        let claim = ClaimRow {
            channel_id: channel_id.to_string(),
            nonce,
            amount,
            signature,
            finish_outcome: row.finish_outcome,
            finish_transaction_hash: row.finish_transaction_hash,
            finish_block_number: row.finish_block_number,
            finish_amount: row.finish_amount,
            finish_planned_amount: row.finish_planned_amount,
        }
        .to_domain()?;
        claims.insert(claim.nonce, claim);
    }
    Ok(Some((ChannelProjection { channel, claims }, head)))
}
