//! The lines of a bundle and their one canonical encoding (the layout is in the module doc of
//! [`super`]). Decoding a line and encoding it again must give back the same bytes: that is how
//! a re-encoding (other key order, whitespace, escapes, upper-case hex, numbers spelled otherwise)
//! is told from the original.

use alloy_primitives::B256;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::domain::{ChannelEvent, ChannelId, EthAddress};

/// The `format` of every bundle's first line.
pub const FORMAT: &str = "mpe-ledger-bundle";
/// The layout this code writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The longest line a reader accepts, newline excluded. The longest canonical line (a merge with
/// its block) is about 600 bytes; anything near this is not a bundle's.
pub const LINE_BYTES_MAX: usize = 4096;
/// How `recorded_at` is written: UTC with microseconds, as Postgres keeps it.
const RECORDED_AT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Line 1: what the events are about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub format_version: u64,
    /// The MultiPartyEscrow contract every payment signature is over.
    pub mpe_address: EthAddress,
    /// The chain of that contract; `None` when the ledger had not read it yet.
    #[serde(with = "decimal_u64")]
    pub chain_id: Option<u64>,
    pub channel_id: ChannelId,
}

impl Header {
    pub fn new(mpe_address: EthAddress, chain_id: Option<u64>, channel_id: ChannelId) -> Self {
        Self { format: FORMAT.to_owned(), format_version: FORMAT_VERSION, mpe_address, chain_id, channel_id }
    }
}

/// One event of the channel's stream, as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// The event's version in its stream (1, 2, …).
    pub version: u64,
    /// The log's insert time (not covered by the hash chain).
    pub recorded_at: RecordedAt,
    /// The event: its `type` first, then its fields in the order of `domain::event`.
    pub payload: ChannelEvent,
    pub prev_hash: B256,
    pub hash: B256,
}

/// The last line: how many event lines precede it and the SHA-256 of every byte before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndLine {
    pub events: u64,
    pub sha256: B256,
}

/// A `recorded_at` in its canonical form, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAt(String);

impl RecordedAt {
    /// The text if it is a time in the canonical form, else why not.
    pub fn parse(text: &str) -> Result<Self, String> {
        let time = chrono::NaiveDateTime::parse_from_str(text, RECORDED_AT_FORMAT).map_err(|e| {
            format!("recorded_at `{text}` is not a UTC time YYYY-MM-DDTHH:MM:SS.ffffffZ: {e}")
        })?;
        let canonical = time.format(RECORDED_AT_FORMAT).to_string();
        if canonical != text {
            return Err(format!("recorded_at `{text}` is not in canonical form (`{canonical}`)"));
        }
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for RecordedAt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RecordedAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `chain_id` as a decimal string, or `null`.
mod decimal_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else { return Ok(None) };
        // `parse` takes a `+`; the re-encoding check refuses it and leading zeros.
        text.parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("chain_id `{text}` is not a u64")))
    }
}

/// The line's bytes, without the newline that ends it.
pub fn encode<T: Serialize>(line: &T) -> String {
    serde_json::to_string(line).expect("bundle lines always serialize")
}

/// Which kind of line a canonical line is, told by how it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Event,
    End,
    Other,
}

pub fn kind_of(line: &[u8]) -> LineKind {
    if line.starts_with(br#"{"version":"#) {
        LineKind::Event
    } else if line.starts_with(br#"{"events":"#) {
        LineKind::End
    } else {
        LineKind::Other
    }
}

/// A line that does not decode, or decodes but is not in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecodable<T> {
    Malformed(String),
    /// Decodes to `value`, but its canonical encoding differs from byte `offset` (0-based) on.
    NotCanonical {
        offset: usize,
        value: T,
    },
}

/// Decodes one line, refusing any encoding but the canonical one.
pub fn decode<T: Serialize + for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, Undecodable<T>> {
    let text = std::str::from_utf8(line).map_err(|e| Undecodable::Malformed(format!("not UTF-8: {e}")))?;
    let value: T = serde_json::from_str(text).map_err(|e| Undecodable::Malformed(e.to_string()))?;
    let canonical = encode(&value);
    if canonical.as_bytes() != line {
        let offset = canonical.bytes().zip(line.iter()).take_while(|(a, b)| a == *b).count();
        return Err(Undecodable::NotCanonical { offset, value });
    }
    Ok(value)
}

/// Writes a bundle's lines in order, keeping the count and digest its end line needs: each call
/// returns the line with its newline, for the caller to write out.
pub struct BundleWriter {
    digest: Sha256,
    events: u64,
}

impl BundleWriter {
    /// The header line, and the writer for the event lines after it.
    pub fn start(header: &Header) -> (Self, String) {
        let mut writer = Self { digest: Sha256::new(), events: 0 };
        let line = writer.push(&encode(header));
        (writer, line)
    }

    fn push(&mut self, line: &str) -> String {
        let line = format!("{line}\n");
        self.digest.update(line.as_bytes());
        line
    }

    pub fn event(&mut self, event: &EventLine) -> String {
        self.events += 1;
        self.push(&encode(event))
    }

    /// The end line (with its newline).
    pub fn end(self) -> String {
        let sha256 = B256::from(<[u8; 32]>::from(self.digest.finalize()));
        format!("{}\n", encode(&EndLine { events: self.events, sha256 }))
    }
}

/// The end line (without its newline) of a bundle whose `events` event lines and header are `body`,
/// every byte of them: for re-sealing a bundle cut short, as a tamperer would.
pub fn end_line(events: u64, body: &[u8]) -> String {
    let sha256 = B256::from(<[u8; 32]>::from(Sha256::digest(body)));
    encode(&EndLine { events, sha256 })
}
