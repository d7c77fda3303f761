//! The AtomicStorage contract on the memory backend, plain and behind the seed's key prefix, and the
//! prefixed and typed wrappers' own rules.

mod common;

use mpe_ledger::domain::{ChannelId, PaymentChannelKey};
use mpe_ledger::store::{AtomicStorage, MemoryStorage, PrefixedStorage, TypedStorage};

crate::atomic_storage_contract!(MemoryStorage::new());

mod prefixed {
    use super::*;
    crate::atomic_storage_contract!(PrefixedStorage::new(MemoryStorage::new(), "sepolia/my-org/gid"));
}

#[tokio::test]
async fn prefixed_keys_are_prefix_slash_key_as_in_the_daemon() {
    let inner = MemoryStorage::new();
    let mpe =
        PrefixedStorage::new(inner.clone(), "sepolia/org/gid/0x7E6366Fbe3bdfCE3C906667911FC5237Cc96BD08");
    let channels = PrefixedStorage::new(mpe, "/payment-channel/storage");
    channels.put(b"{ID: 42}", b"state").await.unwrap();
    let full =
        b"sepolia/org/gid/0x7E6366Fbe3bdfCE3C906667911FC5237Cc96BD08//payment-channel/storage/{ID: 42}";
    assert_eq!(inner.get(full).await.unwrap(), Some(b"state".to_vec()));
}

#[tokio::test]
async fn prefixed_storages_do_not_see_each_others_keys() {
    let inner = MemoryStorage::new();
    let a = PrefixedStorage::new(inner.clone(), "a");
    let b = PrefixedStorage::new(inner.clone(), "ab");
    a.put(b"k", b"from a").await.unwrap();
    b.put(b"k", b"from b").await.unwrap();
    assert_eq!(a.get_by_key_prefix(b"").await.unwrap(), vec![b"from a".to_vec()]);
    assert_eq!(b.get_by_key_prefix(b"").await.unwrap(), vec![b"from b".to_vec()]);
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counter {
    calls: u64,
}

#[tokio::test]
async fn typed_storage_round_trips_values_under_the_seed_key() {
    let inner = MemoryStorage::new();
    let typed: TypedStorage<_, PaymentChannelKey, Counter> = TypedStorage::new(inner.clone());
    let key = PaymentChannelKey::new(ChannelId::from(42));
    assert_eq!(typed.get(&key).await.unwrap(), None);
    assert!(typed.put_if_absent(&key, &Counter { calls: 1 }).await.unwrap());
    assert_eq!(typed.get(&key).await.unwrap(), Some(Counter { calls: 1 }));
    assert!(inner.get(b"{ID: 42}").await.unwrap().is_some());
}

#[tokio::test]
async fn typed_compare_and_swap_compares_the_encoded_previous_value() {
    let typed: TypedStorage<_, PaymentChannelKey, Counter> = TypedStorage::new(MemoryStorage::new());
    let key = PaymentChannelKey::new(ChannelId::from(1));
    typed.put(&key, &Counter { calls: 1 }).await.unwrap();
    assert!(!typed.compare_and_swap(&key, &Counter { calls: 2 }, &Counter { calls: 3 }).await.unwrap());
    assert!(typed.compare_and_swap(&key, &Counter { calls: 1 }, &Counter { calls: 2 }).await.unwrap());
    assert_eq!(typed.get(&key).await.unwrap(), Some(Counter { calls: 2 }));
}

#[tokio::test]
async fn typed_get_all_lists_every_value_in_key_order() {
    let typed: TypedStorage<_, PaymentChannelKey, Counter> = TypedStorage::new(MemoryStorage::new());
    for (id, calls) in [(2u64, 20u64), (1, 10), (10, 100)] {
        typed.put(&PaymentChannelKey::new(ChannelId::from(id)), &Counter { calls }).await.unwrap();
    }
    // Byte order of `{ID: n}`: `{ID: 10}` < `{ID: 1}` < `{ID: 2}` ("0" < "}"), as in etcd.
    let calls: Vec<u64> = typed.get_all().await.unwrap().into_iter().map(|c| c.calls).collect();
    assert_eq!(calls, vec![100, 10, 20]);
}

#[tokio::test]
async fn a_stored_value_that_does_not_decode_is_a_named_error() {
    let inner = MemoryStorage::new();
    inner.put(b"{ID: 5}", b"not json").await.unwrap();
    let typed: TypedStorage<_, PaymentChannelKey, Counter> = TypedStorage::new(inner);
    let error = typed.get(&PaymentChannelKey::new(ChannelId::from(5))).await.unwrap_err();
    assert!(matches!(error, mpe_ledger::store::StoreError::Decode { .. }), "{error}");
}
