//! The off-chain state of one payment channel, as the seed keeps it (escrow.md §1.2–1.4).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::types::{Amount, BlockNumber, ChannelId, EthAddress, GroupId, Nonce, Signature};

/// The key of a channel in storage. Its text form `{ID: 42}` is the seed's storage key and lock name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentChannelKey {
    pub id: ChannelId,
}

impl PaymentChannelKey {
    pub fn new(id: ChannelId) -> Self {
        Self { id }
    }
}

impl fmt::Display for PaymentChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{ID: {}}}", self.id)
    }
}

/// Only `Open` is ever produced by the seed; `Closed` exists in its data model and is kept for
/// compatibility of the stored form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelState {
    #[default]
    Open,
    Closed,
}

impl ChannelState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(Self::Open),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// What the contract's `channels(id)` getter says about a channel. These are the values a
/// `channel merged from chain` event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnChainChannel {
    pub nonce: Nonce,
    pub sender: EthAddress,
    pub signer: EthAddress,
    pub recipient: EthAddress,
    pub group_id: GroupId,
    /// The channel's value (`FullAmount` in the seed).
    pub value: Amount,
    pub expiration: BlockNumber,
}

/// The ledger's view of one channel (the seed's `PaymentChannelData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentChannelData {
    pub channel_id: ChannelId,
    /// May be one ahead of the chain while a claim is pending.
    pub nonce: Nonce,
    pub state: ChannelState,
    pub sender: EthAddress,
    pub recipient: EthAddress,
    pub group_id: GroupId,
    pub full_amount: Amount,
    pub expiration: BlockNumber,
    pub signer: EthAddress,
    /// The last cumulative amount accepted at the current nonce (0 when fresh).
    pub authorized_amount: Amount,
    /// The client's signature of `authorized_amount`; absent when fresh.
    pub signature: Option<Signature>,
}

impl PaymentChannelData {
    /// A channel as first read from the chain: nothing authorised yet.
    pub fn from_chain(channel_id: ChannelId, chain: &OnChainChannel) -> Self {
        Self {
            channel_id,
            nonce: chain.nonce,
            state: ChannelState::Open,
            sender: chain.sender,
            recipient: chain.recipient,
            group_id: chain.group_id,
            full_amount: chain.value,
            expiration: chain.expiration,
            signer: chain.signer,
            authorized_amount: Amount::ZERO,
            signature: None,
        }
    }

    pub fn key(&self) -> PaymentChannelKey {
        PaymentChannelKey::new(self.channel_id)
    }

    /// The chain-side values of this state, as a merge event would carry them.
    pub fn on_chain_part(&self) -> OnChainChannel {
        OnChainChannel {
            nonce: self.nonce,
            sender: self.sender,
            signer: self.signer,
            recipient: self.recipient,
            group_id: self.group_id,
            value: self.full_amount,
            expiration: self.expiration,
        }
    }

    /// Sender, signer, recipient and group never change on chain for a given channel id.
    pub fn same_parties(&self, chain: &OnChainChannel) -> bool {
        self.sender == chain.sender
            && self.signer == chain.signer
            && self.recipient == chain.recipient
            && self.group_id == chain.group_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_key_text_is_the_seed_storage_key() {
        assert_eq!(PaymentChannelKey::new(ChannelId::from(42)).to_string(), "{ID: 42}");
    }

    #[test]
    fn channel_state_text_round_trips() {
        for state in [ChannelState::Open, ChannelState::Closed] {
            assert_eq!(ChannelState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ChannelState::parse("Open"), None);
    }
}
