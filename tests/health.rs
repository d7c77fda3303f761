//! `/healthz` and `/readyz` through the production router: an answer within a second whatever the
//! database does, saying what is wrong; readiness only with a database and the chain settings.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::TestDb;
use http_body_util::BodyExt;
use mpe_ledger::http::{HttpState, router};
use mpe_ledger::store::postgres::connect_operational;
use mpe_ledger::telemetry::Metrics;
use tower::ServiceExt;

/// What `/healthz` promises.
const ANSWER_BOUND: Duration = Duration::from_secs(1);

async fn get(state: &HttpState, path: &str) -> (StatusCode, String) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn state(pool: sqlx::PgPool, paid_calls: bool) -> HttpState {
    HttpState { pool, metrics: Metrics::new(), cluster: None, paid_calls }
}

#[tokio::test]
async fn with_the_database_gone_healthz_answers_within_a_second_saying_so_and_readyz_refuses() {
    // Nothing listens on this port: every connection attempt is refused, and the pool would keep
    // retrying until its own acquire timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pool = connect_operational(&format!("postgres://nobody:secret@127.0.0.1:{port}/none"), 2).unwrap();
    let state = state(pool, true);

    let asked = Instant::now();
    let (status, body) = get(&state, "/healthz").await;
    assert!(asked.elapsed() < ANSWER_BOUND, "/healthz took {:?}", asked.elapsed());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.starts_with("database unreachable: "), "{body}");
    assert!(!body.contains("secret"), "{body}");

    let asked = Instant::now();
    let (status, body) = get(&state, "/readyz").await;
    assert!(asked.elapsed() < ANSWER_BOUND, "/readyz took {:?}", asked.elapsed());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.starts_with("not ready: database unreachable: "), "{body}");
}

#[tokio::test]
async fn readyz_needs_the_chain_settings_as_well_as_the_database() {
    let db = TestDb::new().await;
    let without_chain = state(db.pool.clone(), false);
    assert_eq!(get(&without_chain, "/healthz").await, (StatusCode::OK, "ok\n".to_owned()));
    assert_eq!(
        get(&without_chain, "/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no chain settings, paid calls are refused\n".to_owned()
        )
    );
    let with_chain = state(db.pool.clone(), true);
    assert_eq!(get(&with_chain, "/readyz").await, (StatusCode::OK, "ready\n".to_owned()));
}
