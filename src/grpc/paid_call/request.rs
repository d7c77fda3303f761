//! What the gateway reads of a paid call's request before anything is forwarded, and the metadata
//! the service gets: pure functions over the request's path and headers.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TE};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::error::{GRPC_CONTENT_TYPE, PaidCallError};
use crate::domain::EthAddress;
use crate::domain::headers::{CHANNEL_SIGNATURE, HeaderError, USER_ADDRESS};

/// Metadata of the payment, never forwarded.
const PAYMENT_HEADER_PREFIX: &str = "snet-payment-";
/// The client's deadline; the service gets the time left instead.
pub(super) const GRPC_TIMEOUT: &str = "grpc-timeout";
/// gRPC binary metadata: standard alphabet, padding optional.
const BINARY_METADATA: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(super) fn check_method(path: &str) -> Result<(), PaidCallError> {
    if path.starts_with("/escrow.") || path.starts_with("/training.Daemon/") {
        return Err(PaidCallError::DaemonServiceNotImplemented { method: path.to_owned() });
    }
    let well_formed = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, method)| !service.is_empty() && !method.is_empty() && !method.contains('/'));
    if well_formed { Ok(()) } else { Err(PaidCallError::MalformedMethod { path: path.to_owned() }) }
}

pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), PaidCallError> {
    let content_type = headers.get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match content_type {
        Some(content_type) if content_type.starts_with(GRPC_CONTENT_TYPE) => Ok(()),
        other => Err(PaidCallError::NotGrpc { content_type: other.unwrap_or_default() }),
    }
}

/// The call's `snet-*` metadata as `domain::headers` reads it: `-bin` values decoded.
pub(super) struct PaymentMetadata {
    pub(super) values: Vec<(String, Vec<u8>)>,
    /// A signature that is not base64; reported after the headers checked before it.
    pub(super) undecodable_signature: Option<HeaderError>,
}

impl PaymentMetadata {
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let mut values = Vec::new();
        let mut undecodable_signature = None;
        for (name, value) in headers {
            let key = name.as_str();
            if !key.starts_with("snet-") {
                continue;
            }
            let raw = value.as_bytes();
            if !key.ends_with("-bin") {
                values.push((key.to_owned(), raw.to_vec()));
                continue;
            }
            match BINARY_METADATA.decode(raw) {
                Ok(decoded) => values.push((key.to_owned(), decoded)),
                Err(_) => {
                    if key == CHANNEL_SIGNATURE && undecodable_signature.is_none() {
                        undecodable_signature = Some(HeaderError(format!(
                            "incorrect format \"{key}\": \"{}\"",
                            String::from_utf8_lossy(raw)
                        )));
                    }
                    values.push((key.to_owned(), raw.to_vec()));
                }
            }
        }
        Self { values, undecodable_signature }
    }
}

/// The client's metadata as the service gets it (see the gateway's doc): the payment headers, any
/// `snet-user-address` and connection-level headers dropped; the sender as `snet-user-address`,
/// `te: trailers`, and `grpc-timeout` set to the time the call has left.
pub(super) fn forwarded_headers(client: &HeaderMap, sender: EthAddress, timeout: &str) -> HeaderMap {
    const CONNECTION_LEVEL: [&str; 5] =
        ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];
    let mut headers = HeaderMap::with_capacity(client.len() + 3);
    for (name, value) in client {
        let key = name.as_str();
        let dropped = key.starts_with(PAYMENT_HEADER_PREFIX)
            || key == USER_ADDRESS
            || key == GRPC_TIMEOUT
            || name == HOST
            || name == CONTENT_LENGTH
            || name == TE
            || CONNECTION_LEVEL.contains(&key);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if let Ok(address) = HeaderValue::from_str(&sender.to_string()) {
        headers.insert(HeaderName::from_static(USER_ADDRESS), address);
    }
    if let Ok(timeout) = HeaderValue::from_str(timeout) {
        headers.insert(HeaderName::from_static(GRPC_TIMEOUT), timeout);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::paid_call::error::code;

    #[test]
    fn daemon_services_and_malformed_paths_are_not_paid_calls() {
        assert!(check_method("/example.Calculator/add").is_ok());
        assert!(check_method("/Service/Method").is_ok());
        for path in ["/escrow.TokenService/GetToken", "/escrow.PaymentChannelStateService/GetChannelState"] {
            assert_eq!(check_method(path).unwrap_err().grpc_status(), code::UNIMPLEMENTED);
        }
        assert!(matches!(
            check_method("/training.Daemon/create_model"),
            Err(PaidCallError::DaemonServiceNotImplemented { .. })
        ));
        for path in ["/", "/a", "/a/", "//m", "/a/b/c", ""] {
            assert!(matches!(check_method(path), Err(PaidCallError::MalformedMethod { .. })), "{path}");
        }
    }

    #[test]
    fn binary_metadata_is_decoded_padded_or_not() {
        let mut headers = HeaderMap::new();
        headers.append(CHANNEL_SIGNATURE, HeaderValue::from_static("AQID"));
        headers.append("snet-x-bin", HeaderValue::from_static("AQ"));
        headers.append("snet-y-bin", HeaderValue::from_static("AQ=="));
        headers.append("other", HeaderValue::from_static("ignored"));
        let metadata = PaymentMetadata::of(&headers);
        assert_eq!(
            metadata.values,
            vec![
                (CHANNEL_SIGNATURE.to_owned(), vec![1, 2, 3]),
                ("snet-x-bin".to_owned(), vec![1]),
                ("snet-y-bin".to_owned(), vec![1]),
            ]
        );
        assert!(metadata.undecodable_signature.is_none());
        let mut headers = HeaderMap::new();
        headers.append(CHANNEL_SIGNATURE, HeaderValue::from_static("not base64!"));
        assert_eq!(
            PaymentMetadata::of(&headers).undecodable_signature.unwrap().0,
            "incorrect format \"snet-payment-channel-signature-bin\": \"not base64!\""
        );
    }

    #[test]
    fn the_service_gets_the_sender_the_time_left_and_none_of_the_payment_headers() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/grpc"),
            ("snet-payment-type", "escrow"),
            ("snet-payment-channel-id", "1"),
            ("snet-payment-channel-signature-bin", "AQID"),
            ("snet-payment-mpe-address", "0x00"),
            ("snet-user-address", "0xSomebodyElse"),
            ("te", "trailers"),
            ("host", "ledger"),
            ("grpc-timeout", "5S"),
            ("x-trace", "abc"),
        ] {
            client.append(name, HeaderValue::from_static(value));
        }
        let sender = EthAddress::from_slice(&[0xab; 20]).unwrap();
        let forwarded = forwarded_headers(&client, sender, "4999m");
        let mut names: Vec<&str> = forwarded.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "grpc-timeout", "snet-user-address", "te", "x-trace"]);
        assert_eq!(forwarded[USER_ADDRESS], sender.to_string().as_str());
        assert_eq!(forwarded[TE], "trailers");
        assert_eq!(forwarded[GRPC_TIMEOUT], "4999m");
    }
}
