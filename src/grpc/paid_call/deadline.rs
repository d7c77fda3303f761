//! A paid call's deadline: the earlier of the client's `grpc-timeout` and the ledger's longest call
//! duration (`max_call_seconds`), fixed when the call arrives. The time left is what the upstream
//! is told in its own `grpc-timeout`, so the service can stop working for a caller who stopped
//! waiting. Pure: the clock is passed in.
//!
//! `grpc-timeout` is 1 to 8 ASCII digits followed by a unit: `H` hours, `M` minutes, `S` seconds,
//! `m` milliseconds, `u` microseconds, `n` nanoseconds (the gRPC HTTP/2 protocol). Anything else is
//! refused (INVALID_ARGUMENT) rather than ignored: a client that sent a deadline expects it kept.

use std::time::Duration;

use tokio::time::Instant;

use super::error::{DeadlineCause, PaidCallError};

/// Most digits of a `grpc-timeout` value.
const TIMEOUT_DIGITS_MAX: usize = 8;

/// When the call must be over, and which limit set that time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline {
    pub at: Instant,
    pub cause: DeadlineCause,
}

impl CallDeadline {
    /// The deadline of a call arriving `now` with `grpc_timeout` (the header's raw value, if any),
    /// under the ledger's `max_call`.
    pub fn of(now: Instant, grpc_timeout: Option<&[u8]>, max_call: Duration) -> Result<Self, PaidCallError> {
        let ledger = CallDeadline {
            at: now + max_call,
            cause: DeadlineCause::Ledger { max_seconds: max_call.as_secs() },
        };
        let Some(raw) = grpc_timeout else { return Ok(ledger) };
        let timeout = parse_grpc_timeout(raw).ok_or_else(|| PaidCallError::MalformedTimeout {
            value: String::from_utf8_lossy(raw).into_owned(),
        })?;
        // A timeout too large for the clock is no limit at all.
        match now.checked_add(timeout) {
            Some(at) if at < ledger.at => Ok(CallDeadline { at, cause: DeadlineCause::Client }),
            _ => Ok(ledger),
        }
    }

    /// The error of a call cut at this deadline.
    pub fn exceeded(&self) -> PaidCallError {
        PaidCallError::DeadlineExceeded { cause: self.cause }
    }

    /// The `grpc-timeout` the upstream gets at `now`: the time left, or `None` when none is left.
    pub fn remaining_header(&self, now: Instant) -> Option<String> {
        let left = self.at.checked_duration_since(now).filter(|left| !left.is_zero())?;
        Some(encode_grpc_timeout(left))
    }
}

/// A `grpc-timeout` value, or `None` when it is malformed.
pub fn parse_grpc_timeout(raw: &[u8]) -> Option<Duration> {
    let (&unit, digits) = raw.split_last()?;
    if digits.is_empty() || digits.len() > TIMEOUT_DIGITS_MAX || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(value * 3600),
        b'M' => Duration::from_secs(value * 60),
        b'S' => Duration::from_secs(value),
        b'm' => Duration::from_millis(value),
        b'u' => Duration::from_micros(value),
        b'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

/// `left` as a `grpc-timeout` value, rounded up to the finest unit that fits in 8 digits (so the
/// upstream never gets less time than is left; a deadline is at most one unit late upstream).
pub fn encode_grpc_timeout(left: Duration) -> String {
    const LIMIT: u128 = 100_000_000;
    let nanos = left.as_nanos();
    for (unit, per) in [('n', 1u128), ('u', 1_000), ('m', 1_000_000), ('S', 1_000_000_000)] {
        let value = nanos.div_ceil(per);
        if value < LIMIT {
            return format!("{value}{unit}");
        }
    }
    let minutes = nanos.div_ceil(60_000_000_000);
    if minutes < LIMIT {
        return format!("{minutes}M");
    }
    format!("{}H", nanos.div_ceil(3_600_000_000_000).min(LIMIT - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_CALL: Duration = Duration::from_secs(300);

    #[test]
    fn every_unit_of_grpc_timeout_is_read() {
        for (raw, expected) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("450m", Duration::from_millis(450)),
            ("7u", Duration::from_micros(7)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            assert_eq!(parse_grpc_timeout(raw.as_bytes()), Some(expected), "{raw}");
        }
    }

    #[test]
    fn malformed_grpc_timeouts_are_refused() {
        for raw in ["", "S", "10", "123456789S", "-1S", "1.5S", "10s", "1 S", "٣S"] {
            assert_eq!(parse_grpc_timeout(raw.as_bytes()), None, "{raw:?}");
        }
        let error = CallDeadline::of(Instant::now(), Some(b"10x"), MAX_CALL).unwrap_err();
        assert_eq!(error.to_string(), "malformed grpc-timeout \"10x\"");
    }

    #[test]
    fn the_earlier_limit_sets_the_deadline() {
        let now = Instant::now();
        let client = CallDeadline::of(now, Some(b"2S"), MAX_CALL).unwrap();
        assert_eq!((client.at, client.cause), (now + Duration::from_secs(2), DeadlineCause::Client));
        let ledger = CallDeadline::of(now, Some(b"10M"), MAX_CALL).unwrap();
        assert_eq!(ledger.at, now + MAX_CALL);
        assert_eq!(ledger.cause, DeadlineCause::Ledger { max_seconds: 300 });
        assert_eq!(CallDeadline::of(now, None, MAX_CALL).unwrap(), ledger);
        assert_eq!(CallDeadline::of(now, Some(b"99999999H"), MAX_CALL).unwrap(), ledger);
    }

    #[test]
    fn the_upstream_gets_the_time_left_never_less() {
        let now = Instant::now();
        let deadline = CallDeadline::of(now, Some(b"1500m"), MAX_CALL).unwrap();
        let header = deadline.remaining_header(now + Duration::from_millis(400)).unwrap();
        assert_eq!(parse_grpc_timeout(header.as_bytes()), Some(Duration::from_millis(1100)));
        assert_eq!(deadline.remaining_header(now + Duration::from_secs(2)), None);
        for left in [Duration::from_nanos(1), Duration::from_millis(1234), Duration::from_secs(86_400 * 400)]
        {
            let encoded = encode_grpc_timeout(left);
            let decoded = parse_grpc_timeout(encoded.as_bytes()).unwrap();
            assert!(decoded >= left, "{encoded} < {left:?}");
        }
    }
}
