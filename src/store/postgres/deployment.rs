//! The deployment record (`ledger.deployment`, migration 0006): the MultiPartyEscrow contract and
//! the chain this database records money for.
//!
//! Invariants:
//! - One row at most. The MPE address is recorded by the first `serve` with a chain configured and
//!   never changes: a `serve` configured for another contract is refused at start-up
//!   ([`DeploymentError::OtherMpe`]), since every payment signature in the log is over the recorded
//!   address (`verify` re-checks them against it).
//! - The chain id is recorded once the node has answered `eth_chainId`, and never changes either
//!   ([`DeploymentError::OtherChain`]: the node now serves another chain). A trigger enforces both
//!   for every role but the owner.
//! - A database written before this record existed has no row until its next `serve`; readers
//!   treat "no row" as "not known", never as a default.

use sqlx::{PgConnection, PgPool};

use crate::domain::EthAddress;
use crate::store::StoreError;

/// What the record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    pub mpe_address: EthAddress,
    /// `None` until `serve` has read it from its node.
    pub chain_id: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error(
        "mpe_address: this database records the payments of the MPE contract {recorded}, not of \
         {configured}; use another database for another contract"
    )]
    OtherMpe { recorded: EthAddress, configured: EthAddress },
    #[error("the Ethereum node serves chain id {node}, but this database records chain id {recorded}")]
    OtherChain { recorded: u64, node: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DeploymentError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(error))
    }
}

/// The record, if any.
pub async fn read(conn: &mut PgConnection) -> Result<Option<Deployment>, StoreError> {
    let row: Option<(Vec<u8>, Option<String>)> =
        sqlx::query_as("SELECT mpe_address, chain_id::text FROM ledger.deployment")
            .fetch_optional(&mut *conn)
            .await?;
    let Some((address, chain_id)) = row else { return Ok(None) };
    let corrupt = |reason: String| StoreError::CorruptLog { stream: "ledger.deployment".to_owned(), reason };
    let mpe_address = EthAddress::from_slice(&address).map_err(|e| corrupt(e.to_string()))?;
    let chain_id = chain_id
        .map(|id| id.parse::<u64>().map_err(|_| corrupt(format!("chain id {id} does not fit 64 bits"))))
        .transpose()?;
    Ok(Some(Deployment { mpe_address, chain_id }))
}

/// Records `mpe` as this database's contract, or checks that it is the recorded one.
pub async fn record_mpe(pool: &PgPool, mpe: EthAddress) -> Result<(), DeploymentError> {
    let mut conn = pool.acquire().await.map_err(StoreError::Database)?;
    sqlx::query("INSERT INTO ledger.deployment (mpe_address) VALUES ($1) ON CONFLICT (singleton) DO NOTHING")
        .bind(&mpe.as_bytes()[..])
        .execute(&mut *conn)
        .await?;
    let recorded = read(&mut conn).await?.expect("inserted or already there").mpe_address;
    if recorded != mpe {
        return Err(DeploymentError::OtherMpe { recorded, configured: mpe });
    }
    Ok(())
}

/// Records the node's chain id (after [`record_mpe`]), or checks that it is the recorded one.
pub async fn record_chain_id(pool: &PgPool, chain_id: u64) -> Result<(), DeploymentError> {
    let mut conn = pool.acquire().await.map_err(StoreError::Database)?;
    sqlx::query(
        "UPDATE ledger.deployment SET chain_id = $1::numeric, chain_id_recorded_at = clock_timestamp()
         WHERE chain_id IS NULL",
    )
    .bind(chain_id.to_string())
    .execute(&mut *conn)
    .await?;
    match read(&mut conn).await?.and_then(|deployment| deployment.chain_id) {
        Some(recorded) if recorded != chain_id => {
            Err(DeploymentError::OtherChain { recorded, node: chain_id })
        }
        _ => Ok(()),
    }
}
