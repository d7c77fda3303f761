//! Storage: the `AtomicStorage` contract of the seed, the event-sourced channel store, and the
//! Postgres event log they write to.
//!
//! Limits: a key is at most [`MAX_KEY_BYTES`] and a value at most [`MAX_VALUE_BYTES`]; larger ones
//! are refused with a named error before anything is written, by every backend.

pub mod atomic;
pub mod channels;
pub mod claim_cursors;
pub mod export;
pub mod leases;
pub mod memory;
pub mod postgres;
pub mod retry;
pub mod verify;

use crate::domain::FoldError;

pub use atomic::{AtomicStorage, PrefixedStorage, StorageKey, TypedStorage};
pub use channels::ChannelStore;
pub use memory::{MemoryChannelStore, MemoryStorage};

/// The longest key the storage accepts. Postgres b-tree entries must stay well below a page.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value the storage accepts (1 MiB): channel states are a few hundred bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Everything storage can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key of {size} bytes exceeds the limit of {limit} bytes")]
    KeyTooLarge { size: usize, limit: usize },
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge { size: usize, limit: usize },
    #[error("stored value of key {key} cannot be decoded: {reason}")]
    Decode { key: String, reason: String },
    #[error("value cannot be encoded: {0}")]
    Encode(String),
    #[error("refused channel change: {0}")]
    Transition(#[from] FoldError),
    #[error("event log is inconsistent at {stream}: {reason}")]
    CorruptLog { stream: String, reason: String },
    #[error("{operation}: gave up after {attempts} serialization failures")]
    RetriesExhausted { operation: &'static str, attempts: u32 },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    DatabaseUrl(#[from] postgres::hosts::DatabaseUrlError),
    #[error("no host of the database URL accepts {wanted} sessions: {passed_over}")]
    NoUsableHost { wanted: &'static str, passed_over: String },
    #[error("refused: {reason}")]
    HostRefused { reason: &'static str },
    #[error("no connection within {after:?}")]
    HostTimedOut { after: std::time::Duration },
}

/// Refuses keys and values above the limits (module doc).
pub fn check_limits(key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::KeyTooLarge { size: key.len(), limit: MAX_KEY_BYTES });
    }
    match value {
        Some(value) if value.len() > MAX_VALUE_BYTES => {
            Err(StoreError::ValueTooLarge { size: value.len(), limit: MAX_VALUE_BYTES })
        }
        _ => Ok(()),
    }
}

/// The exclusive upper bound of the keys starting with `prefix`, or `None` when every key above
/// `prefix` starts with it (empty prefix, or only 0xFF bytes).
pub fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut upper = prefix[..=last].to_vec();
    upper[last] += 1;
    Some(upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_upper_bounds_cover_exactly_the_prefixed_keys() {
        assert_eq!(prefix_upper_bound(b""), None);
        assert_eq!(prefix_upper_bound(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_upper_bound(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_upper_bound(&[0xff, 0xff]), None);
        assert_eq!(prefix_upper_bound(&[0]), Some(vec![1]));
    }

    #[test]
    fn limits_are_inclusive() {
        assert!(check_limits(&[0; MAX_KEY_BYTES], Some(&vec![0; MAX_VALUE_BYTES])).is_ok());
        assert!(matches!(check_limits(&[0; MAX_KEY_BYTES + 1], None), Err(StoreError::KeyTooLarge { .. })));
        assert!(matches!(
            check_limits(b"k", Some(&vec![0; MAX_VALUE_BYTES + 1])),
            Err(StoreError::ValueTooLarge { .. })
        ));
    }
}
