//! The AtomicStorage contract (escrow.md §2.1) as one suite that every backend runs:
//! `atomic_storage_contract!(make_storage_expression)` expands to one named test per rule.

use mpe_ledger::store::{AtomicStorage, MAX_KEY_BYTES, MAX_VALUE_BYTES, StoreError};

pub async fn get_of_an_absent_key_is_not_present(s: impl AtomicStorage) {
    assert_eq!(s.get(b"missing").await.unwrap(), None);
}

pub async fn put_then_get_returns_the_value(s: impl AtomicStorage) {
    s.put(b"k", b"v").await.unwrap();
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"v".to_vec()));
}

pub async fn a_present_key_with_an_empty_value_is_present(s: impl AtomicStorage) {
    s.put(b"k", b"").await.unwrap();
    assert_eq!(s.get(b"k").await.unwrap(), Some(vec![]));
    assert_eq!(s.get_by_key_prefix(b"k").await.unwrap(), vec![Vec::<u8>::new()]);
}

pub async fn put_overwrites_unconditionally(s: impl AtomicStorage) {
    s.put(b"k", b"one").await.unwrap();
    s.put(b"k", b"two").await.unwrap();
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"two".to_vec()));
}

pub async fn put_if_absent_writes_an_absent_key(s: impl AtomicStorage) {
    assert!(s.put_if_absent(b"k", b"v").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"v".to_vec()));
}

pub async fn put_if_absent_on_a_present_key_returns_false_and_keeps_the_value(s: impl AtomicStorage) {
    s.put(b"k", b"first").await.unwrap();
    assert!(!s.put_if_absent(b"k", b"second").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"first".to_vec()));
}

pub async fn put_if_absent_on_a_key_with_an_empty_value_returns_false(s: impl AtomicStorage) {
    s.put(b"k", b"").await.unwrap();
    assert!(!s.put_if_absent(b"k", b"v").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), Some(vec![]));
}

pub async fn compare_and_swap_on_an_absent_key_returns_false_and_creates_nothing(s: impl AtomicStorage) {
    assert!(!s.compare_and_swap(b"k", b"", b"new").await.unwrap());
    assert!(!s.compare_and_swap(b"k", b"old", b"new").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), None);
}

pub async fn compare_and_swap_with_the_current_value_swaps(s: impl AtomicStorage) {
    s.put(b"k", b"old").await.unwrap();
    assert!(s.compare_and_swap(b"k", b"old", b"new").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"new".to_vec()));
}

pub async fn compare_and_swap_with_another_value_returns_false_and_keeps_the_value(s: impl AtomicStorage) {
    s.put(b"k", b"current").await.unwrap();
    assert!(!s.compare_and_swap(b"k", b"stale", b"new").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"current".to_vec()));
}

pub async fn compare_and_swap_from_an_empty_value_swaps(s: impl AtomicStorage) {
    s.put(b"k", b"").await.unwrap();
    assert!(s.compare_and_swap(b"k", b"", b"x").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"x".to_vec()));
}

pub async fn compare_and_swap_to_the_same_value_succeeds(s: impl AtomicStorage) {
    s.put(b"k", b"same").await.unwrap();
    assert!(s.compare_and_swap(b"k", b"same", b"same").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"same".to_vec()));
}

pub async fn delete_removes_the_key(s: impl AtomicStorage) {
    s.put(b"k", b"v").await.unwrap();
    s.delete(b"k").await.unwrap();
    assert_eq!(s.get(b"k").await.unwrap(), None);
    assert!(s.get_by_key_prefix(b"k").await.unwrap().is_empty());
}

pub async fn delete_of_an_absent_key_succeeds(s: impl AtomicStorage) {
    s.delete(b"never-written").await.unwrap();
    assert_eq!(s.get(b"never-written").await.unwrap(), None);
}

pub async fn a_deleted_key_can_be_written_again(s: impl AtomicStorage) {
    s.put(b"k", b"one").await.unwrap();
    s.delete(b"k").await.unwrap();
    assert!(s.put_if_absent(b"k", b"two").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"two".to_vec()));
}

async fn put_all(s: &impl AtomicStorage, entries: &[(&[u8], &[u8])]) {
    for (key, value) in entries {
        s.put(key, value).await.unwrap();
    }
}

pub async fn get_by_key_prefix_returns_the_values_of_matching_keys_only(s: impl AtomicStorage) {
    put_all(&s, &[(b"user:1", b"a"), (b"user:2", b"b"), (b"admin:1", b"c")]).await;
    assert_eq!(s.get_by_key_prefix(b"user:").await.unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
}

pub async fn get_by_key_prefix_returns_values_in_ascending_key_order(s: impl AtomicStorage) {
    put_all(
        &s,
        &[(b"p/c", b"3"), (b"p/a", b"1"), (b"p/b", b"2"), (b"p/{ID: 10}", b"10"), (b"p/{ID: 2}", b"2x")],
    )
    .await;
    assert_eq!(
        s.get_by_key_prefix(b"p/").await.unwrap(),
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec(), b"10".to_vec(), b"2x".to_vec()]
    );
}

pub async fn get_by_key_prefix_with_an_empty_prefix_returns_everything(s: impl AtomicStorage) {
    put_all(&s, &[(b"b", b"2"), (b"a", b"1"), (&[0xff], b"3"), (&[0], b"0")]).await;
    assert_eq!(
        s.get_by_key_prefix(b"").await.unwrap(),
        vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
}

pub async fn get_by_key_prefix_includes_the_key_equal_to_the_prefix(s: impl AtomicStorage) {
    put_all(&s, &[(b"ab", b"exact"), (b"abc", b"longer"), (b"a", b"shorter")]).await;
    assert_eq!(s.get_by_key_prefix(b"ab").await.unwrap(), vec![b"exact".to_vec(), b"longer".to_vec()]);
}

pub async fn get_by_key_prefix_with_a_nul_byte_matches_bytes_exactly(s: impl AtomicStorage) {
    put_all(&s, &[(b"a\0b", b"1"), (b"a\0", b"2"), (b"a", b"3"), (b"a\x01", b"4")]).await;
    assert_eq!(s.get_by_key_prefix(b"a\0").await.unwrap(), vec![b"2".to_vec(), b"1".to_vec()]);
}

pub async fn get_by_key_prefix_with_0xff_bytes_has_no_upper_bound_overflow(s: impl AtomicStorage) {
    put_all(
        &s,
        &[(&[0xff], b"1"), (&[0xff, 0xff], b"2"), (&[0xff, 0xff, 0x00], b"3"), (&[0xfe, 0xff], b"4")],
    )
    .await;
    assert_eq!(
        s.get_by_key_prefix(&[0xff]).await.unwrap(),
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
    assert_eq!(s.get_by_key_prefix(&[0xff, 0xff]).await.unwrap(), vec![b"2".to_vec(), b"3".to_vec()]);
    assert_eq!(s.get_by_key_prefix(&[0xfe]).await.unwrap(), vec![b"4".to_vec()]);
}

pub async fn get_by_key_prefix_treats_percent_and_underscore_literally(s: impl AtomicStorage) {
    put_all(&s, &[(b"a%b", b"percent"), (b"axb", b"x"), (b"a_b", b"underscore"), (b"ayb", b"y")]).await;
    assert_eq!(s.get_by_key_prefix(b"a%").await.unwrap(), vec![b"percent".to_vec()]);
    assert_eq!(s.get_by_key_prefix(b"a_").await.unwrap(), vec![b"underscore".to_vec()]);
}

pub async fn get_by_key_prefix_without_a_match_is_empty(s: impl AtomicStorage) {
    put_all(&s, &[(b"a", b"1")]).await;
    assert!(s.get_by_key_prefix(b"b").await.unwrap().is_empty());
}

pub async fn keys_and_values_with_nul_and_high_bytes_round_trip(s: impl AtomicStorage) {
    let key = [0u8, 0xff, b'%', 0, b'_', 0x80];
    let value = [0u8, 0, 0xff, 0xfe, 0];
    s.put(&key, &value).await.unwrap();
    assert_eq!(s.get(&key).await.unwrap(), Some(value.to_vec()));
    assert!(s.compare_and_swap(&key, &value, &[0]).await.unwrap());
    assert_eq!(s.get(&key).await.unwrap(), Some(vec![0]));
}

pub async fn a_value_above_the_limit_is_refused_and_nothing_is_written(s: impl AtomicStorage) {
    let big = vec![7u8; MAX_VALUE_BYTES + 1];
    assert!(matches!(s.put(b"k", &big).await, Err(StoreError::ValueTooLarge { .. })));
    assert!(matches!(s.put_if_absent(b"k", &big).await, Err(StoreError::ValueTooLarge { .. })));
    assert_eq!(s.get(b"k").await.unwrap(), None);
    s.put(b"k", b"small").await.unwrap();
    assert!(matches!(s.compare_and_swap(b"k", b"small", &big).await, Err(StoreError::ValueTooLarge { .. })));
    assert_eq!(s.get(b"k").await.unwrap(), Some(b"small".to_vec()));
}

pub async fn a_value_at_the_limit_is_accepted(s: impl AtomicStorage) {
    let largest = vec![7u8; MAX_VALUE_BYTES];
    s.put(b"k", &largest).await.unwrap();
    assert_eq!(s.get(b"k").await.unwrap().map(|v| v.len()), Some(MAX_VALUE_BYTES));
}

pub async fn a_key_above_the_limit_is_refused(s: impl AtomicStorage) {
    let long = vec![b'k'; MAX_KEY_BYTES + 1];
    assert!(matches!(s.put(&long, b"v").await, Err(StoreError::KeyTooLarge { .. })));
    assert!(matches!(s.get(&long).await, Err(StoreError::KeyTooLarge { .. })));
    assert!(s.get_by_key_prefix(b"k").await.unwrap().is_empty());
}

pub async fn concurrent_put_if_absent_has_exactly_one_winner<S: AtomicStorage + Clone + 'static>(s: S) {
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.put_if_absent(b"race", &[i]).await.unwrap() }));
    }
    let mut winners = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        if task.await.unwrap() {
            winners.push(i as u8);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(s.get(b"race").await.unwrap(), Some(vec![winners[0]]));
}

/// Expands to one `#[tokio::test]` per contract rule, each on a storage made by `$make`.
#[macro_export]
macro_rules! atomic_storage_contract {
    ($make:expr) => {
        $crate::atomic_storage_contract!(@tests $make;
            get_of_an_absent_key_is_not_present,
            put_then_get_returns_the_value,
            a_present_key_with_an_empty_value_is_present,
            put_overwrites_unconditionally,
            put_if_absent_writes_an_absent_key,
            put_if_absent_on_a_present_key_returns_false_and_keeps_the_value,
            put_if_absent_on_a_key_with_an_empty_value_returns_false,
            compare_and_swap_on_an_absent_key_returns_false_and_creates_nothing,
            compare_and_swap_with_the_current_value_swaps,
            compare_and_swap_with_another_value_returns_false_and_keeps_the_value,
            compare_and_swap_from_an_empty_value_swaps,
            compare_and_swap_to_the_same_value_succeeds,
            delete_removes_the_key,
            delete_of_an_absent_key_succeeds,
            a_deleted_key_can_be_written_again,
            get_by_key_prefix_returns_the_values_of_matching_keys_only,
            get_by_key_prefix_returns_values_in_ascending_key_order,
            get_by_key_prefix_with_an_empty_prefix_returns_everything,
            get_by_key_prefix_includes_the_key_equal_to_the_prefix,
            get_by_key_prefix_with_a_nul_byte_matches_bytes_exactly,
            get_by_key_prefix_with_0xff_bytes_has_no_upper_bound_overflow,
            get_by_key_prefix_treats_percent_and_underscore_literally,
            get_by_key_prefix_without_a_match_is_empty,
            keys_and_values_with_nul_and_high_bytes_round_trip,
            a_value_above_the_limit_is_refused_and_nothing_is_written,
            a_value_at_the_limit_is_accepted,
            a_key_above_the_limit_is_refused,
            concurrent_put_if_absent_has_exactly_one_winner,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let storage = $make;
                $crate::common::contract::$name(storage).await;
            }
        )*
    };
}
