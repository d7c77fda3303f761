//! A big log, loaded with COPY: valid channel streams exactly as the ledger writes them, so that
//! `rebuild` folds them and the paid path runs against a log of realistic size.
//!
//! Each filler channel is one stream `channel/<id>` with ids from [`FIRST_CHANNEL`] (never a channel
//! of the chain): a `channel_merged_from_chain`, then `payment_accepted` events at nonce 0 with
//! amounts 1, 2, 3… (below the channel's value), hash-linked with `chain_hash` from
//! `GENESIS_HASH`, with the money columns of `Event::amount_columns`, and the stream's head in
//! `ledger.streams`. The fold does not recover signatures, so the filler's are fixed patterns.
//! Projections are left to `rebuild`.

use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use mpe_ledger::domain::event::{GENESIS_HASH, chain_hash};
use mpe_ledger::domain::{
    Amount, BlockNumber, ChainBlock, ChannelEvent, ChannelId, EthAddress, Event, GroupId, Nonce,
    OnChainChannel, Signature, StreamId,
};
use sqlx::{Connection, Executor, PgConnection};

/// The first filler channel id: far above any id the bench's MPE hands out.
pub const FIRST_CHANNEL: u64 = 1_000_000_000;
/// Events per filler stream: one merge and the payments after it.
const EVENTS_PER_CHANNEL: u64 = 100;
/// Bytes of COPY data sent at once.
const COPY_CHUNK: usize = 1 << 20;

/// Where the next filler channel starts.
pub struct Filler {
    next_channel: u64,
}

/// What one load added.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub events: u64,
    pub took: Duration,
}

impl Filler {
    pub fn new() -> Self {
        Self { next_channel: FIRST_CHANNEL }
    }

    /// Adds filler until `ledger.events` holds `target` events (nothing when it already does).
    pub async fn load_to(&mut self, owner_url: &str, target: u64) -> Loaded {
        let started = Instant::now();
        let mut conn = PgConnection::connect(owner_url).await.expect("owner connection");
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger.events").fetch_one(&mut conn).await.unwrap();
        let missing = target.saturating_sub(count as u64);
        if missing == 0 {
            return Loaded { events: 0, took: started.elapsed() };
        }
        conn.execute("BEGIN").await.expect("BEGIN");
        let streams = self.copy_events(&mut conn, missing).await;
        copy(&mut conn, STREAMS_COPY, &streams).await;
        conn.execute("COMMIT").await.expect("COMMIT");
        conn.execute("ANALYZE ledger.events").await.expect("ANALYZE");
        conn.close().await.ok();
        Loaded { events: missing, took: started.elapsed() }
    }

    /// COPYs `count` events in streams of [`EVENTS_PER_CHANNEL`]; returns the COPY text of their heads.
    async fn copy_events(&mut self, conn: &mut PgConnection, count: u64) -> Vec<u8> {
        let mut copy_in = conn.copy_in_raw(EVENTS_COPY).await.expect("COPY starts");
        let mut rows = Vec::with_capacity(2 * COPY_CHUNK);
        let mut streams = Vec::new();
        let mut left = count;
        while left > 0 {
            let in_stream = left.min(EVENTS_PER_CHANNEL);
            let id = ChannelId::from(self.next_channel);
            self.next_channel += 1;
            let stream = StreamId::Channel(id);
            let mut last_hash = GENESIS_HASH;
            for version in 1..=in_stream {
                let event = filler_event(id, version);
                let hash = chain_hash(&last_hash, &stream, version, &event);
                event_row(&mut rows, &stream, id, version, &event, &last_hash, &hash);
                last_hash = hash;
            }
            streams.extend_from_slice(
                format!("{stream}\t{in_stream}\t\\\\x{}\n", hex::encode(last_hash)).as_bytes(),
            );
            left -= in_stream;
            if rows.len() >= COPY_CHUNK {
                copy_in.send(rows.as_slice()).await.expect("COPY data is accepted");
                rows.clear();
            }
        }
        if !rows.is_empty() {
            copy_in.send(rows.as_slice()).await.expect("COPY data is accepted");
        }
        copy_in.finish().await.expect("COPY finishes");
        streams
    }
}

const EVENTS_COPY: &str = "COPY ledger.events (stream, stream_version, event_type, payload, channel_id, nonce, \
                           amount, signature, prev_hash, hash) FROM STDIN";
const STREAMS_COPY: &str = "COPY ledger.streams (stream, version, last_hash) FROM STDIN";

/// Version 1 is the merge; version v > 1 authorises v − 1 cogs.
fn filler_event(id: ChannelId, version: u64) -> Event {
    let address = |byte: u8| EthAddress(Address::repeat_byte(byte));
    if version == 1 {
        return Event::Channel(ChannelEvent::ChannelMergedFromChain {
            chain: OnChainChannel {
                nonce: Nonce::ZERO,
                sender: address(0x11),
                signer: address(0x11),
                recipient: address(0x22),
                group_id: GroupId([7; 32]),
                value: Amount::from(1_000_000_000_000),
                expiration: BlockNumber::from(1_000_000_000),
            },
            block: Some(ChainBlock { number: 1, hash: B256::repeat_byte(0x42) }),
        });
    }
    let mut signature = [0xab; 65];
    signature[..8].copy_from_slice(&id.0.to::<u64>().to_be_bytes());
    signature[8..16].copy_from_slice(&version.to_be_bytes());
    signature[64] = 27;
    Event::Channel(ChannelEvent::PaymentAccepted {
        nonce: Nonce::ZERO,
        amount: Amount::from(version - 1),
        signature: Signature(signature),
    })
}

/// One row of `ledger.events` in COPY text format, as `store::postgres::log::append` writes it.
fn event_row(
    out: &mut Vec<u8>,
    stream: &StreamId,
    id: ChannelId,
    version: u64,
    event: &Event,
    prev_hash: &[u8; 32],
    hash: &[u8; 32],
) {
    let (nonce, amount, signature) = event.amount_columns();
    let payload = escape(&event.to_json().to_string());
    let or_null = |value: Option<String>| value.unwrap_or_else(|| "\\N".to_owned());
    let line = format!(
        "{stream}\t{version}\t{}\t{payload}\t{id}\t{}\t{}\t{}\t\\\\x{}\t\\\\x{}\n",
        event.event_type(),
        or_null(nonce.map(|n| n.to_string())),
        or_null(amount.map(|a| a.to_string())),
        or_null(signature.map(|s| format!("\\\\x{}", hex::encode(s.as_bytes())))),
        hex::encode(prev_hash),
        hex::encode(hash),
    );
    out.extend_from_slice(line.as_bytes());
}

/// COPY text escaping (JSON of these events has none of these, but a payload must never break a row).
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r")
}

async fn copy(conn: &mut PgConnection, statement: &str, data: &[u8]) {
    let mut copy_in = conn.copy_in_raw(statement).await.expect("COPY starts");
    for chunk in data.chunks(COPY_CHUNK) {
        copy_in.send(chunk).await.expect("COPY data is accepted");
    }
    copy_in.finish().await.expect("COPY finishes");
}
