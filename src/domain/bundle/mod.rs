//! The offline audit bundle: one channel's whole history in one byte-exact file, and its check,
//! which needs no database (`mpe-ledger bundle`, `mpe-ledger verify-bundle`; docs/audit.md).
//!
//! # Layout (format version 1)
//!
//! JSON Lines: UTF-8, every line ends with one `\n` (no `\r`), no blank lines, no whitespace
//! outside strings, keys in the fixed order below, no escapes that are not needed. Numbers that
//! are money or ids are decimal strings (exact uint256, no sign, no leading zero); versions and
//! block numbers are JSON integers; bytes are `0x` and lower-case hex.
//!
//! ```text
//! line 1        {"format":"mpe-ledger-bundle","format_version":1,"mpe_address":"0x…","chain_id":"1337","channel_id":"42"}
//! line 2 … n+1  {"version":1,"recorded_at":"2026-12-08T00:00:00.123456Z","payload":{…},"prev_hash":"0x…","hash":"0x…"}
//! line n+2      {"events":n,"sha256":"0x…"}
//! ```
//!
//! - Line 1, the header: the MPE contract and chain of the deployment record (`chain_id` is
//!   `null` when the ledger had not read it yet) and the channel. The stream is
//!   `channel/<channel_id>`.
//! - One line per event of that stream, in version order from 1: its version, the log's
//!   `recorded_at` (UTC, microseconds), the event as the log's payload holds it, and its hash-chain
//!   link. `payload` starts with `"type"`; its other keys are the event's fields in the order of
//!   `domain::event` (the same order as its canonical fields, which the hash covers):
//!   - `channel_merged_from_chain`: `chain` (`nonce`, `sender`, `signer`, `recipient`, `group_id`,
//!     `value`, `expiration`) and `block` (`{"number":N,"hash":"0x…"}`, or `null`);
//!   - `payment_accepted`, `claim_started`: `nonce`, `amount`, `signature` (the 65 bytes as the
//!     client sent them);
//!   - `claim_landed`: `nonce`, `transaction_hash`, `block_number`, `actual_amount`,
//!     `planned_amount`; `sender_reclaimed`: `nonce`, `transaction_hash`, `block_number`,
//!     `value_taken_back`, `provider_loss`; `claim_finished` (old logs): `nonce`, `outcome`,
//!     `transaction_hash`, `block_number`, `amount`.
//! - The end line: how many event lines there are and the SHA-256 of every byte before it.
//!
//! The writer is serde's, over the structs of [`format`] (a struct's fields serialize in their
//! declared order); the reader decodes a line and encodes it again, and a line whose bytes differ
//! from that re-encoding is refused ([`Problem::NotCanonical`]). So one log gives one file, and
//! the same channel of the same log always the same bytes.
//!
//! The layout is a public interface (auditors keep bundles): it changes only under a new
//! [`FORMAT_VERSION`], with a CHANGELOG entry, and a reader refuses a version it does not know.
//!
//! # What the check proves ([`check`])
//!
//! Each rule, with the line and version where it breaks:
//! - every line is in canonical form and at most [`LINE_BYTES_MAX`] bytes;
//! - versions run 1, 2, 3, … and each `prev_hash` is the previous line's `hash` (the first is 32
//!   zero bytes): a dropped, repeated or reordered event is named where the sequence breaks;
//! - each `hash` is the domain's hash of (`prev_hash`, stream, version, type, canonical fields)
//!   (`domain::event`): a changed amount, signature byte or block hash is named at its event;
//! - each `payment_accepted` and `claim_started` signature recovers to the channel's signer or
//!   sender as folded before it, over the header's MPE address (the rule `verify` applies,
//!   `domain::signature::check_payment_signature`);
//! - the events fold by the domain's fold (`domain::fold`): amounts within the channel's value,
//!   never decreasing at a nonce, claims of exactly the authorised amount, and the rest;
//! - the end line counts the events and hashes every byte before it, including what the hash
//!   chain does not cover (recorded times, the chain id, the header's layout);
//! - given the stream's head hash as anchor (`--head`, printed by `mpe-ledger verify --channel N`),
//!   the last event's hash is the anchor.
//!
//! # Threat model
//!
//! - **With the anchor**, obtained from the ledger over a channel the auditor trusts (`verify` on
//!   the provider's database, or the audit API), a bundle that passes is the channel's whole history
//!   up to that head, unaltered: every event's content and order is fixed by the hash chain ending
//!   at the anchor (SHA-256 collisions aside), so nothing was changed, dropped, reordered or cut off
//!   the end. Events written after the anchor was taken are not covered.
//! - **Without the anchor** the check proves internal consistency only. A bundle cut after any
//!   event and given a new end line passes, and so does a history rebuilt from scratch by whoever
//!   holds the signing keys (the client can sign any payments it likes, and the hash chain and end
//!   line are recomputable by anyone). The end line detects accidental damage, never a deliberate
//!   change.
//! - **Signatures** prove that the client's key (the channel's signer or sender) authorised each
//!   cumulative amount at its nonce, on that MPE contract: the provider cannot invent or raise a
//!   payment, with or without the anchor. They do not prove the calls were served.
//! - **Merges** carry the block number and hash whose chain state they used: anyone can ask any node
//!   of the chain for that block's hash (and the contract's `channels(id)` at it) to check the
//!   values the ledger took from the chain. Claims carry their transaction hash, checkable likewise.
//! - **Not covered by the hash chain**: the recorded times and the header's chain id (the ledger's
//!   word; the chain id can be checked by finding the merges' blocks on a node of that chain).
//!   The MPE address is covered indirectly: another address makes every signature fail.

pub mod check;
pub mod format;

pub use check::{BundleCheck, BundleError, BundleReport, FAILURES_KEPT_MAX, Failure, Problem, Summary};
pub use format::{
    BundleWriter, EndLine, EventLine, FORMAT, FORMAT_VERSION, Header, LINE_BYTES_MAX, RecordedAt,
};

#[cfg(test)]
mod tests;
