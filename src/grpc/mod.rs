//! The ledger's gRPC port: the daemon's own escrow services and the paid-call gateway.
//!
//! - [`state_service`]: `escrow.PaymentChannelStateService` (what a client signs next), and
//!   `escrow.FreeCallStateService`, answered UNIMPLEMENTED.
//! - [`control_service`]: `escrow.ProviderControlService` (the provider's claims).
//! - [`paid_call`]: every other method, a paid call forwarded to the provider's service.
//! - [`proto`]: the generated messages, servers and clients.
//!
//! Errors of the escrow services are status UNKNOWN with the seed's exact message (design.md §8):
//! the seed returns plain errors, which grpc-go sends as UNKNOWN, and the messages are the contract.

pub mod control_service;
pub mod paid_call;
pub mod proto;
pub mod state_service;

use std::sync::Arc;

use tonic::service::Routes;

use crate::chain::{ChainError, ChainReader};
use crate::escrow::EscrowConfig;
use crate::escrow::channels::ChannelSource;
use crate::escrow::claims::ClaimService;

pub use control_service::ControlService;
pub use state_service::{FreeCallStateUnimplemented, StateService};

use proto::free_call_state_service_server::FreeCallStateServiceServer;
use proto::payment_channel_state_service_server::PaymentChannelStateServiceServer;
use proto::provider_control_service_server::ProviderControlServiceServer;

/// How far the block of a signed request may be from our chain head, either way. The seed's
/// `AllowedBlockDifference`; its README's ±10 is stale.
pub const ALLOWED_BLOCK_DIFFERENCE: u64 = 5;

/// Largest request message the escrow services decode. Their requests are a few hundred bytes; the
/// largest, `StartClaimForMultipleChannels`, fits about 100 000 channel ids in this.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The escrow services, ready to be served or merged into the port's router
/// (`Routes::into_axum_router`). Paths of other `escrow.*` services fall to the router's fallback.
pub fn escrow_routes<C: ChainReader + 'static>(
    channels: Arc<ChannelSource<C>>,
    claims: Arc<ClaimService<C>>,
    config: Arc<EscrowConfig>,
) -> Routes {
    let state = PaymentChannelStateServiceServer::new(StateService::new(channels.clone(), config.clone()))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let free_calls = FreeCallStateServiceServer::new(FreeCallStateUnimplemented)
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let control = ProviderControlServiceServer::new(ControlService::new(channels, claims, config))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    Routes::new(state).add_service(free_calls).add_service(control)
}

/// Why a request's block is refused.
#[derive(Debug, thiserror::Error)]
pub enum BlockWindowError {
    #[error("authentication failed as the signature passed has expired")]
    Expired,
    /// The chain head could not be read. The seed passes the RPC error on as it is; we answer
    /// [`crate::escrow::CHAIN_FAILURE`] and log the cause (it may hold the RPC URL's API key).
    #[error("{0}")]
    Chain(#[from] ChainError),
}

impl BlockWindowError {
    /// The text a client reads.
    pub fn client_message(&self) -> String {
        match self {
            Self::Expired => self.to_string(),
            Self::Chain(_) => crate::escrow::CHAIN_FAILURE.to_owned(),
        }
    }
}

/// The seed's block check: `|block − head| ≤ ALLOWED_BLOCK_DIFFERENCE`, read against the chain now.
pub async fn check_block_window<C: ChainReader>(chain: &C, block: u64) -> Result<(), BlockWindowError> {
    let head = chain.current_block().await?;
    if block.abs_diff(head) > ALLOWED_BLOCK_DIFFERENCE {
        return Err(BlockWindowError::Expired);
    }
    Ok(())
}
