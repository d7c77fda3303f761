//! The audit API's listener in `serve`: bound only when tokens are configured (one log line says
//! when it is off), on its own loopback address, never the public port; stopped with the public
//! port, letting requests in flight finish (a waiting feed request answers at once) for at most
//! `public_port::SHUTDOWN_GRACE`.

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::{self, AuditState};
use crate::config::Config;

use super::public_port::SHUTDOWN_GRACE;

/// The running audit listener, if any.
pub struct AuditPort {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl AuditPort {
    /// Binds and serves the audit API when `config` has tokens; logs that it is off otherwise.
    pub async fn start(config: &Config, pool: &PgPool) -> anyhow::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let Some(settings) = &config.audit else {
            tracing::info!("audit API off: no audit_tokens configured");
            return Ok(Self { stop, task: None });
        };
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("invalid setting audit_listen: cannot bind {}", settings.listen))?;
        tracing::info!(
            address = %listener.local_addr()?,
            tokens = settings.tokens.len(),
            "serving the audit API (/v1/…, /openapi.json)"
        );
        let app = audit::router(AuditState::new(pool.clone(), settings.tokens.clone(), stopped.clone()));
        let task = tokio::spawn(audit::serve(listener, app, stopped));
        Ok(Self { stop, task: Some(task) })
    }

    /// Stops accepting, lets requests in flight finish (bounded), then returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let Some(mut task) = self.task else { return };
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "audit requests still open after the grace period are dropped");
            task.abort();
        }
    }
}
