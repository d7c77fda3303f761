//! Clients paying through a running `serve` while its database fails under them, and the check of
//! what they were told against what the log holds afterwards.
//!
//! [`PayingClients`] runs one task per channel, each making one paid call after the other over its
//! own HTTP/2 connection and keeping the record a real client keeps: which payments were
//! acknowledged (status 0), and every answer with its time. A failed call leaves the client not
//! knowing whether its payment was recorded (the ledger may have recorded it and lost the answer).
//! Like a real client, the next call re-sends the same signed payment: if the ledger already holds
//! it, the income check refuses it (the same amount again is no income), so the client knows it
//! was recorded, and moves on to the next amount. Nothing here guesses: each outcome is read from
//! an answer.
//!
//! [`Tally::of`] then compares those records with the log's `payment_accepted` events, counted per
//! (channel, nonce, amount).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpe_ledger::domain::{ChannelId, EthAddress};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use super::ganache::Account;
use super::gateway::{OK, RawClient, UNAUTHENTICATED, payment_metadata_of};
use super::upstream::ECHO;

/// The longest a client waits for one answer; a payment commit retries for at most its lease's
/// lifetime (30 s by default), so an answer always comes well before.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A client's pause after a failed call before it re-sends.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The status noted for a call that got no answer within [`CALL_TIMEOUT`].
pub const NO_ANSWER: u32 = u32::MAX;

/// One paid call as its client saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub amount: u64,
    pub started: Instant,
    pub ended: Instant,
    pub status: u32,
    pub message: String,
}

/// One client's record of its channel (nonce 0 throughout).
#[derive(Debug)]
pub struct ChannelHistory {
    pub channel: ChannelId,
    pub calls: Vec<Call>,
    /// Amounts answered with status 0.
    pub acknowledged: Vec<u64>,
    /// Amounts whose call failed and whose re-send was refused as already paid: recorded, though
    /// the client was never told so.
    pub recorded_unacknowledged: Vec<u64>,
    /// Amounts whose failure said "nothing was recorded" and whose re-send found them recorded.
    pub contradicted: Vec<u64>,
    /// Amounts refused as already paid with no failed call before: the client's count is off.
    pub refused_unexpectedly: Vec<u64>,
}

/// The clients' tasks; [`Self::stop`] ends them after their current call.
pub struct PayingClients {
    stop: Arc<AtomicBool>,
    last_success: Arc<Mutex<Vec<Option<Instant>>>>,
    tasks: Vec<JoinHandle<ChannelHistory>>,
}

impl PayingClients {
    /// One client per channel, paying `price` per call to `serve` at `address`, signed by `payer`
    /// for the contract at `mpe`.
    pub fn start(
        address: SocketAddr,
        mpe: EthAddress,
        payer: &Account,
        channels: &[ChannelId],
        price: u64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let last_success = Arc::new(Mutex::new(vec![None; channels.len()]));
        let tasks = channels
            .iter()
            .enumerate()
            .map(|(index, &channel)| {
                let client = Client {
                    address,
                    mpe,
                    payer: payer.clone(),
                    channel,
                    price,
                    stop: stop.clone(),
                    last_success: last_success.clone(),
                    index,
                };
                tokio::spawn(client.run())
            })
            .collect();
        Self { stop, last_success, tasks }
    }

    /// Waits until every client has had a call answered with status 0 that ended after `instant`;
    /// false after `timeout`.
    pub async fn wait_all_paid_after(&self, instant: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.last_success.lock().unwrap().iter().all(|last| last.is_some_and(|t| t > instant));
            if all {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every client finishes its current call and stops; their records.
    pub async fn stop(self) -> Vec<ChannelHistory> {
        self.stop.store(true, Ordering::SeqCst);
        let mut histories = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            histories.push(task.await.expect("a paying client panicked"));
        }
        histories
    }
}

struct Client {
    address: SocketAddr,
    mpe: EthAddress,
    payer: Account,
    channel: ChannelId,
    price: u64,
    stop: Arc<AtomicBool>,
    last_success: Arc<Mutex<Vec<Option<Instant>>>>,
    index: usize,
}

impl Client {
    async fn run(self) -> ChannelHistory {
        let mut history = ChannelHistory {
            channel: self.channel,
            calls: Vec::new(),
            acknowledged: Vec::new(),
            recorded_unacknowledged: Vec::new(),
            contradicted: Vec::new(),
            refused_unexpectedly: Vec::new(),
        };
        let mut connection = RawClient::connect(self.address).await;
        let mut paid = 0;
        // The answer of the last failed call of `paid + price`, while it is being re-sent.
        let mut failure: Option<String> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let amount = paid + self.price;
            let metadata = payment_metadata_of(self.mpe, &self.payer, self.channel, 0, amount);
            let started = Instant::now();
            let answer =
                tokio::time::timeout(CALL_TIMEOUT, connection.call(ECHO, &metadata, &[b"paid"])).await;
            let (status, message) = match answer {
                Ok(reply) => (reply.status, reply.message),
                Err(_) => {
                    connection = RawClient::connect(self.address).await;
                    (NO_ANSWER, format!("no answer within {CALL_TIMEOUT:?}"))
                }
            };
            let ended = Instant::now();
            let already_paid = status == UNAUTHENTICATED && message.starts_with("income");
            history.calls.push(Call { amount, started, ended, status, message: message.clone() });
            if status == OK {
                history.acknowledged.push(amount);
                self.last_success.lock().unwrap()[self.index] = Some(ended);
            } else if already_paid {
                match failure.as_deref() {
                    Some(earlier) => {
                        history.recorded_unacknowledged.push(amount);
                        if earlier.contains("nothing was recorded") {
                            history.contradicted.push(amount);
                        }
                    }
                    None => history.refused_unexpectedly.push(amount),
                }
            } else {
                failure = Some(message);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            paid = amount;
            failure = None;
        }
        history
    }
}

/// Every `payment_accepted` event of the log: (channel, nonce, amount) and how often it is there.
pub async fn recorded_payments(pool: &PgPool) -> BTreeMap<(String, u64, u64), i64> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT channel_id::text, nonce::text, amount::text, count(*) FROM ledger.events
         WHERE event_type = 'payment_accepted' GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await
    .expect("read the payments of the log");
    rows.into_iter()
        .map(|(channel, nonce, amount, count)| {
            ((channel, nonce.parse().expect("a u64 nonce"), amount.parse().expect("a u64 amount")), count)
        })
        .collect()
}

/// The clients' records against the log.
#[derive(Debug)]
pub struct Tally {
    pub acknowledged: usize,
    /// Payment events of the clients' channels in the log.
    pub found: usize,
    /// Acknowledged payments missing from the log.
    pub lost: Vec<(ChannelId, u64)>,
    /// (channel, nonce, amount) recorded more than once.
    pub duplicates: Vec<((String, u64, u64), i64)>,
    /// Recorded though their call failed; the client learnt it by re-sending.
    pub recorded_unacknowledged: usize,
    /// Recorded, never acknowledged, never re-sent (the last call of a client, cut by the stop):
    /// allowed, listed for the report.
    pub recorded_unknown_to_client: Vec<(ChannelId, u64)>,
    pub contradicted: Vec<(ChannelId, u64)>,
    pub refused_unexpectedly: Vec<(ChannelId, u64)>,
}

impl Tally {
    pub fn of(histories: &[ChannelHistory], recorded: &BTreeMap<(String, u64, u64), i64>) -> Self {
        let channels: HashSet<String> = histories.iter().map(|h| h.channel.to_string()).collect();
        let mine = |((channel, _, _), _): &(&(String, u64, u64), &i64)| channels.contains(channel);
        let pairs = |pick: fn(&ChannelHistory) -> &Vec<u64>| -> Vec<(ChannelId, u64)> {
            histories.iter().flat_map(|h| pick(h).iter().map(|&amount| (h.channel, amount))).collect()
        };
        let in_log =
            |channel: ChannelId, amount: u64| recorded.contains_key(&(channel.to_string(), 0, amount));
        let acknowledged = pairs(|h| &h.acknowledged);
        let unacknowledged = pairs(|h| &h.recorded_unacknowledged);
        let known: HashSet<(String, u64)> = acknowledged
            .iter()
            .chain(&unacknowledged)
            .map(|(channel, amount)| (channel.to_string(), *amount))
            .collect();
        Self {
            acknowledged: acknowledged.len(),
            found: recorded.iter().filter(mine).map(|(_, count)| *count as usize).sum(),
            lost: acknowledged.iter().copied().filter(|&(c, a)| !in_log(c, a)).collect(),
            duplicates: recorded
                .iter()
                .filter(mine)
                .filter(|(_, count)| **count > 1)
                .map(|(k, c)| (k.clone(), *c))
                .collect(),
            recorded_unacknowledged: unacknowledged.len(),
            recorded_unknown_to_client: histories
                .iter()
                .flat_map(|h| {
                    recorded
                        .keys()
                        .filter(|(channel, _, amount)| {
                            *channel == h.channel.to_string() && !known.contains(&(channel.clone(), *amount))
                        })
                        .map(|(_, _, amount)| (h.channel, *amount))
                        .collect::<Vec<_>>()
                })
                .collect(),
            contradicted: pairs(|h| &h.contradicted),
            refused_unexpectedly: pairs(|h| &h.refused_unexpectedly),
        }
    }
}

/// What the clients were answered between `from` and `to` (calls that ended in that span, by
/// status and message) and how many calls ended with status 0 there.
pub fn answers_between(
    histories: &[ChannelHistory],
    from: Instant,
    to: Instant,
) -> (usize, BTreeMap<(u32, String), usize>) {
    let mut failures = BTreeMap::new();
    let mut ok = 0;
    for call in histories.iter().flat_map(|h| &h.calls).filter(|c| c.ended >= from && c.ended <= to) {
        if call.status == OK {
            ok += 1;
        } else {
            *failures.entry((call.status, call.message.clone())).or_insert(0) += 1;
        }
    }
    (ok, failures)
}

/// The first call answered with status 0 that ended after `instant`, over all clients.
pub fn first_paid_after(histories: &[ChannelHistory], instant: Instant) -> Option<Instant> {
    histories
        .iter()
        .flat_map(|h| &h.calls)
        .filter(|c| c.status == OK && c.ended > instant)
        .map(|c| c.ended)
        .min()
}

/// The moment by which every client had a call answered with status 0 ending after `instant`.
pub fn all_paid_after(histories: &[ChannelHistory], instant: Instant) -> Option<Instant> {
    histories
        .iter()
        .map(|h| h.calls.iter().filter(|c| c.status == OK && c.ended > instant).map(|c| c.ended).min())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}
