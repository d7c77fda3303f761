//! `mpe-ledger bundle --channel N [--output FILE]`: one channel's offline audit bundle, its layout
//! and what it proves in `domain::bundle` (and docs/audit.md); `verify-bundle` checks it.
//!
//! What this keeps true:
//! - It only reads, like `export`: the database is opened with [`Purpose::ReadOnly`] (no
//!   migration, READ ONLY sessions, this binary's schema or a refusal naming both versions; the
//!   embedded cluster is started for the command and stopped after when no `serve` runs it).
//! - One cut, short transactions: the stream is read through `store::export`'s scan, in pages of
//!   versions of the snapshot taken at the start, so the bundle is the stream as committed then,
//!   whatever is appended meanwhile, and no transaction stays open for long.
//! - Byte-exact: the same channel of the same log gives the same bytes (`domain::bundle`'s one
//!   canonical encoding). The bundle holds what the log holds, even a log that would not verify:
//!   judging it is `verify-bundle`'s work. An event that cannot be written in the canonical form (a
//!   payload that does not decode) stops the command, naming its version.
//! - No deployment record (the MPE address every signature is over), no bundle: it could not be
//!   checked. A channel with no events is refused too.
//! - `--output FILE` is written beside FILE under a temporary name and renamed onto it at the end:
//!   a bundle that fails leaves no partial file (it is removed).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloy_primitives::B256;
use anyhow::Context;
use sqlx::PgPool;

use crate::domain::bundle::{BundleWriter, EventLine, Header, RecordedAt};
use crate::domain::{ChannelId, Event};
use crate::startup::{Database, DatabaseSettings, Purpose};
use crate::store::export::{EXPORT_PAGE_KEYS, ExportFilter, ExportKind, ExportRow, ExportScan};
use crate::store::postgres::deployment;

/// Bytes buffered before a write to the output.
const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// The channel (decimal id).
    #[arg(long)]
    channel: ChannelId,
    /// Write into this file (replaced once the bundle is complete) instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// What was written.
struct Written {
    events: u64,
    head: (u64, B256),
}

pub async fn run(settings: &DatabaseSettings, args: BundleArgs) -> anyhow::Result<ExitCode> {
    let channel = args.channel;
    // Before the database, which may start a cluster: an output that cannot be created fails fast.
    let mut partial = args.output.as_deref().map(Partial::create).transpose()?;
    let database = Database::open(settings, Purpose::ReadOnly("bundle")).await?;
    let written = match &mut partial {
        None => {
            let mut out = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, io::stdout().lock());
            write_bundle(&database.pool, channel, &mut out).await
        }
        Some(partial) => write_bundle(&database.pool, channel, &mut partial.out).await,
    };
    database.close().await?;
    let Written { events, head: (version, hash) } = written?;
    if let Some(partial) = partial {
        partial.commit()?;
    }
    let into = args.output.map_or_else(|| "standard output".to_owned(), |path| path.display().to_string());
    eprintln!(
        "bundle: channel {channel}: {events} events written to {into}; head version {version}, hash {hash}"
    );
    Ok(ExitCode::SUCCESS)
}

/// `--output FILE` while it is written: a temporary file beside FILE, moved onto it by
/// [`Partial::commit`] and removed if dropped before (module doc).
struct Partial {
    path: PathBuf,
    target: PathBuf,
    out: BufWriter<File>,
    committed: bool,
}

impl Partial {
    fn create(target: &Path) -> anyhow::Result<Self> {
        let name = target
            .file_name()
            .with_context(|| format!("bundle: --output {} is not a file name", target.display()))?;
        let path =
            target.with_file_name(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id()));
        let file = File::create(&path)
            .with_context(|| format!("bundle: cannot create --output {}", path.display()))?;
        let out = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, file);
        Ok(Self { path, target: target.to_owned(), out, committed: false })
    }

    /// Makes the bundle durable and moves it onto FILE.
    fn commit(mut self) -> anyhow::Result<()> {
        let cannot = |what: &str| format!("bundle: cannot {what} {}", self.target.display());
        self.out.flush().with_context(|| cannot("write"))?;
        self.out.get_ref().sync_all().with_context(|| cannot("write"))?;
        std::fs::rename(&self.path, &self.target).with_context(|| cannot("move the bundle onto"))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn write_bundle(pool: &PgPool, channel: ChannelId, out: &mut impl Write) -> anyhow::Result<Written> {
    let recorded = {
        let mut conn = pool.acquire().await.context("bundle: connecting to the database")?;
        deployment::read(&mut conn).await.context("bundle: reading the deployment record")?
    };
    let Some(recorded) = recorded else {
        anyhow::bail!(
            "bundle: this database has no deployment record, so the MPE address its payment signatures are \
             over is not known and a bundle could not be checked (serve records it when started with the chain \
             configured)"
        );
    };
    let filter = ExportFilter { channel: Some(channel), ..ExportFilter::default() };
    let mut scan = ExportScan::start(pool, ExportKind::Events, filter, EXPORT_PAGE_KEYS)
        .await
        .context("bundle: reading the log")?;
    if scan.total_keys() == 0 {
        anyhow::bail!("bundle: channel {channel} has no events in this log");
    }
    let (mut writer, header) =
        BundleWriter::start(&Header::new(recorded.mpe_address, recorded.chain_id, channel));
    out.write_all(header.as_bytes()).context("bundle: writing the bundle")?;
    let (mut events, mut head) = (0u64, None);
    while let Some(page) = scan.next_page(pool).await.context("bundle: reading the log")? {
        for row in &page {
            let line = event_line(row)?;
            head = Some((line.version, line.hash));
            out.write_all(writer.event(&line).as_bytes()).context("bundle: writing the bundle")?;
            events += 1;
        }
    }
    out.write_all(writer.end().as_bytes()).context("bundle: writing the bundle")?;
    out.flush().context("bundle: writing the bundle")?;
    let head = head.with_context(|| format!("bundle: channel {channel} has no events in this log"))?;
    Ok(Written { events, head })
}

/// One row of the channel's stream as a bundle line.
fn event_line(row: &ExportRow) -> anyhow::Result<EventLine> {
    let at = || format!("bundle: {} version {}", row.stream, row.stream_version);
    let version =
        u64::try_from(row.stream_version).with_context(|| format!("{}: a negative version", at()))?;
    let payload: serde_json::Value =
        serde_json::from_str(&row.payload).with_context(|| format!("{}: payload is not JSON", at()))?;
    let payload = match Event::from_json(&row.event_type, &payload).with_context(at)? {
        Event::Channel(event) => event,
        other => anyhow::bail!("{}: a {} event in a channel's stream", at(), other.event_type()),
    };
    let recorded_at = RecordedAt::parse(&row.recorded_at).map_err(anyhow::Error::msg).with_context(at)?;
    let hash_of = |text: &str, what: &str| {
        text.parse::<B256>().with_context(|| format!("{}: {what} {text} is not 32 bytes", at()))
    };
    Ok(EventLine {
        version,
        recorded_at,
        payload,
        prev_hash: hash_of(&row.prev_hash, "prev_hash")?,
        hash: hash_of(&row.hash, "hash")?,
    })
}
