//! Model-based test: random operation sequences run against the Postgres backend and against the
//! memory model, comparing every result. Each case works under its own key prefix, so 1,000 cases
//! share one database without seeing each other.

mod common;

use mpe_ledger::store::{AtomicStorage, MemoryStorage, PrefixedStorage};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Get(Vec<u8>),
    GetByKeyPrefix(Vec<u8>),
    Put(Vec<u8>, Vec<u8>),
    PutIfAbsent(Vec<u8>, Vec<u8>),
    CompareAndSwap(Vec<u8>, Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Few distinct bytes, including the awkward ones, so keys collide and prefix one another.
fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0u8, 0xff, b'%', b'_', b'a', b'/']), 0..=max_len)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        bytes(3).prop_map(Op::Get),
        bytes(2).prop_map(Op::GetByKeyPrefix),
        (bytes(3), bytes(2)).prop_map(|(k, v)| Op::Put(k, v)),
        (bytes(3), bytes(2)).prop_map(|(k, v)| Op::PutIfAbsent(k, v)),
        (bytes(3), bytes(2), bytes(2)).prop_map(|(k, p, n)| Op::CompareAndSwap(k, p, n)),
        bytes(3).prop_map(Op::Delete),
    ]
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Value(Option<Vec<u8>>),
    Values(Vec<Vec<u8>>),
    Done,
    Applied(bool),
}

async fn run(storage: &impl AtomicStorage, op: &Op) -> Outcome {
    match op {
        Op::Get(k) => Outcome::Value(storage.get(k).await.unwrap()),
        Op::GetByKeyPrefix(p) => Outcome::Values(storage.get_by_key_prefix(p).await.unwrap()),
        Op::Put(k, v) => {
            storage.put(k, v).await.unwrap();
            Outcome::Done
        }
        Op::PutIfAbsent(k, v) => Outcome::Applied(storage.put_if_absent(k, v).await.unwrap()),
        Op::CompareAndSwap(k, p, n) => Outcome::Applied(storage.compare_and_swap(k, p, n).await.unwrap()),
        Op::Delete(k) => {
            storage.delete(k).await.unwrap();
            Outcome::Done
        }
    }
}

#[test]
fn postgres_matches_the_memory_model_on_1000_random_sequences() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let postgres = runtime.block_on(common::pg_storage());
    let case = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig { cases: 1000, max_shrink_iters: 200, ..ProptestConfig::default() };
    proptest!(config, |(ops in prop::collection::vec(op(), 1..12))| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let backend = PrefixedStorage::new(postgres.clone(), format!("case-{n}"));
        let model = MemoryStorage::new();
        runtime.block_on(async {
            for (step, op) in ops.iter().enumerate() {
                let expected = run(&model, op).await;
                let actual = run(&backend, op).await;
                prop_assert_eq!(actual, expected, "step {} of {:?}", step, ops);
            }
            // The final states agree too, not only the answers.
            let all = Op::GetByKeyPrefix(vec![]);
            prop_assert_eq!(run(&backend, &all).await, run(&model, &all).await);
            Ok(())
        })?;
    });
    let case = case.into_inner();
    println!("model test: {case} sequences compared");
    assert!(case >= 1000);
}
