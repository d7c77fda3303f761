//! The audit API's settings: `audit_listen` and `audit_tokens` (see the table in `crate::config`).
//!
//! What this keeps true:
//! - **Off without a token.** No `audit_tokens` (or an empty list) leaves the API off: `serve`
//!   binds nothing for it and logs one line saying so. There is no unauthenticated mode.
//! - **Loopback only.** `audit_listen` must be a loopback address (`127.0.0.0/8` or `::1`), and
//!   never the public port's address. Decided here: the audit listener has no TLS of its own, so a
//!   non-loopback address is refused outright rather than served in the clear; an auditor on
//!   another host reaches it through an SSH tunnel or a TLS-terminating proxy on this host. (The
//!   issue allows a non-loopback address with TLS; refusing is the smaller surface, and a TLS
//!   option can be added later without changing what is accepted today.)
//! - **Tokens never kept in clear.** Each token is kept only as its SHA-256 digest; a presented
//!   token is hashed and compared with every configured digest in constant time (`subtle`), with
//!   no early exit, so neither the match nor its position shows in the timing. `Debug` prints the
//!   count only.
//! - Bounded: at most [`AUDIT_TOKENS_MAX`] tokens, each [`AUDIT_TOKEN_CHARS_MIN`] to
//!   [`AUDIT_TOKEN_CHARS_MAX`] visible ASCII characters (no space, no comma: the list separator).

use std::fmt;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ConfigError, invalid};

/// Where the audit API listens unless told otherwise: the loopback, beside the public port.
pub const DEFAULT_AUDIT_LISTEN: &str = "127.0.0.1:7001";
/// The most tokens `audit_tokens` may list.
pub const AUDIT_TOKENS_MAX: usize = 64;
/// The shortest token accepted: 22 characters of base64 carry 128 bits.
pub const AUDIT_TOKEN_CHARS_MIN: usize = 22;
/// The longest token accepted.
pub const AUDIT_TOKEN_CHARS_MAX: usize = 256;

/// The SHA-256 digests of the configured bearer tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditTokens(Vec<[u8; 32]>);

impl fmt::Debug for AuditTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditTokens({} tokens)", self.0.len())
    }
}

impl AuditTokens {
    /// Tokens from a comma-separated list (surrounding spaces ignored, empty items skipped).
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let tokens: Vec<&str> = list.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
        if tokens.len() > AUDIT_TOKENS_MAX {
            return Err(invalid(
                "audit_tokens",
                format!("{} tokens, at most {AUDIT_TOKENS_MAX} are accepted", tokens.len()),
            ));
        }
        let mut digests = Vec::with_capacity(tokens.len());
        for (index, token) in tokens.iter().enumerate() {
            // The token itself is never quoted back: it is a secret.
            let n = index + 1;
            if !(AUDIT_TOKEN_CHARS_MIN..=AUDIT_TOKEN_CHARS_MAX).contains(&token.len()) {
                return Err(invalid(
                    "audit_tokens",
                    format!(
                        "token {n} has {} characters, expected {AUDIT_TOKEN_CHARS_MIN} to {AUDIT_TOKEN_CHARS_MAX}",
                        token.len()
                    ),
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(invalid(
                    "audit_tokens",
                    format!("token {n} has a character that is not visible ASCII"),
                ));
            }
            digests.push(Sha256::digest(token.as_bytes()).into());
        }
        Ok(Self(digests))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether `presented` is one of the tokens, in time independent of which one (module doc).
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0);
        for known in &self.0 {
            found |= known.ct_eq(&digest);
        }
        found.into()
    }
}

/// The audit API, when at least one token is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub listen: SocketAddr,
    pub tokens: AuditTokens,
}

/// Validates the two settings; `Ok(None)` when no token is given (the API stays off).
pub fn audit_settings(
    listen: Option<&str>,
    tokens: Option<&toml::Value>,
    public_listen: SocketAddr,
) -> Result<Option<AuditSettings>, ConfigError> {
    let text = listen.unwrap_or(DEFAULT_AUDIT_LISTEN);
    let listen: SocketAddr =
        text.parse().map_err(|_| invalid("audit_listen", format!("{text:?} is not an address:port")))?;
    if !listen.ip().is_loopback() {
        return Err(invalid(
            "audit_listen",
            format!(
                "{listen} is not a loopback address: the audit API has no TLS, so it listens on the loopback only (reach it through an SSH tunnel or a TLS proxy on this host)"
            ),
        ));
    }
    if listen == public_listen && listen.port() != 0 {
        return Err(invalid(
            "audit_listen",
            format!("{listen} is the public port (listen): give it its own"),
        ));
    }
    let tokens = match tokens {
        None => return Ok(None),
        Some(toml::Value::String(list)) => AuditTokens::parse(list)?,
        Some(toml::Value::Array(items)) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    toml::Value::String(token) if !token.contains(',') => list.push(token.as_str()),
                    _ => return Err(invalid("audit_tokens", "every item must be a string without a comma")),
                }
            }
            AuditTokens::parse(&list.join(","))?
        }
        Some(_) => {
            return Err(invalid("audit_tokens", "expected a comma-separated string or an array of strings"));
        }
    };
    Ok((!tokens.is_empty()).then_some(AuditSettings { listen, tokens }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdefghijkl";
    const PUBLIC: &str = "127.0.0.1:7000";

    fn settings(listen: Option<&str>, tokens: Option<&str>) -> Result<Option<AuditSettings>, ConfigError> {
        let tokens = tokens.map(|t| toml::Value::String(t.to_owned()));
        audit_settings(listen, tokens.as_ref(), PUBLIC.parse().unwrap())
    }

    #[test]
    fn no_token_leaves_the_api_off() {
        assert_eq!(settings(None, None), Ok(None));
        assert_eq!(settings(None, Some(" , ")), Ok(None));
    }

    #[test]
    fn a_token_turns_it_on_at_the_default_address() {
        let audit = settings(None, Some(TOKEN)).unwrap().unwrap();
        assert_eq!(audit.listen, DEFAULT_AUDIT_LISTEN.parse().unwrap());
        assert!(audit.tokens.accepts(TOKEN.as_bytes()));
        assert!(!audit.tokens.accepts(b"0123456789abcdefghijkm"));
        assert!(!audit.tokens.accepts(b""));
        assert_eq!(format!("{:?}", audit.tokens), "AuditTokens(1 tokens)");
    }

    #[test]
    fn every_listed_token_is_accepted() {
        let second = "zyxwvutsrqponmlkjihgfedcba";
        let audit = settings(Some("[::1]:7100"), Some(&format!("{TOKEN}, {second}"))).unwrap().unwrap();
        assert_eq!(audit.tokens.len(), 2);
        assert!(audit.tokens.accepts(TOKEN.as_bytes()) && audit.tokens.accepts(second.as_bytes()));
        let array =
            toml::Value::Array(vec![toml::Value::String(TOKEN.into()), toml::Value::String(second.into())]);
        let audit = audit_settings(None, Some(&array), PUBLIC.parse().unwrap()).unwrap().unwrap();
        assert!(audit.tokens.accepts(second.as_bytes()));
    }

    #[test]
    fn a_non_loopback_address_is_refused() {
        let error = settings(Some("0.0.0.0:7001"), Some(TOKEN)).unwrap_err();
        assert_eq!(error.key, "audit_listen");
        assert!(error.reason.contains("not a loopback address"), "{error}");
        assert_eq!(settings(Some("10.0.0.1:7001"), None).unwrap_err().key, "audit_listen");
        assert_eq!(settings(Some("localhost:7001"), None).unwrap_err().key, "audit_listen");
    }

    #[test]
    fn the_public_port_is_refused() {
        let error = settings(Some(PUBLIC), Some(TOKEN)).unwrap_err();
        assert!(error.reason.contains("public port"), "{error}");
    }

    #[test]
    fn bad_tokens_are_refused_without_quoting_them() {
        let short = settings(None, Some("short")).unwrap_err();
        assert_eq!(
            short.to_string(),
            "invalid setting audit_tokens: token 1 has 5 characters, expected 22 to 256"
        );
        let long = "x".repeat(AUDIT_TOKEN_CHARS_MAX + 1);
        assert!(settings(None, Some(&format!("{TOKEN},{long}"))).unwrap_err().reason.starts_with("token 2 "));
        let spaced = "0123456789 abcdefghijkl";
        assert!(!settings(None, Some(spaced)).unwrap_err().to_string().contains(spaced));
        let many = vec![TOKEN; AUDIT_TOKENS_MAX + 1].join(",");
        assert!(settings(None, Some(&many)).unwrap_err().reason.contains("at most 64"));
        assert!(settings(None, Some(&vec![TOKEN; AUDIT_TOKENS_MAX].join(","))).unwrap().is_some());
        let number = toml::Value::Integer(5);
        assert_eq!(
            audit_settings(None, Some(&number), PUBLIC.parse().unwrap()).unwrap_err().key,
            "audit_tokens"
        );
    }
}
