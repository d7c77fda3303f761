//! The messages that MultiPartyEscrow parties sign, and who signed them.
//!
//! # Layouts
//!
//! Every message is the Solidity packed encoding of its fields: an ASCII tag with no length and no
//! padding, the MPE contract's 20 raw address bytes, then 32-byte big-endian unsigned integers.
//!
//! | message | fields after the tag | tag | length |
//! |---|---|---|---|
//! | payment (paid-call metadata, and what `channelClaim` checks) | mpe, channel id, nonce, amount | `__MPE_claim_message` | 135 |
//! | `GetChannelState` request | mpe, channel id, current block | `__get_channel_state` | 103 |
//! | `GetListUnclaimed` request | mpe, current block | `__list_unclaimed` | 68 |
//! | `GetListInProgress` request | mpe, current block | `__list_in_progress` | 70 |
//! | `StartClaim` request | mpe, channel id, channel nonce | `__start_claim` | 97 |
//! | `StartClaimForMultipleChannels` request | mpe, every channel id in ascending order, current block | `__StartClaimForMultipleChannels_` | 84 + 32·n |
//!
//! The address is bytes, so its checksum spelling never changes a message. Block numbers are `u64`
//! here; the seed widens them through `int64`, which differs only at 2^63 and above, far beyond any
//! chain. `StartClaim` carries no block: the nonce is its replay protection.
//!
//! # Digest and signature
//!
//! The signed digest is the EIP-191 "personal sign" of the message's hash:
//! `keccak256("\x19Ethereum Signed Message:\n32" ‖ keccak256(message))`. A signature is
//! `r(32) ‖ s(32) ‖ v(1)`; any other length is [`SignatureError::IncorrectLength`].
//!
//! The recovery id is `v mod 27`. We accept `v` in {0, 1, 27, 28} only: the clients send 27/28 and
//! some Ethereum libraries 0/1. The seed's bare `v mod 27` would also take 54/55, 81/82, … which no
//! client produces; those, like every other `v`, are [`SignatureError::IncorrectData`], the same
//! answer the seed gives for an unusable signature. A high `s` recovers the same signer, as it does
//! with the contract's `ecrecover`.
//!
//! # Signatures are evidence
//!
//! A signature is stored exactly as received. [`normalized`] (v := v mod 27 + 27) is applied only to
//! compare two signatures or to hand one to the contract, whose `ecrecover` wants 27/28.

use std::sync::LazyLock;

use alloy_primitives::{Address, B256, U256, eip191_hash_message, keccak256};
use k256::ecdsa::SigningKey;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, Secp256k1, VerifyOnly};

use super::types::{Amount, ChannelId, EthAddress, Nonce, Signature};

const PAYMENT_TAG: &[u8] = b"__MPE_claim_message";
const CHANNEL_STATE_TAG: &[u8] = b"__get_channel_state";
const LIST_UNCLAIMED_TAG: &[u8] = b"__list_unclaimed";
const LIST_IN_PROGRESS_TAG: &[u8] = b"__list_in_progress";
const START_CLAIM_TAG: &[u8] = b"__start_claim";
const START_CLAIM_MULTIPLE_TAG: &[u8] = b"__StartClaimForMultipleChannels_";

/// Length of the payment message, the one the contract verifies on chain.
const PAYMENT_MESSAGE_LEN: usize = 135;

/// Why a signature yields no signer. The texts are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("incorrect signature length")]
    IncorrectLength { length: usize },
    #[error("incorrect signature data")]
    IncorrectData,
}

/// The 135-byte message a client signs to authorise `amount` (cumulative) on `channel` at `nonce`.
pub fn payment_message(mpe: &EthAddress, channel: ChannelId, nonce: Nonce, amount: Amount) -> Vec<u8> {
    let message =
        packed(PAYMENT_TAG, mpe, [channel.to_be_bytes(), nonce.to_be_bytes(), amount.to_be_bytes()]);
    assert_eq!(message.len(), PAYMENT_MESSAGE_LEN);
    message
}

/// The message signing a `GetChannelState` request.
pub fn channel_state_message(mpe: &EthAddress, channel: ChannelId, current_block: u64) -> Vec<u8> {
    packed(CHANNEL_STATE_TAG, mpe, [channel.to_be_bytes(), block_word(current_block)])
}

/// The message signing a `GetListUnclaimed` request.
pub fn list_unclaimed_message(mpe: &EthAddress, current_block: u64) -> Vec<u8> {
    packed(LIST_UNCLAIMED_TAG, mpe, [block_word(current_block)])
}

/// The message signing a `GetListInProgress` request.
pub fn list_in_progress_message(mpe: &EthAddress, current_block: u64) -> Vec<u8> {
    packed(LIST_IN_PROGRESS_TAG, mpe, [block_word(current_block)])
}

/// The message signing a `StartClaim` request; `nonce` is the channel's nonce before the claim.
pub fn start_claim_message(mpe: &EthAddress, channel: ChannelId, nonce: Nonce) -> Vec<u8> {
    packed(START_CLAIM_TAG, mpe, [channel.to_be_bytes(), nonce.to_be_bytes()])
}

/// The message signing a `StartClaimForMultipleChannels` request. The ids are signed in ascending
/// order whatever order the request lists them in; duplicates are not removed.
pub fn start_claim_multiple_message(
    mpe: &EthAddress,
    channel_ids: &[ChannelId],
    current_block: u64,
) -> Vec<u8> {
    let mut sorted = channel_ids.to_vec();
    sorted.sort_unstable();
    let words = sorted.into_iter().map(ChannelId::to_be_bytes).chain([block_word(current_block)]);
    packed(START_CLAIM_MULTIPLE_TAG, mpe, words)
}

/// `keccak256("\x19Ethereum Signed Message:\n32" ‖ keccak256(message))`: what is actually signed.
pub fn personal_digest(message: &[u8]) -> B256 {
    // EIP-191 over the 32-byte hash, so the length in the prefix is always "32".
    eip191_hash_message(keccak256(message))
}

/// The address whose key signed `message`. `signature` is the raw bytes from the wire, of any length.
pub fn recover_signer(message: &[u8], signature: &[u8]) -> Result<EthAddress, SignatureError> {
    let [rs @ .., v]: &[u8; Signature::LEN] =
        signature.try_into().map_err(|_| SignatureError::IncorrectLength { length: signature.len() })?;
    let y_parity = match v {
        0 | 27 => false,
        1 | 28 => true,
        _ => return Err(SignatureError::IncorrectData),
    };
    // libsecp256k1: several times cheaper than the pure-Rust recovery, on every paid call's path.
    let recovery_id = RecoveryId::try_from(i32::from(y_parity)).map_err(|_| SignatureError::IncorrectData)?;
    let signature =
        RecoverableSignature::from_compact(rs, recovery_id).map_err(|_| SignatureError::IncorrectData)?;
    let key = SECP256K1
        .recover_ecdsa(Message::from_digest(personal_digest(message).0), &signature)
        .map_err(|_| SignatureError::IncorrectData)?;
    let hash = keccak256(&key.serialize_uncompressed()[1..]);
    Ok(EthAddress(Address::from_slice(&hash[12..])))
}

/// Why a payment in the log is not the client's: its signature recovers to neither the channel's
/// signer nor its sender. The texts are what `verify` and `verify-bundle` print after "stored".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaymentSignatureError {
    #[error("signed by {0}")]
    OtherSigner(EthAddress),
    #[error("unusable ({0})")]
    Unusable(SignatureError),
}

/// The rule every `payment accepted` and `claim started` event of the log keeps (what `verify` and
/// `verify-bundle` re-check): its signature over the payment message of the MPE contract at `mpe`
/// recovers to the channel's `signer` or its `sender`, as the stream had folded them just before
/// the event. Returns the address it recovered to.
pub fn check_payment_signature(
    mpe: &EthAddress,
    channel: ChannelId,
    nonce: Nonce,
    amount: Amount,
    signature: &Signature,
    signer: &EthAddress,
    sender: &EthAddress,
) -> Result<EthAddress, PaymentSignatureError> {
    let message = payment_message(mpe, channel, nonce, amount);
    match recover_signer(&message, signature.as_bytes()) {
        Ok(address) if address == *signer || address == *sender => Ok(address),
        Ok(address) => Err(PaymentSignatureError::OtherSigner(address)),
        Err(error) => Err(PaymentSignatureError::Unusable(error)),
    }
}

/// libsecp256k1's context for recovery, built once.
static SECP256K1: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);

/// The same signature with `v` as 27/28, the form the contract accepts; `r` and `s` are untouched
/// and any other `v` is left as it is.
pub fn normalized(signature: &Signature) -> Signature {
    let mut bytes = signature.0;
    if let v @ (0 | 1) = bytes[Signature::LEN - 1] {
        bytes[Signature::LEN - 1] = v + 27;
    }
    Signature(bytes)
}

/// Signs `message` the way the clients do (personal sign, deterministic RFC 6979 nonce, low `s`,
/// `v` = 27/28). For tests and the end-to-end harness: the ledger itself never signs.
///
/// # Panics
/// If `private_key` is not a valid secp256k1 scalar (zero, or not below the group order).
pub fn sign(message: &[u8], private_key: &[u8; 32]) -> Signature {
    let key = SigningKey::from_bytes(private_key.into()).expect("private key must be a secp256k1 scalar");
    let (signature, recovery_id) = key
        .sign_prehash_recoverable(personal_digest(message).as_slice())
        .expect("signing a 32-byte digest with a valid key cannot fail");
    // A reduced x coordinate happens with probability ~2^-128 and has no 27/28 encoding.
    assert!(!recovery_id.is_x_reduced());
    let mut bytes = [0u8; Signature::LEN];
    bytes[..64].copy_from_slice(&signature.to_bytes());
    bytes[64] = 27 + u8::from(recovery_id.is_y_odd());
    Signature(bytes)
}

fn block_word(block: u64) -> [u8; 32] {
    U256::from(block).to_be_bytes()
}

fn packed(tag: &[u8], mpe: &EthAddress, words: impl IntoIterator<Item = [u8; 32]>) -> Vec<u8> {
    let words = words.into_iter();
    let mut message = Vec::with_capacity(tag.len() + 20 + 32 * words.size_hint().0);
    message.extend_from_slice(tag);
    message.extend_from_slice(mpe.as_bytes());
    for word in words {
        message.extend_from_slice(&word);
    }
    message
}

#[cfg(test)]
mod tests;
