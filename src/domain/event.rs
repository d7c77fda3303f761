//! Events: the record of every change of the ledger (design.md §3).
//!
//! Each event belongs to one stream (a channel, or a key of the generic key-value facade) and has a
//! version within it. The hash chain links each event to the previous event of the same stream:
//!
//! ```text
//! hash = SHA-256( prev_hash(32) ‖ field(stream) ‖ u64-BE(version) ‖ field(event_type) ‖ canonical )
//! field(x) = u32-BE(len(x)) ‖ x
//! canonical = field(f1) ‖ field(f2) ‖ …   (the event's fields in the order documented per variant)
//! ```
//!
//! `prev_hash` of a stream's first event is 32 zero bytes. Numbers are 32-byte big-endian, addresses
//! 20 bytes, signatures 65 bytes exactly as received, optional values one presence byte (0/1)
//! followed by the value when present. The canonical bytes come from this encoding, never from the
//! JSON text of the payload (Postgres reorders JSONB keys).
//!
//! **What the hash covers**: exactly the bytes above, that is the previous hash, the stream, the
//! version, the type and the event's canonical fields (for a payment: nonce, amount and the
//! client's signature as received). It does not cover the rest of the log's row: the global
//! position, transaction id and recorded time, the SQL copies of the amounts (`nonce`, `amount`,
//! `signature`, `channel_id`, which `verify` compares with the payload), nor the columns added by
//! migration 0007 for reporting, `signer` (the address the signature recovered to at commit,
//! re-derivable from the covered signature, as `verify` does) and `replica` (the replica that wrote
//! the event). Adding those columns changed no hash, so logs written before them verify unchanged.
//!
//! **Claim outcomes.** How a claim left the chain is one named fact per outcome, with exact amounts:
//! `claim landed` (the recipient's `channelClaim`: actual and planned amount) and `sender reclaimed`
//! (the sender's `channelClaimTimeout` after expiry: the value taken back, and separately the
//! provider's loss at that nonce, authorised and never claimed). Logs written before these two
//! existed carry `claim finished` with an outcome tag instead; such events cannot be rewritten, so
//! they are still decoded, hashed and folded exactly as they were, and read this way:
//! - `claim finished`, `claimed_by_recipient`: `amount` is the actual amount; the planned amount is
//!   the claim's (the `claim started` amount of that nonce, the only signature the ledger handed out);
//! - `claim finished`, `reclaimed_by_sender`: `amount` is the value the sender took back (as then
//!   read from the chain at the block before the reclaim); the provider's loss is the claim's amount.
//!
//! New code never writes `claim finished`.

use std::fmt;

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::channel::OnChainChannel;
use super::types::{Amount, ChannelId, Nonce, Signature, hex_bytes};

/// The chain block whose state a merge used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBlock {
    pub number: u64,
    pub hash: B256,
}

/// Who took the money when a claim left the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimOutcome {
    /// `ChannelClaim`: the recipient claimed (possibly less than planned).
    ClaimedByRecipient,
    /// `ChannelSenderClaim`: the sender took the funds back after expiry; the provider lost them.
    ReclaimedBySender,
}

impl ClaimOutcome {
    fn tag(self) -> u8 {
        match self {
            Self::ClaimedByRecipient => 1,
            Self::ReclaimedBySender => 2,
        }
    }
}

/// What happened to one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelEvent {
    /// The chain showed a newer nonce, more value or a later expiration (or the channel was first
    /// seen). `block` is absent when the values came through the generic channel store rather than
    /// from a chain read.
    /// Canonical fields: nonce, sender, signer, recipient, group_id, value, expiration, block?
    /// (block = number as u64-BE ‖ hash).
    ChannelMergedFromChain { chain: OnChainChannel, block: Option<ChainBlock> },
    /// A signed payment raised the authorised amount. Canonical fields: nonce, amount, signature.
    PaymentAccepted { nonce: Nonce, amount: Amount, signature: Signature },
    /// The provider started claiming the last signed payment: the nonce moves on by one.
    /// Canonical fields: nonce, amount, signature.
    ClaimStarted { nonce: Nonce, amount: Amount, signature: Signature },
    /// The recipient's `channelClaim` of the claim started at `nonce` landed: `actual_amount` of the
    /// signed `planned_amount` moved to the provider (the rest stays in the channel).
    /// Canonical fields: nonce, transaction hash, block number (u64-BE), actual amount, planned amount.
    ClaimLanded {
        nonce: Nonce,
        transaction_hash: B256,
        block_number: u64,
        actual_amount: Amount,
        planned_amount: Amount,
    },
    /// The sender's `channelClaimTimeout` after expiry, while the chain was at `nonce`: the chain's
    /// nonce moved to `nonce + 1`, its value and expiration to 0. `value_taken_back` is the channel's
    /// value just before (derived from the ledger's records and the contract's logs, see
    /// `escrow::claims`); `provider_loss` is what was authorised at `nonce` and never claimed (the
    /// amount of a claim pending at `nonce`, or the authorisation at `nonce` when none was started).
    /// Canonical fields: nonce, transaction hash, block number (u64-BE), value taken back, provider loss.
    SenderReclaimed {
        nonce: Nonce,
        transaction_hash: B256,
        block_number: u64,
        value_taken_back: Amount,
        provider_loss: Amount,
    },
    /// Written before `claim landed` and `sender reclaimed` existed; read only (module doc).
    /// Canonical fields: nonce, outcome tag (1 recipient, 2 sender), transaction hash, block number
    /// (u64-BE), amount.
    ClaimFinished {
        nonce: Nonce,
        outcome: ClaimOutcome,
        transaction_hash: B256,
        block_number: u64,
        /// What actually moved on chain; may be less than the claim's amount.
        amount: Amount,
    },
}

impl ChannelEvent {
    /// Whether folding this event reads or changes the channel's claims (merges and payments do not).
    pub fn changes_claims(&self) -> bool {
        matches!(
            self,
            Self::ClaimStarted { .. }
                | Self::ClaimLanded { .. }
                | Self::SenderReclaimed { .. }
                | Self::ClaimFinished { .. }
        )
    }
}

/// What happened to one key of the generic `AtomicStorage` facade. Keys and values are bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KvEvent {
    /// Canonical fields: key, value.
    KeyPut {
        #[serde(with = "hex_bytes")]
        key: Vec<u8>,
        #[serde(with = "hex_bytes")]
        value: Vec<u8>,
    },
    /// Canonical fields: key.
    KeyDeleted {
        #[serde(with = "hex_bytes")]
        key: Vec<u8>,
    },
}

/// What an operator did to a channel's lease. Leases are operational state: only a forced
/// release is recorded, so that an audit shows who unblocked a channel and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LeaseEvent {
    /// Canonical fields: holder, expired (1 byte).
    LeaseReleasedByOperator {
        /// The replica that held the lease.
        holder: String,
        /// Whether the lease had already expired when it was released.
        expired: bool,
    },
}

/// Any event of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Event {
    Channel(ChannelEvent),
    Kv(KvEvent),
    Lease(LeaseEvent),
}

/// The stream an event belongs to: `channel/<decimal id>`, `kv/<hex key>` or `lease/<decimal id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamId {
    Channel(ChannelId),
    Kv(Vec<u8>),
    Lease(ChannelId),
}

impl StreamId {
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(id) = text.strip_prefix("channel/") {
            return id.parse().ok().map(Self::Channel);
        }
        if let Some(id) = text.strip_prefix("lease/") {
            return id.parse().ok().map(Self::Lease);
        }
        let key = text.strip_prefix("kv/")?;
        hex::decode(key).ok().map(Self::Kv)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Channel(id) => write!(f, "channel/{id}"),
            Self::Kv(key) => write!(f, "kv/{}", hex::encode(key)),
            Self::Lease(id) => write!(f, "lease/{id}"),
        }
    }
}

/// An event that cannot be read back from its stored form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    #[error("payload is not a valid {event_type} event: {reason}")]
    BadPayload { event_type: String, reason: String },
    #[error("stored type {stored} does not match the payload's type {payload}")]
    TypeMismatch { stored: String, payload: String },
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Channel(ChannelEvent::ChannelMergedFromChain { .. }) => "channel_merged_from_chain",
            Self::Channel(ChannelEvent::PaymentAccepted { .. }) => "payment_accepted",
            Self::Channel(ChannelEvent::ClaimStarted { .. }) => "claim_started",
            Self::Channel(ChannelEvent::ClaimLanded { .. }) => "claim_landed",
            Self::Channel(ChannelEvent::SenderReclaimed { .. }) => "sender_reclaimed",
            Self::Channel(ChannelEvent::ClaimFinished { .. }) => "claim_finished",
            Self::Kv(KvEvent::KeyPut { .. }) => "key_put",
            Self::Kv(KvEvent::KeyDeleted { .. }) => "key_deleted",
            Self::Lease(LeaseEvent::LeaseReleasedByOperator { .. }) => "lease_released_by_operator",
        }
    }

    /// The payload as stored in the log's JSONB column (includes `type`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("events always serialize")
    }

    pub fn from_json(event_type: &str, payload: &serde_json::Value) -> Result<Self, EventDecodeError> {
        let event: Event = serde_json::from_value(payload.clone()).map_err(|e| {
            EventDecodeError::BadPayload { event_type: event_type.to_owned(), reason: e.to_string() }
        })?;
        if event.event_type() != event_type {
            return Err(EventDecodeError::TypeMismatch {
                stored: event_type.to_owned(),
                payload: event.event_type().to_owned(),
            });
        }
        Ok(event)
    }

    /// The money columns the log keeps beside the payload, for SQL readers.
    pub fn amount_columns(&self) -> (Option<Nonce>, Option<Amount>, Option<&Signature>) {
        match self {
            Self::Channel(ChannelEvent::ChannelMergedFromChain { chain, .. }) => {
                (Some(chain.nonce), Some(chain.value), None)
            }
            Self::Channel(ChannelEvent::PaymentAccepted { nonce, amount, signature })
            | Self::Channel(ChannelEvent::ClaimStarted { nonce, amount, signature }) => {
                (Some(*nonce), Some(*amount), Some(signature))
            }
            Self::Channel(ChannelEvent::ClaimFinished { nonce, amount, .. })
            | Self::Channel(ChannelEvent::ClaimLanded { nonce, actual_amount: amount, .. })
            | Self::Channel(ChannelEvent::SenderReclaimed { nonce, value_taken_back: amount, .. }) => {
                (Some(*nonce), Some(*amount), None)
            }
            Self::Kv(_) | Self::Lease(_) => (None, None, None),
        }
    }

    /// The documented canonical encoding (see the module doc).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Channel(ChannelEvent::ChannelMergedFromChain { chain, block }) => {
                field(&mut out, &chain.nonce.to_be_bytes());
                field(&mut out, chain.sender.as_bytes());
                field(&mut out, chain.signer.as_bytes());
                field(&mut out, chain.recipient.as_bytes());
                field(&mut out, &chain.group_id.0);
                field(&mut out, &chain.value.to_be_bytes());
                field(&mut out, &chain.expiration.to_be_bytes());
                match block {
                    None => field(&mut out, &[0]),
                    Some(block) => {
                        let mut bytes = vec![1];
                        bytes.extend_from_slice(&block.number.to_be_bytes());
                        bytes.extend_from_slice(block.hash.as_slice());
                        field(&mut out, &bytes);
                    }
                }
            }
            Self::Channel(ChannelEvent::PaymentAccepted { nonce, amount, signature })
            | Self::Channel(ChannelEvent::ClaimStarted { nonce, amount, signature }) => {
                field(&mut out, &nonce.to_be_bytes());
                field(&mut out, &amount.to_be_bytes());
                field(&mut out, signature.as_bytes());
            }
            Self::Channel(ChannelEvent::ClaimFinished {
                nonce,
                outcome,
                transaction_hash,
                block_number,
                amount,
            }) => {
                field(&mut out, &nonce.to_be_bytes());
                field(&mut out, &[outcome.tag()]);
                field(&mut out, transaction_hash.as_slice());
                field(&mut out, &block_number.to_be_bytes());
                field(&mut out, &amount.to_be_bytes());
            }
            Self::Channel(ChannelEvent::ClaimLanded {
                nonce,
                transaction_hash,
                block_number,
                actual_amount,
                planned_amount,
            }) => {
                field(&mut out, &nonce.to_be_bytes());
                field(&mut out, transaction_hash.as_slice());
                field(&mut out, &block_number.to_be_bytes());
                field(&mut out, &actual_amount.to_be_bytes());
                field(&mut out, &planned_amount.to_be_bytes());
            }
            Self::Channel(ChannelEvent::SenderReclaimed {
                nonce,
                transaction_hash,
                block_number,
                value_taken_back,
                provider_loss,
            }) => {
                field(&mut out, &nonce.to_be_bytes());
                field(&mut out, transaction_hash.as_slice());
                field(&mut out, &block_number.to_be_bytes());
                field(&mut out, &value_taken_back.to_be_bytes());
                field(&mut out, &provider_loss.to_be_bytes());
            }
            Self::Kv(KvEvent::KeyPut { key, value }) => {
                field(&mut out, key);
                field(&mut out, value);
            }
            Self::Kv(KvEvent::KeyDeleted { key }) => field(&mut out, key),
            Self::Lease(LeaseEvent::LeaseReleasedByOperator { holder, expired }) => {
                field(&mut out, holder.as_bytes());
                field(&mut out, &[u8::from(*expired)]);
            }
        }
        out
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("event fields are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The link hash of a stream's first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The hash linking an event to the previous event of its stream (module doc).
pub fn chain_hash(prev_hash: &[u8; 32], stream: &StreamId, version: u64, event: &Event) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    let mut buf = Vec::new();
    field(&mut buf, stream.to_string().as_bytes());
    buf.extend_from_slice(&version.to_be_bytes());
    field(&mut buf, event.event_type().as_bytes());
    hasher.update(&buf);
    hasher.update(event.canonical_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests;
