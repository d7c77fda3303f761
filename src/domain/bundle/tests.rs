//! A bundle written from a signed history checks clean; every change to it is named where it is.

use alloy_primitives::B256;

use super::*;
use crate::domain::event::{ChainBlock, GENESIS_HASH, chain_hash};
use crate::domain::signature::{payment_message, recover_signer, sign};
use crate::domain::{Amount, BlockNumber, ChannelEvent, ChannelId, EthAddress, Event, GroupId};
use crate::domain::{Nonce, OnChainChannel, StreamId};

const CLIENT_KEY: [u8; 32] = [0x11; 32];
const STRANGER_KEY: [u8; 32] = [0x22; 32];
const CHANNEL: u64 = 42;

fn address_of(key: &[u8; 32]) -> EthAddress {
    recover_signer(b"who", sign(b"who", key).as_bytes()).unwrap()
}

fn mpe() -> EthAddress {
    "0x5b1869D9A4C187F2EAa108f3062412ecf0526b24".parse().unwrap()
}

fn signed(key: &[u8; 32], nonce: u64, amount: u64) -> crate::domain::Signature {
    sign(&payment_message(&mpe(), ChannelId::from(CHANNEL), Nonce::from(nonce), Amount::from(amount)), key)
}

fn merge(nonce: u64, value: u64, block: u64) -> ChannelEvent {
    let client = address_of(&CLIENT_KEY);
    ChannelEvent::ChannelMergedFromChain {
        chain: OnChainChannel {
            nonce: Nonce::from(nonce),
            sender: client,
            signer: client,
            recipient: EthAddress::from_slice(&[0x22; 20]).unwrap(),
            group_id: GroupId([7; 32]),
            value: Amount::from(value),
            expiration: BlockNumber::from(1000),
        },
        block: Some(ChainBlock { number: block, hash: B256::repeat_byte(block as u8) }),
    }
}

fn payment(nonce: u64, amount: u64) -> ChannelEvent {
    ChannelEvent::PaymentAccepted {
        nonce: Nonce::from(nonce),
        amount: Amount::from(amount),
        signature: signed(&CLIENT_KEY, nonce, amount),
    }
}

fn history() -> Vec<ChannelEvent> {
    vec![
        merge(0, 100, 5),
        payment(0, 10),
        payment(0, 20),
        ChannelEvent::ClaimStarted {
            nonce: Nonce::ZERO,
            amount: Amount::from(20),
            signature: signed(&CLIENT_KEY, 0, 20),
        },
        ChannelEvent::ClaimLanded {
            nonce: Nonce::ZERO,
            transaction_hash: B256::repeat_byte(0xcc),
            block_number: 9,
            actual_amount: Amount::from(20),
            planned_amount: Amount::from(20),
        },
        merge(1, 80, 10),
        payment(1, 10),
    ]
}

/// The event lines of `events`, hash-chained as the log chains them.
fn lines(events: &[ChannelEvent]) -> Vec<EventLine> {
    let stream = StreamId::Channel(ChannelId::from(CHANNEL));
    let mut prev = GENESIS_HASH;
    let mut lines = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let version = i as u64 + 1;
        let hash = chain_hash(&prev, &stream, version, &Event::Channel(event.clone()));
        lines.push(EventLine {
            version,
            recorded_at: RecordedAt::parse(&format!("2026-12-08T00:00:{:02}.000100Z", version)).unwrap(),
            payload: event.clone(),
            prev_hash: B256::from(prev),
            hash: B256::from(hash),
        });
        prev = hash;
    }
    lines
}

fn write(lines: &[EventLine]) -> Vec<u8> {
    let (mut writer, header) = BundleWriter::start(&Header::new(mpe(), Some(1337), ChannelId::from(CHANNEL)));
    let mut out = header.into_bytes();
    for line in lines {
        out.extend_from_slice(writer.event(line).as_bytes());
    }
    out.extend_from_slice(writer.end().as_bytes());
    out
}

/// Checks `bytes` as `verify-bundle` reads them (lines split at each newline).
fn check(bytes: &[u8], anchor: Option<B256>) -> Result<BundleReport, BundleError> {
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut split = body.split(|&b| b == b'\n');
    let mut check = BundleCheck::start(split.next().unwrap_or_default(), anchor)?;
    for line in split {
        check.line(line);
    }
    Ok(check.finish(ends_with_newline))
}

fn failures(bytes: &[u8], anchor: Option<B256>) -> Vec<String> {
    check(bytes, anchor).unwrap().failures.iter().map(ToString::to_string).collect()
}

/// The file with line `n` (1-based) replaced.
fn with_line(bytes: &[u8], n: usize, edit: impl FnOnce(&str) -> String) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[n - 1] = edit(&lines[n - 1]);
    format!("{}\n", lines.join("\n")).into_bytes()
}

#[test]
fn an_honest_bundle_passes_with_its_head_as_anchor_and_is_the_same_bytes_every_time() {
    let lines = lines(&history());
    let bytes = write(&lines);
    assert_eq!(bytes, write(&lines));
    let head = lines.last().unwrap().hash;
    let report = check(&bytes, Some(head)).unwrap();
    assert_eq!(report.failures, vec![]);
    assert!(report.passed() && report.anchored);
    let summary = &report.summary;
    assert_eq!(
        (summary.events, summary.payments, summary.claims_started, summary.claims_ended, summary.merges),
        (7, 3, 1, 1, 2)
    );
    assert_eq!(summary.head, Some((7, head)));
    let state = report.state.unwrap().channel;
    assert_eq!((state.nonce, state.authorized_amount), (Nonce::from(1), Amount::from(10)));
}

#[test]
fn the_layout_is_the_documented_one_byte_for_byte() {
    let lines = lines(&history());
    let bytes = write(&lines[..2]);
    let text = String::from_utf8(bytes).unwrap();
    let text: Vec<&str> = text.lines().collect();
    assert_eq!(
        text[0],
        r#"{"format":"mpe-ledger-bundle","format_version":1,"mpe_address":"0x5b1869d9a4c187f2eaa108f3062412ecf0526b24","chain_id":"1337","channel_id":"42"}"#
    );
    let client = hex::encode(address_of(&CLIENT_KEY).as_bytes());
    assert_eq!(
        text[1],
        format!(
            r#"{{"version":1,"recorded_at":"2026-12-08T00:00:01.000100Z","payload":{{"type":"channel_merged_from_chain","chain":{{"nonce":"0","sender":"0x{client}","signer":"0x{client}","recipient":"0x{}","group_id":"0x{}","value":"100","expiration":"1000"}},"block":{{"number":5,"hash":"0x{}"}}}},"prev_hash":"0x{}","hash":"{}"}}"#,
            "22".repeat(20),
            "07".repeat(32),
            "05".repeat(32),
            "00".repeat(32),
            lines[0].hash
        )
    );
    let ChannelEvent::PaymentAccepted { signature, .. } = &lines[1].payload else { panic!() };
    assert_eq!(
        text[2],
        format!(
            r#"{{"version":2,"recorded_at":"2026-12-08T00:00:02.000100Z","payload":{{"type":"payment_accepted","nonce":"0","amount":"10","signature":"0x{}"}},"prev_hash":"{}","hash":"{}"}}"#,
            hex::encode(signature.as_bytes()),
            lines[0].hash,
            lines[1].hash
        )
    );
    assert!(text[3].starts_with(r#"{"events":2,"sha256":"0x"#), "{}", text[3]);
}

#[test]
fn a_changed_amount_is_named_at_its_event_by_the_hash_the_signature_and_the_fold() {
    let bytes = write(&lines(&history()));
    // Version 3 (line 4) pays 20; make it 25: the claim of 20 then no longer matches either.
    let tampered = with_line(&bytes, 4, |line| line.replace(r#""amount":"20""#, r#""amount":"25""#));
    let named = failures(&tampered, None);
    assert!(named[0].starts_with("line 4: version 3: hash 0x"), "{named:#?}");
    assert!(named[1].starts_with("line 4: version 3: signature (forged): signed by 0x"), "{named:#?}");
    assert!(
        named.contains(&"line 5: version 4: fold: channel 42: claim of 20 but 25 is authorised".to_owned()),
        "{named:#?}"
    );
}

#[test]
fn a_signature_planted_with_the_whole_chain_recomputed_is_named_by_the_signature_check_alone() {
    let mut events = history();
    events[2] = ChannelEvent::PaymentAccepted {
        nonce: Nonce::ZERO,
        amount: Amount::from(20),
        signature: signed(&STRANGER_KEY, 0, 20),
    };
    events[3] = ChannelEvent::ClaimStarted {
        nonce: Nonce::ZERO,
        amount: Amount::from(20),
        signature: signed(&STRANGER_KEY, 0, 20),
    };
    let named = failures(&write(&lines(&events)), None);
    let stranger = address_of(&STRANGER_KEY);
    let client = address_of(&CLIENT_KEY);
    assert_eq!(
        named,
        [(4, 3), (5, 4)].map(|(line, version)| format!(
            "line {line}: version {version}: signature (forged): signed by {stranger}, not by the channel's \
             signer {client} or sender {client}"
        ))
    );
}

#[test]
fn a_dropped_event_a_reordered_pair_and_a_changed_block_hash_are_named_where_they_are() {
    let bytes = write(&lines(&history()));
    let text = std::str::from_utf8(&bytes).unwrap();
    let all: Vec<&str> = text.lines().collect();

    let dropped = format!("{}\n", [&all[..3], &all[4..]].concat().join("\n"));
    let named = failures(dropped.as_bytes(), None);
    assert!(named[0].starts_with("line 4: version 4: version 4 where version 3 was expected"), "{named:#?}");
    assert!(named[1].starts_with("line 4: version 4: prev_hash 0x"), "{named:#?}");
    assert!(named.iter().any(|n| n.starts_with("line 8: end line: it counts 7 events, the bundle holds 6")));

    let mut swapped = all.clone();
    swapped.swap(2, 3);
    let named = failures(format!("{}\n", swapped.join("\n")).as_bytes(), None);
    assert!(named[0].starts_with("line 3: version 3: version 3 where version 2 was expected"), "{named:#?}");
    assert!(
        named
            .iter()
            .any(|n| n.starts_with("line 4: version 2: fold: channel 42: authorised amount would decrease")),
        "{named:#?}"
    );

    let block = hex::encode([10u8; 32]);
    let reblocked = with_line(&bytes, 7, |line| line.replace(&block, &hex::encode([11u8; 32])));
    let named = failures(&reblocked, None);
    assert!(named[0].starts_with("line 7: version 6: hash 0x"), "{named:#?}");
}

#[test]
fn a_bundle_cut_off_and_resealed_passes_alone_and_fails_against_its_head() {
    let lines = lines(&history());
    let head = lines.last().unwrap().hash;
    let cut = write(&lines[..5]);
    assert!(check(&cut, None).unwrap().passed());
    let named = failures(&cut, Some(head));
    assert_eq!(named.len(), 1, "{named:#?}");
    assert!(named[0].starts_with("line 6: version 5: head: the last event's hash"), "{named:#?}");
    assert!(
        named[0].ends_with("events were cut off the end, or this is another history than the anchored one")
    );
    // An anchor taken earlier names where it lies.
    let named = failures(&write(&lines), Some(lines[4].hash));
    assert!(named[0].ends_with(
        "the anchor is the hash of version 5 (line 6); the bundle goes on past the anchored head"
    ));
    // Cut without resealing: the end line is missing.
    let bytes = write(&lines);
    let unsealed =
        &bytes[..bytes.len() - 1 - std::str::from_utf8(&bytes).unwrap().lines().last().unwrap().len()];
    let named = failures(unsealed, None);
    assert_eq!(named, vec!["line 8: the file ends here without an end line: it was cut off".to_owned()]);
}

#[test]
fn re_encodings_and_bytes_outside_the_hash_chain_are_refused() {
    let bytes = write(&lines(&history()));
    let spaced = with_line(&bytes, 3, |line| line.replacen(r#""version":2"#, r#""version": 2"#, 1));
    let named = failures(&spaced, None);
    assert!(named[0].starts_with("line 3: version 2: not in canonical form"), "{named:#?}");
    let upper = with_line(&bytes, 1, |line| line.replace("0x5b1869d9", "0x5B1869D9"));
    assert!(failures(&upper, None)[0].starts_with("line 1: not in canonical form"));
    // A recorded time is not hashed by the log; the end line's digest still covers it.
    let retimed = with_line(&bytes, 2, |line| line.replace("00:00:01.000100Z", "00:00:01.000200Z"));
    let named = failures(&retimed, None);
    assert_eq!(named.len(), 1, "{named:#?}");
    assert!(named[0].starts_with("line 9: end line: the SHA-256 of the lines before it is"), "{named:#?}");
}

#[test]
fn a_file_that_is_no_bundle_or_of_another_format_version_is_refused_as_a_whole() {
    for (bytes, expected) in [
        (&b""[..], "not an mpe-ledger bundle: its first line is not JSON"),
        (b"position,recorded_at\n", "not an mpe-ledger bundle: its first line is not JSON"),
        (b"{\"a\":1}\n", "not an mpe-ledger bundle: its first line has no \"format\":\"mpe-ledger-bundle\""),
        (
            b"{\"format\":\"mpe-ledger-bundle\",\"format_version\":2}\n",
            "a bundle of format version 2, but this binary reads format version 1 only",
        ),
    ] {
        assert_eq!(check(bytes, None).unwrap_err().to_string(), expected);
    }
}
