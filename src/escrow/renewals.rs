//! The leases of the paid calls in flight, kept renewed by **one task for the whole process**
//! rather than one per call: a call registers its lease when its payment starts ([`Renewals::hold`])
//! and the returned [`Renewing`] takes it off the list when dropped. Registering is a map insert
//! under a mutex; nothing is spawned and no timer is armed per call, which the payment path under
//! load cannot afford (`cargo bench --bench ledger`).
//!
//! What this module keeps true:
//! - **A registered lease is renewed every `every`** (`lease_ttl / 3`, at least
//!   `MIN_RENEWAL_INTERVAL`), late by at most one tick (`every / TICKS_PER_INTERVAL`), for as long
//!   as its [`Renewing`] lives, whatever the call is doing meanwhile: waiting for its service, a
//!   reply stalled by a slow client, a commit retrying.
//! - **A lease found lost** (taken over after it expired) is logged once and no longer renewed: its
//!   commit will be refused. A renewal that failed (the database is away) is tried again at the
//!   next interval, as before.
//! - **Nothing is reported about a lease no longer registered**: a renewal that was already running
//!   when its call ended (the lease released by the commit) finds the lease gone, and says nothing.
//! - Renewals due together run concurrently (at most one per call in flight, which
//!   `max_concurrent_calls` bounds), so one slow round trip does not delay the others.
//! - The task starts with the first registration and ends when its [`Renewals`] is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::leases::{Lease, PgLeases};

/// How many ticks of the renewal task fit in one renewal interval: how late a renewal may be, as a
/// fraction of the interval.
pub const TICKS_PER_INTERVAL: u32 = 4;

/// The registry of leases to keep renewed, shared by the payment service.
pub struct Renewals {
    shared: Arc<Shared>,
}

struct Shared {
    leases: PgLeases,
    ttl: Duration,
    every: Duration,
    held: Mutex<Held>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Held {
    /// Registered leases and when each is next due.
    leases: HashMap<u64, (Lease, Instant)>,
    /// Whether the renewal task runs.
    task: bool,
}

/// A registered lease: renewed until this is dropped.
#[must_use = "the lease is renewed only while this lives"]
pub struct Renewing {
    id: u64,
    shared: Weak<Shared>,
}

impl Renewals {
    /// Renews leases of lifetime `ttl` every `every`, through `leases`.
    pub fn new(leases: PgLeases, ttl: Duration, every: Duration) -> Self {
        let shared =
            Shared { leases, ttl, every, held: Mutex::new(Held::default()), next_id: AtomicU64::new(0) };
        Self { shared: Arc::new(shared) }
    }

    /// Keeps `lease` renewed until the returned handle is dropped. Must be called inside a Tokio
    /// runtime (the first call starts the renewal task).
    pub fn hold(&self, lease: &Lease) -> Renewing {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let due = Instant::now() + self.shared.every;
        let start_task = {
            let mut held = self.shared.lock();
            held.leases.insert(id, (lease.clone(), due));
            !std::mem::replace(&mut held.task, true)
        };
        if start_task {
            tokio::spawn(run(Arc::downgrade(&self.shared)));
        }
        Renewing { id, shared: Arc::downgrade(&self.shared) }
    }

    /// Leases registered now (for tests and metrics).
    pub fn held(&self) -> usize {
        self.shared.lock().leases.len()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The leases due at `now`, each moved to its next due time.
    fn due(&self, now: Instant) -> Vec<(u64, Lease)> {
        let mut held = self.lock();
        let mut due = Vec::new();
        for (id, (lease, at)) in held.leases.iter_mut() {
            if *at <= now {
                *at = now + self.every;
                due.push((*id, lease.clone()));
            }
        }
        due
    }

    async fn renew(&self, id: u64, lease: Lease) {
        let renewed = self.leases.renew(&lease, self.ttl).await;
        let still_held = self.lock().leases.contains_key(&id);
        if !still_held {
            return;
        }
        match renewed {
            Ok(true) => tracing::debug!(channel = %lease.channel_id, "lease renewed"),
            Ok(false) => {
                self.lock().leases.remove(&id);
                tracing::warn!(channel = %lease.channel_id, "lease lost: this payment will not be recorded");
            }
            Err(error) => {
                tracing::warn!(channel = %lease.channel_id, %error, "lease renewal failed; trying again")
            }
        }
    }
}

/// The renewal task: every tick, renews what is due, until the registry is gone.
async fn run(shared: Weak<Shared>) {
    let tick = match shared.upgrade() {
        Some(shared) => (shared.every / TICKS_PER_INTERVAL).max(Duration::from_millis(1)),
        None => return,
    };
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let due = shared.due(Instant::now());
        if !due.is_empty() {
            futures::future::join_all(due.into_iter().map(|(id, lease)| shared.renew(id, lease))).await;
        }
    }
}

impl Drop for Renewing {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().leases.remove(&self.id);
        }
    }
}
