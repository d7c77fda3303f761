//! In-memory backends: the reference model for the contract tests and the store of unit tests of
//! the layers above. Data is lost when the process ends (the seed's issue #207): never for money.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::domain::{ChannelEvent, ChannelId, ChannelProjection, PaymentChannelData, PaymentChannelKey};

use super::channels::{ChannelStore, PlannedChange, check_same_channel, plan_change};
use super::{AtomicStorage, StoreError, check_limits, prefix_upper_bound};

/// Ordered map guarded by one mutex; every call is atomic.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    map: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave a half-written map: every write is one insert.
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AtomicStorage for MemoryStorage {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_limits(key, None)?;
        Ok(self.map().get(key).cloned())
    }

    async fn get_by_key_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        check_limits(prefix, None)?;
        let map = self.map();
        let values = match prefix_upper_bound(prefix) {
            Some(upper) => map.range(prefix.to_vec()..upper).map(|(_, v)| v.clone()).collect(),
            None => map.range(prefix.to_vec()..).map(|(_, v)| v.clone()).collect(),
        };
        Ok(values)
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_limits(key, Some(value))?;
        self.map().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        check_limits(key, Some(value))?;
        let mut map = self.map();
        if map.contains_key(key) {
            return Ok(false);
        }
        map.insert(key.to_vec(), value.to_vec());
        Ok(true)
    }

    async fn compare_and_swap(&self, key: &[u8], prev: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        check_limits(key, Some(new))?;
        let mut map = self.map();
        match map.get_mut(key) {
            Some(current) if current.as_slice() == prev => {
                *current = new.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        check_limits(key, None)?;
        self.map().remove(key);
        Ok(())
    }
}

/// Event-sourced channels in memory, with the same semantics as the Postgres channel store.
#[derive(Debug, Clone, Default)]
pub struct MemoryChannelStore {
    streams: Arc<Mutex<Streams>>,
}

/// Each channel's events and the state they fold to.
type Streams = BTreeMap<ChannelId, (Vec<ChannelEvent>, ChannelProjection)>;

impl MemoryChannelStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn streams(&self) -> MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(streams: &mut Streams, change: PlannedChange) {
        let entry = streams
            .entry(change.after.channel.channel_id)
            .or_insert_with(|| (Vec::new(), change.after.clone()));
        entry.0.extend(change.events);
        entry.1 = change.after;
    }
}

impl ChannelStore for MemoryChannelStore {
    async fn get(&self, key: &PaymentChannelKey) -> Result<Option<PaymentChannelData>, StoreError> {
        Ok(self.streams().get(&key.id).map(|(_, state)| state.channel.clone()))
    }

    async fn get_all(&self) -> Result<Vec<PaymentChannelData>, StoreError> {
        Ok(self.streams().values().map(|(_, state)| state.channel.clone()).collect())
    }

    async fn put(&self, channel: &PaymentChannelData) -> Result<(), StoreError> {
        let mut streams = self.streams();
        let current = streams.get(&channel.channel_id).map(|(_, state)| state);
        if let Some(change) = plan_change(current, channel)? {
            Self::write(&mut streams, change);
        }
        Ok(())
    }

    async fn put_if_absent(&self, channel: &PaymentChannelData) -> Result<bool, StoreError> {
        let mut streams = self.streams();
        if streams.contains_key(&channel.channel_id) {
            return Ok(false);
        }
        if let Some(change) = plan_change(None, channel)? {
            Self::write(&mut streams, change);
        }
        Ok(true)
    }

    async fn compare_and_swap(
        &self,
        prev: &PaymentChannelData,
        new: &PaymentChannelData,
    ) -> Result<bool, StoreError> {
        check_same_channel(prev, new)?;
        let mut streams = self.streams();
        let current = match streams.get(&new.channel_id) {
            Some((_, state)) if state.channel == *prev => state,
            _ => return Ok(false),
        };
        if let Some(change) = plan_change(Some(current), new)? {
            Self::write(&mut streams, change);
        }
        Ok(true)
    }

    async fn events(&self, key: &PaymentChannelKey) -> Result<Vec<ChannelEvent>, StoreError> {
        Ok(self.streams().get(&key.id).map(|(events, _)| events.clone()).unwrap_or_default())
    }
}
