//! The audit HTTP API (JSON): channels, their events, claims and state as of a point of the log,
//! the global event feed and the stream heads, for providers and auditors. `serve` runs it on its
//! own loopback listener (`audit_listen`, see `crate::config`), never on the public port, and only
//! when bearer tokens are configured.
//!
//! What it keeps true:
//! - **Authenticated.** Every route but `/openapi.json` needs `Authorization: Bearer <token>` with
//!   one of the configured tokens, compared in constant time (`config::AuditTokens`); anything
//!   else is 401 before any parameter is read or the database touched. Decided here: the OpenAPI
//!   document is served without a token, since it describes the routes and holds no data.
//! - **Read only.** Every answer comes from one short `REPEATABLE READ READ ONLY` transaction
//!   (`store::postgres::audit`); the API never writes.
//! - **Bounded.** At most [`CONCURRENT_REQUESTS_MAX`] requests are served at once (a further one is
//!   answered 503 at once, never queued); a page holds [`PAGE_SIZE_DEFAULT`] items unless
//!   `page_size` says otherwise, at most [`PAGE_SIZE_MAX`]; the feed waits at most
//!   [`WAIT_SECONDS_MAX`] for new events.
//! - **Precise refusals.** A parameter that cannot be used is 400 with a message naming it, never
//!   a 500 and never ignored: unknown parameters are refused too (`error`).
//! - **Exact values.** Amounts in cogs as decimal strings (`views`).
//! - **The feed never skips or repeats a committed event**, and a state "as of" a point is
//!   answered only once no running transaction can change it (409 until then): see
//!   `store::postgres::audit`.
//! - Every route is in the OpenAPI document served at `/openapi.json`, generated from the handlers
//!   and the response types (`openapi`); there is no Swagger UI (it would need vendored assets).

mod as_of;
mod channels;
pub mod error;
mod feed;
pub mod openapi;
pub mod views;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};

use crate::config::AuditTokens;

pub use error::AuditError;

/// Audit requests served at once; each holds at most one database connection at a time.
pub const CONCURRENT_REQUESTS_MAX: usize = 4;
/// Items per page unless `page_size` is given.
pub const PAGE_SIZE_DEFAULT: u32 = 100;
/// The largest `page_size` accepted.
pub const PAGE_SIZE_MAX: u32 = 1000;
/// The longest `wait_seconds` of the feed.
pub const WAIT_SECONDS_MAX: u64 = 30;

/// What every handler shares.
#[derive(Clone)]
pub struct AuditState {
    pub pool: PgPool,
    tokens: Arc<AuditTokens>,
    permits: Arc<Semaphore>,
    /// Turns true when the server shuts down: waiting feed requests answer at once.
    shutdown: watch::Receiver<bool>,
}

impl AuditState {
    pub fn new(pool: PgPool, tokens: AuditTokens, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            pool,
            tokens: Arc::new(tokens),
            permits: Arc::new(Semaphore::new(CONCURRENT_REQUESTS_MAX)),
            shutdown,
        }
    }
}

/// The whole API: the routes of the OpenAPI document, the document itself, the token check and
/// the request limit.
pub fn router(state: AuditState) -> axum::Router {
    let (routes, document) = openapi::routes().split_for_parts();
    let document = Arc::new(document);
    let routes = routes.layer(axum::middleware::from_fn_with_state(state.clone(), guard));
    routes
        .route(
            openapi::DOCUMENT_PATH,
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .with_state(state)
}

/// The token check, then a request slot (module doc).
async fn guard(
    State(state): State<AuditState>,
    request: Request,
    next: Next,
) -> Result<Response, AuditError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::to_vec);
    if !presented.is_some_and(|token| state.tokens.accepts(&token)) {
        return Err(AuditError::Unauthorized);
    }
    let _permit = state
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| AuditError::Busy { limit: CONCURRENT_REQUESTS_MAX })?;
    Ok(next.run(request).await)
}

/// `page_size`, checked against the limits.
fn page_size(given: Option<&str>) -> Result<u32, AuditError> {
    let Some(text) = given else { return Ok(PAGE_SIZE_DEFAULT) };
    match text.parse::<u32>() {
        Ok(n) if (1..=PAGE_SIZE_MAX).contains(&n) => Ok(n),
        _ => Err(AuditError::BadParameter(format!(
            "page_size {text:?} is not a whole number from 1 to {PAGE_SIZE_MAX}"
        ))),
    }
}

/// Bytes as `0x`-prefixed lowercase hex.
pub fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// A time as the API writes it: RFC 3339, UTC, microseconds.
pub fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
        tracing::error!(%error, "the audit listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).unwrap(), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", ""] {
            assert!(matches!(page_size(Some(bad)), Err(AuditError::BadParameter(_))), "{bad}");
        }
    }
}
