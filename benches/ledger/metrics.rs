//! Figures read from outside the load: Prometheus text (serve's `/metrics`, or an in-process
//! registry) and a process's peak resident memory.

/// Transactions retried after a serialization failure or deadlock (every operation label).
pub const RETRIES: &str = "mpe_ledger_serialization_retries_total";
/// Transactions abandoned after the last attempt (every operation label).
pub const RETRIES_EXHAUSTED: &str = "mpe_ledger_serialization_retries_exhausted_total";

/// The sum over every label set of the samples of `name` in a Prometheus text exposition.
pub fn sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            line.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// `/metrics` of the serve on `port`, or an empty text when it does not answer.
pub async fn scrape(port: u16) -> String {
    match crate::common::ledger::http_get(port, "/metrics").await {
        Ok((200, body)) => body,
        _ => String::new(),
    }
}
