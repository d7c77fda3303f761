//! One channel's commit, statement by statement (used by `ledger` for a commit made alone): its
//! current state read with point lookups on its unique keys in one round trip, and its events,
//! `channels` row and lease release written in one statement. The hash links are computed here; the
//! decisions (lease held, version, idempotency, fold) are `ledger`'s.

use std::collections::BTreeMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{ChannelId, ChannelProjection, EthAddress, Event, StreamId};
use crate::store::StoreError;
use crate::store::leases::Lease;

use super::channels::{ChannelRow, claim_rows};
use super::log::{StreamHead, attribution, chain_links, hash_from_db, version_from_db, version_to_db};

/// The channel's stream head, projection (claims only when asked) and lease token, read with point
/// lookups on unique keys in one round trip.
pub(super) struct Current {
    pub head: Option<StreamHead>,
    pub projection: Option<ChannelProjection>,
    pub lease_token: Option<Uuid>,
}

pub(super) async fn read_current(
    conn: &mut PgConnection,
    channel_id: ChannelId,
    with_lease: bool,
    with_claims: bool,
) -> Result<Current, StoreError> {
    let stream = StreamId::Channel(channel_id);
    let id = channel_id.to_string();
    let row = sqlx::query!(
        r#"SELECT s.version AS "version?", s.last_hash AS "last_hash?",
                  c.nonce::text AS "nonce?", c.state AS "state?", c.sender AS "sender?",
                  c.recipient AS "recipient?", c.signer AS "signer?", c.group_id AS "group_id?",
                  c.full_amount::text AS "full_amount?", c.expiration::text AS "expiration?",
                  c.authorized_amount::text AS "authorized_amount?", c.signature,
                  c.stream_version AS "channel_version?",
                  CASE WHEN $3 THEN (SELECT token FROM ledger.leases WHERE channel_id = $2::text::numeric)
                  END AS lease_token
           FROM (VALUES (1)) AS one (x)
           LEFT JOIN ledger.streams s ON s.stream = $1
           LEFT JOIN ledger.channels c ON c.channel_id = $2::text::numeric"#,
        stream.to_string(),
        id,
        with_lease,
    )
    .fetch_one(&mut *conn)
    .await?;
    let head = match (row.version, row.last_hash) {
        (Some(version), Some(hash)) => Some(StreamHead {
            version: version_from_db(&stream, version)?,
            last_hash: hash_from_db(&stream, &hash)?,
        }),
        _ => None,
    };
    let projection = match row.channel_version {
        None => None,
        Some(stream_version) => {
            let missing = || StoreError::CorruptLog {
                stream: stream.to_string(),
                reason: "channels row with NULL columns".into(),
            };
            let channel = ChannelRow {
                channel_id: id.clone(),
                nonce: row.nonce.ok_or_else(missing)?,
                state: row.state.ok_or_else(missing)?,
                sender: row.sender.ok_or_else(missing)?,
                recipient: row.recipient.ok_or_else(missing)?,
                signer: row.signer.ok_or_else(missing)?,
                group_id: row.group_id.ok_or_else(missing)?,
                full_amount: row.full_amount.ok_or_else(missing)?,
                expiration: row.expiration.ok_or_else(missing)?,
                authorized_amount: row.authorized_amount.ok_or_else(missing)?,
                signature: row.signature,
                stream_version,
            }
            .to_domain()?;
            if head.map(|h| h.version) != Some(version_from_db(&stream, stream_version)?) {
                return Err(StoreError::CorruptLog {
                    stream: stream.to_string(),
                    reason: format!(
                        "projection at version {stream_version}, stream head at {:?}",
                        row.version
                    ),
                });
            }
            let mut claims = BTreeMap::new();
            if with_claims {
                for row in claim_rows(conn, Some(channel_id)).await? {
                    let claim = row.to_domain()?;
                    claims.insert(claim.nonce, claim);
                }
            }
            Some(ChannelProjection { channel, claims })
        }
    };
    Ok(Current { head, projection, lease_token: row.lease_token })
}

/// The stream head moved, the events appended, the `channels` row written and the lease released,
/// in one statement (one round trip). Claims are written by the caller when they changed. A payment
/// event gets `payment_signer` in its `signer` column; every event the lease holder's name as its
/// `replica` (see `log::attribution`).
pub(super) async fn append_channel_events(
    conn: &mut PgConnection,
    stream: &StreamId,
    head: Option<StreamHead>,
    events: &[Event],
    after: &ChannelProjection,
    lease: Option<&Lease>,
    payment_signer: Option<EthAddress>,
) -> Result<(StreamHead, String), StoreError> {
    let links = chain_links(stream, head, events);
    let new_head = links.last().map(|link| StreamHead { version: link.version, last_hash: link.hash });
    let new_head = new_head.expect("at least one event");
    let mut versions = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut nonces = Vec::with_capacity(events.len());
    let mut amounts = Vec::with_capacity(events.len());
    let mut signatures = Vec::with_capacity(events.len());
    let mut prev_hashes = Vec::with_capacity(events.len());
    let mut hashes = Vec::with_capacity(events.len());
    let mut signers = Vec::with_capacity(events.len());
    let mut replicas = Vec::with_capacity(events.len());
    for (event, link) in events.iter().zip(&links) {
        let (nonce, amount, signature) = event.amount_columns();
        let (signer, replica) = attribution(event, payment_signer, lease.map(|lease| lease.holder.as_str()));
        signers.push(signer);
        replicas.push(replica);
        versions.push(version_to_db(link.version));
        types.push(event.event_type().to_owned());
        payloads.push(event.to_json().to_string());
        nonces.push(nonce.map(|n| n.to_string()));
        amounts.push(amount.map(|a| a.to_string()));
        signatures.push(signature.map(|s| s.as_bytes().to_vec()));
        prev_hashes.push(link.prev_hash.to_vec());
        hashes.push(link.hash.to_vec());
    }
    let c = &after.channel;
    let expected = version_to_db(head.map_or(0, |h| h.version));
    let row = sqlx::query!(
        r#"WITH moved AS (
               UPDATE ledger.streams SET version = $2, last_hash = $3
               WHERE stream = $1 AND version = $4
               RETURNING version
           ), created AS (
               INSERT INTO ledger.streams (stream, version, last_hash)
               SELECT $1, $2, $3 WHERE $4 = 0
               RETURNING version
           ), head AS (
               SELECT version FROM moved UNION ALL SELECT version FROM created
           ), appended AS (
               INSERT INTO ledger.events (stream, stream_version, event_type, payload, channel_id, nonce,
                                          amount, signature, prev_hash, hash, signer, replica)
               SELECT $1, e.stream_version, e.event_type, e.payload::jsonb, $5::text::numeric,
                      e.nonce::numeric, e.amount::numeric, e.signature, e.prev_hash, e.hash, e.signer,
                      e.replica
               FROM unnest($6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[],
                           $12::bytea[], $13::bytea[], $25::bytea[], $26::text[])
                    AS e (stream_version, event_type, payload, nonce, amount, signature, prev_hash, hash,
                          signer, replica)
               WHERE EXISTS (SELECT FROM head)
               RETURNING 1
           ), opened AS (
               INSERT INTO ledger.channels (channel_id, nonce, state, sender, recipient, signer, group_id,
                                            full_amount, expiration, authorized_amount, signature,
                                            stream_version)
               SELECT $5::text::numeric, $14::text::numeric, $15, $16, $17, $18, $19, $20::text::numeric,
                      $21::text::numeric, $22::text::numeric, $23, $2
               WHERE $4 = 0 AND EXISTS (SELECT FROM head)
               RETURNING 1
           ), changed AS (
               UPDATE ledger.channels SET nonce = $14::text::numeric, state = $15, sender = $16,
                      recipient = $17, signer = $18, group_id = $19, full_amount = $20::text::numeric,
                      expiration = $21::text::numeric, authorized_amount = $22::text::numeric,
                      signature = $23, stream_version = $2
               WHERE channel_id = $5::text::numeric AND $4 > 0 AND EXISTS (SELECT FROM head)
               RETURNING 1
           ), released AS (
               UPDATE ledger.leases SET token = NULL
               WHERE channel_id = $5::text::numeric AND token = $24 AND EXISTS (SELECT FROM head)
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM head) AS "moved!",
                  (SELECT count(*) FROM appended) AS "appended!",
                  (SELECT count(*) FROM opened) + (SELECT count(*) FROM changed) AS "projected!",
                  (SELECT count(*) FROM released) AS "released!",
                  pg_current_xact_id()::text AS "transaction_id!""#,
        stream.to_string(),
        version_to_db(new_head.version),
        &new_head.last_hash[..],
        expected,
        c.channel_id.to_string(),
        &versions,
        &types,
        &payloads,
        &nonces as &[Option<String>],
        &amounts as &[Option<String>],
        &signatures as &[Option<Vec<u8>>],
        &prev_hashes,
        &hashes,
        c.nonce.to_string(),
        c.state.as_str(),
        c.sender.as_bytes().as_slice(),
        c.recipient.as_bytes().as_slice(),
        c.signer.as_bytes().as_slice(),
        &c.group_id.0[..],
        c.full_amount.to_string(),
        c.expiration.to_string(),
        c.authorized_amount.to_string(),
        c.signature.as_ref().map(|s| s.as_bytes()),
        lease.map(|lease| lease.token),
        &signers as &[Option<Vec<u8>>],
        &replicas as &[Option<String>],
    )
    .fetch_one(&mut *conn)
    .await?;
    let complete = row.moved == 1
        && row.appended == events.len() as i64
        && row.projected == 1
        && row.released == i64::from(lease.is_some());
    if !complete {
        // Serializable isolation reports concurrent writers as 40001 first, and the head was read in
        // this transaction: reaching this means a bug or a manual edit.
        return Err(StoreError::CorruptLog {
            stream: stream.to_string(),
            reason: format!(
                "commit at version {expected} moved {} head(s), appended {} of {} event(s), wrote {} projection(s), released {} lease(s)",
                row.moved,
                row.appended,
                events.len(),
                row.projected,
                row.released
            ),
        });
    }
    Ok((new_head, row.transaction_id))
}
