//! Wiring of the binary: where the database comes from, and `serve`.
//!
//! With no `DATABASE_URL` the ledger runs its own Postgres cluster in the data directory
//! ([`cluster`]); with one, it uses that database and never starts anything. The public port, plain
//! or TLS, its signals and its graceful shutdown are [`public_port`]; `mpe-ledger export` is
//! [`export`]; the audit API's own listener is `audit_port`.

mod audit_port;
pub mod cluster;
mod database;
pub mod export;
pub mod public_port;
pub mod reporting;

pub use database::{Database, DatabaseSettings, Purpose};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;

use crate::chain::{ChainError, EthChain};
use crate::config::{ChainSettings, Config};
use crate::escrow::EscrowConfig;
use crate::escrow::channels::ChannelSource;
use crate::escrow::claims::ClaimService;
use crate::escrow::metrics::EscrowMetrics;
use crate::escrow::payments::PaymentService;
use crate::grpc::escrow_routes;
use crate::grpc::paid_call::{GatewaySettings, PaidCallGateway};
use crate::http::{HttpState, router};
use crate::store::leases::PgLeases;
use crate::store::postgres::{PgLedger, deployment};
use crate::telemetry::Metrics;

use cluster::supervisor::{self, ClusterHealth, ClusterMetrics};
use public_port::{PortTls, PublicPort, Signals};

/// The escrow services of a replica with a chain configured.
pub struct Escrow {
    pub config: Arc<EscrowConfig>,
    pub channels: Arc<ChannelSource<EthChain>>,
    pub payments: Arc<PaymentService<EthChain>>,
    pub claims: Arc<ClaimService<EthChain>>,
    pub leases: PgLeases,
}

impl Escrow {
    pub fn new(
        database: &Database,
        metrics: &Metrics,
        config: &Config,
        chain: &ChainSettings,
    ) -> anyhow::Result<Self> {
        // The URL is not repeated: a hosted node's URL carries its API key.
        let reader =
            EthChain::connect_with_ca(&chain.rpc_url, chain.rpc_ca_file.as_deref(), chain.mpe_address)
                .map_err(|error| match error {
                    ChainError::Tls(_) => anyhow::anyhow!("invalid setting ethereum_rpc_ca_file: {error}"),
                    _ => anyhow::anyhow!("invalid setting ethereum_rpc_url: {error}"),
                })?;
        let escrow_config = Arc::new(EscrowConfig {
            mpe: chain.mpe_address,
            group_id: chain.group_id,
            payment_address: chain.payment_address,
            expiration_threshold: chain.expiration_threshold,
            pricing: chain.pricing.clone(),
            replica_id: config.replica_id.clone(),
            lease_ttl: config.lease_ttl,
            confirmations: config.confirmations,
            claim_log_lookback: crate::escrow::DEFAULT_CLAIM_LOG_LOOKBACK,
            chain_cache_age: crate::escrow::DEFAULT_CHAIN_CACHE_AGE,
        });
        let ledger = PgLedger::new(database.pool.clone(), metrics.store.clone());
        let leases = PgLeases::new(database.operational.clone(), metrics.store.clone());
        let channels = Arc::new(
            ChannelSource::new(ledger, reader, escrow_config.clone())
                .with_metrics(EscrowMetrics::new(&metrics.registry)),
        );
        let payments = Arc::new(PaymentService::new(channels.clone(), leases.clone(), escrow_config.clone()));
        let claims = Arc::new(ClaimService::new(channels.clone(), leases.clone(), escrow_config.clone()));
        Ok(Self { config: escrow_config, channels, payments, claims, leases })
    }
}

/// Serves the public port (gRPC and HTTP, plain or TLS) until SIGINT or SIGTERM, then shuts down
/// gracefully: stops accepting calls, lets those in flight finish (bounded), releases this
/// replica's leases, closes the pool, stops the cluster it started. SIGHUP reloads the TLS
/// certificate.
pub async fn serve(settings: &DatabaseSettings, config: Config) -> anyhow::Result<()> {
    // First: from here on SIGHUP cannot kill the process.
    let mut signals = Signals::install().context("installing the SIGHUP handler")?;
    // Before the database, which may start a cluster: a certificate that cannot be used fails fast.
    let tls = config.tls.as_ref().map(PortTls::load).transpose()?;
    let database = Database::open(settings, Purpose::Serve).await?;
    if database.login_can_lift_guard {
        tracing::warn!(
            "the service's login (DATABASE_URL) is a superuser or a member of mpe_ledger_owner: it could lift the append-only guard on events; give the service a writer-only login and the owner's to MIGRATION_DATABASE_URL (README, \"Your own Postgres\")"
        );
    }
    let metrics = Metrics::new();
    let escrow = match &config.chain {
        Some(chain) => {
            deployment::record_mpe(&database.pool, chain.mpe_address).await?;
            deployment::record_settings(
                &database.pool,
                chain.average_block_time_ms,
                chain.claims_due_within_blocks,
            )
            .await?;
            Some(Escrow::new(&database, &metrics, &config, chain)?)
        }
        None => {
            tracing::warn!(
                "no chain settings: paid calls are refused until ethereum_rpc_url, mpe_address, group_id, payment_address, price and upstream are given"
            );
            None
        }
    };
    let port = PublicPort::bind(config.listen, tls, config.max_connections).await?;
    tracing::info!(
        address = %port.local_addr()?,
        tls = port.is_tls(),
        replica = %config.replica_id,
        "serving gRPC and HTTP (/healthz, /readyz, /metrics)"
    );
    let audit = audit_port::AuditPort::start(&config, &database.pool).await?;
    // The owned embedded cluster is restarted if it dies; /healthz reads what is wrong with it.
    let cluster_health = database.cluster.as_ref().map(|_| ClusterHealth::default());
    let supervisor = database.cluster.clone().zip(cluster_health.clone()).map(|(cluster, health)| {
        tokio::spawn(supervisor::supervise(cluster, health, ClusterMetrics::new(&metrics.registry)))
    });
    let app = public_router(&database.pool, &metrics, &config, escrow.as_ref(), cluster_health)?;
    let watcher = escrow.as_ref().map(|escrow| tokio::spawn(watch_claims(escrow.claims.clone())));
    let head_block = escrow.as_ref().map(|escrow| tokio::spawn(watch_head_block(escrow.channels.clone())));
    let chain_id = escrow
        .as_ref()
        .map(|escrow| tokio::spawn(record_chain_id(database.pool.clone(), escrow.channels.clone())));
    let (token, at_risk) = match (&escrow, &config.chain) {
        (Some(escrow), Some(chain)) => {
            let (pool, reader) = (database.pool.clone(), escrow.channels.chain().clone());
            let watch = crate::escrow::at_risk::AtRiskWatch::new(
                pool.clone(),
                chain.claims_due_within_blocks,
                escrow.channels.metrics().clone(),
            );
            (
                Some(tokio::spawn(reporting::record_token(pool.clone(), reader.clone()))),
                Some(tokio::spawn(reporting::watch_head_and_risk(pool, reader, Arc::new(watch)))),
            )
        }
        _ => (None, None),
    };
    signals.listen_for_shutdown().context("installing the SIGINT and SIGTERM handlers")?;
    port.serve(app, signals).await;
    tracing::info!("shutting down");
    audit.stop().await;
    for task in [watcher, head_block, chain_id, token, at_risk, supervisor].into_iter().flatten() {
        task.abort();
    }
    if let Some(escrow) = &escrow {
        match escrow.leases.release_all_of(&config.replica_id).await {
            Ok(released) => tracing::info!(released, "released this replica's leases"),
            Err(error) => {
                tracing::warn!(%error, "could not release this replica's leases; they expire by themselves")
            }
        }
    }
    database.close().await
}

/// Everything on the public port.
pub fn public_router(
    pool: &PgPool,
    metrics: &Metrics,
    config: &Config,
    escrow: Option<&Escrow>,
    cluster_health: Option<ClusterHealth>,
) -> anyhow::Result<axum::Router> {
    let mut http = router(HttpState {
        pool: pool.clone(),
        metrics: metrics.clone(),
        cluster: cluster_health,
        paid_calls: escrow.is_some(),
    });
    if let Some(escrow) = escrow {
        let routes = escrow_routes(escrow.channels.clone(), escrow.claims.clone(), escrow.config.clone());
        http = http.merge(routes.into_axum_router());
    }
    let gateway = match (escrow, &config.chain) {
        (Some(escrow), Some(chain)) => {
            // No ALPN here: the gateway's hyper-rustls connector sets `h2` itself and refuses a
            // configuration that already has some.
            let upstream_tls = if chain.upstream.starts_with("https://") {
                let tls = crate::tls::client_config(chain.upstream_ca_file.as_deref(), &[])
                    .context("invalid setting upstream_ca_file")?;
                Some(Arc::new(tls))
            } else {
                None
            };
            let settings = GatewaySettings {
                upstream: chain.upstream.clone(),
                upstream_tls,
                max_message_bytes: config.max_message_bytes,
                max_call_duration: config.max_call_duration,
                max_concurrent_calls: config.max_concurrent_calls,
            };
            PaidCallGateway::new(escrow.payments.clone(), &escrow.config, &settings)
                .context("invalid setting upstream")?
        }
        _ => PaidCallGateway::<EthChain>::without_chain(),
    };
    Ok(gateway.mount(http))
}

/// How often the claims in progress are compared with the chain's claim logs, besides every
/// in-progress listing of the control service.
pub const CLAIM_WATCH_INTERVAL: Duration = Duration::from_secs(15);

/// Records claims that finished on chain without waiting for the provider's next listing.
async fn watch_claims(claims: Arc<ClaimService<EthChain>>) {
    let mut ticks = tokio::time::interval(CLAIM_WATCH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match claims.record_finished_claims().await {
            Ok(finished) if !finished.is_empty() => {
                tracing::info!(count = finished.len(), "recorded finished claims")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not check claims against the chain"),
        }
    }
}

/// How long to wait before asking the node for its chain id again.
const CHAIN_ID_RETRY: Duration = Duration::from_secs(5);

/// Records the node's chain id in the deployment record once the node answers (it may be down at
/// start-up: payments on stored channels go on meanwhile). A node serving another chain than the
/// recorded one is logged as an error on every try: the operator pointed the ledger at the wrong
/// network.
async fn record_chain_id(pool: PgPool, channels: Arc<ChannelSource<EthChain>>) {
    use crate::chain::ChainReader;
    let mut logged = false;
    loop {
        let failure = match channels.chain().chain_id().await {
            Err(error) => error.to_string(),
            Ok(id) => match deployment::record_chain_id(&pool, id).await {
                Ok(()) => {
                    tracing::info!(chain_id = id, "deployment recorded");
                    return;
                }
                Err(error @ deployment::DeploymentError::OtherChain { .. }) => {
                    tracing::error!(%error, "the deployment record disagrees with the node");
                    String::new()
                }
                Err(error) => error.to_string(),
            },
        };
        if !failure.is_empty() && !logged {
            logged = true;
            tracing::warn!(error = %failure, "cannot record the chain id yet; retrying");
        }
        tokio::time::sleep(CHAIN_ID_RETRY).await;
    }
}

/// Keeps the head block number that payments check expiration against fresh, so that a paid call
/// never waits for `eth_blockNumber` (see `escrow::head_block`).
async fn watch_head_block(channels: Arc<ChannelSource<EthChain>>) {
    let mut ticks = tokio::time::interval(crate::escrow::head_block::HEAD_BLOCK_REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match channels.refresh_head_block().await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("the head block number can be read again");
            }
            Ok(_) => {}
            // Logged once per outage: payments read the chain themselves meanwhile.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot read the head block number");
            }
            Err(_) => {}
        }
    }
}
