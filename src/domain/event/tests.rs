//! Encoding, JSON round trips and the hash chain of events.

use super::*;
use crate::domain::types::{BlockNumber, EthAddress, GroupId};

fn merge() -> Event {
    Event::Channel(ChannelEvent::ChannelMergedFromChain {
        chain: OnChainChannel {
            nonce: Nonce::from(3),
            sender: EthAddress::from_slice(&[0x11; 20]).unwrap(),
            signer: EthAddress::from_slice(&[0x33; 20]).unwrap(),
            recipient: EthAddress::from_slice(&[0x22; 20]).unwrap(),
            group_id: GroupId([123; 32]),
            value: Amount::from(12345),
            expiration: BlockNumber::from(100),
        },
        block: Some(ChainBlock { number: 7, hash: B256::repeat_byte(9) }),
    })
}

fn payment(amount: u64) -> Event {
    Event::Channel(ChannelEvent::PaymentAccepted {
        nonce: Nonce::from(3),
        amount: Amount::from(amount),
        signature: Signature([5; 65]),
    })
}

#[test]
fn every_event_round_trips_through_its_json_payload() {
    let events = [
        merge(),
        payment(10),
        Event::Channel(ChannelEvent::ClaimStarted {
            nonce: Nonce::from(3),
            amount: Amount::from(10),
            signature: Signature([5; 65]),
        }),
        Event::Channel(ChannelEvent::ClaimFinished {
            nonce: Nonce::from(3),
            outcome: ClaimOutcome::ReclaimedBySender,
            transaction_hash: B256::repeat_byte(1),
            block_number: 99,
            amount: Amount::from(8),
        }),
        Event::Channel(ChannelEvent::ClaimLanded {
            nonce: Nonce::from(3),
            transaction_hash: B256::repeat_byte(2),
            block_number: 98,
            actual_amount: Amount::from(7),
            planned_amount: Amount::from(10),
        }),
        Event::Channel(ChannelEvent::SenderReclaimed {
            nonce: Nonce::from(4),
            transaction_hash: B256::repeat_byte(3),
            block_number: 120,
            value_taken_back: Amount::from(1000),
            provider_loss: Amount::from(10),
        }),
        Event::Kv(KvEvent::KeyPut { key: vec![0, 0xff], value: vec![] }),
        Event::Kv(KvEvent::KeyDeleted { key: b"%_".to_vec() }),
        Event::Lease(LeaseEvent::LeaseReleasedByOperator { holder: "replica-a".into(), expired: true }),
    ];
    for event in events {
        let json = event.to_json();
        assert_eq!(json["type"], event.event_type());
        assert_eq!(Event::from_json(event.event_type(), &json).unwrap(), event);
    }
}

#[test]
fn amounts_in_payloads_are_decimal_text() {
    let json = payment(12300).to_json();
    assert_eq!(json["amount"], "12300");
    assert_eq!(json["nonce"], "3");
}

#[test]
fn a_payload_whose_type_differs_from_the_stored_type_is_refused() {
    let json = payment(1).to_json();
    assert!(matches!(Event::from_json("claim_started", &json), Err(EventDecodeError::TypeMismatch { .. })));
}

#[test]
fn the_hash_covers_every_part_of_the_link() {
    let stream = StreamId::Channel(ChannelId::from(42));
    let base = chain_hash(&GENESIS_HASH, &stream, 1, &payment(10));
    assert_ne!(base, chain_hash(&[1; 32], &stream, 1, &payment(10)));
    assert_ne!(base, chain_hash(&GENESIS_HASH, &StreamId::Channel(ChannelId::from(43)), 1, &payment(10)));
    assert_ne!(base, chain_hash(&GENESIS_HASH, &stream, 2, &payment(10)));
    assert_ne!(base, chain_hash(&GENESIS_HASH, &stream, 1, &payment(11)));
    assert_eq!(base, chain_hash(&GENESIS_HASH, &stream, 1, &payment(10)));
}

#[test]
fn a_legacy_claim_finished_keeps_its_encoding_and_the_new_facts_their_own() {
    let legacy = Event::Channel(ChannelEvent::ClaimFinished {
        nonce: Nonce::from(1),
        outcome: ClaimOutcome::ReclaimedBySender,
        transaction_hash: B256::repeat_byte(0xaa),
        block_number: 2,
        amount: Amount::from(3),
    });
    let word = |n: u8| {
        let mut w = [0u8; 32];
        w[31] = n;
        w
    };
    let mut expected = Vec::new();
    field(&mut expected, &word(1));
    field(&mut expected, &[2]);
    field(&mut expected, &[0xaa; 32]);
    field(&mut expected, &2u64.to_be_bytes());
    field(&mut expected, &word(3));
    assert_eq!(legacy.canonical_bytes(), expected);
    let reclaimed = Event::Channel(ChannelEvent::SenderReclaimed {
        nonce: Nonce::from(1),
        transaction_hash: B256::repeat_byte(0xaa),
        block_number: 2,
        value_taken_back: Amount::from(3),
        provider_loss: Amount::from(4),
    });
    let mut expected = Vec::new();
    field(&mut expected, &word(1));
    field(&mut expected, &[0xaa; 32]);
    field(&mut expected, &2u64.to_be_bytes());
    field(&mut expected, &word(3));
    field(&mut expected, &word(4));
    assert_eq!(reclaimed.canonical_bytes(), expected);
    assert_eq!(reclaimed.event_type(), "sender_reclaimed");
}

#[test]
fn length_prefixes_keep_adjacent_kv_fields_apart() {
    let a = Event::Kv(KvEvent::KeyPut { key: b"ab".to_vec(), value: b"c".to_vec() });
    let b = Event::Kv(KvEvent::KeyPut { key: b"a".to_vec(), value: b"bc".to_vec() });
    assert_ne!(a.canonical_bytes(), b.canonical_bytes());
}

#[test]
fn stream_ids_round_trip_through_text() {
    for stream in [
        StreamId::Channel(ChannelId::from(42)),
        StreamId::Kv(vec![0, 0xff, b'%']),
        StreamId::Lease(ChannelId::from(7)),
    ] {
        assert_eq!(StreamId::parse(&stream.to_string()), Some(stream));
    }
    assert_eq!(StreamId::Kv(vec![0xab]).to_string(), "kv/ab");
    assert_eq!(StreamId::parse("other/1"), None);
}
