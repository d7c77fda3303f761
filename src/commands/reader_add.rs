//! `mpe-ledger reader add NAME`: creates a login in `mpe_ledger_reader` (it sees only the
//! `reporting` views, see `store::postgres::readers`) and prints its connection URL, password
//! included, on stdout; nothing else goes to stdout.
//!
//! The login is created by the migrations' login: the embedded cluster's superuser, else
//! `MIGRATION_DATABASE_URL`, else `DATABASE_URL` (which then needs the right to create roles). The
//! URL printed is `DATABASE_URL`'s (or the embedded cluster's, on 127.0.0.1) with the reader's login.

use std::process::ExitCode;

use anyhow::Context;

use crate::startup::cluster::{DATABASE_NAME, generate_password};
use crate::startup::{Database, DatabaseSettings, Purpose};
use crate::store::postgres::readers::{ReaderName, add_reader, with_login};

pub async fn run(settings: &DatabaseSettings, name: &str) -> anyhow::Result<ExitCode> {
    // Refused before anything is started or connected.
    let name = ReaderName::parse(name)?;
    let database = Database::open(settings, Purpose::Command("reader add")).await?;
    let (admin_url, service_url) = match (&database.cluster, &settings.database_url) {
        (Some(cluster), _) => (cluster.url(DATABASE_NAME), cluster.url(DATABASE_NAME)),
        (None, Some(url)) => (settings.migration_url.clone().unwrap_or_else(|| url.clone()), url.clone()),
        (None, None) => anyhow::bail!("no database: neither DATABASE_URL nor an embedded cluster"),
    };
    let password = generate_password();
    let added = add_reader(&admin_url, &name, &password).await;
    database.close().await?;
    added?;
    let url = with_login(&service_url, name.as_str(), &password).context(
        "DATABASE_URL is not a postgres://… URL: the reader was created, but its URL cannot be printed",
    )?;
    println!("{url}");
    eprintln!(
        "reader {name} created: it sees only the reporting schema (docs/reporting.md), read-only; keep this URL secret"
    );
    Ok(ExitCode::SUCCESS)
}
