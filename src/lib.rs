//! mpe-ledger: an event-sourced ledger for SingularityNET MultiPartyEscrow payment channels.
//!
//! Every change of money state is an event appended to one table in PostgreSQL; channel state is a
//! projection folded from those events and can be rebuilt and verified from them at any time.
//!
//! Module map (dependencies point inwards, `domain` depends on nothing with I/O):
//! - [`domain`]: newtypes (channel id, nonce, amount, address, signature, group id), channel data,
//!   events, the pure fold from events to state, the canonical event encoding behind the hash chain,
//!   and the offline audit bundle (its canonical file format and its check).
//! - [`store`]: the `AtomicStorage` contract with memory and Postgres backends, prefixed and typed
//!   wrappers, the event-sourced channel store, the serializable-retry helper, verify and rebuild.
//! - [`chain`]: reading the MPE contract (channels, blocks, claim logs) with alloy.
//! - [`escrow`]: the seed's services on the log: payment transactions, merged channel state, claims.
//! - [`http`]: `/healthz` and `/metrics`.
//! - [`audit`]: the audit HTTP API (JSON, OpenAPI) on its own loopback listener: channels, events,
//!   claims, state as of a point of the log, the global feed, the stream heads.
//! - [`tls`]: the one crypto provider (ring), the trust of outgoing connections (system roots plus a
//!   CA file), and the public port's certificate, reloadable on SIGHUP.
//! - [`startup`]: the embedded Postgres cluster, the public port's accept loop (plain or TLS, HTTP/1.1
//!   and HTTP/2, graceful shutdown, SIGHUP) and the `serve` wiring; [`cli`] and [`telemetry`] are
//!   the binary's edges; [`commands`] holds the commands for finance, operations and audit (`claims
//!   due`, `reader add`, `bundle`, `verify-bundle`).

pub mod audit;
pub mod chain;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod escrow;
pub mod grpc;
pub mod http;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
