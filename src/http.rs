//! HTTP beside the service: `/healthz`, `/readyz` and `/metrics` (Prometheus text).
//!
//! What this keeps true:
//! - `/healthz` answers within a second whatever the database does: the check gets
//!   [`HEALTH_CHECK_TIMEOUT`], never the pool's acquire timeout, and a cluster known to be down is
//!   reported at once without asking the pool. `200 ok` when the database answers; otherwise `503`
//!   with one line saying what is wrong (never a URL or a password).
//! - `/readyz` says whether paid calls can be taken now: `200 ready` when the database answers and
//!   the chain settings are given; otherwise `503` with the reason. A load balancer sends paid
//!   calls only to ready replicas; `/healthz` is for a supervisor deciding on restarts.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;

use crate::startup::cluster::supervisor::ClusterHealth;
use crate::telemetry::Metrics;

/// How long `/healthz` and `/readyz` wait for the database's answer.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone)]
pub struct HttpState {
    pub pool: PgPool,
    pub metrics: Metrics,
    /// The embedded cluster's state, when this process runs one.
    pub cluster: Option<ClusterHealth>,
    /// Whether paid calls are served at all (the chain settings are given).
    pub paid_calls: bool,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// What is wrong with the database, if anything (module doc).
async fn database_problem(state: &HttpState) -> Option<String> {
    if let Some(problem) = state.cluster.as_ref().and_then(ClusterHealth::problem) {
        return Some(format!("database down: {problem}"));
    }
    let check = sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(&state.pool);
    match tokio::time::timeout(HEALTH_CHECK_TIMEOUT, check).await {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(format!("database unreachable: {error}")),
        Err(_) => {
            Some(format!("database unreachable: no answer within {} ms", HEALTH_CHECK_TIMEOUT.as_millis()))
        }
    }
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    match database_problem(&state).await {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(problem) => {
            tracing::warn!(%problem, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n"))
        }
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if !state.paid_calls {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no chain settings, paid calls are refused\n".to_string(),
        );
    }
    match database_problem(&state).await {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(problem) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {problem}\n")),
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
