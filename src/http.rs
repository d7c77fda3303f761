//! HTTP beside the service: `/healthz` (the database answers) and `/metrics` (Prometheus text).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;

use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub pool: PgPool,
    pub metrics: Metrics,
}

pub fn router(state: HttpState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(state)
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    match sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(error) => {
            tracing::warn!(%error, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
