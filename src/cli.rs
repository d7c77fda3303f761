//! The command line: `serve`, `migrate`, `verify`, `rebuild`, `leases`, `export`, `bundle`,
//! `verify-bundle`, `claims due`, `reader add`.
//!
//! `verify`, `leases list`, `export`, `bundle` and `claims due` only read: they open the database
//! with [`Purpose::ReadOnly`] (never migrate, READ ONLY sessions, refuse another schema).
//! `verify-bundle` opens no database at all: it is dispatched before any setting is used.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::RawSettings;
use crate::domain::ChannelId;
use crate::startup::{self, Database, DatabaseSettings, Purpose};
use crate::store::leases::PgLeases;
use crate::store::verify;
use crate::telemetry::{self, Metrics};

#[derive(Debug, Parser)]
#[command(name = "mpe-ledger", version, about = "Event-sourced ledger for MPE payment channels")]
pub struct Cli {
    /// The service's Postgres connection. Without it the ledger runs its own cluster in --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Connection used for migrations, as the owning role (default: --database-url).
    #[arg(long, env = "MIGRATION_DATABASE_URL", global = true)]
    migration_database_url: Option<String>,
    /// Data directory of the embedded cluster (default: /var/lib/mpe-ledger as root, else ~/.local/share/mpe-ledger).
    #[arg(long, env = "MPE_LEDGER_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: gRPC (escrow services and paid calls) and HTTP /healthz, /metrics on one port.
    Serve {
        /// Settings file (TOML); `MPE_LEDGER_<KEY>` variables override it (see `config` module doc).
        #[arg(long, env = "MPE_LEDGER_CONFIG")]
        config: Option<PathBuf>,
        /// The public address, overriding the `listen` setting.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply the migrations and exit.
    Migrate,
    /// Refold every stream, check the hash chains and compare with the projections; exit 1 on any difference.
    Verify {
        /// Also print this channel's stream head (its last version and hash), the anchor that
        /// `verify-bundle --head` takes. May be given more than once.
        #[arg(long = "channel", value_name = "N")]
        channels: Vec<ChannelId>,
    },
    /// Recreate the projections from the event log.
    Rebuild,
    /// Write the log's events or payments as CSV or JSON Lines (read only, streamed, paged).
    Export(startup::export::ExportArgs),
    /// Write one channel's offline audit bundle: every event with its signature, chain block and
    /// hash link, byte-exact (read only).
    Bundle(crate::commands::bundle::BundleArgs),
    /// Check an audit bundle without any database; exit 1 naming each failure, 2 if not a bundle.
    VerifyBundle(crate::commands::verify_bundle::VerifyBundleArgs),
    /// Inspect or release channel leases (the replacement for `snetd channel --unlock`).
    Leases {
        #[command(subcommand)]
        action: LeaseAction,
    },
    /// Claims to make: the channels whose money at risk nears expiration (a listing for cron jobs).
    Claims {
        #[command(subcommand)]
        action: ClaimsAction,
    },
    /// Logins for finance that see only the `reporting` views (docs/reporting.md).
    Reader {
        #[command(subcommand)]
        action: ReaderAction,
    },
}

#[derive(Debug, Subcommand)]
enum ClaimsAction {
    /// List the channels with money at risk at most BLOCKS before expiration; empty output when none.
    Due {
        /// Blocks before expiration (default: the `claims_due_within_blocks` serve recorded).
        #[arg(long, value_name = "BLOCKS")]
        within: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum ReaderAction {
    /// Create a read-only login in mpe_ledger_reader and print its connection URL.
    Add {
        /// The login's name: lower-case letters, digits and _.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum LeaseAction {
    /// List every lease: channel, holder, acquired, expires, whether expired.
    List,
    /// Release a channel's lease whoever holds it; recorded as a `lease released by operator` event.
    Release {
        /// The channel id (decimal).
        channel: ChannelId,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mpe-ledger: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mpe-ledger: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Before anything reads a database setting: this command has none.
    if let Command::VerifyBundle(args) = cli.command {
        return crate::commands::verify_bundle::run(args);
    }
    let settings = DatabaseSettings {
        database_url: cli.database_url,
        migration_url: cli.migration_database_url,
        data_dir: cli.data_dir,
    };
    match cli.command {
        Command::Serve { config, listen } => {
            let raw = match &config {
                Some(path) => RawSettings::from_file(path)?,
                None => RawSettings::default(),
            };
            let mut raw = raw.with_env(|key| std::env::var(key).ok());
            if listen.is_some() {
                raw.listen = listen;
            }
            let config = raw.validate()?;
            startup::serve(&settings, config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            // With MIGRATION_DATABASE_URL alone, that database is the one migrated (as the README
            // says), never the embedded cluster.
            let settings = match (&settings.database_url, &settings.migration_url) {
                (None, Some(owner)) => DatabaseSettings { database_url: Some(owner.clone()), ..settings },
                _ => settings,
            };
            Database::open(&settings, Purpose::Command("migrate")).await?.close().await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { channels } => {
            let database = Database::open(&settings, Purpose::ReadOnly("verify")).await?;
            let report = verify::verify_report(&database.pool).await;
            database.close().await?;
            let report = report?;
            let differences = &report.differences;
            for difference in differences {
                println!("{difference}");
            }
            match report.signatures_checked {
                Some(checked) => println!("verify: {checked} client signature(s) re-checked"),
                None => println!(
                    "verify: client signatures not re-checked: no deployment record (the MPE address \
                     they are over is recorded by serve with a chain configured)"
                ),
            }
            for channel in channels {
                let stream = crate::domain::StreamId::Channel(channel).to_string();
                match report.heads.get(&stream) {
                    Some(head) => println!(
                        "verify: {stream} head: version {}, hash 0x{}",
                        head.version,
                        hex::encode(head.last_hash)
                    ),
                    None => println!("verify: {stream} has no events"),
                }
            }
            if differences.is_empty() {
                println!("verify: log and projections agree");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("verify: {} difference(s)", differences.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Leases { action } => {
            let purpose = match action {
                LeaseAction::List => Purpose::ReadOnly("leases list"),
                LeaseAction::Release { .. } => Purpose::Command("leases release"),
            };
            let database = Database::open(&settings, purpose).await?;
            let leases = PgLeases::new(database.pool.clone(), Metrics::new().store);
            let result = match action {
                LeaseAction::List => leases.list().await.map(|all| {
                    if all.is_empty() {
                        println!("no leases");
                    }
                    for lease in all {
                        let state = if lease.expired { "expired" } else { "held" };
                        println!(
                            "channel {}: {state} by {} since {} until {}",
                            lease.channel_id, lease.holder, lease.acquired_at, lease.expires_at
                        );
                    }
                }),
                LeaseAction::Release { channel } => {
                    leases.force_release(channel).await.map(|released| match released {
                        Some(lease) => {
                            println!("channel {channel}: released the lease held by {}", lease.holder)
                        }
                        None => println!("channel {channel}: no lease to release"),
                    })
                }
            };
            database.close().await?;
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => startup::export::run(&settings, args).await,
        Command::Bundle(args) => crate::commands::bundle::run(&settings, args).await,
        Command::VerifyBundle(_) => unreachable!("dispatched before the settings"),
        Command::Claims { action: ClaimsAction::Due { within } } => {
            crate::commands::claims_due::run(&settings, within).await
        }
        Command::Reader { action: ReaderAction::Add { name } } => {
            crate::commands::reader_add::run(&settings, &name).await
        }
        Command::Rebuild => {
            let database = Database::open(&settings, Purpose::Command("rebuild")).await?;
            let metrics = Metrics::new();
            let report = verify::rebuild(&database.pool, &metrics.store).await;
            database.close().await?;
            let report = report?;
            println!(
                "rebuild: {} events folded into {} streams ({} channels, {} keys)",
                report.events, report.streams, report.channels, report.keys
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
