//! Parsing a paid call's metadata into a [`Payment`] (escrow.md §3.1–3.2). Every header must appear
//! exactly once; numbers are decimal digits only, with no sign, prefix, separator or leading zero
//! (design.md §8: the Go daemon reads `042` as octal, `0x2a` as hex, `-7` as negative; we refuse all
//! of them rather than guess). Errors are INVALID_ARGUMENT with the seed's messages.

use super::payment::Payment;
use super::types::{EthAddress, parse_decimal_u256};
use super::{Amount, ChannelId, Nonce};

pub const PAYMENT_TYPE: &str = "snet-payment-type";
pub const CHANNEL_ID: &str = "snet-payment-channel-id";
pub const CHANNEL_NONCE: &str = "snet-payment-channel-nonce";
pub const CHANNEL_AMOUNT: &str = "snet-payment-channel-amount";
pub const CHANNEL_SIGNATURE: &str = "snet-payment-channel-signature-bin";
/// Added to the forwarded call: the channel's sender, checksummed.
pub const USER_ADDRESS: &str = "snet-user-address";

/// A call's metadata: the values of a (lower-case) key in order, `-bin` values already decoded.
pub trait CallMetadata {
    fn values(&self, key: &str) -> Vec<Vec<u8>>;
}

impl CallMetadata for [(String, Vec<u8>)] {
    fn values(&self, key: &str) -> Vec<Vec<u8>> {
        self.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }
}

impl CallMetadata for Vec<(String, Vec<u8>)> {
    fn values(&self, key: &str) -> Vec<Vec<u8>> {
        self.as_slice().values(key)
    }
}

/// Bad metadata: always INVALID_ARGUMENT, with the message as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(pub String);

/// How a call says it pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentType {
    Escrow,
    FreeCall,
    PrepaidCall,
    TrainCall,
}

impl PaymentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Escrow => "escrow",
            Self::FreeCall => "free-call",
            Self::PrepaidCall => "prepaid-call",
            Self::TrainCall => "train-call",
        }
    }
}

fn single(metadata: &(impl CallMetadata + ?Sized), key: &str) -> Result<Vec<u8>, HeaderError> {
    let mut values = metadata.values(key);
    match values.len() {
        0 => Err(HeaderError(format!("missing \"{key}\""))),
        1 => Ok(values.remove(0)),
        _ => {
            let shown: Vec<String> = values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
            Err(HeaderError(format!("too many values for key \"{key}\": [{}]", shown.join(" "))))
        }
    }
}

fn number(metadata: &(impl CallMetadata + ?Sized), key: &str) -> Result<alloy_primitives::U256, HeaderError> {
    let raw = single(metadata, key)?;
    let text = String::from_utf8_lossy(&raw);
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|text| parse_decimal_u256(text).ok())
        .ok_or_else(|| HeaderError(format!("incorrect format \"{key}\": \"{text}\"")))
}

/// `snet-payment-type`: absent (or empty) means escrow.
pub fn parse_payment_type(metadata: &(impl CallMetadata + ?Sized)) -> Result<PaymentType, HeaderError> {
    let values = metadata.values(PAYMENT_TYPE);
    if values.is_empty() {
        return Ok(PaymentType::Escrow);
    }
    let value = single(metadata, PAYMENT_TYPE)?;
    match value.as_slice() {
        b"escrow" => Ok(PaymentType::Escrow),
        b"free-call" => Ok(PaymentType::FreeCall),
        b"prepaid-call" => Ok(PaymentType::PrepaidCall),
        b"train-call" => Ok(PaymentType::TrainCall),
        other => Err(HeaderError(format!(
            "unexpected \"{PAYMENT_TYPE}\", value: \"{}\"",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// The escrow payment headers, checked in the seed's order: id, nonce, amount, signature.
pub fn parse_payment(
    metadata: &(impl CallMetadata + ?Sized),
    mpe: EthAddress,
) -> Result<Payment, HeaderError> {
    let channel_id = ChannelId(number(metadata, CHANNEL_ID)?);
    let nonce = Nonce(number(metadata, CHANNEL_NONCE)?);
    let amount = Amount(number(metadata, CHANNEL_AMOUNT)?);
    let signature = single(metadata, CHANNEL_SIGNATURE)?;
    Ok(Payment { mpe, channel_id, nonce, amount, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
    }

    fn full() -> Vec<(String, Vec<u8>)> {
        md(&[
            (CHANNEL_ID, b"42"),
            (CHANNEL_NONCE, b"3"),
            (CHANNEL_AMOUNT, b"12345"),
            (CHANNEL_SIGNATURE, &[1, 2, 3]),
        ])
    }

    fn without(key: &str) -> Vec<(String, Vec<u8>)> {
        full().into_iter().filter(|(k, _)| k != key).collect()
    }

    fn with(key: &str, value: &[u8]) -> Vec<(String, Vec<u8>)> {
        full().into_iter().map(|(k, v)| if k == key { (k, value.to_vec()) } else { (k, v) }).collect()
    }

    #[test]
    fn well_formed_headers_become_a_payment_for_our_contract() {
        let mpe = EthAddress::from_slice(&[7; 20]).unwrap();
        let payment = parse_payment(&full(), mpe).unwrap();
        assert_eq!(payment.channel_id, ChannelId::from(42));
        assert_eq!(payment.nonce, Nonce::from(3));
        assert_eq!(payment.amount, Amount::from(12345));
        assert_eq!(payment.signature, vec![1, 2, 3]);
        assert_eq!(payment.mpe, mpe);
        assert_eq!(payment.id(), "42/3");
    }

    #[test]
    fn a_missing_header_is_named_in_the_seed_order() {
        for key in [CHANNEL_ID, CHANNEL_NONCE, CHANNEL_AMOUNT, CHANNEL_SIGNATURE] {
            let error = parse_payment(&without(key), EthAddress::default()).unwrap_err();
            assert_eq!(error.0, format!("missing \"{key}\""));
        }
        let error = parse_payment(&md(&[]), EthAddress::default()).unwrap_err();
        assert_eq!(error.0, format!("missing \"{CHANNEL_ID}\""));
    }

    #[test]
    fn a_header_given_twice_is_refused_with_both_values() {
        let mut twice = full();
        twice.push((CHANNEL_ID.to_owned(), b"43".to_vec()));
        let error = parse_payment(&twice, EthAddress::default()).unwrap_err();
        assert_eq!(error.0, "too many values for key \"snet-payment-channel-id\": [42 43]");
    }

    #[test]
    fn numbers_must_be_plain_decimal() {
        for bad in [&b"12345abc"[..], b"-7", b"+7", b"0x2a", b"042", b"1_000", b"", b" 1", b"\xff"] {
            let error = parse_payment(&with(CHANNEL_AMOUNT, bad), EthAddress::default()).unwrap_err();
            assert_eq!(
                error.0,
                format!(
                    "incorrect format \"snet-payment-channel-amount\": \"{}\"",
                    String::from_utf8_lossy(bad)
                )
            );
        }
        assert!(parse_payment(&with(CHANNEL_NONCE, b"0"), EthAddress::default()).is_ok());
    }

    #[test]
    fn a_number_above_uint256_is_an_incorrect_format() {
        let huge = "1".repeat(80);
        let error = parse_payment(&with(CHANNEL_ID, huge.as_bytes()), EthAddress::default()).unwrap_err();
        assert!(error.0.starts_with("incorrect format \"snet-payment-channel-id\""));
    }

    #[test]
    fn payment_type_defaults_to_escrow_and_refuses_unknown_types() {
        assert_eq!(parse_payment_type(&md(&[])).unwrap(), PaymentType::Escrow);
        for t in
            [PaymentType::Escrow, PaymentType::FreeCall, PaymentType::PrepaidCall, PaymentType::TrainCall]
        {
            assert_eq!(parse_payment_type(&md(&[(PAYMENT_TYPE, t.as_str().as_bytes())])).unwrap(), t);
        }
        assert_eq!(
            parse_payment_type(&md(&[(PAYMENT_TYPE, b"bitcoin")])).unwrap_err().0,
            "unexpected \"snet-payment-type\", value: \"bitcoin\""
        );
    }
}
