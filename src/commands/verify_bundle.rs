//! `mpe-ledger verify-bundle FILE [--head HASH]`: checks an audit bundle with no database at all:
//! it opens no connection, starts no cluster and reads no setting, only FILE. The rules and what
//! passing them proves, with and without `--head`, are `domain::bundle`'s (and docs/audit.md).
//!
//! - Exit 0: every rule holds; a summary on stdout (events, payments, claims, the head hash).
//! - Exit 1: each failure on stdout with its place (`line 4: version 3: hash …`), then a count.
//! - Exit 2: no bundle to check (unreadable file, not a bundle, another format version).
//!
//! The file is read one line at a time into a buffer of at most `LINE_BYTES_MAX` + 1 bytes (a
//! longer line is refused and skipped), so memory does not grow with the bundle beyond the fold's
//! record of the channel's claims.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use alloy_primitives::B256;
use anyhow::Context;

use crate::domain::bundle::{BundleCheck, BundleReport, LINE_BYTES_MAX};

#[derive(Debug, clap::Args)]
pub struct VerifyBundleArgs {
    /// The bundle, as `mpe-ledger bundle` wrote it.
    file: PathBuf,
    /// The channel stream's head hash, the trust anchor (0x and 64 hex digits, as `mpe-ledger verify
    /// --channel N` prints it): the bundle's last event must have this hash, so nothing was cut off.
    #[arg(long, value_name = "HASH", value_parser = parse_head)]
    head: Option<B256>,
}

/// `--head`: `0x` and 64 hex digits (either case).
fn parse_head(text: &str) -> Result<B256, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    match hex::decode(digits) {
        Ok(bytes) if bytes.len() == 32 => Ok(B256::from_slice(&bytes)),
        _ => Err(format!(
            "`{text}` is not a head hash: give 0x and 64 hex digits, as `mpe-ledger verify --channel N` prints it"
        )),
    }
}

pub fn run(args: VerifyBundleArgs) -> anyhow::Result<ExitCode> {
    let shown = args.file.display().to_string();
    let file = File::open(&args.file).with_context(|| format!("verify-bundle: cannot open {shown}"))?;
    let report = check(BufReader::new(file), args.head).with_context(|| format!("verify-bundle: {shown}"))?;
    if report.passed() {
        print!("{}", summary(&report));
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &report.failures {
        println!("verify-bundle: {failure}");
    }
    let hidden = report.failures_total - report.failures.len() as u64;
    if hidden > 0 {
        println!("verify-bundle: … and {hidden} more");
    }
    println!("verify-bundle: {shown}: FAILED: {} failure(s)", report.failures_total);
    Ok(ExitCode::from(1))
}

/// Feeds every line of `reader` to the check.
fn check(mut reader: impl BufRead, head: Option<B256>) -> anyhow::Result<BundleReport> {
    let mut line = Vec::with_capacity(LINE_BYTES_MAX + 1);
    let mut ended_with_newline = next_line(&mut reader, &mut line)?.unwrap_or(false);
    let mut check = BundleCheck::start(&line, head)?;
    while let Some(newline) = next_line(&mut reader, &mut line)? {
        check.line(&line);
        ended_with_newline = newline;
    }
    Ok(check.finish(ended_with_newline))
}

/// Reads the next line into `line` without its newline: `None` at the end of the file, else
/// whether a newline ended it. A line longer than `LINE_BYTES_MAX` keeps its first
/// `LINE_BYTES_MAX` + 1 bytes (so the check refuses it) and the rest is skipped.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Option<bool>> {
    line.clear();
    let limit = LINE_BYTES_MAX as u64 + 1;
    if reader.by_ref().take(limit).read_until(b'\n', line)? == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Some(true));
    }
    if line.len() <= LINE_BYTES_MAX {
        return Ok(Some(false));
    }
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(Some(false));
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(Some(true));
            }
            None => {
                let all = available.len();
                reader.consume(all);
            }
        }
    }
}

fn summary(report: &BundleReport) -> String {
    let header = &report.header;
    let s = &report.summary;
    let chain = header.chain_id.map_or_else(|| "an unrecorded chain".to_owned(), |id| format!("chain {id}"));
    let (version, hash) = s.head.expect("a bundle that passed has events");
    let mut text = format!(
        "verify-bundle: channel {} of the MPE contract {} on {chain}: {} events (payments: {}, claims \
         started: {}, claims ended: {}, merges from the chain: {})\n",
        header.channel_id,
        header.mpe_address,
        s.events,
        s.payments,
        s.claims_started,
        s.claims_ended,
        s.merges
    );
    if let Some(state) = &report.state {
        let c = &state.channel;
        text.push_str(&format!(
            "verify-bundle: folded: nonce {}, value {}, authorised {} (cogs)\n",
            c.nonce, c.full_amount, c.authorized_amount
        ));
    }
    text.push_str(&format!(
        "verify-bundle: hash chain intact, every client signature by the channel's signer or sender, every fold \
         rule kept; head version {version}, hash {hash}\n"
    ));
    text.push_str(if report.anchored {
        "verify-bundle: anchored: the last event is the given head, so nothing was cut off the end\n"
    } else {
        "verify-bundle: not anchored: internal consistency only; give --head HASH (from `mpe-ledger verify \
         --channel N`) to prove nothing was cut off the end\n"
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_cut_at_the_limit_and_the_next_line_read_whole() {
        let mut bytes = vec![b'x'; LINE_BYTES_MAX * 3];
        bytes.extend_from_slice(b"\nnext\nlast");
        let mut reader = io::BufReader::with_capacity(64, &bytes[..]);
        let mut line = Vec::new();
        assert_eq!(next_line(&mut reader, &mut line).unwrap(), Some(true));
        assert_eq!(line.len(), LINE_BYTES_MAX + 1);
        assert_eq!(next_line(&mut reader, &mut line).unwrap(), Some(true));
        assert_eq!(line, b"next");
        assert_eq!(next_line(&mut reader, &mut line).unwrap(), Some(false));
        assert_eq!(line, b"last");
        assert_eq!(next_line(&mut reader, &mut line).unwrap(), None);
    }

    #[test]
    fn head_hashes_are_0x_and_64_hex_digits() {
        let hash = format!("0x{}", "ab".repeat(32));
        assert_eq!(parse_head(&hash).unwrap(), B256::repeat_byte(0xab));
        assert_eq!(parse_head(&hash.to_uppercase()[2..]).unwrap(), B256::repeat_byte(0xab));
        for bad in ["", "0x", "0x1234", &format!("0x{}", "zz".repeat(32))] {
            assert!(parse_head(bad).unwrap_err().contains("is not a head hash"), "{bad}");
        }
    }
}
