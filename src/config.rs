//! The service's settings: a TOML file (`--config FILE`) overlaid by `MPE_LEDGER_<KEY>` environment
//! variables, validated once at start-up. An invalid setting stops start-up with one line naming it.
//!
//! Keys (file key → environment variable `MPE_LEDGER_` + the key in upper case):
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `listen` | the public port: gRPC (escrow services, paid calls) and HTTP `/healthz`, `/metrics` | `127.0.0.1:7000` |
//! | `tls_cert_file` | PEM certificate chain of the public port (leaf first); with it the port speaks only TLS | none: plain (h2c) |
//! | `tls_key_file` | PEM private key of that certificate; both or neither | none |
//! | `max_connections` | most connections open on the public port at once (further ones wait in the backlog) | `4096` |
//! | `ethereum_rpc_url` | JSON-RPC of the chain holding the MPE, `http://` or `https://` | none: paid calls refused |
//! | `ethereum_rpc_ca_file` | PEM CA certificate(s) trusted for an `https://` node besides the system's roots | none |
//! | `mpe_address` | the MultiPartyEscrow contract | required with the chain |
//! | `group_id` | this replica group's id, base64 (as in org metadata) or 0x-hex, 32 bytes | required with the chain |
//! | `payment_address` | the provider's address: recipient of channels, signer of control calls | required with the chain |
//! | `payment_expiration_threshold` | blocks before expiration from which payments are refused | `40320` |
//! | `average_block_time_ms` | the chain's average block time, for the reporting views' time estimates | `12000` |
//! | `claims_due_within_blocks` | unclaimed money this close to expiration is due: metric, warning, `claims due` | `payment_expiration_threshold` |
//! | `price` | one price in cogs for every method (decimal) | required unless `prices` |
//! | `prices` | table: full gRPC method name → price (file only) | |
//! | `upstream` | the AI service calls are forwarded to, `http://` (h2c) or `https://` (h2 over TLS) | required with the chain |
//! | `upstream_ca_file` | PEM CA certificate(s) trusted for an `https://` upstream besides the system's roots | none |
//! | `replica_id` | lease holder name of this replica | host name and process id |
//! | `lease_ttl_seconds` | lease lifetime without renewal | `30` |
//! | `confirmations` | blocks before a claim seen on chain is recorded | `12` |
//! | `max_message_bytes` | largest gRPC message accepted (RESOURCE_EXHAUSTED above) | `4194304` |
//! | `max_call_seconds` | longest a paid call may run, whatever the client's deadline (DEADLINE_EXCEEDED after) | `300` |
//! | `max_concurrent_calls` | most paid calls in flight at once (RESOURCE_EXHAUSTED beyond, never queued) | `1024` |
//! | `audit_listen` | the audit HTTP API (`crate::audit`): a loopback address, never the public port | `127.0.0.1:7001` |
//! | `audit_tokens` | bearer tokens of the audit API, comma-separated (or an array in the file), 22–256 visible ASCII characters each, at most 64 | none: the API is off |
//!
//! With none of the chain settings the ledger runs (storage, health, metrics) and refuses paid calls
//! (design.md §8); with some but not all of them, start-up fails naming the first missing one.
//!
//! The TLS settings are checked for presence here and read at start-up (`crate::tls`), where a
//! file that cannot be used stops start-up naming the setting and the file. Decided here: a CA file
//! is only accepted with an `https://` URL of its own (`ethereum_rpc_ca_file` with
//! `ethereum_rpc_url`, `upstream_ca_file` with `upstream`), since a CA file that would be ignored is
//! a configuration mistake; any scheme other than `http://` and `https://` is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::domain::payment::Pricing;
use crate::domain::{Amount, EthAddress, GroupId};
use crate::tls::ServerCertFiles;

mod audit;
pub use audit::{
    AUDIT_TOKEN_CHARS_MAX, AUDIT_TOKEN_CHARS_MIN, AUDIT_TOKENS_MAX, AuditSettings, AuditTokens,
    DEFAULT_AUDIT_LISTEN,
};

/// One setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_owned(), reason: reason.into() }
}

/// Settings as written, before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub listen: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub max_connections: Option<toml::Value>,
    pub ethereum_rpc_url: Option<String>,
    pub ethereum_rpc_ca_file: Option<PathBuf>,
    pub mpe_address: Option<String>,
    pub group_id: Option<String>,
    pub payment_address: Option<String>,
    pub payment_expiration_threshold: Option<toml::Value>,
    pub average_block_time_ms: Option<toml::Value>,
    pub claims_due_within_blocks: Option<toml::Value>,
    pub price: Option<toml::Value>,
    pub prices: Option<BTreeMap<String, toml::Value>>,
    pub upstream: Option<String>,
    pub upstream_ca_file: Option<PathBuf>,
    pub replica_id: Option<String>,
    pub lease_ttl_seconds: Option<toml::Value>,
    pub confirmations: Option<toml::Value>,
    pub max_message_bytes: Option<toml::Value>,
    pub max_call_seconds: Option<toml::Value>,
    pub max_concurrent_calls: Option<toml::Value>,
    pub audit_listen: Option<String>,
    pub audit_tokens: Option<toml::Value>,
}

/// Everything about the chain and the paid calls; all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSettings {
    pub rpc_url: String,
    /// Trusted for an `https://` `rpc_url` besides the system's roots.
    pub rpc_ca_file: Option<PathBuf>,
    pub mpe_address: EthAddress,
    pub group_id: GroupId,
    pub payment_address: EthAddress,
    pub expiration_threshold: u64,
    /// Recorded in the deployment record for the reporting views (never used to judge expiry).
    pub average_block_time_ms: u64,
    /// Money at risk this many blocks or fewer before expiration is due for a claim.
    pub claims_due_within_blocks: u64,
    pub pricing: Pricing,
    pub upstream: String,
    /// Trusted for an `https://` `upstream` besides the system's roots.
    pub upstream_ca_file: Option<PathBuf>,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    /// The public port's certificate and key; `None` serves plain HTTP/1.1 and h2c.
    pub tls: Option<ServerCertFiles>,
    pub max_connections: usize,
    pub chain: Option<ChainSettings>,
    pub replica_id: String,
    pub lease_ttl: Duration,
    pub confirmations: u64,
    pub max_message_bytes: usize,
    pub max_call_duration: Duration,
    pub max_concurrent_calls: usize,
    /// The audit API; `None` (no token configured) leaves it off.
    pub audit: Option<AuditSettings>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7000";
pub const DEFAULT_EXPIRATION_THRESHOLD: u64 = 40320;
/// Ethereum's main network: a block every 12 s.
pub const DEFAULT_AVERAGE_BLOCK_TIME_MS: u64 = 12_000;
/// The longest `average_block_time_ms` accepted: an hour.
pub const MAX_AVERAGE_BLOCK_TIME_MS: u64 = 3_600_000;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Five minutes: long generations fit; a hung service holds a channel no longer than this.
pub const DEFAULT_MAX_CALL_SECONDS: u64 = 300;
/// A day: the most `max_call_seconds` accepts (a lease is renewed all along the call).
pub const MAX_CALL_SECONDS_LIMIT: u64 = 86_400;
/// Four times the benchmark's 256 clients; each call in flight holds at most its HTTP/2 windows.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 1024;
/// The most `max_concurrent_calls` accepts (tokio's semaphore holds fewer than 2^61 permits; far
/// above what one process's connections and pool could serve).
pub const MAX_CONCURRENT_CALLS_LIMIT: usize = 1 << 20;
/// Open connections of the public port: each costs a task and its buffers (tens of KiB), so 4096
/// stays far below memory limits while allowing 16 times the benchmark's 256 clients.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The most `max_connections` accepts (tokio's semaphore holds fewer than 2^61 permits; far above
/// the file descriptors one process gets).
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

impl RawSettings {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("--config", format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| invalid("--config", format!("{}: {}", path.display(), e.message())))
    }

    /// Overlays `MPE_LEDGER_<KEY>` variables from `env` (a lookup, so tests need not touch the process).
    pub fn with_env(mut self, env: impl Fn(&str) -> Option<String>) -> Self {
        let var = |key: &str| env(&format!("MPE_LEDGER_{}", key.to_uppercase()));
        let text = |key: &str, slot: &mut Option<String>| {
            if let Some(value) = var(key) {
                *slot = Some(value);
            }
        };
        let number = |key: &str, slot: &mut Option<toml::Value>| {
            if let Some(value) = var(key) {
                *slot = Some(toml::Value::String(value));
            }
        };
        let path = |key: &str, slot: &mut Option<PathBuf>| {
            if let Some(value) = var(key) {
                *slot = Some(PathBuf::from(value));
            }
        };
        text("listen", &mut self.listen);
        path("tls_cert_file", &mut self.tls_cert_file);
        path("tls_key_file", &mut self.tls_key_file);
        number("max_connections", &mut self.max_connections);
        text("ethereum_rpc_url", &mut self.ethereum_rpc_url);
        path("ethereum_rpc_ca_file", &mut self.ethereum_rpc_ca_file);
        text("mpe_address", &mut self.mpe_address);
        text("group_id", &mut self.group_id);
        text("payment_address", &mut self.payment_address);
        number("payment_expiration_threshold", &mut self.payment_expiration_threshold);
        number("average_block_time_ms", &mut self.average_block_time_ms);
        number("claims_due_within_blocks", &mut self.claims_due_within_blocks);
        number("price", &mut self.price);
        text("upstream", &mut self.upstream);
        path("upstream_ca_file", &mut self.upstream_ca_file);
        text("replica_id", &mut self.replica_id);
        number("lease_ttl_seconds", &mut self.lease_ttl_seconds);
        number("confirmations", &mut self.confirmations);
        number("max_message_bytes", &mut self.max_message_bytes);
        number("max_call_seconds", &mut self.max_call_seconds);
        number("max_concurrent_calls", &mut self.max_concurrent_calls);
        text("audit_listen", &mut self.audit_listen);
        number("audit_tokens", &mut self.audit_tokens);
        self
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen =
            listen.parse().map_err(|_| invalid("listen", format!("{listen:?} is not an address:port")))?;
        let chain_keys = [
            ("ethereum_rpc_url", self.ethereum_rpc_url.is_some()),
            ("mpe_address", self.mpe_address.is_some()),
            ("group_id", self.group_id.is_some()),
            ("payment_address", self.payment_address.is_some()),
            ("price", self.price.is_some() || self.prices.is_some()),
            ("upstream", self.upstream.is_some()),
        ];
        let tls = self.tls_files()?;
        let chain = if chain_keys.iter().all(|(_, given)| !given) {
            for (key, given, url) in [
                ("ethereum_rpc_ca_file", self.ethereum_rpc_ca_file.is_some(), "ethereum_rpc_url"),
                ("upstream_ca_file", self.upstream_ca_file.is_some(), "upstream"),
            ] {
                if given {
                    return Err(invalid(
                        key,
                        format!("only used with an https:// {url}, which is not given"),
                    ));
                }
            }
            None
        } else {
            if let Some((missing, _)) = chain_keys.iter().find(|(_, given)| !given) {
                return Err(invalid(missing, "missing (the chain settings are all required together)"));
            }
            Some(self.chain_settings()?)
        };
        let replica_id = match self.replica_id {
            Some(id) if id.trim().is_empty() => return Err(invalid("replica_id", "empty")),
            Some(id) => id,
            None => default_replica_id(),
        };
        let lease_ttl = u64_setting("lease_ttl_seconds", self.lease_ttl_seconds.as_ref())?.unwrap_or(30);
        if lease_ttl == 0 {
            return Err(invalid("lease_ttl_seconds", "must be at least 1"));
        }
        let max_message_bytes = u64_setting("max_message_bytes", self.max_message_bytes.as_ref())?
            .map_or(Ok(DEFAULT_MAX_MESSAGE_BYTES), usize::try_from)
            .map_err(|_| invalid("max_message_bytes", "too large"))?;
        let max_call_seconds = u64_setting("max_call_seconds", self.max_call_seconds.as_ref())?
            .unwrap_or(DEFAULT_MAX_CALL_SECONDS);
        if !(1..=MAX_CALL_SECONDS_LIMIT).contains(&max_call_seconds) {
            return Err(invalid("max_call_seconds", format!("must be from 1 to {MAX_CALL_SECONDS_LIMIT}")));
        }
        let max_concurrent_calls = u64_setting("max_concurrent_calls", self.max_concurrent_calls.as_ref())?
            .map_or(Ok(DEFAULT_MAX_CONCURRENT_CALLS), usize::try_from)
            .map_err(|_| invalid("max_concurrent_calls", "too large"))?;
        if !(1..=MAX_CONCURRENT_CALLS_LIMIT).contains(&max_concurrent_calls) {
            return Err(invalid(
                "max_concurrent_calls",
                format!("must be from 1 to {MAX_CONCURRENT_CALLS_LIMIT}"),
            ));
        }
        let max_connections = u64_setting("max_connections", self.max_connections.as_ref())?
            .map_or(Ok(DEFAULT_MAX_CONNECTIONS), usize::try_from)
            .map_err(|_| invalid("max_connections", "too large"))?;
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&max_connections) {
            return Err(invalid("max_connections", format!("must be from 1 to {MAX_CONNECTIONS_LIMIT}")));
        }
        let audit = audit::audit_settings(self.audit_listen.as_deref(), self.audit_tokens.as_ref(), listen)?;
        Ok(Config {
            listen,
            tls,
            max_connections,
            chain,
            replica_id,
            lease_ttl: Duration::from_secs(lease_ttl),
            confirmations: u64_setting("confirmations", self.confirmations.as_ref())?.unwrap_or(12),
            max_message_bytes,
            max_call_duration: Duration::from_secs(max_call_seconds),
            max_concurrent_calls,
            audit,
        })
    }

    /// Both TLS files or neither.
    fn tls_files(&self) -> Result<Option<ServerCertFiles>, ConfigError> {
        let cert_file = path_setting("tls_cert_file", self.tls_cert_file.as_ref())?;
        let key_file = path_setting("tls_key_file", self.tls_key_file.as_ref())?;
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Ok(Some(ServerCertFiles { cert_file, key_file })),
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err(invalid("tls_key_file", "missing (tls_cert_file is given: TLS needs both)"))
            }
            (None, Some(_)) => {
                Err(invalid("tls_cert_file", "missing (tls_key_file is given: TLS needs both)"))
            }
        }
    }

    fn chain_settings(&self) -> Result<ChainSettings, ConfigError> {
        // The URL itself is not repeated in these errors: a hosted node's URL carries its API key.
        let rpc_url = self.ethereum_rpc_url.clone().unwrap_or_default();
        let rpc_ca_file = ca_file_setting(
            "ethereum_rpc_ca_file",
            self.ethereum_rpc_ca_file.as_ref(),
            "ethereum_rpc_url",
            url_scheme("ethereum_rpc_url", &rpc_url)?,
        )?;
        let upstream = self.upstream.clone().unwrap_or_default();
        let upstream_ca_file = ca_file_setting(
            "upstream_ca_file",
            self.upstream_ca_file.as_ref(),
            "upstream",
            url_scheme("upstream", &upstream)?,
        )?;
        let pricing = match (&self.price, &self.prices) {
            (Some(_), Some(_)) => return Err(invalid("price", "give either price or prices, not both")),
            (Some(price), None) => Pricing::Fixed(amount_setting("price", price)?),
            (None, Some(prices)) => {
                let mut table = BTreeMap::new();
                for (method, price) in prices {
                    if !method.starts_with('/') || method.matches('/').count() != 2 {
                        return Err(invalid(
                            "prices",
                            format!("{method:?} is not a full method name like /package.Service/Method"),
                        ));
                    }
                    table.insert(method.clone(), amount_setting("prices", price)?);
                }
                Pricing::PerMethod(table)
            }
            (None, None) => unreachable!("checked by the caller"),
        };
        let expiration_threshold =
            u64_setting("payment_expiration_threshold", self.payment_expiration_threshold.as_ref())?
                .unwrap_or(DEFAULT_EXPIRATION_THRESHOLD);
        let average_block_time_ms =
            u64_setting("average_block_time_ms", self.average_block_time_ms.as_ref())?
                .unwrap_or(DEFAULT_AVERAGE_BLOCK_TIME_MS);
        if !(1..=MAX_AVERAGE_BLOCK_TIME_MS).contains(&average_block_time_ms) {
            return Err(invalid(
                "average_block_time_ms",
                format!("must be from 1 to {MAX_AVERAGE_BLOCK_TIME_MS}"),
            ));
        }
        // Recorded in a bigint column.
        let claims_due_within_blocks =
            u64_setting("claims_due_within_blocks", self.claims_due_within_blocks.as_ref())?
                .unwrap_or(expiration_threshold);
        if i64::try_from(claims_due_within_blocks).is_err() {
            return Err(invalid("claims_due_within_blocks", format!("must be at most {}", i64::MAX)));
        }
        Ok(ChainSettings {
            rpc_url,
            rpc_ca_file,
            mpe_address: address_setting("mpe_address", self.mpe_address.as_deref())?,
            group_id: group_id_setting(self.group_id.as_deref().unwrap_or_default())?,
            payment_address: address_setting("payment_address", self.payment_address.as_deref())?,
            expiration_threshold,
            average_block_time_ms,
            claims_due_within_blocks,
            pricing,
            upstream,
            upstream_ca_file,
        })
    }
}

/// Longest scheme quoted back in an error.
const MAX_SCHEME_CHARS: usize = 16;

/// A URL's scheme, `http` or `https`; anything else is refused.
fn url_scheme(key: &str, url: &str) -> Result<&'static str, ConfigError> {
    if url.starts_with("https://") {
        Ok("https")
    } else if url.starts_with("http://") {
        Ok("http")
    } else {
        // Only the scheme is quoted: the rest of a node's URL may carry its API key.
        match url.split_once("://") {
            Some((scheme, _)) if scheme.len() <= MAX_SCHEME_CHARS => {
                Err(invalid(key, format!("scheme {scheme:?} is not http or https")))
            }
            _ => Err(invalid(key, "not a URL: expected http://… or https://…")),
        }
    }
}

/// A CA file, accepted only beside the `https://` URL it is for.
fn ca_file_setting(
    key: &str,
    value: Option<&PathBuf>,
    url_key: &str,
    scheme: &str,
) -> Result<Option<PathBuf>, ConfigError> {
    let path = path_setting(key, value)?;
    if path.is_some() && scheme != "https" {
        return Err(invalid(key, format!("only used with an https:// {url_key}, which is {scheme}://")));
    }
    Ok(path)
}

fn path_setting(key: &str, value: Option<&PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    match value {
        Some(path) if path.as_os_str().is_empty() => Err(invalid(key, "empty")),
        other => Ok(other.cloned()),
    }
}

fn address_setting(key: &str, value: Option<&str>) -> Result<EthAddress, ConfigError> {
    let value = value.unwrap_or_default();
    value.parse().map_err(|_| invalid(key, format!("{value:?} is not a 20-byte hex address")))
}

/// A group id as org metadata writes it (base64) or as 0x-hex.
pub fn group_id_setting(value: &str) -> Result<GroupId, ConfigError> {
    let bytes = match value.strip_prefix("0x") {
        Some(digits) => {
            hex::decode(digits).map_err(|_| invalid("group_id", format!("{value:?} is not hex")))?
        }
        None => base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| invalid("group_id", format!("{value:?} is neither base64 nor 0x-hex")))?,
    };
    GroupId::from_slice(&bytes)
        .map_err(|_| invalid("group_id", format!("{} bytes, expected 32", bytes.len())))
}

fn amount_setting(key: &str, value: &toml::Value) -> Result<Amount, ConfigError> {
    let text = match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(n) if *n >= 0 => n.to_string(),
        other => return Err(invalid(key, format!("{other:?} is not a non-negative whole number of cogs"))),
    };
    text.parse().map_err(|e| invalid(key, format!("{text:?}: {e}")))
}

fn u64_setting(key: &str, value: Option<&toml::Value>) -> Result<Option<u64>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let text = match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(n) => n.to_string(),
        other => return Err(invalid(key, format!("{other:?} is not a whole number"))),
    };
    text.parse().map(Some).map_err(|_| invalid(key, format!("{text:?} is not a non-negative whole number")))
}

fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let host = if host.is_empty() { "replica".to_owned() } else { host };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests;
