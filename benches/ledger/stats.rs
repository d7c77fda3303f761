//! What a timed phase records: outcomes and latencies of the calls inside the measured window.
//!
//! A phase runs `warm-up + window`; every call counts towards its totals (the metrics deltas of
//! `serve` cover the whole phase), but only calls that started inside the window count towards
//! throughput, latency and the error table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One client's (or the whole phase's) record.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub ok_in_window: u64,
    pub ok_total: u64,
    /// Errors inside the window, by gRPC status (or `transport`, `http 502`…).
    pub errors: BTreeMap<String, u64>,
    /// Errors during the whole phase, warm-up included.
    pub errors_total: u64,
    /// Clients that used up their presigned payments before the end.
    pub exhausted: u64,
    latencies_us: Vec<u32>,
}

impl Record {
    pub fn ok(&mut self, started: Instant, latency: Duration, window_start: Instant) {
        self.ok_total += 1;
        if started >= window_start {
            self.ok_in_window += 1;
            self.latencies_us.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        }
    }

    pub fn error(&mut self, started: Instant, kind: String, window_start: Instant) {
        self.errors_total += 1;
        if started >= window_start {
            *self.errors.entry(kind).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: Record) {
        self.ok_in_window += other.ok_in_window;
        self.ok_total += other.ok_total;
        self.errors_total += other.errors_total;
        self.exhausted += other.exhausted;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
    }

    /// The phase's summary over a window of `window`.
    pub fn summary(mut self, window: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        let pick = |q: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return f64::NAN;
            }
            let rank =
                ((q * self.latencies_us.len() as f64).ceil() as usize).clamp(1, self.latencies_us.len());
            f64::from(self.latencies_us[rank - 1]) / 1000.0
        };
        Summary {
            per_second: self.ok_in_window as f64 / window.as_secs_f64(),
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            p999_ms: pick(0.999),
            ok_total: self.ok_total,
            errors: self.errors,
            errors_total: self.errors_total,
            exhausted: self.exhausted,
        }
    }
}

/// A phase in figures.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Successful calls (or commits) per second in the window.
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub ok_total: u64,
    pub errors: BTreeMap<String, u64>,
    pub errors_total: u64,
    pub exhausted: u64,
}

impl Summary {
    /// `13 INTERNAL: 4, 9 FAILED_PRECONDITION: 1`, or `none`.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "none".to_owned();
        }
        self.errors
            .iter()
            .map(|(kind, n)| format!("{} {kind}: {n}", status_name(kind)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The gRPC name of a status code given as text (the seed's 1000 is `INCORRECT_NONCE`).
fn status_name(code: &str) -> &'static str {
    match code {
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "16" => "UNAUTHENTICATED",
        "1000" => "INCORRECT_NONCE",
        _ => "",
    }
}
