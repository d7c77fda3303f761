//! Multi-host database URLs, as libpq reads them: `postgres://user:pw@h1:5432,h2:5433/db?target_session_attrs=read-write`.
//!
//! sqlx reads only the first host of such a URL, so the ledger reads the host list itself and
//! hands sqlx one single-host URL per host (every other part of the URL, query included, is sqlx's
//! to read). Invariants:
//! - **Every connection made from a URL goes through this module** ([`connect`] for one-off
//!   connections, [`Target`] for pools, see `super::connect`), so a multi-host URL works for
//!   `serve`, migrations, login checks, `reader add` and read-only commands alike. (The embedded
//!   cluster's own connections are to one known port and need none of this.)
//! - **Hosts are tried in the URL's order**, each for at most [`HOST_CONNECT_TIMEOUT`]; the first
//!   that connects and has the wanted [`SessionAttrs`] is used. A URL that names no usable host is
//!   refused with one error naming each host and why it was passed over (never the password).
//! - **`read-write` and `primary` never hand out a standby's session**: the check runs on every
//!   new connection, also those a pool opens on its own ([`check_session`] in `after_connect`), so
//!   a pool never keeps a connection to a server in recovery (`read-write` also refuses a server
//!   whose `transaction_read_only` is on, as libpq does). `any` (libpq's default) checks nothing.
//! - **A pool follows the primary** ([`follow`]): with more than one host, a task keeps one
//!   connection of its own to the pool's host and asks it every [`FOLLOW_INTERVAL`] whether it is
//!   still usable; when it is not (dead, or demoted to a standby), it tries the hosts in order
//!   and points the pool at the first usable one (`Pool::set_connect_options`): the pool's own
//!   connect retries pick the new host up. Connections already open are left to fail by
//!   themselves (a killed or demoted server has closed them). The task ends when the pool is
//!   closed.
//! - Other libpq values of `target_session_attrs` (`read-only`, `standby`, `prefer-standby`) are
//!   refused: the ledger has no use for a standby's session.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::store::StoreError;

/// Longest wait for one host's connection and its check before the next host is tried.
pub const HOST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a pool's follower asks the pool's host whether it is still usable.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Most hosts one URL may name.
pub const HOSTS_MAX: usize = 16;

/// A database URL that cannot be read (it never quotes the URL: it may hold a password).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatabaseUrlError {
    #[error("the database URL names no host")]
    NoHost,
    #[error("the database URL names {count} hosts, more than the {limit} allowed")]
    TooManyHosts { count: usize, limit: usize },
    #[error(
        "the database URL's target_session_attrs={value} is not supported: use any (the default), read-write or primary"
    )]
    SessionAttrsUnsupported { value: String },
    #[error("the database URL's host {host} cannot be read: {reason}")]
    Host { host: String, reason: String },
}

/// Which sessions a URL accepts (`target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server that accepts the connection.
    Any,
    /// A server not in recovery whose `transaction_read_only` is off.
    ReadWrite,
    /// A server not in recovery.
    Primary,
}

impl SessionAttrs {
    fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::Primary => "primary",
        }
    }
}

impl FromStr for SessionAttrs {
    type Err = DatabaseUrlError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "any" => Ok(Self::Any),
            "read-write" => Ok(Self::ReadWrite),
            "primary" => Ok(Self::Primary),
            other => Err(DatabaseUrlError::SessionAttrsUnsupported { value: other.to_owned() }),
        }
    }
}

/// One host of a URL: how to reach it, and its name for logs and errors (`host:port`).
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub options: PgConnectOptions,
}

/// A parsed database URL: its hosts in order and the sessions it accepts.
#[derive(Debug, Clone)]
pub struct Target {
    pub hosts: Vec<Host>,
    pub attrs: SessionAttrs,
}

impl FromStr for Target {
    type Err = DatabaseUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = url.split_once("://") else {
            // Not a URL sqlx can read as one either: its own parser says why.
            let options = PgConnectOptions::from_str(url)
                .map_err(|error| DatabaseUrlError::Host { host: String::new(), reason: error.to_string() })?;
            let name = format!("{}:{}", options.get_host(), options.get_port());
            return Ok(Self { hosts: vec![Host { name, options }], attrs: SessionAttrs::Any });
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, host_list) = match authority.rfind('@') {
            Some(at) => (&authority[..=at], &authority[at + 1..]),
            None => ("", authority),
        };
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let mut attrs = SessionAttrs::Any;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("target_session_attrs", value)) => attrs = value.parse()?,
                _ => kept.push(pair),
            }
        }
        let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
        let names: Vec<&str> = host_list.split(',').collect();
        if names.len() > HOSTS_MAX {
            return Err(DatabaseUrlError::TooManyHosts { count: names.len(), limit: HOSTS_MAX });
        }
        if names.iter().all(|name| name.is_empty()) && names.len() > 1 {
            return Err(DatabaseUrlError::NoHost);
        }
        let hosts = names
            .into_iter()
            .map(|name| {
                let single = format!("{scheme}://{userinfo}{name}{path}{query}");
                let options = PgConnectOptions::from_str(&single).map_err(|error| {
                    DatabaseUrlError::Host { host: name.to_owned(), reason: error.to_string() }
                })?;
                let name = format!("{}:{}", options.get_host(), options.get_port());
                Ok(Host { name, options })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { hosts, attrs })
    }
}

impl Target {
    /// The first host, in the URL's order, that connects and has the wanted attributes: its index
    /// and the checked connection (module doc).
    pub async fn first_usable(&self) -> Result<(usize, PgConnection), StoreError> {
        let mut passed_over = Vec::with_capacity(self.hosts.len());
        for (index, host) in self.hosts.iter().enumerate() {
            match connect_host(host, self.attrs).await {
                Ok(conn) => return Ok((index, conn)),
                Err(error) if self.hosts.len() == 1 => return Err(error),
                Err(error) => passed_over.push(format!("{}: {error}", host.name)),
            }
        }
        Err(StoreError::NoUsableHost { wanted: self.attrs.as_str(), passed_over: passed_over.join("; ") })
    }
}

/// A connection to the first usable host of `url` (module doc).
pub async fn connect(url: &str) -> Result<PgConnection, StoreError> {
    let target: Target = url.parse()?;
    Ok(target.first_usable().await?.1)
}

/// One host: connected and checked within [`HOST_CONNECT_TIMEOUT`].
async fn connect_host(host: &Host, attrs: SessionAttrs) -> Result<PgConnection, StoreError> {
    let attempt = async {
        let mut conn = host.options.connect().await?;
        if let Err(error) = check_session(&mut conn, attrs).await {
            let _ = conn.close_hard().await;
            return Err(error);
        }
        Ok(conn)
    };
    match tokio::time::timeout(HOST_CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::HostTimedOut { after: HOST_CONNECT_TIMEOUT }),
    }
}

/// Refuses a session the attributes exclude (module doc); `Any` asks nothing.
pub async fn check_session(conn: &mut PgConnection, attrs: SessionAttrs) -> Result<(), StoreError> {
    if attrs == SessionAttrs::Any {
        return Ok(());
    }
    let (in_recovery, read_only): (bool, bool) =
        sqlx::query_as("SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'")
            .fetch_one(&mut *conn)
            .await?;
    if in_recovery {
        return Err(StoreError::HostRefused { reason: "a standby (in recovery)" });
    }
    if read_only && attrs == SessionAttrs::ReadWrite {
        return Err(StoreError::HostRefused { reason: "read-only (transaction_read_only is on)" });
    }
    Ok(())
}

/// Keeps `pool`, opened on `target.hosts[current]`, on a usable host (module doc); returns at once
/// for a single-host URL. Spawned by the pool's constructor.
pub fn follow(target: Arc<Target>, current: usize, pool: PgPool) {
    if target.hosts.len() < 2 {
        return;
    }
    tokio::spawn(async move {
        let mut current = current;
        let mut watch: Option<PgConnection> = None;
        let mut outage_logged = false;
        while !pool.is_closed() {
            let usable = match watch.as_mut() {
                Some(conn) => check_session(conn, target.attrs).await.is_ok(),
                None => false,
            };
            if !usable {
                watch = None;
                match target.first_usable().await {
                    Ok((index, conn)) => {
                        if index != current {
                            tracing::warn!(
                                from = %target.hosts[current].name,
                                to = %target.hosts[index].name,
                                attrs = target.attrs.as_str(),
                                "the database moved: new connections go to another host of the URL"
                            );
                            pool.set_connect_options(target.hosts[index].options.clone());
                            current = index;
                        } else if outage_logged {
                            tracing::info!(host = %target.hosts[index].name, "the database's host is usable again");
                        }
                        outage_logged = false;
                        watch = Some(conn);
                    }
                    Err(error) if !outage_logged => {
                        tracing::warn!(%error, "no host of the database URL is usable now; trying again");
                        outage_logged = true;
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
        if let Some(conn) = watch {
            let _ = conn.close().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Target {
        url.parse().unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn names(target: &Target) -> Vec<&str> {
        target.hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn a_single_host_url_is_one_host_with_any() {
        let target = parse("postgres://u:p@db.example.org:6543/ledger");
        assert_eq!(names(&target), ["db.example.org:6543"]);
        assert_eq!(target.attrs, SessionAttrs::Any);
        assert_eq!(target.hosts[0].options.get_database(), Some("ledger"));
        assert_eq!(target.hosts[0].options.get_username(), "u");
    }

    #[test]
    fn every_host_of_a_multi_host_url_keeps_the_login_database_and_query() {
        let target = parse(
            "postgresql://w:s%40cret@h1:5432,h2:5433,[::1]:5434/mpe?sslmode=disable&target_session_attrs=read-write",
        );
        assert_eq!(names(&target), ["h1:5432", "h2:5433", "[::1]:5434"]);
        assert_eq!(target.attrs, SessionAttrs::ReadWrite);
        for host in &target.hosts {
            assert_eq!(host.options.get_database(), Some("mpe"));
            assert_eq!(host.options.get_username(), "w");
            assert!(matches!(host.options.get_ssl_mode(), sqlx::postgres::PgSslMode::Disable));
        }
    }

    #[test]
    fn a_host_without_a_port_gets_the_default_port() {
        let target = parse("postgres://u@h1,h2:7000/db?target_session_attrs=primary");
        assert_eq!(target.hosts[1].options.get_port(), 7000);
        assert_eq!(target.hosts[0].options.get_host(), "h1");
        assert_eq!(target.attrs, SessionAttrs::Primary);
    }

    #[test]
    fn target_session_attrs_any_is_accepted_and_unsupported_values_are_refused() {
        assert_eq!(parse("postgres://u@h/db?target_session_attrs=any").attrs, SessionAttrs::Any);
        for value in ["read-only", "standby", "prefer-standby", "READ-WRITE", ""] {
            let url = format!("postgres://u@h1,h2/db?target_session_attrs={value}");
            assert_eq!(
                url.parse::<Target>().unwrap_err(),
                DatabaseUrlError::SessionAttrsUnsupported { value: value.to_owned() },
                "{value}"
            );
        }
    }

    #[test]
    fn a_bad_host_is_named_and_the_password_is_not_in_the_error() {
        let error = "postgres://u:topsecret@h1:5432,h2:notaport/db".parse::<Target>().unwrap_err();
        assert!(matches!(&error, DatabaseUrlError::Host { host, .. } if host == "h2:notaport"), "{error}");
        assert!(!error.to_string().contains("topsecret"), "{error}");
    }

    #[test]
    fn a_url_of_empty_hosts_or_too_many_hosts_is_refused() {
        assert_eq!("postgres://u@,/db".parse::<Target>().unwrap_err(), DatabaseUrlError::NoHost);
        let many = vec!["h"; HOSTS_MAX + 1].join(",");
        assert_eq!(
            format!("postgres://u@{many}/db").parse::<Target>().unwrap_err(),
            DatabaseUrlError::TooManyHosts { count: HOSTS_MAX + 1, limit: HOSTS_MAX }
        );
    }
}
