//! The seed's `AtomicStorage` contract (escrow.md §2.1) and its prefixed and typed wrappers
//! (§2.4–2.5).
//!
//! Keys and values are arbitrary bytes. `get_by_key_prefix` returns values only, in ascending byte
//! order of their keys (the seed's memory store is unordered; etcd is ordered; we are ordered
//! everywhere). Multi-key transactions (`ExecuteTransaction`) are used only by the seed's prepaid
//! flow and are not part of this contract yet.

use std::future::Future;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// Get, GetByKeyPrefix, Put, PutIfAbsent, CompareAndSwap, Delete: each atomic on its own.
pub trait AtomicStorage: Send + Sync {
    /// `None` when absent; a present key with an empty value is `Some(vec![])`.
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Values of all keys starting with `prefix`, in ascending key order.
    fn get_by_key_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;
    /// Unconditional write.
    fn put(&self, key: &[u8], value: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes only when the key is absent; `false` (and nothing written) when present.
    fn put_if_absent(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Writes `new` only when the key is present with value `prev`; an absent key gives `false`.
    fn compare_and_swap(
        &self,
        key: &[u8],
        prev: &[u8],
        new: &[u8],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes the key; deleting an absent key succeeds.
    fn delete(&self, key: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Rewrites every key to `prefix + "/" + key`, as the seed does (always one `/`, even when the
/// prefix ends with one: that is how the daemon's `//payment-channel/storage` keys arise).
#[derive(Debug, Clone)]
pub struct PrefixedStorage<S> {
    inner: S,
    prefix: Vec<u8>,
}

impl<S: AtomicStorage> PrefixedStorage<S> {
    pub fn new(inner: S, prefix: impl Into<Vec<u8>>) -> Self {
        Self { inner, prefix: prefix.into() }
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + 1 + key.len());
        full.extend_from_slice(&self.prefix);
        full.push(b'/');
        full.extend_from_slice(key);
        full
    }
}

impl<S: AtomicStorage> AtomicStorage for PrefixedStorage<S> {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(&self.full(key)).await
    }

    async fn get_by_key_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.get_by_key_prefix(&self.full(prefix)).await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.inner.put(&self.full(key), value).await
    }

    async fn put_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        self.inner.put_if_absent(&self.full(key), value).await
    }

    async fn compare_and_swap(&self, key: &[u8], prev: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        self.inner.compare_and_swap(&self.full(key), prev, new).await
    }

    async fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.inner.delete(&self.full(key)).await
    }
}

/// How a typed key becomes a storage key.
pub trait StorageKey {
    fn storage_key(&self) -> Vec<u8>;
}

impl StorageKey for crate::domain::PaymentChannelKey {
    /// `{ID: 42}`, the seed's channel key.
    fn storage_key(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

/// Typed keys and values over byte storage. Values are JSON (serde); the seed's gob encoding is not
/// needed until Go daemons share the storage. CompareAndSwap compares the stored bytes with the
/// encoding of `prev`, which is deterministic for a given type.
#[derive(Debug, Clone)]
pub struct TypedStorage<S, K, V> {
    inner: S,
    types: PhantomData<fn(K, V)>,
}

impl<S, K, V> TypedStorage<S, K, V>
where
    S: AtomicStorage,
    K: StorageKey + Sync,
    V: Serialize + DeserializeOwned + Sync,
{
    pub fn new(inner: S) -> Self {
        Self { inner, types: PhantomData }
    }

    fn encode(value: &V) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<V, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
    }

    pub async fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        let key = key.storage_key();
        match self.inner.get(&key).await? {
            Some(bytes) => Self::decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every value under this storage, in key order.
    pub async fn get_all(&self) -> Result<Vec<V>, StoreError> {
        let values = self.inner.get_by_key_prefix(b"").await?;
        values.iter().map(|bytes| Self::decode(b"<listed>", bytes)).collect()
    }

    pub async fn put(&self, key: &K, value: &V) -> Result<(), StoreError> {
        self.inner.put(&key.storage_key(), &Self::encode(value)?).await
    }

    pub async fn put_if_absent(&self, key: &K, value: &V) -> Result<bool, StoreError> {
        self.inner.put_if_absent(&key.storage_key(), &Self::encode(value)?).await
    }

    pub async fn compare_and_swap(&self, key: &K, prev: &V, new: &V) -> Result<bool, StoreError> {
        self.inner.compare_and_swap(&key.storage_key(), &Self::encode(prev)?, &Self::encode(new)?).await
    }

    pub async fn delete(&self, key: &K) -> Result<(), StoreError> {
        self.inner.delete(&key.storage_key()).await
    }
}
