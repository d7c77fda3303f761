//! Reading the log for `mpe-ledger export`: every event, or every payment, of the whole log or
//! of one channel, within a time range, in short read-only transactions.
//!
//! What this keeps true:
//! - **One consistent cut, many short transactions.** [`ExportScan::start`] takes the snapshot of
//!   one statement (`pg_current_snapshot()`) and the highest key visible in it; every page keeps
//!   only the events whose writing transaction is visible in that snapshot
//!   (`pg_visible_in_snapshot`). So the export is exactly the log as it was committed at the
//!   start, as a long repeatable-read transaction would see it, without holding one: a long
//!   transaction would hold back `pg_snapshot_xmin`, and with it every reader that tails the log
//!   (`ledger.events_after`) and vacuum.
//! - **Keyset pages with bounded work.** A page is the half-open key range `(low, low + page]`:
//!   positions for the whole log (a primary-key range scan), stream versions for one channel (the
//!   `(stream, stream_version)` unique index; versions are dense). A page never reads more than
//!   `page` keys, however selective the filters, and the next page starts where the last ended,
//!   so nothing is skipped or repeated and memory is bounded by one page.
//! - **Exact values.** Amounts, nonces and channel ids leave the database as the decimal text of
//!   `numeric(78,0)` and are never converted; times are `recorded_at` in UTC with microseconds
//!   (the insert time, not the commit time).
//! - A time range is a filter, not a seek: the scan still walks every key of the cut (there is no
//!   index on `recorded_at`, and insert times are not strictly ordered with positions under
//!   concurrent writers), so each page stays bounded and no event of the range can be missed.
//! - Within a stream position order is version order (see `store::verify`), so both scans yield
//!   events in position order.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool};

use crate::domain::{ChannelId, StreamId};

use super::StoreError;

/// Keys (positions, or a channel's versions) read per transaction unless told otherwise.
pub const EXPORT_PAGE_KEYS: i64 = 10_000;
/// The largest page a caller may ask for: it bounds one transaction's length and the rows held.
pub const EXPORT_PAGE_KEYS_MAX: i64 = 100_000;

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// Every event of every kind.
    Events,
    /// `payment accepted` events, with what each one added at its nonce.
    Payments,
}

/// Which events: all of them, or one channel's, recorded in `[since, until)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportFilter {
    pub channel: Option<ChannelId>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// One exported event. Text fields are exactly as stored (decimals, UTC time, `0x`-hex bytes).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExportRow {
    pub position: i64,
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub recorded_at: String,
    pub stream: String,
    pub stream_version: i64,
    pub event_type: String,
    pub channel_id: Option<String>,
    pub nonce: Option<String>,
    pub amount: Option<String>,
    /// Payments only: `amount` less the previous payment's at the same nonce of the channel
    /// (all of `amount` for a nonce's first payment). `None` for events.
    pub increment: Option<String>,
    pub signature: Option<String>,
    /// The payload as Postgres prints its JSONB (valid JSON; key order is Postgres').
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// An export under way: the cut it reads ([`ExportScan::start`]) and how far it got.
#[derive(Debug, Clone)]
pub struct ExportScan {
    /// The page statement ([`page_sql`]).
    sql: Arc<str>,
    filter: ExportFilter,
    /// `pg_current_snapshot()` of the start, as text.
    snapshot: Arc<str>,
    /// `channel/<id>` when one channel is exported.
    stream: Option<String>,
    /// The last key read; the next page starts after it.
    low: i64,
    /// The highest key visible at the start.
    end: i64,
    page: i64,
}

/// The columns of both kinds; `$1` low key, `$2` high key, `$3` the start snapshot, `$4` since,
/// `$5` until, `$6` the channel's stream (only in the channel scan).
const SELECT: &str = r#"
SELECT e.position,
       to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
       e.stream, e.stream_version, e.event_type,
       e.channel_id::text AS channel_id, e.nonce::text AS nonce, e.amount::text AS amount,
       INCREMENT AS increment,
       '0x' || encode(e.signature, 'hex') AS signature,
       e.payload::text AS payload,
       '0x' || encode(e.prev_hash, 'hex') AS prev_hash,
       '0x' || encode(e.hash, 'hex') AS hash
FROM ledger.events e
"#;

/// What a payment added: its amount less the previous payment's at the same nonce of the channel
/// (the authorised amount of a nonce starts at 0 and only grows, `domain::fold`).
const PAYMENT_INCREMENT: &str = r#"(e.amount - COALESCE((
           SELECT CASE WHEN p.nonce = e.nonce THEN p.amount END
           FROM ledger.events p
           WHERE p.stream = e.stream AND p.stream_version < e.stream_version
             AND p.event_type = 'payment_accepted'
           ORDER BY p.stream_version DESC LIMIT 1), 0))::text"#;

const FILTERS: &str = r#"
  AND pg_visible_in_snapshot(e.transaction_id, $3::text::pg_snapshot)
  AND ($4::timestamptz IS NULL OR e.recorded_at >= $4)
  AND ($5::timestamptz IS NULL OR e.recorded_at < $5)
"#;

impl ExportScan {
    /// Takes the cut (one statement) that every page of this export reads.
    pub async fn start(
        pool: &PgPool,
        kind: ExportKind,
        filter: ExportFilter,
        page: i64,
    ) -> Result<Self, StoreError> {
        assert!((1..=EXPORT_PAGE_KEYS_MAX).contains(&page), "export page of {page} keys");
        let stream = filter.channel.map(|channel| StreamId::Channel(channel).to_string());
        let (snapshot, end): (String, Option<i64>) = match &stream {
            None => {
                sqlx::query_as(
                    "SELECT pg_current_snapshot()::text, (SELECT max(position) FROM ledger.events)",
                )
                .fetch_one(pool)
                .await?
            }
            Some(stream) => {
                sqlx::query_as(
                    "SELECT pg_current_snapshot()::text, \
                            (SELECT version FROM ledger.streams WHERE stream = $1)",
                )
                .bind(stream)
                .fetch_one(pool)
                .await?
            }
        };
        let sql = page_sql(kind, stream.is_some()).into();
        Ok(Self { filter, snapshot: snapshot.into(), stream, sql, low: 0, end: end.unwrap_or(0), page })
    }

    /// The keys this export goes through: positions, or the channel's versions.
    pub fn total_keys(&self) -> u64 {
        u64::try_from(self.end).unwrap_or(0)
    }

    /// The keys handed out so far ([`Self::next_page_query`]).
    pub fn keys_done(&self) -> u64 {
        u64::try_from(self.low.min(self.end)).unwrap_or(0)
    }

    /// The next page's rows in position order (possibly none, when filters keep nothing of it), or
    /// `None` once every key of the cut was read. One statement, so one short transaction.
    pub async fn next_page(&mut self, pool: &PgPool) -> Result<Option<Vec<ExportRow>>, StoreError> {
        match self.next_page_query() {
            Some(page) => page.fetch(pool).await.map(Some),
            None => Ok(None),
        }
    }

    /// The next page to read, as a query that borrows nothing, so that a caller can read it while
    /// it writes the page before (at most two pages are then held); `None` once every key of the
    /// cut was handed out.
    pub fn next_page_query(&mut self) -> Option<PageQuery> {
        if self.low >= self.end {
            return None;
        }
        let high = self.low.saturating_add(self.page).min(self.end);
        let page = PageQuery {
            sql: self.sql.clone(),
            low: self.low,
            high,
            snapshot: self.snapshot.clone(),
            filter: self.filter.clone(),
            stream: self.stream.clone(),
        };
        self.low = high;
        Some(page)
    }
}

/// One page of an [`ExportScan`]: the keys `(low, high]` of its cut.
#[derive(Debug, Clone)]
pub struct PageQuery {
    sql: Arc<str>,
    low: i64,
    high: i64,
    snapshot: Arc<str>,
    filter: ExportFilter,
    stream: Option<String>,
}

impl PageQuery {
    /// Reads the page: one statement, so one short read-only transaction.
    pub async fn fetch(self, pool: &PgPool) -> Result<Vec<ExportRow>, StoreError> {
        let query = sqlx::query_as::<_, ExportRow>(AssertSqlSafe(self.sql.to_string()))
            .bind(self.low)
            .bind(self.high)
            .bind(&*self.snapshot)
            .bind(self.filter.since)
            .bind(self.filter.until);
        let query = match self.stream {
            Some(stream) => query.bind(stream),
            None => query,
        };
        Ok(query.fetch_all(pool).await?)
    }
}

/// The statement of one page of `kind`, over the whole log or one channel's stream.
fn page_sql(kind: ExportKind, one_stream: bool) -> String {
    let increment = match kind {
        ExportKind::Events => "NULL::text",
        ExportKind::Payments => PAYMENT_INCREMENT,
    };
    let mut sql = SELECT.replace("INCREMENT", increment);
    sql.push_str(if one_stream {
        "WHERE e.stream = $6 AND e.stream_version > $1 AND e.stream_version <= $2"
    } else {
        "WHERE e.position > $1 AND e.position <= $2"
    });
    sql.push_str(FILTERS);
    if kind == ExportKind::Payments {
        sql.push_str("  AND e.event_type = 'payment_accepted'\n");
    }
    sql.push_str(if one_stream { "ORDER BY e.stream_version" } else { "ORDER BY e.position" });
    sql
}
