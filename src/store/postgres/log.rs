//! Appending to the event log. Each append first moves the stream head with a version-checked
//! update (so two writers of one stream conflict with 40001, not 23505), then inserts the events
//! with their hash links, all inside the caller's serializable transaction.
//!
//! Beside each event the row keeps columns that its hash does not cover ([`attribution`]): the
//! signer a payment's signature recovered to at commit, and the replica that wrote it (the lease
//! holder). Appends without a lease or a payment (the generic channel store, operator events)
//! leave them NULL.

use sqlx::PgConnection;

use crate::domain::event::{GENESIS_HASH, chain_hash};
use crate::domain::{ChannelEvent, ChannelId, EthAddress, Event, StreamId};

use crate::store::StoreError;

/// The last version of a stream and the hash of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHead {
    pub version: u64,
    pub last_hash: [u8; 32],
}

pub async fn stream_head(
    conn: &mut PgConnection,
    stream: &StreamId,
) -> Result<Option<StreamHead>, StoreError> {
    let row =
        sqlx::query!("SELECT version, last_hash FROM ledger.streams WHERE stream = $1", stream.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|row| {
        Ok(StreamHead {
            version: version_from_db(stream, row.version)?,
            last_hash: hash_from_db(stream, &row.last_hash)?,
        })
    })
    .transpose()
}

/// Where one event goes in its stream: its version and its hash link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLink {
    pub prev_hash: [u8; 32],
    pub version: u64,
    pub hash: [u8; 32],
}

/// The versions and hash links of `events` appended after `head` (`None` for a new stream).
pub fn chain_links(stream: &StreamId, head: Option<StreamHead>, events: &[Event]) -> Vec<ChainLink> {
    let mut current = head.unwrap_or(StreamHead { version: 0, last_hash: GENESIS_HASH });
    events
        .iter()
        .map(|event| {
            let version = current.version + 1;
            let hash = chain_hash(&current.last_hash, stream, version, event);
            let link = ChainLink { prev_hash: current.last_hash, version, hash };
            current = StreamHead { version, last_hash: hash };
            link
        })
        .collect()
}

/// Appends `events` after `head` (`None` for a new stream) and returns the new head.
pub async fn append(
    conn: &mut PgConnection,
    stream: &StreamId,
    head: Option<StreamHead>,
    events: &[Event],
) -> Result<StreamHead, StoreError> {
    let start = head.unwrap_or(StreamHead { version: 0, last_hash: GENESIS_HASH });
    let links = chain_links(stream, head, events);
    let Some(last) = links.last() else { return Ok(start) };
    let current = StreamHead { version: last.version, last_hash: last.hash };
    let stream_text = stream.to_string();
    let moved = match head {
        Some(head) => sqlx::query!(
            "UPDATE ledger.streams SET version = $2, last_hash = $3 WHERE stream = $1 AND version = $4",
            stream_text,
            version_to_db(current.version),
            &current.last_hash[..],
            version_to_db(head.version),
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        None => sqlx::query!(
            "INSERT INTO ledger.streams (stream, version, last_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            stream_text,
            version_to_db(current.version),
            &current.last_hash[..],
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    if moved != 1 {
        // Serializable isolation reports concurrent writers as 40001 first; reaching this means the
        // head we read is not the stored one, which only a bug or a manual edit can cause.
        return Err(StoreError::CorruptLog {
            stream: stream_text,
            reason: format!("stream head is not at version {}", start.version),
        });
    }
    let channel_id = match stream {
        StreamId::Channel(id) | StreamId::Lease(id) => Some(id.to_string()),
        StreamId::Kv(_) => None,
    };
    for (event, ChainLink { prev_hash, version, hash }) in events.iter().zip(links) {
        let (nonce, amount, signature) = event.amount_columns();
        sqlx::query!(
            "INSERT INTO ledger.events
                (stream, stream_version, event_type, payload, channel_id, nonce, amount, signature, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5::text::numeric, $6::text::numeric, $7::text::numeric, $8, $9, $10)",
            stream_text,
            version_to_db(version),
            event.event_type(),
            event.to_json(),
            channel_id.as_deref(),
            nonce.map(|n| n.to_string()),
            amount.map(|a| a.to_string()),
            signature.map(|s| s.as_bytes()),
            &prev_hash[..],
            &hash[..],
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(current)
}

/// The `signer` and `replica` columns of one event's row (module doc): `signer` only for a
/// `payment accepted`, the replica for every event a lease holder writes.
pub fn attribution(
    event: &Event,
    payment_signer: Option<EthAddress>,
    replica: Option<&str>,
) -> (Option<Vec<u8>>, Option<String>) {
    let signer = match event {
        Event::Channel(ChannelEvent::PaymentAccepted { .. }) => payment_signer,
        _ => None,
    };
    (signer.map(|signer| signer.as_bytes().to_vec()), replica.map(str::to_owned))
}

pub fn version_to_db(version: u64) -> i64 {
    i64::try_from(version).expect("a stream never reaches 2^63 events")
}

pub fn version_from_db(stream: &StreamId, version: i64) -> Result<u64, StoreError> {
    u64::try_from(version).map_err(|_| StoreError::CorruptLog {
        stream: stream.to_string(),
        reason: format!("negative version {version}"),
    })
}

pub fn hash_from_db(stream: &StreamId, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| StoreError::CorruptLog {
        stream: stream.to_string(),
        reason: format!("hash of {} bytes", bytes.len()),
    })
}

/// The stream of a channel.
pub fn channel_stream(id: ChannelId) -> StreamId {
    StreamId::Channel(id)
}
