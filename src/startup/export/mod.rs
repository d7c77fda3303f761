//! `mpe-ledger export`: the log's events or payments, of the whole log or one channel, within a
//! time range, as CSV or JSON Lines ([`format`]), on standard output or into a file.
//!
//! What this keeps true:
//! - It only reads: the database is opened with [`Purpose::ReadOnly`] (no migration, READ ONLY
//!   sessions, this binary's schema or a refusal), and reads go in short pages of one consistent
//!   cut (`store::export`).
//! - Streamed: rows are written page by page and the output is flushed after each page; the next
//!   page is read while one is written, so memory is bounded by two pages whatever the size of the
//!   log.
//! - A progress bar (on stderr) only when stderr is a terminal and the rows do not go to that
//!   terminal (`--output FILE`, or stdout redirected): piped output never carries a bar's bytes.
//! - Bad arguments are refused before anything is opened, with a message naming the argument and
//!   a non-zero exit; a reader that closes the pipe early (`| head`) ends the export quietly.

pub mod format;

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::PgPool;

use super::{Database, DatabaseSettings, Purpose};
use crate::domain::ChannelId;
use crate::store::StoreError;
use crate::store::export::{
    EXPORT_PAGE_KEYS, EXPORT_PAGE_KEYS_MAX, ExportFilter, ExportKind, ExportScan, PageQuery,
};
use format::{Format, RowWriter};

/// Bytes buffered before a write to the output.
const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// Every event: merges from the chain, payments, claims, key-value and lease events.
    Events,
    /// Every accepted payment, with what it added at its nonce (`increment`).
    Payments,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// What to export.
    #[arg(value_enum)]
    what: What,
    /// Only this channel's events (decimal id).
    #[arg(long)]
    channel: Option<ChannelId>,
    /// Only events recorded at or after this time: RFC 3339 (2026-12-07T16:00:00Z, or with an
    /// offset) or a date (2026-12-07, midnight UTC). Recorded time is insert time, not commit time.
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only events recorded before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Write into this file (created or truncated) instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Log positions (or a channel's versions) read per transaction.
    #[arg(long, default_value_t = EXPORT_PAGE_KEYS,
          value_parser = clap::value_parser!(i64).range(1..=EXPORT_PAGE_KEYS_MAX))]
    page_size: i64,
}

/// `--since` and `--until`: RFC 3339, or a date meaning its midnight UTC.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "`{text}` is not a time: give RFC 3339 (2026-12-07T16:00:00Z, or with an offset such as \
         +01:00) or a date (2026-12-07, midnight UTC)"
    ))
}

impl ExportArgs {
    fn filter(&self) -> anyhow::Result<ExportFilter> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            anyhow::bail!(
                "export: --since {} is not before --until {}: the range [since, until) is empty",
                since.to_rfc3339(),
                until.to_rfc3339()
            );
        }
        Ok(ExportFilter { channel: self.channel, since: self.since, until: self.until })
    }

    fn kind(&self) -> ExportKind {
        match self.what {
            What::Events => ExportKind::Events,
            What::Payments => ExportKind::Payments,
        }
    }
}

/// Why an export stopped early.
enum Stopped {
    /// The reader closed the pipe: not an error.
    ReaderGone,
    Output(io::Error),
    Store(StoreError),
    /// The task reading a page failed to finish (it panicked).
    Reader(tokio::task::JoinError),
}

/// Runs `mpe-ledger export`.
pub async fn run(settings: &DatabaseSettings, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let filter = args.filter()?;
    // Before the database, which may start a cluster: an output that cannot be created fails fast.
    let (output, rows_to_terminal): (Box<dyn Write>, bool) = match &args.output {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("export: cannot create --output {}", path.display()))?;
            (Box::new(file), false)
        }
        None => (Box::new(io::stdout().lock()), io::stdout().is_terminal()),
    };
    let mut output = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, output);
    let show_progress = io::stderr().is_terminal() && !rows_to_terminal;

    let database = Database::open(settings, Purpose::ReadOnly("export")).await?;
    let writer = RowWriter { format: args.format, kind: args.kind() };
    let started = Instant::now();
    let result = export(&database.pool, &args, filter, writer, &mut output, show_progress).await;
    database.close().await?;
    match result {
        Ok(rows) => {
            tracing::info!(rows, seconds = started.elapsed().as_secs_f64(), "export finished");
            Ok(ExitCode::SUCCESS)
        }
        Err(Stopped::ReaderGone) => Ok(ExitCode::SUCCESS),
        Err(Stopped::Output(error)) => Err(anyhow::Error::new(error).context(match &args.output {
            Some(path) => format!("export: writing {}", path.display()),
            None => "export: writing standard output".to_owned(),
        })),
        Err(Stopped::Store(error)) => Err(anyhow::Error::new(error).context("export: reading the log")),
        Err(Stopped::Reader(error)) => Err(anyhow::Error::new(error).context("export: reading a page")),
    }
}

fn output_error(error: io::Error) -> Stopped {
    if error.kind() == io::ErrorKind::BrokenPipe { Stopped::ReaderGone } else { Stopped::Output(error) }
}

/// Writes every row of the export; returns how many.
async fn export(
    pool: &PgPool,
    args: &ExportArgs,
    filter: ExportFilter,
    writer: RowWriter,
    output: &mut impl Write,
    show_progress: bool,
) -> Result<u64, Stopped> {
    let mut scan =
        ExportScan::start(pool, writer.kind, filter, args.page_size).await.map_err(Stopped::Store)?;
    let progress = progress_bar(show_progress, scan.total_keys());
    writer.header(output).map_err(output_error)?;
    let mut rows = 0u64;
    // The next page is read while this one is written: at most two pages are held.
    let read = |page: PageQuery| {
        let pool = pool.clone();
        tokio::spawn(async move { page.fetch(&pool).await })
    };
    let mut reading = scan.next_page_query().map(read);
    while let Some(page) = reading {
        let page = page.await.map_err(Stopped::Reader)?;
        let page = page.map_err(Stopped::Store)?;
        let done = scan.keys_done();
        reading = scan.next_page_query().map(read);
        for row in &page {
            writer.row(output, row).map_err(output_error)?;
        }
        output.flush().map_err(output_error)?;
        rows += page.len() as u64;
        progress.set_position(done);
        progress.set_message(format!("{rows} rows"));
    }
    output.flush().map_err(output_error)?;
    progress.finish();
    Ok(rows)
}

/// Drawn on stderr when `show` (module doc), else hidden; its length is in keys.
fn progress_bar(show: bool, keys: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(keys), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("export [{elapsed_precise}] {wide_bar} {percent:>3}% {msg} ({eta} left)")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_rfc_3339_or_a_date_at_midnight_utc() {
        assert_eq!(parse_time("2026-12-07T16:00:00Z").unwrap().to_rfc3339(), "2026-12-07T16:00:00+00:00");
        assert_eq!(
            parse_time("2026-12-07T17:00:00+01:00").unwrap().to_rfc3339(),
            "2026-12-07T16:00:00+00:00"
        );
        assert_eq!(parse_time("2026-12-07").unwrap().to_rfc3339(), "2026-12-07T00:00:00+00:00");
    }

    #[test]
    fn anything_else_is_refused_naming_it_and_the_forms() {
        for text in ["yesterday", "2026-12-07 16:00", "2026-13-01", "1733587200", ""] {
            let error = parse_time(text).unwrap_err();
            assert!(error.starts_with(&format!("`{text}` is not a time: give RFC 3339")), "{error}");
        }
    }
}
