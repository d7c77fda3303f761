//! The audit API's reads (`crate::audit`): channels, one channel's events, claims and state as of a
//! point of the log, the global feed and the stream heads.
//!
//! What this keeps true:
//! - **Short read-only transactions.** Every read is one `REPEATABLE READ READ ONLY` transaction
//!   of a few statements with a bounded row count (the caller's page, at most
//!   `audit::PAGE_SIZE_MAX`): a long one would hold back `pg_snapshot_xmin`, and with it every
//!   reader that tails the log and vacuum. Everything one answer says comes from one snapshot.
//! - **The feed never skips or repeats a committed event.** It reads through `ledger.events_after`,
//!   which returns only events of transactions older than every running one, in
//!   `(transaction_id, position)` order; a cursor is the last pair returned. No transaction below
//!   the snapshot's `xmin` can still commit, so nothing can later appear behind a cursor, although
//!   positions commit out of order under concurrent writers.
//! - **As of a point, only when the answer is final.** A state "as of" a position or a time is
//!   answered only when no transaction still running can add an event at or before that point;
//!   otherwise the answer is [`AsOfAnswer::NotYetFinal`] with the bound that can be answered
//!   (see [`channel_events_as_of`]).
//! - Values leave the database as the text of `numeric(78,0)` and are parsed into the domain's
//!   types, never through floats.
//!
//! The queries are checked at run time (`sqlx::query_as` over `FromRow` rows), not by the offline
//! query data: they only read, and the API's tests run every one of them.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::channels::{ChannelRow, ClaimRow, channel_rows, claim_rows};
use crate::domain::{ChannelEvent, ChannelId, ChannelState, EthAddress, Event, GroupId, StreamId};
use crate::store::StoreError;

/// A row of `ledger.events`, as the API shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LoggedEvent {
    pub position: i64,
    /// The writing transaction's id (`xid8`) as decimal text: half of the feed's cursor.
    pub transaction_id: String,
    pub stream: String,
    pub stream_version: i64,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

const EVENT_COLUMNS: &str = "position, transaction_id::text AS transaction_id, stream, stream_version, \
     event_type, payload, recorded_at, prev_hash, hash";

/// Which channels to list, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelFilter {
    pub state: Option<ChannelState>,
    pub sender: Option<EthAddress>,
    pub group: Option<GroupId>,
    /// Only channels with a higher id (the previous page's last).
    pub after: Option<ChannelId>,
}

/// A point of the log to fold a channel up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Events at global positions up to and including this one.
    Position(i64),
    /// Events recorded (inserted) at or before this time.
    Time(DateTime<Utc>),
}

/// A channel's events up to a point, or why that point cannot be answered yet.
#[derive(Debug, Clone, PartialEq)]
pub enum AsOfAnswer {
    /// Every event of the channel at or before the point (possibly none), in stream order.
    Final(Vec<LoggedEvent>),
    /// A running transaction may still add an event at or before the point.
    NotYetFinal(Answerable),
}

/// The points that can be answered now, when the one asked for cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerable {
    /// Positions below this one (the channel's last committed event).
    PositionsBelow(i64),
    /// Positions up to and including this one (the log's end when nothing was running).
    PositionsUpTo(i64),
    /// Times before this one (the oldest running transaction's start, or now).
    TimesBefore(DateTime<Utc>),
    /// No time: a running transaction's start cannot be seen by this login.
    NoTime,
}

/// Opens the one short transaction of a read.
async fn read_only(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    Ok(tx)
}

/// One page of channels in id order, `limit` rows at most.
pub async fn channels_page(
    pool: &PgPool,
    filter: &ChannelFilter,
    limit: i64,
) -> Result<Vec<ChannelRow>, StoreError> {
    let mut tx = read_only(pool).await?;
    let rows = sqlx::query_as::<_, ChannelRow>(
        "SELECT channel_id::text AS channel_id, nonce::text AS nonce, state, sender, recipient, signer,
                group_id, full_amount::text AS full_amount, expiration::text AS expiration,
                authorized_amount::text AS authorized_amount, signature, stream_version
         FROM ledger.channels
         WHERE ($1::text IS NULL OR state = $1)
           AND ($2::bytea IS NULL OR sender = $2)
           AND ($3::bytea IS NULL OR group_id = $3)
           AND ($4::text IS NULL OR channel_id > $4::text::numeric)
         ORDER BY channel_id
         LIMIT $5",
    )
    .bind(filter.state.map(ChannelState::as_str))
    .bind(filter.sender.map(|s| s.as_bytes().to_vec()))
    .bind(filter.group.map(|g| g.0.to_vec()))
    .bind(filter.after.map(|id| id.to_string()))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// One channel's projection row, if the channel is known.
pub async fn channel_now(pool: &PgPool, channel_id: ChannelId) -> Result<Option<ChannelRow>, StoreError> {
    let mut tx = read_only(pool).await?;
    let row = channel_rows(&mut tx, Some(channel_id)).await?.into_iter().next();
    tx.commit().await?;
    Ok(row)
}

/// Whether the channel has a stream at all.
async fn channel_known(conn: &mut PgConnection, channel_id: ChannelId) -> Result<bool, StoreError> {
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM ledger.streams WHERE stream = $1)")
        .bind(StreamId::Channel(channel_id).to_string())
        .fetch_one(conn)
        .await?;
    Ok(known)
}

/// One page of a channel's events in stream order after `after_version`; `None` for an unknown
/// channel.
pub async fn channel_events_page(
    pool: &PgPool,
    channel_id: ChannelId,
    after_version: i64,
    limit: i64,
) -> Result<Option<Vec<LoggedEvent>>, StoreError> {
    let mut tx = read_only(pool).await?;
    if !channel_known(&mut tx, channel_id).await? {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM ledger.events
         WHERE stream = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3"
    );
    let rows = sqlx::query_as::<_, LoggedEvent>(sqlx::AssertSqlSafe(sql))
        .bind(StreamId::Channel(channel_id).to_string())
        .bind(after_version)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(rows))
}

/// Every claim ever started on a channel, by nonce; `None` for an unknown channel. A channel has
/// one claim per nonce it moved past, so the list is bounded by the channel's own history.
pub async fn channel_claims(
    pool: &PgPool,
    channel_id: ChannelId,
) -> Result<Option<Vec<ClaimRow>>, StoreError> {
    let mut tx = read_only(pool).await?;
    if !channel_known(&mut tx, channel_id).await? {
        return Ok(None);
    }
    let rows = claim_rows(&mut tx, Some(channel_id)).await?;
    tx.commit().await?;
    Ok(Some(rows))
}

/// The channel's events at or before `point`, when that is final (module doc); `None` for an
/// unknown channel.
///
/// First, before the snapshot is taken, the running transactions that hold a transaction id are
/// listed from `pg_locks` (each holds its own id's lock; the list covers every login and prepared
/// transactions), with their start times where `pg_stat_activity` shows them to this login,
/// together with the log's last position and the time (t1). A transaction not in that list had
/// either finished by t1, and the snapshot taken after it sees its events, or gets its id after
/// t1, and so inserts events at positions above every position handed out before and at times
/// after t1. Then, in the snapshot:
/// - As of a **position** N: within one stream positions follow versions (each version is written
///   after the previous one committed), so when the channel has a committed event above N, no event
///   of it can still appear at or below N. Otherwise N is answered when nothing was running at t1
///   and N is at most the log's last position then.
/// - As of a **time** T: an event's time is its insert time, taken inside its transaction after its
///   id, so T is answered when it is before t1 and before the start of every transaction running
///   at t1. A running transaction whose start this login cannot see (another login's session, a
///   prepared transaction) makes every T unanswerable until it ends.
pub async fn channel_events_as_of(
    pool: &PgPool,
    channel_id: ChannelId,
    point: AsOf,
) -> Result<Option<AsOfAnswer>, StoreError> {
    let mut conn = pool.acquire().await?;
    let running: (Option<i64>, DateTime<Utc>, bool, Option<DateTime<Utc>>, bool) = sqlx::query_as(
        "WITH holders AS (
             SELECT a.xact_start FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted)
         SELECT (SELECT max(position) FROM ledger.events), clock_timestamp(),
                EXISTS (SELECT 1 FROM holders), (SELECT min(xact_start) FROM holders),
                EXISTS (SELECT 1 FROM holders WHERE xact_start IS NULL)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (log_end, t1, any_running, oldest_start, unseen_start) = running;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let stream = StreamId::Channel(channel_id).to_string();
    let last_position: Option<i64> =
        sqlx::query_scalar("SELECT max(position) FROM ledger.events WHERE stream = $1")
            .bind(&stream)
            .fetch_one(&mut *tx)
            .await?;
    let Some(last_position) = last_position else {
        return Ok(None);
    };
    let not_final = match point {
        AsOf::Position(n) if n < last_position => None,
        AsOf::Position(_) if any_running => Some(Answerable::PositionsBelow(last_position)),
        AsOf::Position(n) => {
            let end = log_end.unwrap_or(0);
            (n > end).then_some(Answerable::PositionsUpTo(end))
        }
        AsOf::Time(_) if any_running && unseen_start => Some(Answerable::NoTime),
        AsOf::Time(t) => {
            let bound = oldest_start.filter(|_| any_running).map_or(t1, |start| start.min(t1));
            (t >= bound).then_some(Answerable::TimesBefore(bound))
        }
    };
    if let Some(answerable) = not_final {
        return Ok(Some(AsOfAnswer::NotYetFinal(answerable)));
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM ledger.events
         WHERE stream = $1 AND ($2::bigint IS NULL OR position <= $2)
           AND ($3::timestamptz IS NULL OR recorded_at <= $3)
         ORDER BY stream_version"
    );
    let (position, time) = match point {
        AsOf::Position(n) => (Some(n), None),
        AsOf::Time(t) => (None, Some(t)),
    };
    let rows = sqlx::query_as::<_, LoggedEvent>(sqlx::AssertSqlSafe(sql))
        .bind(&stream)
        .bind(position)
        .bind(time)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(AsOfAnswer::Final(rows)))
}

/// Decodes a channel stream's logged events for the fold.
pub fn channel_events_of(rows: &[LoggedEvent]) -> Result<Vec<ChannelEvent>, StoreError> {
    rows.iter()
        .map(|row| match Event::from_json(&row.event_type, &row.payload) {
            Ok(Event::Channel(event)) => Ok(event),
            Ok(other) => Err(StoreError::CorruptLog {
                stream: row.stream.clone(),
                reason: format!("{} event in a channel stream", other.event_type()),
            }),
            Err(e) => Err(StoreError::CorruptLog { stream: row.stream.clone(), reason: e.to_string() }),
        })
        .collect()
}

/// The feed's cursor: the last `(transaction_id, position)` pair returned; `(0, 0)` is the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FeedCursor {
    pub transaction_id: u64,
    pub position: i64,
}

/// Up to `limit` committed events after `after`, in feed order (module doc).
pub async fn events_after(
    pool: &PgPool,
    after: FeedCursor,
    limit: i32,
) -> Result<Vec<LoggedEvent>, StoreError> {
    let mut tx = read_only(pool).await?;
    let sql = format!("SELECT {EVENT_COLUMNS} FROM ledger.events_after($1::text::xid8, $2, $3)");
    let rows = sqlx::query_as::<_, LoggedEvent>(sqlx::AssertSqlSafe(sql))
        .bind(after.transaction_id.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// One stream's head: its last version and the hash of its last event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StreamHeadRow {
    pub stream: String,
    pub version: i64,
    pub last_hash: Vec<u8>,
}

/// One page of stream heads in stream-name order after `after`.
pub async fn stream_heads(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<StreamHeadRow>, StoreError> {
    let mut tx = read_only(pool).await?;
    let rows = sqlx::query_as::<_, StreamHeadRow>(
        "SELECT stream, version, last_hash FROM ledger.streams
         WHERE $1::text IS NULL OR stream > $1 ORDER BY stream LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}
