//! The audit API's one error type and its HTTP answers.
//!
//! Every refusal is a JSON body `{"error": "<message>"}` with a precise message and one of 400 (a
//! parameter that cannot be used), 401 (no or a wrong bearer token), 404 (no such channel), 409 (a
//! point of the log that cannot be answered yet) or 503 (too many audit requests at once). A
//! storage failure is 500 with a fixed message: its cause (SQL, host names) goes to the log only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// The body of every refusal.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, in one line.
    pub error: String,
}

/// Everything an audit request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A query or path parameter that cannot be used: 400.
    #[error("{0}")]
    BadParameter(String),
    /// No `Authorization: Bearer` header, or a token that is not configured: 401.
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// The channel is not in the ledger: 404.
    #[error("{0}")]
    NotFound(String),
    /// An "as of" point that a running transaction may still change: 409.
    #[error("{0}")]
    NotYetFinal(String),
    /// More audit requests at once than the limit: 503.
    #[error("too many audit requests at once (at most {limit}); retry shortly")]
    Busy { limit: usize },
    /// Storage failed; logged, never shown: 500.
    #[error("the ledger's storage failed, try again later")]
    Store(#[from] StoreError),
}

impl AuditError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadParameter(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NotYetFinal(_) => StatusCode::CONFLICT,
            Self::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AuditError {
    fn into_response(self) -> Response {
        if let Self::Store(cause) = &self {
            tracing::error!(error = %cause, "audit request failed in storage");
        }
        let status = self.status();
        let mut response = (status, Json(ErrorBody { error: self.to_string() })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
