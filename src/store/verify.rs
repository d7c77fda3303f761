//! Verify and rebuild: the projections are only a cache of the log.
//!
//! `verify` reads the log and the projections in one repeatable-read snapshot, re-checks every
//! stream's hash chain and version sequence, refolds every stream, and names each difference (stream,
//! field, stored value, folded value). `rebuild` recreates the projections from the log in one
//! serializable transaction. Both hold the folded projections in memory.
//!
//! `verify` reports every stream's head (the anchor of an audit bundle, `domain::bundle`).
//!
//! `verify` also re-checks every client signature against the channel's signer or sender
//! ([`signatures`], on every core), when the database has a deployment record (the MPE address the
//! signatures are over); `rebuild` does not.

mod signatures;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use futures::TryStreamExt;
use sqlx::{Acquire, PgConnection, PgPool};

use crate::domain::event::{GENESIS_HASH, chain_hash};
use crate::domain::fold::apply;
use crate::domain::{ChannelEvent, ChannelId, ChannelProjection, Event, KvEvent, StreamId};

use signatures::{SignatureCheck, SignedEvent};

use super::StoreError;
use super::postgres::channels::{ChannelRow, ClaimRow, channel_rows, claim_rows, write_projection};
use super::postgres::deployment;
use super::postgres::log::StreamHead;
use super::retry::{StoreMetrics, serializable};

/// One way in which the stored data disagrees with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub stream: String,
    pub field: String,
    pub stored: String,
    pub folded: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}: {}: stored {}, folded {}", self.stream, self.field, self.stored, self.folded)
    }
}

/// What the log folds to.
#[derive(Debug, Default)]
struct Folded {
    heads: BTreeMap<String, StreamHead>,
    channels: BTreeMap<ChannelId, (ChannelProjection, u64)>,
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    events: u64,
}

struct StoredEvent {
    stream: String,
    stream_version: i64,
    event_type: String,
    payload: serde_json::Value,
    channel_id: Option<String>,
    nonce: Option<String>,
    amount: Option<String>,
    signature: Option<Vec<u8>>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

fn diff(
    differences: &mut Vec<Difference>,
    stream: &str,
    field: impl Into<String>,
    stored: impl fmt::Display,
    folded: impl fmt::Display,
) {
    differences.push(Difference {
        stream: stream.to_owned(),
        field: field.into(),
        stored: stored.to_string(),
        folded: folded.to_string(),
    });
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn opt<T: fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

/// Folds the whole log, checking links and versions; problems go to `differences`.
///
/// The log is read in position order (a sequential read of the table, not a walk of the
/// (stream, version) index that jumps around the table), with every stream's fold open at once:
/// within a stream, position order is version order, because a stream's next event is inserted only
/// after its previous one committed (the head's compare-and-swap), and positions are handed out at
/// insert time.
async fn fold_log(
    conn: &mut PgConnection,
    differences: &mut Vec<Difference>,
    mut signatures: Option<&mut SignatureCheck>,
) -> Result<Folded, StoreError> {
    let mut folded = Folded::default();
    let mut rows = sqlx::query_as!(
        StoredEvent,
        r#"SELECT stream, stream_version, event_type, payload, channel_id::text AS channel_id,
                  nonce::text AS nonce, amount::text AS amount, signature, prev_hash, hash
           FROM ledger.events ORDER BY position"#
    )
    .fetch(conn);
    let mut open: HashMap<String, StreamFold> = HashMap::new();
    while let Some(row) = rows.try_next().await? {
        folded.events += 1;
        if !open.contains_key(&row.stream) {
            let fold = StreamFold {
                name: row.stream.clone(),
                head: StreamHead { version: 0, last_hash: GENESIS_HASH },
                channel: None,
                kv: None,
            };
            open.insert(row.stream.clone(), fold);
        }
        let StreamFold { name, head, channel, kv } = open.get_mut(&row.stream).expect("inserted above");
        let stream = match StreamId::parse(name) {
            Some(stream) => stream,
            None => {
                diff(differences, name, "stream name", &*name, "channel/<id> or kv/<hex>");
                continue;
            }
        };
        let version = u64::try_from(row.stream_version).unwrap_or(0);
        if version != head.version + 1 {
            diff(differences, name, "stream_version", row.stream_version, head.version + 1);
        }
        if row.prev_hash != head.last_hash {
            diff(
                differences,
                name,
                format!("version {version}: prev_hash (broken link)"),
                hex0x(&row.prev_hash),
                hex0x(&head.last_hash),
            );
        }
        let event = match Event::from_json(&row.event_type, &row.payload) {
            Ok(event) => event,
            Err(e) => {
                diff(differences, name, format!("version {version}: payload"), row.payload.to_string(), e);
                head.version = version;
                head.last_hash = row.hash.as_slice().try_into().unwrap_or(GENESIS_HASH);
                continue;
            }
        };
        let recomputed = chain_hash(&head.last_hash, &stream, version, &event);
        if row.hash != recomputed {
            diff(
                differences,
                name,
                format!("version {version}: hash (broken link)"),
                hex0x(&row.hash),
                hex0x(&recomputed),
            );
        }
        check_columns(differences, name, version, &stream, &row, &event);
        head.version = version;
        head.last_hash = row.hash.as_slice().try_into().unwrap_or(recomputed);
        if let (Some(checking), StreamId::Channel(id), Some(before), Event::Channel(event)) =
            (signatures.as_deref_mut(), &stream, channel.as_ref(), &event)
            && let ChannelEvent::PaymentAccepted { nonce, amount, signature }
            | ChannelEvent::ClaimStarted { nonce, amount, signature } = event
        {
            checking.push(SignedEvent {
                stream: name.clone(),
                version,
                channel_id: *id,
                nonce: *nonce,
                amount: *amount,
                signature: signature.clone(),
                signer: before.channel.signer,
                sender: before.channel.sender,
            });
        }
        match (&stream, event) {
            (StreamId::Channel(id), Event::Channel(event)) => match apply(*id, channel.take(), &event) {
                Ok(next) => *channel = Some(next),
                Err(e) => {
                    diff(differences, name, format!("version {version}: fold"), row.event_type.as_str(), e);
                }
            },
            (StreamId::Kv(_), Event::Kv(KvEvent::KeyPut { value, .. })) => *kv = Some(value),
            (StreamId::Kv(_), Event::Kv(KvEvent::KeyDeleted { .. })) => *kv = None,
            (StreamId::Lease(_), Event::Lease(_)) => {}
            _ => {
                diff(
                    differences,
                    name,
                    format!("version {version}: event_type"),
                    row.event_type.as_str(),
                    "an event of this stream's kind",
                );
            }
        }
    }
    for (_, done) in open {
        finish_stream(&mut folded, done);
    }
    Ok(folded)
}

/// The stream being folded.
struct StreamFold {
    name: String,
    head: StreamHead,
    channel: Option<ChannelProjection>,
    kv: Option<Vec<u8>>,
}

fn finish_stream(folded: &mut Folded, StreamFold { name, head, channel, kv }: StreamFold) {
    match StreamId::parse(&name) {
        Some(StreamId::Channel(id)) => {
            if let Some(channel) = channel {
                folded.channels.insert(id, (channel, head.version));
            }
        }
        Some(StreamId::Kv(key)) => {
            if let Some(value) = kv {
                folded.kv.insert(key, value);
            }
        }
        Some(StreamId::Lease(_)) | None => {}
    }
    folded.heads.insert(name, head);
}

/// The money columns beside the payload must say what the payload says.
fn check_columns(
    differences: &mut Vec<Difference>,
    name: &str,
    version: u64,
    stream: &StreamId,
    row: &StoredEvent,
    event: &Event,
) {
    let (nonce, amount, signature) = event.amount_columns();
    let expected_channel = match stream {
        StreamId::Channel(id) | StreamId::Lease(id) => Some(id.to_string()),
        StreamId::Kv(_) => None,
    };
    let pairs = [
        ("channel_id", row.channel_id.clone(), expected_channel),
        ("nonce", row.nonce.clone(), nonce.map(|n| n.to_string())),
        ("amount", row.amount.clone(), amount.map(|a| a.to_string())),
        ("signature", row.signature.as_deref().map(hex0x), signature.map(|s| hex0x(s.as_bytes()))),
    ];
    for (column, stored, from_payload) in pairs {
        if stored != from_payload {
            diff(
                differences,
                name,
                format!("version {version}: column {column}"),
                opt(stored),
                opt(from_payload),
            );
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every disagreement, the forged signatures included; empty when all agree.
    pub differences: Vec<Difference>,
    pub events: u64,
    /// Signatures re-checked; `None` when there is no deployment record to check them against.
    pub signatures_checked: Option<u64>,
    /// Every stream's head as the log holds it (version and hash of its last event): the anchor
    /// `verify-bundle --head` takes for a channel's stream.
    pub heads: BTreeMap<String, StreamHead>,
}

/// Checks the log and the projections; an empty list means they agree.
pub async fn verify(pool: &PgPool) -> Result<Vec<Difference>, StoreError> {
    Ok(verify_report(pool).await?.differences)
}

/// [`verify`], with what was checked.
pub async fn verify_report(pool: &PgPool) -> Result<VerifyReport, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let mut differences = Vec::new();
    let mut checking = deployment::read(&mut tx).await?.map(|d| SignatureCheck::start(d.mpe_address));
    let folded = fold_log(&mut tx, &mut differences, checking.as_mut()).await?;
    let signatures_checked = checking.map(|checking| {
        let (checked, forged) = checking.finish();
        differences.extend(forged);
        checked
    });
    compare_heads(&mut tx, &folded, &mut differences).await?;
    compare_kv(&mut tx, &folded, &mut differences).await?;
    compare_channels(&mut tx, &folded, &mut differences).await?;
    tx.commit().await?;
    Ok(VerifyReport { differences, events: folded.events, signatures_checked, heads: folded.heads })
}

async fn compare_heads(
    conn: &mut PgConnection,
    folded: &Folded,
    differences: &mut Vec<Difference>,
) -> Result<(), StoreError> {
    let rows = sqlx::query!("SELECT stream, version, last_hash FROM ledger.streams ORDER BY stream")
        .fetch_all(&mut *conn)
        .await?;
    let mut stored = BTreeMap::new();
    for row in rows {
        stored.insert(row.stream, (row.version, row.last_hash));
    }
    for (name, head) in &folded.heads {
        match stored.remove(name) {
            None => diff(differences, name, "streams row", "missing", format!("version {}", head.version)),
            Some((version, hash)) => {
                if u64::try_from(version).ok() != Some(head.version) {
                    diff(differences, name, "streams.version", version, head.version);
                }
                if hash != head.last_hash {
                    diff(differences, name, "streams.last_hash", hex0x(&hash), hex0x(&head.last_hash));
                }
            }
        }
    }
    for (name, (version, _)) in stored {
        diff(differences, &name, "streams row", format!("version {version}"), "no events");
    }
    Ok(())
}

async fn compare_kv(
    conn: &mut PgConnection,
    folded: &Folded,
    differences: &mut Vec<Difference>,
) -> Result<(), StoreError> {
    let rows = sqlx::query!("SELECT key, value FROM ledger.kv ORDER BY key").fetch_all(&mut *conn).await?;
    let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = rows.into_iter().map(|r| (r.key, r.value)).collect();
    for (key, value) in &folded.kv {
        let name = StreamId::Kv(key.clone()).to_string();
        match stored.remove(key) {
            None => diff(differences, &name, "kv row", "missing", hex0x(value)),
            Some(stored) if stored != *value => {
                diff(differences, &name, "kv.value", hex0x(&stored), hex0x(value))
            }
            Some(_) => {}
        }
    }
    for (key, value) in stored {
        diff(differences, &StreamId::Kv(key).to_string(), "kv row", hex0x(&value), "absent");
    }
    Ok(())
}

async fn compare_channels(
    conn: &mut PgConnection,
    folded: &Folded,
    differences: &mut Vec<Difference>,
) -> Result<(), StoreError> {
    let mut stored: BTreeMap<String, ChannelRow> =
        channel_rows(conn, None).await?.into_iter().map(|r| (r.channel_id.clone(), r)).collect();
    let mut stored_claims: BTreeMap<(String, String), ClaimRow> = claim_rows(conn, None)
        .await?
        .into_iter()
        .map(|r| ((r.channel_id.clone(), r.nonce.clone()), r))
        .collect();
    for (id, (projection, version)) in &folded.channels {
        let name = StreamId::Channel(*id).to_string();
        let c = &projection.channel;
        match stored.remove(&id.to_string()) {
            None => diff(differences, &name, "channels row", "missing", format!("version {version}")),
            Some(row) => {
                let fields = [
                    ("nonce", row.nonce.clone(), c.nonce.to_string()),
                    ("state", row.state.clone(), c.state.as_str().to_owned()),
                    ("sender", hex0x(&row.sender), hex0x(c.sender.as_bytes())),
                    ("recipient", hex0x(&row.recipient), hex0x(c.recipient.as_bytes())),
                    ("signer", hex0x(&row.signer), hex0x(c.signer.as_bytes())),
                    ("group_id", hex0x(&row.group_id), hex0x(&c.group_id.0)),
                    ("full_amount", row.full_amount.clone(), c.full_amount.to_string()),
                    ("expiration", row.expiration.clone(), c.expiration.to_string()),
                    ("authorized_amount", row.authorized_amount.clone(), c.authorized_amount.to_string()),
                    (
                        "signature",
                        opt(row.signature.as_deref().map(hex0x)),
                        opt(c.signature.as_ref().map(|s| hex0x(s.as_bytes()))),
                    ),
                    ("stream_version", row.stream_version.to_string(), version.to_string()),
                ];
                for (field, stored, folded) in fields {
                    if stored != folded {
                        diff(differences, &name, format!("channels.{field}"), stored, folded);
                    }
                }
            }
        }
        for claim in projection.claims.values() {
            let key = (id.to_string(), claim.nonce.to_string());
            let field = format!("claims[nonce {}]", claim.nonce);
            match stored_claims.remove(&key) {
                None => diff(differences, &name, field, "missing", format!("{claim:?}")),
                Some(row) => match row.to_domain() {
                    Ok(stored) if stored == *claim => {}
                    Ok(stored) => {
                        diff(differences, &name, field, format!("{stored:?}"), format!("{claim:?}"))
                    }
                    Err(e) => diff(differences, &name, field, e, format!("{claim:?}")),
                },
            }
        }
    }
    for (id, _) in stored {
        diff(differences, &format!("channel/{id}"), "channels row", "present", "no events");
    }
    for ((id, nonce), _) in stored_claims {
        diff(
            differences,
            &format!("channel/{id}"),
            format!("claims[nonce {nonce}]"),
            "present",
            "no claim_started event",
        );
    }
    Ok(())
}

/// What a rebuild wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub events: u64,
    pub streams: usize,
    pub channels: usize,
    pub keys: usize,
}

/// Recreates every projection from the log. Refuses (writing nothing) if the log does not fold.
pub async fn rebuild(pool: &PgPool, metrics: &Arc<StoreMetrics>) -> Result<RebuildReport, StoreError> {
    serializable(pool, metrics, "rebuild", |mut tx| {
        Box::pin(async move {
            let mut differences = Vec::new();
            let folded = fold_log(&mut tx, &mut differences, None).await?;
            if let Some(first) = differences.first() {
                return Err(StoreError::CorruptLog {
                    stream: first.stream.clone(),
                    reason: first.to_string(),
                });
            }
            sqlx::query!("DELETE FROM ledger.claims").execute(&mut *tx).await?;
            sqlx::query!("DELETE FROM ledger.channels").execute(&mut *tx).await?;
            sqlx::query!("DELETE FROM ledger.kv").execute(&mut *tx).await?;
            sqlx::query!("DELETE FROM ledger.streams").execute(&mut *tx).await?;
            for (name, head) in &folded.heads {
                sqlx::query!(
                    "INSERT INTO ledger.streams (stream, version, last_hash) VALUES ($1, $2, $3)",
                    name,
                    super::postgres::log::version_to_db(head.version),
                    &head.last_hash[..]
                )
                .execute(&mut *tx)
                .await?;
            }
            for (key, value) in &folded.kv {
                sqlx::query!("INSERT INTO ledger.kv (key, value) VALUES ($1, $2)", key, value)
                    .execute(&mut *tx)
                    .await?;
            }
            for (projection, version) in folded.channels.values() {
                write_projection(&mut tx, None, projection, *version).await?;
            }
            let report = RebuildReport {
                events: folded.events,
                streams: folded.heads.len(),
                channels: folded.channels.len(),
                keys: folded.kv.len(),
            };
            Ok((tx, report))
        })
    })
    .await
}
