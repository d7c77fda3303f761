//! A paid call's payment and its validation, in the seed's exact order and words (escrow.md §1.7,
//! §3.3–3.7): the nonce first, then the signature, the signer, the current block, the expiration,
//! the channel value; then the income against the price of the called method.

use std::collections::BTreeMap;
use std::fmt;

use alloy_primitives::U256;

use super::channel::{PaymentChannelData, PaymentChannelKey};
use super::signature::{payment_message, recover_signer};
use super::types::{Amount, ChannelId, EthAddress, Nonce, Signature};

/// One signed authorisation received with a paid call. The signature is kept as received: its
/// length is checked only when it is verified, as the seed does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Always the ledger's own MPE contract, never taken from the client.
    pub mpe: EthAddress,
    pub channel_id: ChannelId,
    pub nonce: Nonce,
    /// Cumulative amount authorised at this nonce.
    pub amount: Amount,
    pub signature: Vec<u8>,
}

impl Payment {
    pub fn key(&self) -> PaymentChannelKey {
        PaymentChannelKey::new(self.channel_id)
    }

    /// `<channel>/<nonce>`, the seed's payment id.
    pub fn id(&self) -> String {
        format!("{}/{}", self.channel_id, self.nonce)
    }
}

/// The escrow's error codes; each maps to one gRPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentErrorCode {
    Internal,
    Unauthenticated,
    FailedPrecondition,
    IncorrectNonce,
}

impl PaymentErrorCode {
    /// The gRPC status code: 13, 16, 9, and the non-standard 1000 for an incorrect nonce.
    pub fn grpc_status(self) -> u32 {
        match self {
            Self::Internal => 13,
            Self::Unauthenticated => 16,
            Self::FailedPrecondition => 9,
            Self::IncorrectNonce => 1000,
        }
    }
}

/// A refused payment: the code and the exact message the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PaymentError {
    pub code: PaymentErrorCode,
    pub message: String,
}

impl PaymentError {
    fn new(code: PaymentErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn incorrect_nonce(latest: Nonce, sent: Nonce) -> Self {
        Self::new(
            PaymentErrorCode::IncorrectNonce,
            format!("incorrect payment channel nonce, latest: {latest}, sent: {sent}"),
        )
    }

    pub fn invalid_signature() -> Self {
        Self::new(PaymentErrorCode::Unauthenticated, "payment signature is not valid")
    }

    pub fn not_signed_by_signer_or_sender() -> Self {
        Self::new(PaymentErrorCode::Unauthenticated, "payment is not signed by channel signer/sender")
    }

    pub fn cannot_determine_current_block() -> Self {
        Self::new(PaymentErrorCode::Internal, "cannot determine current block")
    }

    pub fn near_expiration(expiration: impl fmt::Display, current_block: u64, threshold: u64) -> Self {
        Self::new(
            PaymentErrorCode::Unauthenticated,
            format!(
                "payment channel is near to be expired, expiration time: {expiration}, current block: \
                 {current_block}, expiration threshold: {threshold}"
            ),
        )
    }

    pub fn not_enough_tokens(full_amount: Amount, amount: Amount) -> Self {
        Self::new(
            PaymentErrorCode::Unauthenticated,
            format!(
                "not enough tokens on payment channel, channel amount: {full_amount}, payment amount: {amount}"
            ),
        )
    }

    pub fn income_mismatch(income: Income, price: Amount) -> Self {
        Self::new(
            PaymentErrorCode::Unauthenticated,
            format!("income {income} does not equal to price {price}"),
        )
    }

    pub fn channel_busy(key: PaymentChannelKey) -> Self {
        Self::new(
            PaymentErrorCode::FailedPrecondition,
            format!("another transaction on channel: {key} is in progress"),
        )
    }

    pub fn cannot_get_mutex(key: PaymentChannelKey) -> Self {
        Self::new(PaymentErrorCode::Internal, format!("cannot get mutex for channel: {key}"))
    }

    /// The channel could not be looked up; `reason` is the text a client may read (never the
    /// cause of a chain or storage failure, which stays in the log).
    pub fn channel_error(reason: impl fmt::Display) -> Self {
        Self::new(PaymentErrorCode::Internal, format!("payment channel error: {reason}"))
    }

    pub fn channel_not_found(key: PaymentChannelKey) -> Self {
        Self::new(PaymentErrorCode::Unauthenticated, format!("payment channel \"{key}\" not found"))
    }

    pub fn cannot_store_channel_state() -> Self {
        Self::new(PaymentErrorCode::Internal, "unable to store new payment channel state")
    }

    /// The same channel, nonce and amount already recorded with another signer's signature.
    pub fn conflicting_payment(error: impl fmt::Display) -> Self {
        Self::new(PaymentErrorCode::FailedPrecondition, error.to_string())
    }

    /// Any other failure (pricing, storage): INTERNAL with the seed's `internal error: ` prefix.
    pub fn internal(error: impl fmt::Display) -> Self {
        Self::new(PaymentErrorCode::Internal, format!("internal error: {error}"))
    }

    /// A lease that expired and was taken over (or released by an operator) before the commit:
    /// the stale holder's commit is refused and writes nothing.
    pub fn lease_lost(key: PaymentChannelKey) -> Self {
        Self::new(
            PaymentErrorCode::FailedPrecondition,
            format!("transaction on channel: {key} lost its lease before commit; nothing was recorded"),
        )
    }
}

/// A payment that passed validation: who signed it, and its 65-byte signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPayment {
    pub signer: EthAddress,
    pub signature: Signature,
}

/// Validates a payment against the channel's (merged) state, in the seed's order (escrow.md §3.6).
/// `current_block` is `None` when the chain could not tell.
pub fn validate_payment(
    payment: &Payment,
    channel: &PaymentChannelData,
    current_block: Option<u64>,
    expiration_threshold: u64,
) -> Result<ValidPayment, PaymentError> {
    if payment.nonce != channel.nonce {
        return Err(PaymentError::incorrect_nonce(channel.nonce, payment.nonce));
    }
    let message = payment_message(&payment.mpe, payment.channel_id, payment.nonce, payment.amount);
    let signer =
        recover_signer(&message, &payment.signature).map_err(|_| PaymentError::invalid_signature())?;
    let signature =
        Signature::from_slice(&payment.signature).map_err(|_| PaymentError::invalid_signature())?;
    if signer != channel.signer && signer != channel.sender {
        return Err(PaymentError::not_signed_by_signer_or_sender());
    }
    let current_block = current_block.ok_or_else(PaymentError::cannot_determine_current_block)?;
    let horizon = U256::from(current_block) + U256::from(expiration_threshold);
    if horizon >= channel.expiration.value() {
        return Err(PaymentError::near_expiration(channel.expiration, current_block, expiration_threshold));
    }
    if payment.amount > channel.full_amount {
        return Err(PaymentError::not_enough_tokens(channel.full_amount, payment.amount));
    }
    Ok(ValidPayment { signer, signature })
}

/// What a payment adds to the channel's authorisation; negative when it lowers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Income {
    Gain(Amount),
    Loss(Amount),
}

impl Income {
    pub fn of(payment_amount: Amount, authorized_amount: Amount) -> Self {
        match payment_amount.checked_sub(authorized_amount) {
            Some(gain) => Self::Gain(gain),
            None => {
                Self::Loss(authorized_amount.checked_sub(payment_amount).expect("the other way round fits"))
            }
        }
    }
}

impl fmt::Display for Income {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gain(amount) => write!(f, "{amount}"),
            Self::Loss(amount) => write!(f, "-{amount}"),
        }
    }
}

/// Income must equal the price exactly (escrow.md §3.7).
pub fn validate_income(income: Income, price: Amount) -> Result<(), PaymentError> {
    match income {
        Income::Gain(amount) if amount == price => Ok(()),
        _ => Err(PaymentError::income_mismatch(income, price)),
    }
}

/// The price of a call: one for every method, or one per full gRPC method name
/// (`/package.Service/Method`). Dynamic and training prices are not supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    Fixed(Amount),
    PerMethod(BTreeMap<String, Amount>),
}

/// A method without a price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("price is not defined for the Method {method}")]
pub struct PriceNotDefined {
    pub method: String,
}

impl Pricing {
    pub fn price(&self, full_method: &str) -> Result<Amount, PriceNotDefined> {
        match self {
            Self::Fixed(price) => Ok(*price),
            Self::PerMethod(prices) => prices
                .get(full_method)
                .copied()
                .ok_or_else(|| PriceNotDefined { method: full_method.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests;
