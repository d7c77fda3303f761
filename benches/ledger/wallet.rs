//! The bench's clients on a real chain: one MPE channel per client, opened up front on ganache, and
//! the payments each client will send, signed before a timed phase starts.
//!
//! What this module keeps true:
//! - The ledger accepts a payment only when it adds exactly the price to the channel's authorised
//!   amount, so each channel has one counter `k` (amount = price × k) that moves on across every
//!   phase, and only on an accepted payment.
//! - After a refused or failed payment the counter is re-read from the ledger's projection
//!   ([`Presigned::resync`]), so one lost answer never desynchronises a client for the rest of a run.
//! - Channels are opened from several sender accounts at once (each sender's transactions stay
//!   sequential, so their nonces never collide); the deployer's mints go one at a time.

use std::time::{Duration, Instant};

use alloy::primitives::B256;
use mpe_ledger::domain::signature::{payment_message, sign};
use mpe_ledger::domain::{Amount, ChannelId, EthAddress, Nonce, Signature};
use sqlx::PgPool;

use crate::common::ganache::{Ganache, Mpe};

/// Every channel's value: far more than any run spends at one cog a call.
pub const CHANNEL_VALUE: u64 = 1_000_000_000_000;
/// Blocks until the channels expire: they never do during a run.
const EXPIRY_BLOCKS: u64 = 1_000_000_000;
/// Accounts 1..=SENDERS open channels; account 0 deploys, the last one is the provider.
pub const SENDERS: usize = 8;
pub const GROUP_ID: [u8; 32] = [7; 32];
/// How long one openChannel may wait for its receipt before it is sent again.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// One client's channel and its counter.
#[derive(Debug, Clone)]
struct Slot {
    id: ChannelId,
    key: B256,
    /// The next `k`: the ledger has accepted `price × (k − 1)`.
    next: u64,
}

/// Every channel of the run, in client order.
pub struct Wallet {
    mpe: EthAddress,
    price: u64,
    slots: Vec<Slot>,
}

/// The payments one client may send in a phase: `price × k` for `k` in `first..first + len`.
pub struct Presigned {
    pub channel: ChannelId,
    price: u64,
    first: u64,
    next: u64,
    signatures: Vec<Signature>,
}

impl Presigned {
    /// The next payment (amount, signature), or `None` when the phase used them all up.
    pub fn current(&self) -> Option<(u64, &Signature)> {
        let index = usize::try_from(self.next.checked_sub(self.first)?).ok()?;
        self.signatures.get(index).map(|signature| (self.price * self.next, signature))
    }

    /// The payment was accepted.
    pub fn advance(&mut self) {
        self.next += 1;
    }

    /// Re-reads the authorised amount after an error: the next payment is the one after it.
    pub async fn resync(&mut self, pool: &PgPool) {
        let authorised: Option<String> = sqlx::query_scalar(
            "SELECT authorized_amount::text FROM ledger.channels WHERE channel_id = $1::text::numeric",
        )
        .bind(self.channel.to_string())
        .fetch_optional(pool)
        .await
        .unwrap_or(None);
        if let Some(amount) = authorised.and_then(|text| text.parse::<u64>().ok()) {
            self.next = amount / self.price + 1;
        }
    }
}

impl Wallet {
    /// Opens `count` channels on `mpe` to `provider`, each signed by its sender.
    /// Returns the wallet and how long the opening took.
    pub async fn open(
        ganache: &Ganache,
        mpe: &Mpe<'_>,
        provider: EthAddress,
        price: u64,
        count: usize,
    ) -> (Self, Duration) {
        let started = Instant::now();
        let senders: Vec<_> = (1..=SENDERS).map(|i| ganache.account(i).clone()).collect();
        let expiration = ganache.block_number().await + EXPIRY_BLOCKS;
        let per_sender = count.div_ceil(SENDERS) as u64;
        // Minting is sent from the deployer: one after the other, or its nonces collide.
        for sender in senders.iter().take(count) {
            // Two channels of headroom: a retried openChannel may have opened one already.
            mpe.mint_and_deposit(sender, CHANNEL_VALUE * (per_sender + 2)).await;
        }
        let opened = futures::future::join_all(senders.iter().enumerate().map(|(s, sender)| async move {
            let mine: Vec<usize> = (s..count).step_by(SENDERS).collect();
            if mine.is_empty() {
                return Vec::new();
            }
            let mut ids = Vec::new();
            for index in mine {
                let open = || {
                    mpe.open_channel(sender, sender.address, provider.0, GROUP_ID, CHANNEL_VALUE, expiration)
                };
                // A receipt that never arrives (seen once under heavy load) costs one retry, not the run.
                let id = match tokio::time::timeout(RECEIPT_TIMEOUT, open()).await {
                    Ok(id) => id,
                    Err(_) => {
                        eprintln!(
                            "openChannel from {} got no receipt in {RECEIPT_TIMEOUT:?}; retrying",
                            sender.address
                        );
                        open().await
                    }
                };
                ids.push((index, Slot { id, key: sender.key, next: 1 }));
            }
            ids
        }))
        .await;
        let mut slots: Vec<(usize, Slot)> = opened.into_iter().flatten().collect();
        slots.sort_by_key(|(index, _)| *index);
        let wallet =
            Self { mpe: mpe.eth_address(), price, slots: slots.into_iter().map(|(_, s)| s).collect() };
        (wallet, started.elapsed())
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Signs `per_client` payments for each of the first `clients` channels, on every core (the
    /// work is split over every (channel, k) pair, so one client's payments use every core too).
    pub fn presign(&self, clients: usize, per_client: usize) -> Vec<Presigned> {
        assert!(clients <= self.slots.len(), "{clients} clients but {} channels", self.slots.len());
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let jobs: Vec<(usize, u64)> = self.slots[..clients]
            .iter()
            .enumerate()
            .flat_map(|(index, slot)| (slot.next..slot.next + per_client as u64).map(move |k| (index, k)))
            .collect();
        let chunk = jobs.len().div_ceil(threads).max(1);
        let signed: Vec<Signature> = std::thread::scope(|scope| {
            let workers: Vec<_> = jobs
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter().map(|&(index, k)| self.sign(&self.slots[index], k)).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("signing does not panic")).collect()
        });
        let mut signed = signed.into_iter();
        self.slots[..clients]
            .iter()
            .map(|slot| Presigned {
                channel: slot.id,
                price: self.price,
                first: slot.next,
                next: slot.next,
                signatures: signed.by_ref().take(per_client).collect(),
            })
            .collect()
    }

    fn sign(&self, slot: &Slot, k: u64) -> Signature {
        let message = payment_message(&self.mpe, slot.id, Nonce::ZERO, Amount::from(self.price * k));
        sign(&message, &slot.key.0)
    }

    /// Takes the counters back after a phase.
    pub fn settle(&mut self, used: Vec<Presigned>) {
        for presigned in used {
            let slot =
                self.slots.iter_mut().find(|s| s.id == presigned.channel).expect("a channel of this wallet");
            slot.next = presigned.next;
        }
    }
}
