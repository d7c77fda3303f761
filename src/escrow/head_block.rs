//! The chain's head block number for the payment expiration rule, without an `eth_blockNumber`
//! per paid call (a rate-limit bill at a hosted RPC provider).
//!
//! `serve` refreshes the cache every [`HEAD_BLOCK_REFRESH`] in the background; a payment uses the
//! cached number only while it is younger than [`HEAD_BLOCK_MAX_AGE`], and otherwise reads the chain
//! itself (a dead refresher, or no refresher at all as in the library's tests, costs latency, never
//! correctness).
//!
//! **The margin.** A cached number can only be behind the chain, which would make the expiration
//! rule too lenient. So a cached number is used as `cached + HEAD_BLOCK_MARGIN`: with the cache at
//! most [`HEAD_BLOCK_MAX_AGE`] (3 s) old and Ethereum's block interval fixed at 12 s (main network and
//! its test networks), at most one block can have been added since the read, and a margin of one
//! block makes the rule at least as strict as with a fresh read. On top of that the provider's
//! `payment_expiration_threshold` (40320 blocks by default) keeps every accepted payment days away
//! from the expiration the chain enforces. A chain with blocks faster than 3 s needs a margin of
//! `ceil(3 s / block interval)`: change the constant before deploying there.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often `serve` reads the head block number in the background.
pub const HEAD_BLOCK_REFRESH: Duration = Duration::from_secs(1);
/// Oldest cached head block number a payment may use.
pub const HEAD_BLOCK_MAX_AGE: Duration = Duration::from_secs(3);
/// Blocks added to a cached head block number (module doc).
pub const HEAD_BLOCK_MARGIN: u64 = 1;

/// The last head block number read, and when.
#[derive(Debug, Default)]
pub struct HeadBlockCache {
    last: Mutex<Option<(u64, Instant)>>,
}

impl HeadBlockCache {
    /// Remembers a number just read from the chain (a lower one than known is ignored: a node
    /// behind a load balancer may lag).
    pub fn record(&self, number: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        *last = Some(match *last {
            Some((known, _)) if known > number => (known, now),
            _ => (number, now),
        });
    }

    /// The cached number plus the margin, if it is young enough to be used.
    pub fn usable(&self) -> Option<u64> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (number, at) = last?;
        (at.elapsed() < HEAD_BLOCK_MAX_AGE).then(|| number.saturating_add(HEAD_BLOCK_MARGIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_cached_number_gets_the_margin_until_it_is_too_old() {
        let cache = HeadBlockCache::default();
        assert_eq!(cache.usable(), None);
        cache.record(100);
        assert_eq!(cache.usable(), Some(100 + HEAD_BLOCK_MARGIN));
        cache.record(99);
        assert_eq!(cache.usable(), Some(100 + HEAD_BLOCK_MARGIN), "a lagging node never moves it back");
        tokio::time::advance(HEAD_BLOCK_MAX_AGE).await;
        assert_eq!(cache.usable(), None);
    }
}
