//! A large log made by one SQL statement, for measurements and for tests that need more output
//! than a pipe holds: `channels` channels, each a merge then payments of 10 cogs more each, in
//! position order round-robin over the channels. Payloads are shaped as the ledger writes them,
//! but the hash links are not valid (export does not read them; verify would name them).

use sqlx::{Connection, Executor};

use super::TestDb;

/// Appends `channels * per_channel` events as the owner; returns how many.
pub async fn fill_generated_log(db: &TestDb, channels: i64, per_channel: i64) -> i64 {
    let mut owner = db.owner().await;
    let sql = format!(
        "INSERT INTO ledger.events (stream, stream_version, event_type, payload, channel_id, nonce, amount, signature, prev_hash, hash)
         SELECT 'channel/' || c, v,
                CASE WHEN v = 1 THEN 'channel_merged_from_chain' ELSE 'payment_accepted' END,
                CASE WHEN v = 1
                     THEN jsonb_build_object('type', 'channel_merged_from_chain', 'block', NULL, 'chain',
                          jsonb_build_object('nonce', '0', 'value', '1000000000000000000000', 'expiration', '100000'))
                     ELSE jsonb_build_object('type', 'payment_accepted', 'nonce', '0', 'amount', ((v - 1) * 10)::text,
                          'signature', '0x' || repeat('ab', 65)) END,
                c, 0, CASE WHEN v = 1 THEN 1000000000000000000000 ELSE (v - 1) * 10 END,
                CASE WHEN v = 1 THEN NULL ELSE decode(repeat('ab', 65), 'hex') END,
                sha256(('p' || c || '/' || v)::bytea), sha256(('h' || c || '/' || v)::bytea)
         FROM generate_series(1, {per_channel}) AS v, generate_series(1, {channels}) AS c
         ORDER BY v, c"
    );
    owner.execute(sqlx::AssertSqlSafe(sql)).await.expect("fill the log");
    owner.execute("ANALYZE ledger.events").await.unwrap();
    owner.close().await.unwrap();
    channels * per_channel
}
