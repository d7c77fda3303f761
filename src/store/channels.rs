//! The typed channel store: the seed's Get/GetAll/Put/PutIfAbsent/CompareAndSwap of a whole
//! `PaymentChannelData`, kept as a stream of typed events per channel rather than JSON in `kv`
//! (design.md §8).
//!
//! Every successful change appends the events that describe it ([`events_for_change`]); a change that
//! no event describes (lowering an authorisation, changing the parties, …) is refused with the
//! fold's named error and writes nothing. CompareAndSwap compares the whole current state with
//! `prev`; under it the write is guarded by the stream version, so a concurrent writer makes it
//! return `false` (after a retry re-reads the state) instead of overwriting.

use std::future::Future;

use crate::domain::fold::{events_for_change, replay};
use crate::domain::{ChannelEvent, ChannelProjection, FoldError, PaymentChannelData, PaymentChannelKey};

use super::StoreError;

pub trait ChannelStore: Send + Sync {
    fn get(
        &self,
        key: &PaymentChannelKey,
    ) -> impl Future<Output = Result<Option<PaymentChannelData>, StoreError>> + Send;
    /// Every channel, in ascending channel id order.
    fn get_all(&self) -> impl Future<Output = Result<Vec<PaymentChannelData>, StoreError>> + Send;
    /// Writes `channel` under its own id, whatever is stored.
    fn put(&self, channel: &PaymentChannelData) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes only when no channel with this id exists.
    fn put_if_absent(
        &self,
        channel: &PaymentChannelData,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Writes `new` only when the stored state equals `prev` (an absent channel gives `false`).
    fn compare_and_swap(
        &self,
        prev: &PaymentChannelData,
        new: &PaymentChannelData,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The channel's events, oldest first: its full history.
    fn events(
        &self,
        key: &PaymentChannelKey,
    ) -> impl Future<Output = Result<Vec<ChannelEvent>, StoreError>> + Send;
}

/// What a write does to one channel: its events and the state after them.
pub struct PlannedChange {
    pub events: Vec<ChannelEvent>,
    pub after: ChannelProjection,
}

/// Plans the events that take `current` to `requested`; `None` when nothing changes.
pub fn plan_change(
    current: Option<&ChannelProjection>,
    requested: &PaymentChannelData,
) -> Result<Option<PlannedChange>, StoreError> {
    let events = events_for_change(current, requested)?;
    if events.is_empty() {
        return Ok(None);
    }
    let after = replay(requested.channel_id, current.cloned(), &events)?
        .ok_or(FoldError::ChannelNotOpened { channel_id: requested.channel_id })?;
    Ok(Some(PlannedChange { events, after }))
}

/// Refuses a CAS whose two states are of different channels: that is a caller's bug, not a miss.
pub fn check_same_channel(prev: &PaymentChannelData, new: &PaymentChannelData) -> Result<(), StoreError> {
    if prev.channel_id != new.channel_id {
        return Err(FoldError::UndescribableChange {
            channel_id: new.channel_id,
            reason: "compare-and-swap between two different channels",
        }
        .into());
    }
    Ok(())
}
