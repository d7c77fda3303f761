//! The two output formats of `mpe-ledger export`, pure (no I/O beyond the writer it is handed).
//!
//! - **CSV** (RFC 4180): one header line, then one line per row, `\n`-terminated; a field is
//!   quoted (`"`, inner quotes doubled) only when it holds a comma, a quote, CR or LF; an absent
//!   value is an empty field.
//! - **JSON Lines**: one object per line with the header's keys in the same order; an absent
//!   value is `null`; positions and versions are JSON numbers; amounts, nonces and channel ids are
//!   strings of decimal digits (a uint256 does not fit a JSON number that every reader reads
//!   exactly); `payload` is the event's JSON object itself.
//!
//! Every value is written exactly as [`ExportRow`] holds it: nothing is parsed or rounded.

use std::io::{self, Write};

use crate::store::export::{ExportKind, ExportRow};

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// One output value of a row.
enum Value<'a> {
    Number(i64),
    Text(Option<&'a str>),
    /// Already JSON (the payload).
    Json(&'a str),
}

const EVENT_COLUMNS: [&str; 12] = [
    "position",
    "recorded_at",
    "stream",
    "stream_version",
    "event_type",
    "channel_id",
    "nonce",
    "amount",
    "signature",
    "payload",
    "prev_hash",
    "hash",
];

const PAYMENT_COLUMNS: [&str; 8] =
    ["position", "recorded_at", "channel_id", "stream_version", "nonce", "amount", "increment", "signature"];

fn columns(kind: ExportKind) -> &'static [&'static str] {
    match kind {
        ExportKind::Events => &EVENT_COLUMNS,
        ExportKind::Payments => &PAYMENT_COLUMNS,
    }
}

fn text(value: &Option<String>) -> Value<'_> {
    Value::Text(value.as_deref())
}

fn values(kind: ExportKind, row: &ExportRow) -> Vec<Value<'_>> {
    match kind {
        ExportKind::Events => vec![
            Value::Number(row.position),
            Value::Text(Some(&row.recorded_at)),
            Value::Text(Some(&row.stream)),
            Value::Number(row.stream_version),
            Value::Text(Some(&row.event_type)),
            text(&row.channel_id),
            text(&row.nonce),
            text(&row.amount),
            text(&row.signature),
            Value::Json(&row.payload),
            Value::Text(Some(&row.prev_hash)),
            Value::Text(Some(&row.hash)),
        ],
        ExportKind::Payments => vec![
            Value::Number(row.position),
            Value::Text(Some(&row.recorded_at)),
            text(&row.channel_id),
            Value::Number(row.stream_version),
            text(&row.nonce),
            text(&row.amount),
            text(&row.increment),
            text(&row.signature),
        ],
    }
}

/// Writes `format`'s rows of `kind`.
#[derive(Debug, Clone, Copy)]
pub struct RowWriter {
    pub format: Format,
    pub kind: ExportKind,
}

impl RowWriter {
    /// What comes before the first row: the CSV header; nothing for JSON Lines.
    pub fn header(&self, out: &mut impl Write) -> io::Result<()> {
        match self.format {
            Format::Csv => writeln!(out, "{}", columns(self.kind).join(",")),
            Format::Jsonl => Ok(()),
        }
    }

    pub fn row(&self, out: &mut impl Write, row: &ExportRow) -> io::Result<()> {
        let values = values(self.kind, row);
        match self.format {
            Format::Csv => {
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    match value {
                        Value::Number(n) => write!(out, "{n}")?,
                        Value::Text(None) => {}
                        Value::Text(Some(text)) | Value::Json(text) => csv_field(out, text)?,
                    }
                }
                out.write_all(b"\n")
            }
            Format::Jsonl => {
                out.write_all(b"{")?;
                for (i, (name, value)) in columns(self.kind).iter().zip(&values).enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    write!(out, "\"{name}\":")?;
                    match value {
                        Value::Number(n) => write!(out, "{n}")?,
                        Value::Text(None) => out.write_all(b"null")?,
                        Value::Text(Some(text)) => serde_json::to_writer(&mut *out, text)?,
                        Value::Json(json) => out.write_all(json.as_bytes())?,
                    }
                }
                out.write_all(b"}\n")
            }
        }
    }
}

fn csv_field(out: &mut impl Write, text: &str) -> io::Result<()> {
    if !text.contains([',', '"', '\r', '\n']) {
        return out.write_all(text.as_bytes());
    }
    out.write_all(b"\"")?;
    out.write_all(text.replace('"', "\"\"").as_bytes())?;
    out.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment() -> ExportRow {
        ExportRow {
            position: 7,
            recorded_at: "2026-12-07T16:00:00.000001Z".into(),
            stream: "channel/42".into(),
            stream_version: 3,
            event_type: "payment_accepted".into(),
            channel_id: Some("42".into()),
            nonce: Some("0".into()),
            amount: Some(
                "115792089237316195423570985008687907853269984665640564039457584007913129639935".into(),
            ),
            increment: Some("10".into()),
            signature: Some("0xab".into()),
            payload: r#"{"type": "payment_accepted", "nonce": "0"}"#.into(),
            prev_hash: "0x00".into(),
            hash: "0x01".into(),
        }
    }

    fn written(format: Format, kind: ExportKind, row: &ExportRow) -> String {
        let writer = RowWriter { format, kind };
        let mut out = Vec::new();
        writer.header(&mut out).unwrap();
        writer.row(&mut out, row).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_only_fields_that_need_it_and_keeps_amounts_exact() {
        assert_eq!(
            written(Format::Csv, ExportKind::Events, &payment()),
            "position,recorded_at,stream,stream_version,event_type,channel_id,nonce,amount,signature,payload,prev_hash,hash\n\
             7,2026-12-07T16:00:00.000001Z,channel/42,3,payment_accepted,42,0,\
             115792089237316195423570985008687907853269984665640564039457584007913129639935,0xab,\
             \"{\"\"type\"\": \"\"payment_accepted\"\", \"\"nonce\"\": \"\"0\"\"}\",0x00,0x01\n"
        );
    }

    #[test]
    fn csv_leaves_absent_values_empty() {
        let row = ExportRow { nonce: None, amount: None, signature: None, ..payment() };
        assert_eq!(
            written(Format::Csv, ExportKind::Payments, &row),
            "position,recorded_at,channel_id,stream_version,nonce,amount,increment,signature\n\
             7,2026-12-07T16:00:00.000001Z,42,3,,,10,\n"
        );
    }

    #[test]
    fn json_lines_keep_the_payload_as_json_and_amounts_as_strings() {
        assert_eq!(
            written(Format::Jsonl, ExportKind::Events, &ExportRow { signature: None, ..payment() }),
            "{\"position\":7,\"recorded_at\":\"2026-12-07T16:00:00.000001Z\",\"stream\":\"channel/42\",\
             \"stream_version\":3,\"event_type\":\"payment_accepted\",\"channel_id\":\"42\",\"nonce\":\"0\",\
             \"amount\":\"115792089237316195423570985008687907853269984665640564039457584007913129639935\",\
             \"signature\":null,\"payload\":{\"type\": \"payment_accepted\", \"nonce\": \"0\"},\
             \"prev_hash\":\"0x00\",\"hash\":\"0x01\"}\n"
        );
    }

    #[test]
    fn every_csv_field_that_holds_a_separator_is_quoted() {
        let mut out = Vec::new();
        for text in ["a,b", "say \"hi\"", "line\nbreak", "cr\r", "plain"] {
            csv_field(&mut out, text).unwrap();
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a,b\"|\"say \"\"hi\"\"\"|\"line\nbreak\"|\"cr\r\"|plain|"
        );
    }
}
