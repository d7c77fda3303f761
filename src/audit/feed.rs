//! `/v1/events`, the global feed after a cursor (long-poll), and `/v1/streams`, the stream heads.
//!
//! The cursor is `<transaction id>-<position>` of the last event returned (`0-0`, or no `after`,
//! is the start); the order and the guarantee that no committed event is skipped or repeated are
//! `ledger.events_after`'s (see `store::postgres::audit`). With `wait_seconds` the request waits
//! up to that long (at most `WAIT_SECONDS_MAX`) for the first event after the cursor, asking the
//! database every [`FEED_POLL_INTERVAL`], and answers at once on shutdown.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::store::postgres::audit::{self, FeedCursor};

use super::channels::query;
use super::error::ErrorBody;
use super::views::{EventView, FeedPage, StreamHeadView, StreamPage};
use super::{AuditError, AuditState, WAIT_SECONDS_MAX, page_size};

/// How often a waiting feed request asks the database again.
pub const FEED_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest stream name accepted as a cursor (a `kv/` stream of the longest key is
/// `3 + 2 * MAX_KEY_BYTES` characters).
pub const STREAM_CURSOR_CHARS_MAX: usize = 3 + 2 * crate::store::MAX_KEY_BYTES;

/// Where the feed starts and how long it may wait.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The `next` of the previous answer, `<transaction id>-<position>`; absent: from the start.
    after: Option<String>,
    /// Seconds to wait for an event when none is there yet, 0 to 30 (default 0).
    wait_seconds: Option<String>,
    /// Events per answer, 1 to 1000 (default 100).
    page_size: Option<String>,
}

/// Paging of the stream heads.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamsQuery {
    /// The `next` of the previous page: only streams named after it.
    after: Option<String>,
    /// Streams per page, 1 to 1000 (default 100).
    page_size: Option<String>,
}

fn cursor(text: Option<&str>) -> Result<FeedCursor, AuditError> {
    let Some(text) = text else { return Ok(FeedCursor::default()) };
    let bad = || {
        AuditError::BadParameter(format!("after {text:?} is not a feed cursor (<transaction id>-<position>)"))
    };
    let (transaction, position) = text.split_once('-').ok_or_else(bad)?;
    let digits =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !digits(transaction) || !digits(position) {
        return Err(bad());
    }
    Ok(FeedCursor {
        transaction_id: transaction.parse().map_err(|_| bad())?,
        position: position.parse().map_err(|_| bad())?,
    })
}

fn wait(text: Option<&str>) -> Result<Duration, AuditError> {
    let Some(text) = text else { return Ok(Duration::ZERO) };
    match text.parse::<u64>() {
        Ok(n) if n <= WAIT_SECONDS_MAX && (text == n.to_string()) => Ok(Duration::from_secs(n)),
        _ => Err(AuditError::BadParameter(format!(
            "wait_seconds {text:?} is not a whole number from 0 to {WAIT_SECONDS_MAX}"
        ))),
    }
}

/// Committed events after a cursor, in an order that never skips or repeats one.
#[utoipa::path(get, path = "/v1/events", params(FeedQuery),
    responses(
        (status = 200, description = "The events after the cursor (possibly none) and the next cursor", body = FeedPage),
        (status = 400, description = "A parameter cannot be used", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AuditState>,
    params: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<FeedPage>, AuditError> {
    let params = query(params)?;
    let after = cursor(params.after.as_deref())?;
    let waiting = wait(params.wait_seconds.as_deref())?;
    let size = page_size(params.page_size.as_deref())?;
    let deadline = tokio::time::Instant::now() + waiting;
    let mut shutdown = state.shutdown.clone();
    let rows = loop {
        let rows = audit::events_after(&state.pool, after, size as i32).await?;
        if !rows.is_empty() || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            break rows;
        }
        tokio::select! {
            () = tokio::time::sleep(FEED_POLL_INTERVAL.min(deadline - tokio::time::Instant::now())) => {}
            _ = shutdown.changed() => {}
        }
    };
    let next = match rows.last() {
        Some(last) => format!("{}-{}", last.transaction_id, last.position),
        None => format!("{}-{}", after.transaction_id, after.position),
    };
    Ok(Json(FeedPage { events: rows.iter().map(EventView::from).collect(), next }))
}

/// The head of every stream: its last version and last hash, the anchor to check a stream's
/// hash chain (and an audit bundle) against.
#[utoipa::path(get, path = "/v1/streams", params(StreamsQuery),
    responses(
        (status = 200, description = "One page of stream heads", body = StreamPage),
        (status = 400, description = "A parameter cannot be used", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn streams(
    State(state): State<AuditState>,
    params: Result<Query<StreamsQuery>, QueryRejection>,
) -> Result<Json<StreamPage>, AuditError> {
    let params = query(params)?;
    if let Some(after) = &params.after
        && (after.is_empty() || after.len() > STREAM_CURSOR_CHARS_MAX)
    {
        return Err(AuditError::BadParameter(format!(
            "after must be a stream name of 1 to {STREAM_CURSOR_CHARS_MAX} characters"
        )));
    }
    let size = page_size(params.page_size.as_deref())?;
    let mut rows = audit::stream_heads(&state.pool, params.after.as_deref(), i64::from(size) + 1).await?;
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    let next = if more { rows.last().map(|row| row.stream.clone()) } else { None };
    Ok(Json(StreamPage { streams: rows.iter().map(StreamHeadView::from).collect(), next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_two_canonical_numbers() {
        assert_eq!(cursor(None).unwrap(), FeedCursor::default());
        assert_eq!(cursor(Some("745-12")).unwrap(), FeedCursor { transaction_id: 745, position: 12 });
        for bad in ["", "12", "a-1", "1-", "-1", "01-2", "1-02", "1-2-3", "99999999999999999999-1"] {
            assert!(matches!(cursor(Some(bad)), Err(AuditError::BadParameter(_))), "{bad}");
        }
    }

    #[test]
    fn waits_are_bounded() {
        assert_eq!(wait(Some("30")).unwrap(), Duration::from_secs(30));
        assert_eq!(wait(None).unwrap(), Duration::ZERO);
        for bad in ["31", "-1", "1.5", "030"] {
            assert!(matches!(wait(Some(bad)), Err(AuditError::BadParameter(_))), "{bad}");
        }
    }
}
