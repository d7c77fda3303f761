//! What the audit API answers, as JSON: amounts, nonces, ids and block numbers as decimal strings
//! in cogs (exact, whatever their size), hashes, group ids and signatures as `0x`-hex, addresses
//! checksummed, times RFC 3339 in UTC with microseconds.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{ClaimOutcome, PaymentChannelData};
use crate::store::postgres::audit::{LoggedEvent, StreamHeadRow};

use super::{hex0x, rfc3339};

/// One channel's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelView {
    pub channel_id: String,
    /// The ledger's nonce (one ahead of the chain's while a claim is pending).
    pub nonce: String,
    /// `open` or `closed`.
    pub state: String,
    pub sender: String,
    pub recipient: String,
    pub signer: String,
    pub group_id: String,
    /// The channel's value on chain, in cogs.
    pub full_amount: String,
    pub expiration: String,
    /// The last cumulative amount signed at the current nonce, in cogs.
    pub authorized_amount: String,
    /// The client's signature of `authorized_amount`.
    pub signature: Option<String>,
    /// How many events the channel's stream had at this state.
    pub stream_version: i64,
}

impl ChannelView {
    pub fn of(channel: &PaymentChannelData, stream_version: i64) -> Self {
        Self {
            channel_id: channel.channel_id.to_string(),
            nonce: channel.nonce.to_string(),
            state: channel.state.as_str().to_owned(),
            sender: channel.sender.to_string(),
            recipient: channel.recipient.to_string(),
            signer: channel.signer.to_string(),
            group_id: hex0x(&channel.group_id.0),
            full_amount: channel.full_amount.to_string(),
            expiration: channel.expiration.to_string(),
            authorized_amount: channel.authorized_amount.to_string(),
            signature: channel.signature.as_ref().map(|s| hex0x(s.as_bytes())),
            stream_version,
        }
    }
}

/// A page of channels in id order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelPage {
    pub channels: Vec<ChannelView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// Which point of the log a state was folded up to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AsOfView {
    /// The position asked for, when asked as of a position.
    pub position: Option<i64>,
    /// The time asked for, when asked as of a time.
    pub time: Option<String>,
    /// The position of the last event folded.
    pub last_event_position: i64,
}

/// One channel's state now (from the projection) or as of a point (folded from its events).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelAnswer {
    pub channel: ChannelView,
    /// Absent for the state now.
    pub as_of: Option<AsOfView>,
}

/// One event of the log, with its place in the hash chain of its stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// The global position (unique; commits may make positions appear out of order).
    pub position: i64,
    /// `channel/<id>`, `kv/<hex key>` or `lease/<id>`.
    pub stream: String,
    pub stream_version: i64,
    /// The event's type, e.g. `payment_accepted`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's fields as stored (amounts as decimal strings, bytes as 0x-hex).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// When the event was inserted (not when its transaction committed).
    pub recorded_at: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<&LoggedEvent> for EventView {
    fn from(row: &LoggedEvent) -> Self {
        Self {
            position: row.position,
            stream: row.stream.clone(),
            stream_version: row.stream_version,
            event_type: row.event_type.clone(),
            payload: row.payload.clone(),
            recorded_at: rfc3339(&row.recorded_at),
            prev_hash: hex0x(&row.prev_hash),
            hash: hex0x(&row.hash),
        }
    }
}

/// A page of one channel's events in stream order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelEventPage {
    pub events: Vec<EventView>,
    /// Pass as `after` (a stream version) for the next page; absent on the last page.
    pub next: Option<String>,
}

/// Committed events after a cursor, in commit-safe order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedPage {
    pub events: Vec<EventView>,
    /// Pass as `after` to continue; the same cursor again when no event came.
    pub next: String,
}

/// Where a claim is.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimStatus {
    /// Started (its signature handed to the provider), not yet seen on chain.
    InProgress,
    /// The recipient's claim landed on chain.
    ClaimedByRecipient,
    /// The sender took the channel's value back after expiry.
    ReclaimedBySender,
}

/// One claim: the last signed payment of one nonce, and what became of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClaimView {
    pub nonce: String,
    /// The signed amount claimed, in cogs.
    pub amount: String,
    pub signature: String,
    pub status: ClaimStatus,
    pub transaction_hash: Option<String>,
    pub block_number: Option<String>,
    /// Recipient: the amount that moved on chain; sender: the value taken back.
    pub finished_amount: Option<String>,
    /// Recipient: the planned amount the claim landed with, when recorded.
    pub planned_amount: Option<String>,
}

impl ClaimView {
    pub fn of(claim: &crate::domain::Claim) -> Self {
        let finished = claim.finished.as_ref();
        Self {
            nonce: claim.nonce.to_string(),
            amount: claim.amount.to_string(),
            signature: hex0x(claim.signature.as_bytes()),
            status: match finished.map(|f| f.outcome) {
                None => ClaimStatus::InProgress,
                Some(ClaimOutcome::ClaimedByRecipient) => ClaimStatus::ClaimedByRecipient,
                Some(ClaimOutcome::ReclaimedBySender) => ClaimStatus::ReclaimedBySender,
            },
            transaction_hash: finished.map(|f| hex0x(f.transaction_hash.as_slice())),
            block_number: finished.map(|f| f.block_number.to_string()),
            finished_amount: finished.map(|f| f.amount.to_string()),
            planned_amount: finished.and_then(|f| f.planned_amount).map(|a| a.to_string()),
        }
    }
}

/// Every claim of one channel, by nonce.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClaimList {
    pub claims: Vec<ClaimView>,
}

/// One stream's head: the trust anchor of its hash chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamHeadView {
    pub stream: String,
    /// The version of its last event.
    pub version: i64,
    /// The hash of its last event.
    pub head_hash: String,
}

impl From<&StreamHeadRow> for StreamHeadView {
    fn from(row: &StreamHeadRow) -> Self {
        Self { stream: row.stream.clone(), version: row.version, head_hash: hex0x(&row.last_hash) }
    }
}

/// A page of stream heads in stream-name order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamPage {
    pub streams: Vec<StreamHeadView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}
