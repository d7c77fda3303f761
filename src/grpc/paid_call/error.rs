//! What a paid call can fail with, the gRPC status each failure is answered with, and the replies
//! that carry it. Every message here is what the client reads in `grpc-message`: fixed texts and
//! values the client sent, never an internal cause (a URL, SQL, a host name), which is logged where
//! it happens.

use axum::body::Body;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::domain::headers::HeaderError;
use crate::domain::payment::PaymentError;

pub(super) const GRPC_STATUS: &str = "grpc-status";
pub(super) const GRPC_MESSAGE: &str = "grpc-message";
pub(super) const GRPC_CONTENT_TYPE: &str = "application/grpc";
/// gRPC's percent-encoding of `grpc-message`: controls, `%` and (always) every non-ASCII byte.
const GRPC_MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// gRPC status codes used here; a payment error brings its own (`PaymentErrorCode::grpc_status`).
pub mod code {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const FAILED_PRECONDITION: u32 = 9;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// Which limit a call ran into when it was cut at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineCause {
    /// The client's own `grpc-timeout`.
    Client,
    /// The ledger's longest call duration (`max_call_seconds`).
    Ledger { max_seconds: u64 },
}

/// Why a paid call was refused or failed; the message is what the client reads in `grpc-message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaidCallError {
    #[error("method {method} belongs to the daemon's own services and is not implemented by this ledger")]
    DaemonServiceNotImplemented { method: String },
    #[error("malformed method name: {path:?}")]
    MalformedMethod { path: String },
    #[error("content-type {content_type:?} is not application/grpc")]
    NotGrpc { content_type: String },
    #[error("malformed grpc-timeout {value:?}")]
    MalformedTimeout { value: String },
    #[error(
        "paid calls are refused: no chain is configured (set ethereum_rpc_url, mpe_address, group_id, \
         payment_address, price and upstream)"
    )]
    NoChain,
    #[error("payment type \"{payment_type}\" is not supported by this ledger: pay with \"escrow\"")]
    UnsupportedPaymentType { payment_type: &'static str },
    #[error("too many paid calls in flight (at most {max}): try again later")]
    CallsExhausted { max: usize },
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error("received message larger than max ({size} vs. {max})")]
    MessageTooLarge { size: u64, max: usize },
    #[error("the service replied with HTTP status {status} and no gRPC status")]
    UpstreamNotGrpc { status: StatusCode },
    #[error("the service is unavailable")]
    UpstreamUnavailable,
    #[error("{}", deadline_message(*.cause))]
    DeadlineExceeded { cause: DeadlineCause },
    #[error("the client cancelled the call")]
    ClientCancelled,
}

fn deadline_message(cause: DeadlineCause) -> String {
    match cause {
        DeadlineCause::Client => "deadline exceeded: the call ran past the client's grpc-timeout".to_owned(),
        DeadlineCause::Ledger { max_seconds } => format!(
            "deadline exceeded: the call ran past the ledger's longest call duration ({max_seconds} s)"
        ),
    }
}

impl PaidCallError {
    /// The gRPC status code the client sees.
    pub fn grpc_status(&self) -> u32 {
        match self {
            Self::DaemonServiceNotImplemented { .. }
            | Self::MalformedMethod { .. }
            | Self::UnsupportedPaymentType { .. } => code::UNIMPLEMENTED,
            Self::NotGrpc { .. } | Self::Header(_) | Self::MalformedTimeout { .. } => code::INVALID_ARGUMENT,
            Self::NoChain => code::FAILED_PRECONDITION,
            Self::Payment(error) => error.code.grpc_status(),
            Self::MessageTooLarge { .. } | Self::CallsExhausted { .. } => code::RESOURCE_EXHAUSTED,
            Self::UpstreamNotGrpc { status } => status_of_http(*status),
            Self::UpstreamUnavailable => code::UNAVAILABLE,
            Self::DeadlineExceeded { .. } => code::DEADLINE_EXCEEDED,
            Self::ClientCancelled => code::CANCELLED,
        }
    }

    /// A trailers-only gRPC reply carrying this error.
    pub fn into_response(self) -> Response<Body> {
        status_response(self.grpc_status(), &self.to_string())
    }

    /// Trailers carrying this error, ending a reply whose headers (and maybe messages) were sent.
    pub fn trailers(&self) -> HeaderMap {
        status_trailers(self.grpc_status(), &self.to_string())
    }
}

/// The status gRPC derives from the HTTP code of a reply that carries none of its own.
pub(super) fn status_of_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        200 => code::INTERNAL,
        _ => code::UNKNOWN,
    }
}

/// `grpc-status` (a decimal number, 1000 included) and the percent-encoded `grpc-message`.
pub(super) fn status_trailers(status: u32, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(GRPC_STATUS, HeaderValue::from(status));
    let encoded = utf8_percent_encode(message, GRPC_MESSAGE_ESCAPES).to_string();
    // Percent-encoding leaves only visible ASCII and spaces, which a header value always accepts.
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert(GRPC_MESSAGE, value);
    }
    headers
}

/// A trailers-only gRPC reply: HTTP 200, `content-type: application/grpc` and the status.
pub fn status_response(status: u32, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    headers.extend(status_trailers(status, message));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_is_percent_encoded_and_status_may_be_1000() {
        let response = status_response(1000, "nonce 100% wrong: ü\n");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(response.headers()[GRPC_STATUS], "1000");
        assert_eq!(response.headers()[GRPC_MESSAGE], "nonce 100%25 wrong: %C3%BC%0A");
    }

    #[test]
    fn a_deadline_names_the_limit_that_cut_the_call() {
        let client = PaidCallError::DeadlineExceeded { cause: DeadlineCause::Client };
        assert_eq!(client.grpc_status(), code::DEADLINE_EXCEEDED);
        assert!(client.to_string().contains("grpc-timeout"));
        let ledger = PaidCallError::DeadlineExceeded { cause: DeadlineCause::Ledger { max_seconds: 7 } };
        assert!(ledger.to_string().contains("longest call duration (7 s)"), "{ledger}");
    }
}
