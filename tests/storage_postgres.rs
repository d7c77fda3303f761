//! The AtomicStorage contract on Postgres, and what only Postgres promises: every change is one
//! event, refused operations write nothing, the log is append-only for the service's role, and
//! concurrent compare-and-swaps lose no update.

mod common;

use common::TestDb;
use mpe_ledger::store::postgres::PgAtomicStorage;
use mpe_ledger::store::{AtomicStorage, MAX_VALUE_BYTES, PrefixedStorage, StoreError};
use sqlx::{Connection, Executor};

crate::atomic_storage_contract!(common::pg_storage().await);

mod prefixed {
    use super::*;
    crate::atomic_storage_contract!(PrefixedStorage::new(common::pg_storage().await, "sepolia/my-org/gid"));
}

fn storage(db: &TestDb) -> PgAtomicStorage {
    PgAtomicStorage::new(db.pool.clone(), db.metrics.clone())
}

#[tokio::test]
async fn every_change_appends_exactly_one_event_of_its_kind() {
    let db = TestDb::new().await;
    let s = storage(&db);
    s.put(b"k", b"1").await.unwrap();
    assert!(s.put_if_absent(b"j", b"1").await.unwrap());
    assert!(s.compare_and_swap(b"k", b"1", b"2").await.unwrap());
    s.delete(b"k").await.unwrap();
    let types: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT stream, event_type, stream_version FROM ledger.events ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let k = format!("kv/{}", hex::encode("k"));
    let j = format!("kv/{}", hex::encode("j"));
    assert_eq!(
        types,
        vec![
            (k.clone(), "key_put".into(), 1),
            (j, "key_put".into(), 1),
            (k.clone(), "key_put".into(), 2),
            (k, "key_deleted".into(), 3),
        ]
    );
}

#[tokio::test]
async fn refused_and_empty_operations_write_nothing() {
    let db = TestDb::new().await;
    let s = storage(&db);
    s.put(b"k", b"v").await.unwrap();
    let (events, projections) = (db.event_count().await, db.projections_snapshot().await);
    assert!(!s.put_if_absent(b"k", b"other").await.unwrap());
    assert!(!s.compare_and_swap(b"k", b"stale", b"new").await.unwrap());
    assert!(!s.compare_and_swap(b"absent", b"", b"new").await.unwrap());
    s.delete(b"absent").await.unwrap();
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    assert!(matches!(s.put(b"k", &big).await, Err(StoreError::ValueTooLarge { .. })));
    assert!(matches!(s.put(b"new", &big).await, Err(StoreError::ValueTooLarge { .. })));
    assert_eq!(db.event_count().await, events);
    assert_eq!(db.projections_snapshot().await, projections);
}

#[tokio::test]
async fn the_service_role_cannot_update_delete_or_truncate_events() {
    let db = TestDb::new().await;
    storage(&db).put(b"k", b"v").await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let role: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(role, "mpe_ledger_writer");
    for statement in
        ["UPDATE ledger.events SET event_type = 'x'", "DELETE FROM ledger.events", "TRUNCATE ledger.events"]
    {
        let error = conn.execute(statement).await.expect_err(statement);
        let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }
    assert_eq!(db.event_count().await, 1);
}

#[tokio::test]
async fn even_the_owner_cannot_change_events_without_lifting_the_guard() {
    let db = TestDb::new().await;
    storage(&db).put(b"k", b"v").await.unwrap();
    let mut owner = db.owner().await;
    for statement in
        ["UPDATE ledger.events SET event_type = 'x'", "DELETE FROM ledger.events", "TRUNCATE ledger.events"]
    {
        let error = owner.execute(statement).await.expect_err(statement);
        assert!(error.to_string().contains("append-only"), "{statement}: {error}");
    }
    owner.close().await.unwrap();
    assert_eq!(db.event_count().await, 1);
}

#[tokio::test]
async fn migrations_are_idempotent_across_databases_sharing_the_roles() {
    // Roles are cluster-wide: many databases migrating at once must not collide.
    let dbs = futures::future::join_all((0..4).map(|_| TestDb::new())).await;
    for db in &dbs {
        storage(db).put(b"k", b"v").await.unwrap();
    }
    let again = mpe_ledger::store::postgres::migrate(&dbs[0].owner_url).await;
    assert!(again.is_ok(), "{again:?}");
}

/// 32 tasks × 100 read-then-CAS increments of one key: the final value equals the number of
/// successful CASes (no lost update), and every success is exactly one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_swap_increments_lose_no_update() {
    const TASKS: usize = 32;
    const INCREMENTS: usize = 100;
    let db = TestDb::with_pool_size(TASKS as u32).await;
    let s = storage(&db);
    s.put(b"counter", b"0").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let (mut swapped, mut refused, mut errors) = (0u64, 0u64, 0u64);
            for _ in 0..INCREMENTS {
                let current = s.get(b"counter").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&current).unwrap().parse().unwrap();
                match s.compare_and_swap(b"counter", &current, (n + 1).to_string().as_bytes()).await {
                    Ok(true) => swapped += 1,
                    Ok(false) => refused += 1,
                    Err(_) => errors += 1,
                }
            }
            (swapped, refused, errors)
        }));
    }
    let (mut swapped, mut refused, mut errors) = (0, 0, 0);
    for task in tasks {
        let (s, r, e) = task.await.unwrap();
        swapped += s;
        refused += r;
        errors += e;
    }
    let final_value: u64 =
        std::str::from_utf8(&s.get(b"counter").await.unwrap().unwrap()).unwrap().parse().unwrap();
    let retries = db.metrics.retries("kv.compare_and_swap");
    println!(
        "concurrency: {TASKS} tasks x {INCREMENTS} CAS: {swapped} swapped, {refused} refused, {errors} errors, \
         {retries} serialization retries, final value {final_value}"
    );
    assert_eq!(final_value, swapped, "a lost update");
    assert_eq!(errors, 0, "no CAS should exhaust its retries");
    assert!(swapped > 0);
    assert_eq!(db.event_count().await as u64, swapped + 1, "one event per successful write");
}
