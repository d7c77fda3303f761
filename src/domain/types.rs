//! Parse-don't-validate newtypes of the payment-channel world.
//!
//! Every integer of the MPE contract is a uint256, so channel ids, nonces, amounts and block numbers
//! are exact 256-bit unsigned integers: never floats, never truncated. Text forms are decimal, as in
//! the seed's messages and in SQL (`NUMERIC(78,0)`); parsing is strict (see [`ParseError`]).

use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value could not become one of the domain's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty number")]
    EmptyNumber,
    #[error("not a decimal number: {0:?}")]
    NotDecimal(String),
    #[error("leading zero in {0:?} (refused: the Go daemon would read it as octal)")]
    LeadingZero(String),
    #[error("number {0} does not fit in 256 bits")]
    TooLarge(String),
    #[error("{bytes} bytes do not fit in a 256-bit integer")]
    TooManyBytes { bytes: usize },
    #[error("{what} must be {expected} bytes, got {actual}")]
    WrongLength { what: &'static str, expected: usize, actual: usize },
    #[error("not a hex string: {0:?}")]
    NotHex(String),
}

/// Parses a uint256 from decimal digits only: no sign, no prefix, no spaces, no leading zero
/// (except `0` itself). Design §8: the Go daemon accepts `042` as octal 34; we refuse to guess.
pub fn parse_decimal_u256(text: &str) -> Result<U256, ParseError> {
    if text.is_empty() {
        return Err(ParseError::EmptyNumber);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::NotDecimal(text.to_owned()));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(ParseError::LeadingZero(text.to_owned()));
    }
    U256::from_str_radix(text, 10).map_err(|_| ParseError::TooLarge(text.to_owned()))
}

/// Reads a big-endian unsigned integer of any width (as gRPC requests carry them); leading zero
/// bytes beyond 32 are accepted, significant bytes beyond 32 are not.
pub fn u256_from_be_slice(bytes: &[u8]) -> Result<U256, ParseError> {
    let significant = bytes.iter().position(|&b| b != 0).map_or(&[][..], |i| &bytes[i..]);
    if significant.len() > 32 {
        return Err(ParseError::TooManyBytes { bytes: significant.len() });
    }
    Ok(U256::from_be_slice(significant))
}

macro_rules! uint256_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub U256);

        impl $name {
            pub const ZERO: Self = Self(U256::ZERO);

            pub fn new(value: impl Into<U256>) -> Self {
                Self(value.into())
            }

            pub fn value(self) -> U256 {
                self.0
            }

            /// 32-byte big-endian, as in signed messages and gRPC replies.
            pub fn to_be_bytes(self) -> [u8; 32] {
                self.0.to_be_bytes()
            }

            pub fn from_be_slice(bytes: &[u8]) -> Result<Self, ParseError> {
                u256_from_be_slice(bytes).map(Self)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(text: &str) -> Result<Self, ParseError> {
                parse_decimal_u256(text).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(U256::from(value))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

uint256_newtype!(
    /// MPE channel id (uint256 on chain).
    ChannelId
);
uint256_newtype!(
    /// Channel nonce: raised by one each time the recipient claims.
    Nonce
);
uint256_newtype!(
    /// An amount of cogs (the token's smallest unit).
    Amount
);
uint256_newtype!(
    /// An Ethereum block number, as used for channel expiration.
    BlockNumber
);

impl Nonce {
    /// The nonce after one claim. A nonce of 2^256-1 cannot be claimed again; the contract
    /// would overflow too, so this is reported rather than wrapped.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(U256::from(1u8)).map(Self)
    }
}

impl Amount {
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }
}

/// An Ethereum address; shown in EIP-55 checksum form, as the seed prints it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthAddress(pub Address);

impl EthAddress {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ParseError> {
        let array: [u8; 20] = bytes.try_into().map_err(|_| ParseError::WrongLength {
            what: "address",
            expected: 20,
            actual: bytes.len(),
        })?;
        Ok(Self(Address::from(array)))
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        self.0.as_ref()
    }
}

impl FromStr for EthAddress {
    type Err = ParseError;
    /// Hex with or without `0x`, any letter case (the checksum is not enforced, as in the seed).
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
        let bytes = hex::decode(digits).map_err(|_| ParseError::NotHex(text.to_owned()))?;
        Self::from_slice(&bytes)
    }
}

impl fmt::Display for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_checksum(None))
    }
}

impl fmt::Debug for EthAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A 65-byte `r ‖ s ‖ v` Ethereum signature, kept exactly as received: it is the evidence of a
/// payment and the contract needs it verbatim.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 65]);

impl Signature {
    pub const LEN: usize = 65;

    pub fn from_slice(bytes: &[u8]) -> Result<Self, ParseError> {
        let array: [u8; 65] = bytes.try_into().map_err(|_| ParseError::WrongLength {
            what: "signature",
            expected: Self::LEN,
            actual: bytes.len(),
        })?;
        Ok(Self(array))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    // Signatures are evidence, not secrets, but they are long: show a prefix only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(0x{}…)", hex::encode(&self.0[..4]))
    }
}

/// The 32-byte id of a group of replicas (the channel's `groupId` on chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct GroupId(pub [u8; 32]);

impl GroupId {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ParseError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| ParseError::WrongLength {
            what: "group id",
            expected: 32,
            actual: bytes.len(),
        })?;
        Ok(Self(array))
    }
}

/// Serde helpers: bytes as `0x`-prefixed lowercase hex in JSON payloads.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: impl AsRef<[u8]>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("0x{}", hex::encode(bytes.as_ref())))
    }

    pub fn decode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let digits = text
            .strip_prefix("0x")
            .ok_or_else(|| serde::de::Error::custom("hex bytes must start with 0x"))?;
        hex::decode(digits).map_err(serde::de::Error::custom)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        decode(deserializer)
    }
}

macro_rules! hex_serde {
    ($name:ident, $from:expr) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                hex_bytes::serialize(&self.0, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let bytes = hex_bytes::decode(deserializer)?;
                $from(&bytes).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_serde!(EthAddress, EthAddress::from_slice);
hex_serde!(Signature, Signature::from_slice);
hex_serde!(GroupId, GroupId::from_slice);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_numbers_parse_exactly_up_to_uint256_max() {
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(Amount::from_str(max).unwrap().0, U256::MAX);
        assert_eq!(Amount::from_str("0").unwrap(), Amount::ZERO);
        assert_eq!(Amount::from_str("12345").unwrap(), Amount::from(12345));
    }

    #[test]
    fn a_number_above_uint256_is_refused_not_truncated() {
        let above = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(Amount::from_str(above), Err(ParseError::TooLarge(above.into())));
    }

    #[test]
    fn anything_but_plain_decimal_digits_is_refused() {
        for text in ["+7", "-7", "0x10", "0b1", "0o7", "1_000", " 1", "1 ", "1.0", "１"] {
            assert_eq!(Nonce::from_str(text), Err(ParseError::NotDecimal(text.into())), "{text}");
        }
        assert_eq!(Nonce::from_str(""), Err(ParseError::EmptyNumber));
    }

    #[test]
    fn a_leading_zero_is_refused_because_go_reads_it_as_octal() {
        assert_eq!(ChannelId::from_str("042"), Err(ParseError::LeadingZero("042".into())));
        assert_eq!(ChannelId::from_str("00"), Err(ParseError::LeadingZero("00".into())));
    }

    #[test]
    fn big_endian_integers_of_any_width_are_read() {
        assert_eq!(ChannelId::from_be_slice(&[]).unwrap(), ChannelId::ZERO);
        assert_eq!(ChannelId::from_be_slice(&[0x2a]).unwrap(), ChannelId::from(42));
        let mut padded = vec![0u8; 40];
        padded[39] = 42;
        assert_eq!(ChannelId::from_be_slice(&padded).unwrap(), ChannelId::from(42));
        let mut wide = vec![0u8; 33];
        wide[0] = 1;
        assert_eq!(ChannelId::from_be_slice(&wide), Err(ParseError::TooManyBytes { bytes: 33 }));
    }

    #[test]
    fn amounts_serialize_as_decimal_strings() {
        let json = serde_json::to_string(&Amount::from(12300)).unwrap();
        assert_eq!(json, "\"12300\"");
        assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), Amount::from(12300));
    }

    #[test]
    fn signatures_must_be_65_bytes() {
        assert!(Signature::from_slice(&[0u8; 65]).is_ok());
        assert_eq!(
            Signature::from_slice(&[0u8; 64]),
            Err(ParseError::WrongLength { what: "signature", expected: 65, actual: 64 })
        );
    }

    #[test]
    fn addresses_parse_in_any_case_and_print_checksummed() {
        let lower: EthAddress = "0x7e6366fbe3bdfce3c906667911fc5237cc96bd08".parse().unwrap();
        let bare: EthAddress = "7E6366FBE3BDFCE3C906667911FC5237CC96BD08".parse().unwrap();
        assert_eq!(lower, bare);
        assert_eq!(lower.to_string(), "0x7E6366Fbe3bdfCE3C906667911FC5237Cc96BD08");
        assert!("0x1234".parse::<EthAddress>().is_err());
        assert!("0xzz".parse::<EthAddress>().is_err());
    }

    #[test]
    fn group_ids_must_be_32_bytes() {
        assert!(GroupId::from_slice(&[7u8; 32]).is_ok());
        assert!(GroupId::from_slice(&[7u8; 31]).is_err());
    }

    #[test]
    fn the_last_nonce_has_no_successor() {
        assert_eq!(Nonce::from(3).next(), Some(Nonce::from(4)));
        assert_eq!(Nonce(U256::MAX).next(), None);
    }
}
