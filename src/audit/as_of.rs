//! A channel's state as of a log position or a time: its events up to that point, folded with the
//! domain's own fold (`domain::fold`), so the answer is what the projection was then. Which points
//! can be answered, and why the others are 409 until they can, is `store::postgres::audit`'s
//! `channel_events_as_of`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use utoipa::IntoParams;

use crate::domain::{ChannelId, fold};
use crate::store::StoreError;
use crate::store::postgres::audit::{self, Answerable, AsOf, AsOfAnswer};

use super::channels::unknown_channel;
use super::views::{AsOfView, ChannelAnswer, ChannelView};
use super::{AuditError, rfc3339};

/// The point of the log to fold up to; neither means now.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AsOfQuery {
    /// A global log position (1 or more): the events at or before it.
    as_of_position: Option<String>,
    /// An RFC 3339 time with its offset: the events recorded (inserted) at or before it.
    as_of_time: Option<String>,
}

/// The point asked for, if any.
pub fn point(query: AsOfQuery) -> Result<Option<AsOf>, AuditError> {
    match (query.as_of_position, query.as_of_time) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => {
            Err(AuditError::BadParameter("give as_of_position or as_of_time, not both".into()))
        }
        (Some(text), None) => match text.parse::<i64>() {
            Ok(n) if n >= 1 && (text == n.to_string()) => Ok(Some(AsOf::Position(n))),
            _ => Err(AuditError::BadParameter(format!(
                "as_of_position {text:?} is not a log position (a whole number from 1)"
            ))),
        },
        (None, Some(text)) => {
            DateTime::parse_from_rfc3339(&text).map(|t| Some(AsOf::Time(t.with_timezone(&Utc)))).map_err(
                |e| AuditError::BadParameter(format!("as_of_time {text:?} is not an RFC 3339 time: {e}")),
            )
        }
    }
}

/// The channel folded up to `point`.
pub async fn channel_as_of(pool: &PgPool, id: ChannelId, point: AsOf) -> Result<ChannelAnswer, AuditError> {
    let answer = audit::channel_events_as_of(pool, id, point).await?.ok_or_else(|| unknown_channel(id))?;
    let rows = match answer {
        AsOfAnswer::Final(rows) => rows,
        AsOfAnswer::NotYetFinal(answerable) => {
            let what = match point {
                AsOf::Position(n) => format!("position {n}"),
                AsOf::Time(t) => format!("time {}", rfc3339(&t)),
            };
            let bound = match answerable {
                Answerable::PositionsBelow(last) => format!("positions below {last} are answered now"),
                Answerable::PositionsUpTo(end) => format!("positions up to {end} are answered now"),
                Answerable::TimesBefore(start) => format!(
                    "times before {}, the start of the oldest running transaction or now, are answered now (an event's time is its insert time, not its commit time)",
                    rfc3339(&start)
                ),
                Answerable::NoTime => {
                    "a running transaction's start cannot be seen by this login, so no time is answered until it ends".into()
                }
            };
            return Err(AuditError::NotYetFinal(format!(
                "channel {id} as of {what}: a running transaction may still add events at or before it; {bound}; retry later"
            )));
        }
    };
    let Some(last) = rows.last() else {
        return Err(AuditError::NotFound(format!("channel {id} has no events at or before that point")));
    };
    let events = audit::channel_events_of(&rows)?;
    let folded = fold::fold(id, &events).map_err(StoreError::from)?;
    let projection = folded.ok_or_else(|| unknown_channel(id))?;
    let (position, time) = match point {
        AsOf::Position(n) => (Some(n), None),
        AsOf::Time(t) => (None, Some(rfc3339(&t))),
    };
    Ok(ChannelAnswer {
        channel: ChannelView::of(&projection.channel, last.stream_version),
        as_of: Some(AsOfView { position, time, last_event_position: last.position }),
    })
}
