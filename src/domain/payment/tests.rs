//! The seed's validation and income tests (escrow.md §8, validation_test 9–19, income_test 49–50),
//! as behaviour: same inputs, same codes, same messages.

use super::*;
use crate::domain::channel::{ChannelState, PaymentChannelData};
use crate::domain::signature::sign;
use crate::domain::types::{BlockNumber, GroupId};

const SIGNER_KEY: [u8; 32] = [0x11; 32];
const OTHER_KEY: [u8; 32] = [0x22; 32];

fn address_of(key: &[u8; 32]) -> EthAddress {
    // The address is whatever the signature recovers to: sign anything and recover.
    let message = b"address probe";
    crate::domain::signature::recover_signer(message, sign(message, key).as_bytes()).unwrap()
}

fn mpe() -> EthAddress {
    "0xf25186b5081ff5ce73482ad761db0eb0d25abfbf".parse().unwrap()
}

/// The suite's channel: 42, nonce 3, full 12345, expiration 100, 12300 authorised.
fn channel() -> PaymentChannelData {
    PaymentChannelData {
        channel_id: ChannelId::from(42),
        nonce: Nonce::from(3),
        state: ChannelState::Open,
        sender: address_of(&[0x33; 32]),
        recipient: address_of(&[0x44; 32]),
        group_id: GroupId([123; 32]),
        full_amount: Amount::from(12345),
        expiration: BlockNumber::from(100),
        signer: address_of(&SIGNER_KEY),
        authorized_amount: Amount::from(12300),
        signature: None,
    }
}

fn payment_signed_by(key: &[u8; 32], nonce: u64, amount: u64) -> Payment {
    let message = payment_message(&mpe(), ChannelId::from(42), Nonce::from(nonce), Amount::from(amount));
    Payment {
        mpe: mpe(),
        channel_id: ChannelId::from(42),
        nonce: Nonce::from(nonce),
        amount: Amount::from(amount),
        signature: sign(&message, key).as_bytes().to_vec(),
    }
}

fn payment() -> Payment {
    payment_signed_by(&SIGNER_KEY, 3, 12345)
}

fn refused(result: Result<ValidPayment, PaymentError>) -> (PaymentErrorCode, String) {
    let error = result.unwrap_err();
    (error.code, error.message)
}

#[test]
fn a_payment_signed_by_the_channel_signer_is_valid() {
    let valid = validate_payment(&payment(), &channel(), Some(99), 0).unwrap();
    assert_eq!(valid.signer, channel().signer);
}

#[test]
fn a_payment_signed_by_the_sender_is_valid() {
    let valid = validate_payment(&payment_signed_by(&[0x33; 32], 3, 12345), &channel(), Some(99), 0).unwrap();
    assert_eq!(valid.signer, channel().sender);
}

#[test]
fn a_payment_with_a_stale_nonce_is_rejected_with_incorrect_nonce() {
    assert_eq!(
        refused(validate_payment(&payment_signed_by(&SIGNER_KEY, 2, 12345), &channel(), Some(99), 0)),
        (PaymentErrorCode::IncorrectNonce, "incorrect payment channel nonce, latest: 3, sent: 2".into())
    );
}

#[test]
fn the_nonce_is_checked_before_the_signature() {
    let mut bad = payment_signed_by(&SIGNER_KEY, 4, 12345);
    bad.signature = vec![1, 2];
    assert_eq!(refused(validate_payment(&bad, &channel(), Some(99), 0)).0, PaymentErrorCode::IncorrectNonce);
}

#[test]
fn a_signature_of_the_wrong_length_is_not_valid() {
    let mut bad = payment();
    bad.signature = vec![1, 2];
    assert_eq!(
        refused(validate_payment(&bad, &channel(), Some(99), 0)),
        (PaymentErrorCode::Unauthenticated, "payment signature is not valid".into())
    );
}

#[test]
fn a_signature_with_a_bad_recovery_byte_is_not_valid() {
    let mut bad = payment();
    bad.signature[64] = 0x21;
    assert_eq!(
        refused(validate_payment(&bad, &channel(), Some(99), 0)),
        (PaymentErrorCode::Unauthenticated, "payment signature is not valid".into())
    );
}

#[test]
fn a_payment_signed_by_someone_else_is_refused() {
    assert_eq!(
        refused(validate_payment(&payment_signed_by(&OTHER_KEY, 3, 12345), &channel(), Some(99), 0)),
        (PaymentErrorCode::Unauthenticated, "payment is not signed by channel signer/sender".into())
    );
}

#[test]
fn an_unknown_current_block_is_an_internal_error() {
    assert_eq!(
        refused(validate_payment(&payment(), &channel(), None, 0)),
        (PaymentErrorCode::Internal, "cannot determine current block".into())
    );
}

#[test]
fn a_channel_expiring_at_the_current_block_is_refused() {
    let expiring = PaymentChannelData { expiration: BlockNumber::from(99), ..channel() };
    assert_eq!(
        refused(validate_payment(&payment(), &expiring, Some(99), 0)),
        (
            PaymentErrorCode::Unauthenticated,
            "payment channel is near to be expired, expiration time: 99, current block: 99, expiration threshold: 0"
                .into()
        )
    );
}

#[test]
fn the_expiration_threshold_counts_towards_expiry() {
    let expiring = PaymentChannelData { expiration: BlockNumber::from(99), ..channel() };
    assert_eq!(
        refused(validate_payment(&payment(), &expiring, Some(98), 1)),
        (
            PaymentErrorCode::Unauthenticated,
            "payment channel is near to be expired, expiration time: 99, current block: 98, expiration threshold: 1"
                .into()
        )
    );
    assert!(validate_payment(&payment(), &expiring, Some(97), 1).is_ok());
}

#[test]
fn an_amount_above_the_channel_value_is_refused() {
    assert_eq!(
        refused(validate_payment(&payment_signed_by(&SIGNER_KEY, 3, 12346), &channel(), Some(99), 0)),
        (
            PaymentErrorCode::Unauthenticated,
            "not enough tokens on payment channel, channel amount: 12345, payment amount: 12346".into()
        )
    );
}

#[test]
fn income_must_equal_the_price_exactly() {
    assert_eq!(validate_income(Income::of(Amount::from(10), Amount::from(10)), Amount::ZERO), Ok(()));
    let below = validate_income(Income::of(Amount::from(9), Amount::from(10)), Amount::ZERO).unwrap_err();
    assert_eq!(
        (below.code, below.message.as_str()),
        (PaymentErrorCode::Unauthenticated, "income -1 does not equal to price 0")
    );
    let above = validate_income(Income::of(Amount::from(11), Amount::from(10)), Amount::ZERO).unwrap_err();
    assert_eq!(above.message, "income 1 does not equal to price 0");
    let replayed =
        validate_income(Income::of(Amount::from(10), Amount::from(10)), Amount::from(5)).unwrap_err();
    assert_eq!(replayed.message, "income 0 does not equal to price 5");
}

#[test]
fn per_method_prices_are_keyed_by_the_full_method_name() {
    let pricing = Pricing::PerMethod([("/example.Calculator/add".to_owned(), Amount::from(7))].into());
    assert_eq!(pricing.price("/example.Calculator/add"), Ok(Amount::from(7)));
    let missing = pricing.price("/example.Calculator/mul").unwrap_err();
    assert_eq!(missing.to_string(), "price is not defined for the Method /example.Calculator/mul");
    assert_eq!(
        PaymentError::internal(missing).message,
        "internal error: price is not defined for the Method /example.Calculator/mul"
    );
    assert_eq!(Pricing::Fixed(Amount::from(3)).price("/any/method"), Ok(Amount::from(3)));
}

#[test]
fn error_codes_map_to_the_seed_grpc_statuses() {
    assert_eq!(PaymentErrorCode::Internal.grpc_status(), 13);
    assert_eq!(PaymentErrorCode::Unauthenticated.grpc_status(), 16);
    assert_eq!(PaymentErrorCode::FailedPrecondition.grpc_status(), 9);
    assert_eq!(PaymentErrorCode::IncorrectNonce.grpc_status(), 1000);
}

#[test]
fn busy_and_missing_channels_use_the_seed_key_text() {
    let key = PaymentChannelKey::new(ChannelId::from(42));
    assert_eq!(
        PaymentError::channel_busy(key).message,
        "another transaction on channel: {ID: 42} is in progress"
    );
    assert_eq!(PaymentError::channel_not_found(key).message, "payment channel \"{ID: 42}\" not found");
}
