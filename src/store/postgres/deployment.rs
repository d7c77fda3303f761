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
//! - For the reporting views (migration 0007), which read neither the chain nor ledger.toml:
//!   the MPE's token and its decimals, recorded once from the chain and never changed after
//!   ([`DeploymentError::OtherToken`]); the average block time and the claims-due line, settings
//!   written at every start of `serve` ([`record_settings`]); and the head block with its time,
//!   which only moves forward ([`record_head`]: a replica behind another never moves it back).

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
    #[error(
        "the MPE's token is now {node} with {node_decimals} decimals, but this database records {recorded} with {recorded_decimals}"
    )]
    OtherToken { recorded: EthAddress, recorded_decimals: u8, node: EthAddress, node_decimals: u8 },
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

/// Records the settings the reporting views read (after [`record_mpe`]): written at every start,
/// since they are configuration, not facts.
pub async fn record_settings(
    pool: &PgPool,
    average_block_time_ms: u64,
    claims_due_within_blocks: u64,
) -> Result<(), DeploymentError> {
    let bigint = |value: u64, what: &str| {
        i64::try_from(value).map_err(|_| {
            DeploymentError::Store(StoreError::CorruptLog {
                stream: "ledger.deployment".to_owned(),
                reason: format!("{what} {value} does not fit a bigint"),
            })
        })
    };
    sqlx::query("UPDATE ledger.deployment SET average_block_time_ms = $1, claims_due_within_blocks = $2")
        .bind(bigint(average_block_time_ms, "average_block_time_ms")?)
        .bind(bigint(claims_due_within_blocks, "claims_due_within_blocks")?)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records the MPE's token and its decimals (after [`record_mpe`]), or checks they are the
/// recorded ones.
pub async fn record_token(pool: &PgPool, token: EthAddress, decimals: u8) -> Result<(), DeploymentError> {
    let mut conn = pool.acquire().await.map_err(StoreError::Database)?;
    sqlx::query(
        "UPDATE ledger.deployment SET token_address = $1, token_decimals = $2 WHERE token_address IS NULL",
    )
    .bind(&token.as_bytes()[..])
    .bind(i32::from(decimals))
    .execute(&mut *conn)
    .await?;
    let row: Option<(Option<Vec<u8>>, Option<i32>)> =
        sqlx::query_as("SELECT token_address, token_decimals FROM ledger.deployment")
            .fetch_optional(&mut *conn)
            .await?;
    let corrupt = |reason: String| StoreError::CorruptLog { stream: "ledger.deployment".to_owned(), reason };
    match row {
        Some((Some(address), Some(recorded_decimals))) => {
            let recorded = EthAddress::from_slice(&address).map_err(|e| corrupt(e.to_string()))?;
            let recorded_decimals = u8::try_from(recorded_decimals)
                .map_err(|_| corrupt(format!("token decimals {recorded_decimals}")))?;
            if (recorded, recorded_decimals) != (token, decimals) {
                return Err(DeploymentError::OtherToken {
                    recorded,
                    recorded_decimals,
                    node: token,
                    node_decimals: decimals,
                });
            }
            Ok(())
        }
        // No record (no MPE recorded yet): nothing to check against.
        _ => Ok(()),
    }
}

/// Records the chain's head block and its timestamp (seconds since the epoch), unless a later one
/// is recorded already. Returns whether the record moved.
pub async fn record_head(pool: &PgPool, number: u64, timestamp: u64) -> Result<bool, DeploymentError> {
    let out_of_range = |what: &str, value: u64| {
        DeploymentError::Store(StoreError::CorruptLog {
            stream: "ledger.deployment".to_owned(),
            reason: format!("the node's head {what} {value} is out of range"),
        })
    };
    let number = i64::try_from(number).map_err(|_| out_of_range("block", number))?;
    let seconds = i64::try_from(timestamp).map_err(|_| out_of_range("timestamp", timestamp))?;
    let moved = sqlx::query(
        "UPDATE ledger.deployment
         SET head_block = $1, head_block_time = to_timestamp($2::bigint), head_recorded_at = clock_timestamp()
         WHERE head_block IS NULL OR head_block <= $1",
    )
    .bind(number)
    .bind(seconds)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(moved == 1)
}
