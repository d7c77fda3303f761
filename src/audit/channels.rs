//! `/v1/channels`: the list (filtered, paged by channel id), one channel now or as of a point,
//! its events (paged by stream version) and its claims.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::domain::{ChannelId, ChannelState, EthAddress};
use crate::store::postgres::audit::{self, ChannelFilter};
use crate::store::postgres::channels::ClaimRow;

use super::error::ErrorBody;
use super::views::{
    ChannelAnswer, ChannelEventPage, ChannelPage, ChannelView, ClaimList, ClaimView, EventView,
};
use super::{AuditError, AuditState, as_of, page_size};

/// Filters and paging of the channel list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `open` or `closed`.
    state: Option<String>,
    /// The sender's address (0x-hex).
    sender: Option<String>,
    /// The group id (0x-hex, 32 bytes).
    group: Option<String>,
    /// The `next` of the previous page: only channels with a higher id.
    after: Option<String>,
    /// Channels per page, 1 to 1000 (default 100).
    page_size: Option<String>,
}

/// Paging of one channel's events.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The `next` of the previous page: only events with a higher stream version.
    after: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    page_size: Option<String>,
}

/// The channel id in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// The channel id (decimal).
    id: String,
}

pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, AuditError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| AuditError::BadParameter(format!("bad query: {}", rejection.body_text())))
}

fn channel_id(path: Result<Path<ChannelPath>, PathRejection>) -> Result<ChannelId, AuditError> {
    let Path(ChannelPath { id }) =
        path.map_err(|r| AuditError::BadParameter(format!("bad path: {}", r.body_text())))?;
    parse_channel_id("channel id", &id)
}

fn parse_channel_id(what: &str, text: &str) -> Result<ChannelId, AuditError> {
    // Decimal digits only, and no leading zero (as in payment headers, design.md §8).
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    match text.parse::<ChannelId>() {
        Ok(id) if canonical => Ok(id),
        _ => Err(AuditError::BadParameter(format!("{what} {text:?} is not a decimal channel id"))),
    }
}

pub(super) fn unknown_channel(id: ChannelId) -> AuditError {
    AuditError::NotFound(format!("channel {id} is not in the ledger"))
}

/// Lists channels in id order, optionally by state, sender and group.
#[utoipa::path(get, path = "/v1/channels", params(ListQuery),
    responses(
        (status = 200, description = "One page of channels", body = ChannelPage),
        (status = 400, description = "A parameter cannot be used", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AuditState>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ChannelPage>, AuditError> {
    let params = query(params)?;
    let filter = ChannelFilter {
        state: params
            .state
            .as_deref()
            .map(|s| {
                ChannelState::parse(s)
                    .ok_or_else(|| AuditError::BadParameter(format!("state {s:?} is not open or closed")))
            })
            .transpose()?,
        sender: params
            .sender
            .as_deref()
            .map(|s| {
                s.parse::<EthAddress>().map_err(|_| {
                    AuditError::BadParameter(format!("sender {s:?} is not a 20-byte hex address"))
                })
            })
            .transpose()?,
        group: params
            .group
            .as_deref()
            .map(|g| {
                let bytes = g.strip_prefix("0x").and_then(|digits| hex::decode(digits).ok());
                bytes
                    .and_then(|b| crate::domain::GroupId::from_slice(&b).ok())
                    .ok_or_else(|| AuditError::BadParameter(format!("group {g:?} is not 0x-hex of 32 bytes")))
            })
            .transpose()?,
        after: params.after.as_deref().map(|a| parse_channel_id("after", a)).transpose()?,
    };
    let size = page_size(params.page_size.as_deref())?;
    let mut rows = audit::channels_page(&state.pool, &filter, i64::from(size) + 1).await?;
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    let channels = rows
        .iter()
        .map(|row| Ok(ChannelView::of(&row.to_domain()?, row.stream_version)))
        .collect::<Result<Vec<_>, crate::store::StoreError>>()?;
    let next = if more { channels.last().map(|c| c.channel_id.clone()) } else { None };
    Ok(Json(ChannelPage { channels, next }))
}

/// One channel's state now, or as of a log position or a time (`as_of_position` or
/// `as_of_time`, not both): folded from its events up to that point with the ledger's own fold.
#[utoipa::path(get, path = "/v1/channels/{id}", params(ChannelPath, as_of::AsOfQuery),
    responses(
        (status = 200, description = "The channel's state", body = ChannelAnswer),
        (status = 400, description = "A parameter cannot be used", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such channel, or none yet at that point", body = ErrorBody),
        (status = 409, description = "A running transaction may still change the answer at that point", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn one(
    State(state): State<AuditState>,
    path: Result<Path<ChannelPath>, PathRejection>,
    params: Result<Query<as_of::AsOfQuery>, QueryRejection>,
) -> Result<Json<ChannelAnswer>, AuditError> {
    let id = channel_id(path)?;
    let point = as_of::point(query(params)?)?;
    let answer = match point {
        None => {
            let row = audit::channel_now(&state.pool, id).await?.ok_or_else(|| unknown_channel(id))?;
            ChannelAnswer { channel: ChannelView::of(&row.to_domain()?, row.stream_version), as_of: None }
        }
        Some(point) => as_of::channel_as_of(&state.pool, id, point).await?,
    };
    Ok(Json(answer))
}

/// One channel's events in stream order, with their hash-chain links.
#[utoipa::path(get, path = "/v1/channels/{id}/events", params(ChannelPath, EventsQuery),
    responses(
        (status = 200, description = "One page of the channel's events", body = ChannelEventPage),
        (status = 400, description = "A parameter cannot be used", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AuditState>,
    path: Result<Path<ChannelPath>, PathRejection>,
    params: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<ChannelEventPage>, AuditError> {
    let id = channel_id(path)?;
    let params = query(params)?;
    let after = match params.after.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|_| text == "0" || !text.starts_with('0'))
            .map(i64::from)
            .ok_or_else(|| AuditError::BadParameter(format!("after {text:?} is not a stream version")))?,
    };
    let size = page_size(params.page_size.as_deref())?;
    let mut rows = audit::channel_events_page(&state.pool, id, after, i64::from(size) + 1)
        .await?
        .ok_or_else(|| unknown_channel(id))?;
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    let next = if more { rows.last().map(|row| row.stream_version.to_string()) } else { None };
    Ok(Json(ChannelEventPage { events: rows.iter().map(EventView::from).collect(), next }))
}

/// Every claim started on one channel, with its status.
#[utoipa::path(get, path = "/v1/channels/{id}/claims", params(ChannelPath),
    responses(
        (status = 200, description = "The channel's claims by nonce", body = ClaimList),
        (status = 400, description = "A parameter cannot be used", body = ErrorBody),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn claims(
    State(state): State<AuditState>,
    path: Result<Path<ChannelPath>, PathRejection>,
) -> Result<Json<ClaimList>, AuditError> {
    let id = channel_id(path)?;
    let rows = audit::channel_claims(&state.pool, id).await?.ok_or_else(|| unknown_channel(id))?;
    let claims = rows.iter().map(ClaimRow::to_domain).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ClaimList { claims: claims.iter().map(ClaimView::of).collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_are_canonical_decimals() {
        assert_eq!(parse_channel_id("id", "0").unwrap(), ChannelId::from(0));
        assert_eq!(parse_channel_id("id", "42").unwrap(), ChannelId::from(42));
        for bad in ["", "042", "-1", "0x2a", "4 2", "1e3", &"9".repeat(80)] {
            assert!(matches!(parse_channel_id("id", bad), Err(AuditError::BadParameter(_))), "{bad}");
        }
    }
}
