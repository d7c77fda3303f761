//! The embedded cluster end to end: init, attach, stop, restart with the data intact; one owner
//! per data root, guests that attach and never stop it.

use mpe_ledger::startup::cluster::{ClusterError, DATABASE_NAME, EmbeddedCluster, is_running};
use sqlx::{Connection, PgConnection};

/// Stops the server if the test fails half-way, so no postgres outlives the deleted tempdir.
struct StopOnDrop(Option<EmbeddedCluster>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(cluster) = self.0.take() {
            let _ = cluster.stop_blocking();
        }
    }
}

#[tokio::test]
async fn cluster_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");

    let first = EmbeddedCluster::ensure_running(&root).await.expect("first start");
    assert!(first.started_here());
    let port = first.port();
    let guard = StopOnDrop(Some(first));
    let cluster = guard.0.as_ref().unwrap();
    assert!(is_running(&root).await.unwrap());

    let pool = sqlx::PgPool::connect(&cluster.url("postgres")).await.expect("connect");
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(one, 1);
    pool.close().await;

    cluster.create_database_if_missing(DATABASE_NAME).await.unwrap();
    cluster.create_database_if_missing(DATABASE_NAME).await.unwrap();

    let mut conn =
        PgConnection::connect(&cluster.url(DATABASE_NAME)).await.expect("connect to the created database");
    sqlx::raw_sql("CREATE TABLE survivor (note text); INSERT INTO survivor VALUES ('kept')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let attached = EmbeddedCluster::ensure_running(&root).await.expect("attach");
    assert!(!attached.started_here());
    assert_eq!(attached.port(), port);

    cluster.stop().await.expect("stop");
    assert!(!is_running(&root).await.unwrap());

    let restarted = EmbeddedCluster::ensure_running(&root).await.expect("restart");
    assert!(restarted.started_here());
    let guard = StopOnDrop(Some(restarted));
    let cluster = guard.0.as_ref().unwrap();
    let mut conn = PgConnection::connect(&cluster.url(DATABASE_NAME)).await.expect("connect after restart");
    let note: String = sqlx::query_scalar("SELECT note FROM survivor").fetch_one(&mut conn).await.unwrap();
    assert_eq!(note, "kept");
    conn.close().await.unwrap();

    cluster.stop().await.expect("final stop");
    assert!(!is_running(&root).await.unwrap());
    drop(guard);
    drop(dir);
}

#[tokio::test]
async fn one_owner_per_data_root_guests_attach_and_never_stop_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    let owner = StopOnDrop(Some(EmbeddedCluster::own(&root, "serve").await.expect("the first owner")));
    assert!(owner.0.as_ref().unwrap().is_owner());

    let refused = EmbeddedCluster::own(&root, "serve").await.expect_err("a second owner is refused");
    assert!(
        matches!(&refused, ClusterError::Owned { pid, command, .. }
        if *pid == std::process::id().to_string() && command == "serve"),
        "{refused}"
    );

    let guest = EmbeddedCluster::own_or_attach(&root, "verify").await.expect("a guest attaches");
    assert!(!guest.is_owner() && !guest.started_here());
    guest.stop_if_owner().await.unwrap();
    assert!(is_running(&root).await.unwrap(), "a guest leaves the cluster running");

    owner.0.as_ref().unwrap().stop_if_owner().await.unwrap();
    assert!(!is_running(&root).await.unwrap(), "the owner stops it");
    drop(owner);
    let next = StopOnDrop(Some(
        EmbeddedCluster::own(&root, "serve").await.expect("ownership is free once the owner is gone"),
    ));
    let cluster = next.0.as_ref().unwrap();
    assert!(cluster.is_owner() && cluster.started_here());
    cluster.stop().await.unwrap();
}
