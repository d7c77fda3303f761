//! TLS for the ledger's connections, with one rustls crypto provider (ring) for the whole process.

/// Installs ring as the process's rustls crypto provider; later calls do nothing.
pub fn install_crypto_provider() {
    // ring, not aws-lc-rs: no C build beyond `cc` in CI. rustls marks ring's provider deprecated for
    // its lack of post-quantum key exchange; it remains supported, and is the choice.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    // Err means a provider is installed already, which is all this asks.
    let _ = provider.install_default();
}
