//! The offline check of a bundle, fed one line at a time (the reader owns the file; this owns
//! the rules, listed in the module doc of [`super`]). Every failure is kept with its place (line
//! and event version); checking goes on after one, so that a bundle's every problem is named.

use std::fmt;

use alloy_primitives::B256;
use sha2::{Digest, Sha256};

use crate::domain::event::{GENESIS_HASH, chain_hash};
use crate::domain::fold::apply;
use crate::domain::signature::{PaymentSignatureError, check_payment_signature};
use crate::domain::{ChannelEvent, ChannelProjection, EthAddress, Event, FoldError, StreamId};

use super::format::{
    self, EndLine, EventLine, FORMAT, FORMAT_VERSION, Header, LINE_BYTES_MAX, LineKind, Undecodable,
};

/// Failures kept for the report; further ones are only counted.
pub const FAILURES_KEPT_MAX: usize = 100;

/// A file that is not a bundle this code can check at all (`verify-bundle` exits 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not an mpe-ledger bundle: {reason}")]
    NotABundle { reason: String },
    #[error("a bundle of format version {found}, but this binary reads format version {FORMAT_VERSION} only")]
    UnsupportedFormatVersion { found: String },
    #[error("line 1: the bundle's header cannot be read: {reason}")]
    BadHeader { reason: String },
}

/// What is wrong at one place of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not in canonical form (its canonical encoding differs from byte {offset} on)")]
    NotCanonical { offset: usize },
    #[error("not a line of a bundle: {reason}")]
    Malformed { reason: String },
    #[error("longer than {LINE_BYTES_MAX} bytes: not a line of a bundle")]
    TooLong,
    #[error(
        "version {found} where version {expected} was expected: an event is missing, repeated or out of order"
    )]
    VersionOutOfOrder { expected: u64, found: u64 },
    #[error("prev_hash {recorded} is not the previous event's hash {previous} (broken link)")]
    BrokenLink { recorded: B256, previous: B256 },
    #[error("hash {recorded} is not the hash of the event's content, {recomputed} (the content changed)")]
    HashMismatch { recorded: B256, recomputed: B256 },
    #[error("signature (forged): {error}, not by the channel's signer {signer} or sender {sender}")]
    ForgedSignature { error: PaymentSignatureError, signer: EthAddress, sender: EthAddress },
    #[error("fold: {0}")]
    Fold(FoldError),
    #[error("a line after the end line")]
    AfterEnd,
    #[error("end line: it counts {counted} events, the bundle holds {found}")]
    EndCountMismatch { counted: u64, found: u64 },
    #[error(
        "end line: the SHA-256 of the lines before it is {computed}, the end line says {recorded}: a byte \
         changed that the hash chain does not cover (a recorded time, the chain id), or the end line"
    )]
    EndDigestMismatch { computed: B256, recorded: B256 },
    #[error("the file ends here without an end line: it was cut off")]
    NoEndLine,
    #[error("the file does not end with a newline: it was cut off")]
    NoFinalNewline,
    #[error("the bundle holds no events")]
    NoEvents,
    #[error("head: the last event's hash {last} is not the anchor {anchor}: {why}")]
    HeadMismatch { last: B256, anchor: B256, why: String },
}

/// A problem and its place: the line (1 is the header) and, for an event, its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: u64,
    pub version: Option<u64>,
    pub problem: Problem,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(version) => write!(f, "line {}: version {version}: {}", self.line, self.problem),
            None => write!(f, "line {}: {}", self.line, self.problem),
        }
    }
}

/// What the events hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    /// `payment accepted` events.
    pub payments: u64,
    pub claims_started: u64,
    /// `claim landed`, `sender reclaimed` and `claim finished` events.
    pub claims_ended: u64,
    pub merges: u64,
    /// The last event's version and hash.
    pub head: Option<(u64, B256)>,
}

/// The outcome of a check.
#[derive(Debug, Clone)]
pub struct BundleReport {
    pub header: Header,
    pub summary: Summary,
    /// The channel as folded, when every event folded.
    pub state: Option<ChannelProjection>,
    /// The first [`FAILURES_KEPT_MAX`] failures, in file order.
    pub failures: Vec<Failure>,
    pub failures_total: u64,
    /// Whether a head hash was given to compare the last event with.
    pub anchored: bool,
}

impl BundleReport {
    pub fn passed(&self) -> bool {
        self.failures_total == 0
    }
}

/// A check under way: [`BundleCheck::start`] with line 1, [`BundleCheck::line`] with every other
/// line (without its newline), then [`BundleCheck::finish`].
pub struct BundleCheck {
    header: Header,
    stream: StreamId,
    anchor: Option<B256>,
    /// Where an event with the anchor's hash was seen: (line, version).
    anchor_seen: Option<(u64, u64)>,
    lines: u64,
    /// Of every byte before the end line.
    digest: Sha256,
    ended: bool,
    expected_version: u64,
    previous_hash: B256,
    last_event_line: u64,
    state: Option<ChannelProjection>,
    /// The channel's signer and sender (immutable, so known even after a fold failure).
    parties: Option<(EthAddress, EthAddress)>,
    fold_failed: bool,
    summary: Summary,
    failures: Vec<Failure>,
    failures_total: u64,
}

impl BundleCheck {
    /// Reads line 1. A file that is not a bundle, or of another format version, is refused here.
    pub fn start(first: &[u8], anchor: Option<B256>) -> Result<Self, BundleError> {
        let not_a_bundle = |reason: &str| BundleError::NotABundle { reason: reason.to_owned() };
        if first.len() > LINE_BYTES_MAX {
            return Err(not_a_bundle("its first line is longer than any bundle header"));
        }
        let value: serde_json::Value = std::str::from_utf8(first)
            .ok()
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or_else(|| not_a_bundle("its first line is not JSON"))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(not_a_bundle(&format!("its first line has no \"format\":\"{FORMAT}\"")));
        }
        match value.get("format_version") {
            Some(version) if version.as_u64() == Some(FORMAT_VERSION) => {}
            found => {
                let found = found.map_or_else(|| "(none)".to_owned(), ToString::to_string);
                return Err(BundleError::UnsupportedFormatVersion { found });
            }
        }
        let (header, problem) = match format::decode::<Header>(first) {
            Ok(header) => (header, None),
            Err(Undecodable::NotCanonical { offset, value }) => {
                (value, Some(Problem::NotCanonical { offset }))
            }
            Err(Undecodable::Malformed(reason)) => return Err(BundleError::BadHeader { reason }),
        };
        let mut digest = Sha256::new();
        digest.update(first);
        digest.update(b"\n");
        let mut check = Self {
            stream: StreamId::Channel(header.channel_id),
            header,
            anchor,
            anchor_seen: None,
            lines: 1,
            digest,
            ended: false,
            expected_version: 1,
            previous_hash: B256::from(GENESIS_HASH),
            last_event_line: 0,
            state: None,
            parties: None,
            fold_failed: false,
            summary: Summary::default(),
            failures: Vec::new(),
            failures_total: 0,
        };
        if let Some(problem) = problem {
            check.fail(1, None, problem);
        }
        Ok(check)
    }

    fn fail(&mut self, line: u64, version: Option<u64>, problem: Problem) {
        self.failures_total += 1;
        if self.failures.len() < FAILURES_KEPT_MAX {
            self.failures.push(Failure { line, version, problem });
        }
    }

    /// Checks the next line (its bytes without the newline; more than [`LINE_BYTES_MAX`] of them
    /// when the line is longer, the rest being skipped by the reader).
    pub fn line(&mut self, bytes: &[u8]) {
        self.lines += 1;
        let line = self.lines;
        if self.ended {
            return self.fail(line, None, Problem::AfterEnd);
        }
        if bytes.len() > LINE_BYTES_MAX {
            self.digest.update(bytes);
            return self.fail(line, None, Problem::TooLong);
        }
        if format::kind_of(bytes) == LineKind::End {
            return self.end(line, bytes);
        }
        self.digest.update(bytes);
        self.digest.update(b"\n");
        match format::decode::<EventLine>(bytes) {
            Ok(event) => self.event(line, event),
            Err(Undecodable::NotCanonical { offset, value }) => {
                self.fail(line, Some(value.version), Problem::NotCanonical { offset });
                self.event(line, value);
            }
            Err(Undecodable::Malformed(reason)) => self.fail(line, None, Problem::Malformed { reason }),
        }
    }

    fn event(&mut self, line: u64, event: EventLine) {
        let EventLine { version, payload, prev_hash, hash, .. } = event;
        let at = Some(version);
        self.summary.events += 1;
        self.last_event_line = line;
        if version != self.expected_version {
            self.fail(
                line,
                at,
                Problem::VersionOutOfOrder { expected: self.expected_version, found: version },
            );
        }
        self.expected_version = version.saturating_add(1);
        if prev_hash != self.previous_hash {
            self.fail(line, at, Problem::BrokenLink { recorded: prev_hash, previous: self.previous_hash });
        }
        let event = Event::Channel(payload);
        let recomputed = B256::from(chain_hash(&prev_hash.0, &self.stream, version, &event));
        if recomputed != hash {
            self.fail(line, at, Problem::HashMismatch { recorded: hash, recomputed });
        }
        self.previous_hash = hash;
        self.summary.head = Some((version, hash));
        if self.anchor == Some(hash) {
            self.anchor_seen = Some((line, version));
        }
        let Event::Channel(payload) = event else { unreachable!("built above") };
        self.count(&payload);
        if let (
            ChannelEvent::PaymentAccepted { nonce, amount, signature }
            | ChannelEvent::ClaimStarted { nonce, amount, signature },
            Some((signer, sender)),
        ) = (&payload, self.parties)
            && let Err(error) = check_payment_signature(
                &self.header.mpe_address,
                self.header.channel_id,
                *nonce,
                *amount,
                signature,
                &signer,
                &sender,
            )
        {
            self.fail(line, at, Problem::ForgedSignature { error, signer, sender });
        }
        if self.fold_failed {
            return;
        }
        match apply(self.header.channel_id, self.state.take(), &payload) {
            Ok(next) => {
                self.parties = Some((next.channel.signer, next.channel.sender));
                self.state = Some(next);
            }
            Err(error) => {
                self.fold_failed = true;
                self.fail(line, at, Problem::Fold(error));
            }
        }
    }

    fn count(&mut self, event: &ChannelEvent) {
        let summary = &mut self.summary;
        match event {
            ChannelEvent::ChannelMergedFromChain { .. } => summary.merges += 1,
            ChannelEvent::PaymentAccepted { .. } => summary.payments += 1,
            ChannelEvent::ClaimStarted { .. } => summary.claims_started += 1,
            ChannelEvent::ClaimLanded { .. }
            | ChannelEvent::SenderReclaimed { .. }
            | ChannelEvent::ClaimFinished { .. } => summary.claims_ended += 1,
        }
    }

    fn end(&mut self, line: u64, bytes: &[u8]) {
        self.ended = true;
        let end = match format::decode::<EndLine>(bytes) {
            Ok(end) => end,
            Err(Undecodable::NotCanonical { offset, value }) => {
                self.fail(line, None, Problem::NotCanonical { offset });
                value
            }
            Err(Undecodable::Malformed(reason)) => {
                return self.fail(line, None, Problem::Malformed { reason });
            }
        };
        if end.events != self.summary.events {
            let found = self.summary.events;
            self.fail(line, None, Problem::EndCountMismatch { counted: end.events, found });
        }
        let computed = B256::from(<[u8; 32]>::from(self.digest.clone().finalize()));
        if computed != end.sha256 {
            self.fail(line, None, Problem::EndDigestMismatch { computed, recorded: end.sha256 });
        }
    }

    /// Ends the check; `ended_with_newline` says whether the file's last byte was a newline.
    pub fn finish(mut self, ended_with_newline: bool) -> BundleReport {
        let last = self.lines;
        if !ended_with_newline {
            self.fail(last, None, Problem::NoFinalNewline);
        }
        if !self.ended {
            self.fail(last, None, Problem::NoEndLine);
        }
        match (self.summary.head, self.anchor) {
            (None, _) => self.fail(last, None, Problem::NoEvents),
            (Some((version, last_hash)), Some(anchor)) if last_hash != anchor => {
                let why = match self.anchor_seen {
                    Some((line, seen)) => format!(
                        "the anchor is the hash of version {seen} (line {line}); the bundle goes on past the anchored head"
                    ),
                    None => "no event of the bundle has the anchor's hash: events were cut off the end, or \
                             this is another history than the anchored one"
                        .to_owned(),
                };
                let line = self.last_event_line;
                self.fail(line, Some(version), Problem::HeadMismatch { last: last_hash, anchor, why });
            }
            (Some(_), _) => {}
        }
        BundleReport {
            header: self.header,
            summary: self.summary,
            state: if self.fold_failed { None } else { self.state },
            failures: self.failures,
            failures_total: self.failures_total,
            anchored: self.anchor.is_some(),
        }
    }
}
