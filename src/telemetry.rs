//! Logs (tracing to stderr, filtered by `RUST_LOG`) and the Prometheus registry behind `/metrics`.

use std::sync::Arc;

use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

use crate::store::retry::StoreMetrics;

/// Installs the global subscriber once; later calls are ignored (tests call it freely).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Every metric of the process.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub store: Arc<StoreMetrics>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let store = Arc::new(StoreMetrics::new(&registry));
        Self { registry, store }
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(buffer).expect("Prometheus text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
