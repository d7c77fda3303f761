//! TLS for the ledger's connections, with one rustls crypto provider (ring) for the whole process.
//!
//! Two sides:
//! - **Client** ([`client_config`]): what the ledger trusts when it connects out (the Ethereum node, the
//!   upstream service). The system's root certificates (`rustls-native-certs`; certificates that do
//!   not parse are skipped and counted in the log, never fatal) plus, when given, every certificate
//!   of one PEM CA file. A CA file that cannot be read or holds no certificate is an error naming the
//!   file; it is never silently ignored. The ALPN list is the caller's: reqwest is given `h2` and
//!   `http/1.1`; hyper-rustls's connector (the upstream) must get none, it sets `h2` itself and
//!   panics on a configuration that has some already.
//! - **Server** ([`ServerCert`], [`server_config`]): the public port's certificate chain and key, read
//!   from PEM files (`tls_cert_file`, `tls_key_file`), offered with ALPN `h2` and `http/1.1`.
//!
//! What the server side keeps true:
//! - The certificate in use always has a key that matches it: a chain and key are checked together
//!   ([`rustls::sign::CertifiedKey::from_der`] compares the key's public half with the leaf's) before
//!   they replace anything.
//! - [`ServerCert::reload`] swaps the certificate for new handshakes only. Connections already
//!   established keep their session (TLS never re-reads a certificate after its handshake), so a
//!   reload drops nothing. A reload that fails (unreadable file, no key, key not matching) changes
//!   nothing: the previous certificate stays in use and the error names the setting and the file.
//! - Errors name the setting (`tls_cert_file`, `tls_key_file`) and the file; they never contain key
//!   material.
//!
//! Decided here (nothing else settled it): client certificates are not requested (the clients pay
//! with signatures, not with TLS identities); the log identifies a loaded certificate by the first
//! 16 hex digits of the SHA-256 of its leaf, so an operator can see that a reload took effect.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// What the public port offers, in order of preference: gRPC needs HTTP/2; `/healthz` and
/// `/metrics` are also served over HTTP/1.1.
pub const SERVER_ALPN: [&[u8]; 2] = [ALPN_H2, ALPN_HTTP1];
/// Hex digits of a certificate's SHA-256 shown in the log.
const FINGERPRINT_HEX_DIGITS: usize = 16;

/// Why a TLS configuration could not be built. `setting` is the configuration key the file came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA file of the client side (the caller names its setting).
    // The causes below are part of the message and not `#[source]`: the binary prints an error
    // with its sources, which would say them twice.
    #[error("cannot read CA file {}: {cause}", path.display())]
    CaFileUnreadable { path: PathBuf, cause: pem::Error },
    #[error("CA file {} holds no PEM certificate", path.display())]
    CaFileWithoutCertificate { path: PathBuf },
    #[error("a certificate in CA file {} cannot be trusted as a root: {reason}", path.display())]
    CaCertificateInvalid { path: PathBuf, reason: rustls::Error },
    /// `tls_cert_file` or `tls_key_file`.
    #[error("invalid setting {setting}: cannot read {}: {cause}", path.display())]
    FileUnreadable { setting: &'static str, path: PathBuf, cause: pem::Error },
    #[error("invalid setting tls_cert_file: {} holds no PEM certificate", path.display())]
    CertFileWithoutCertificate { path: PathBuf },
    #[error("invalid setting tls_key_file: {} holds no PEM private key", path.display())]
    KeyFileWithoutKey { path: PathBuf },
    /// The key cannot be used, or is not the key of the chain's first certificate.
    #[error(
        "invalid setting tls_key_file: {} is not usable with the certificate of tls_cert_file {}: {}",
        key.display(),
        cert.display(),
        key_problem(reason)
    )]
    KeyNotUsable { cert: PathBuf, key: PathBuf, reason: rustls::Error },
    /// rustls refused the protocol versions of the provider (not expected with ring).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Installs ring as the process's rustls crypto provider; later calls do nothing. Everything that
/// builds a TLS configuration (or a reqwest client, which has TLS compiled in) calls it first.
pub fn install_crypto_provider() {
    // ring, not aws-lc-rs: no C build beyond `cc` in CI. rustls marks ring's provider deprecated for
    // its lack of post-quantum key exchange; it remains supported, and is the choice.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    // Err means a provider is installed already, which is all this asks.
    let _ = provider.install_default();
}

/// The process's provider (ring unless something installed another first).
fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default().cloned().expect("a crypto provider was installed just above")
}

// ------------------------------------------------------------------------------------------------
// Client side

/// A client configuration trusting the system's roots plus every certificate of the PEM file
/// `ca_file` (e.g. the `ethereum_rpc_ca_file` setting), offering `alpn` in that order (empty for
/// hyper-rustls, which sets its own).
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let mut roots = system_roots().clone();
    if let Some(path) = ca_file {
        let certificates = read_certificates(path).map_err(|error| match error {
            ReadError::Unreadable(cause) => TlsError::CaFileUnreadable { path: path.to_owned(), cause },
            ReadError::Empty => TlsError::CaFileWithoutCertificate { path: path.to_owned() },
        })?;
        let count = certificates.len();
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|reason| TlsError::CaCertificateInvalid { path: path.to_owned(), reason })?;
        }
        tracing::info!(file = %path.display(), certificates = count, "trusting the CA file");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// The system's root certificates, loaded and parsed once per process.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "some system root certificates could not be loaded");
        }
        let mut roots = RootCertStore::empty();
        let (loaded, skipped) = roots.add_parsable_certificates(found.certs);
        if loaded == 0 {
            tracing::warn!(skipped, "no system root certificates: only a configured CA file is trusted");
        } else {
            tracing::info!(loaded, skipped, "system root certificates loaded");
        }
        roots
    })
}

enum ReadError {
    Unreadable(pem::Error),
    Empty,
}

/// Every certificate of a PEM file, in order; none is an error.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ReadError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(ReadError::Unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(ReadError::Unreadable)?;
    if certificates.is_empty() {
        return Err(ReadError::Empty);
    }
    Ok(certificates)
}

// ------------------------------------------------------------------------------------------------
// Server side

/// Where the public port's certificate chain and key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertFiles {
    /// `tls_cert_file`: the leaf first, then the intermediates.
    pub cert_file: PathBuf,
    /// `tls_key_file`: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl ServerCertFiles {
    /// Reads both files and checks that the key belongs to the chain's first certificate.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let chain = read_certificates(&self.cert_file).map_err(|error| match error {
            ReadError::Unreadable(cause) => {
                TlsError::FileUnreadable { setting: "tls_cert_file", path: self.cert_file.clone(), cause }
            }
            ReadError::Empty => TlsError::CertFileWithoutCertificate { path: self.cert_file.clone() },
        })?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|cause| match cause {
            pem::Error::NoItemsFound => TlsError::KeyFileWithoutKey { path: self.key_file.clone() },
            cause => TlsError::FileUnreadable { setting: "tls_key_file", path: self.key_file.clone(), cause },
        })?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|reason| TlsError::KeyNotUsable {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
            reason,
        })
    }
}

/// The public port's certificate, swappable while the port serves ([`ServerCert::reload`]).
#[derive(Debug)]
pub struct ServerCert {
    files: ServerCertFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// Loads the files once; an error here stops start-up.
    pub fn load(files: ServerCertFiles) -> Result<Self, TlsError> {
        let key = files.load()?;
        tracing::info!(
            cert_file = %files.cert_file.display(),
            fingerprint = %fingerprint(&key),
            chain = key.cert.len(),
            "TLS certificate loaded"
        );
        Ok(Self { files, current: RwLock::new(Arc::new(key)) })
    }

    /// Re-reads the files. On success new handshakes use the new certificate; on failure the one in
    /// use stays. Either way the outcome is logged.
    pub fn reload(&self) -> Result<(), TlsError> {
        match self.files.load() {
            Ok(key) => {
                tracing::info!(
                    cert_file = %self.files.cert_file.display(),
                    fingerprint = %fingerprint(&key),
                    previous = %fingerprint(&self.current()),
                    "TLS certificate reloaded: new connections use it"
                );
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, kept = %fingerprint(&self.current()), "TLS certificate reload failed: the previous certificate stays in use");
                Err(error)
            }
        }
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The public port's server configuration: no client certificates, ALPN [`SERVER_ALPN`], the
/// certificate of `cert` as it is at each handshake.
pub fn server_config(cert: Arc<ServerCert>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = SERVER_ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

fn key_problem(reason: &rustls::Error) -> String {
    match reason {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "it is not the key of the certificate (the first one of the file)".to_owned()
        }
        other => other.to_string(),
    }
}

/// The first hex digits of the SHA-256 of the leaf certificate.
fn fingerprint(key: &CertifiedKey) -> String {
    let leaf = key.cert.first().map(|cert| cert.as_ref()).unwrap_or_default();
    let mut digits = hex::encode(Sha256::digest(leaf));
    digits.truncate(FINGERPRINT_HEX_DIGITS);
    digits
}
