//! `escrow.PaymentChannelStateService/GetChannelState` (escrow.md §5): the nonce a client must sign
//! its next payment at, and the cumulative amount it already signed there.
//!
//! The checks run in the seed's order, because the order decides which error a client sees:
//! 1. `channel_id` is read as unsigned big-endian of any width;
//! 2. the signer is recovered from `__get_channel_state` ‖ mpe ‖ channel id ‖ `current_block`;
//! 3. the channel is looked up, merged from the ledger and a fresh chain read;
//! 4. the signer must be the channel's signer, sender or recipient;
//! 5. `current_block` must be within [`ALLOWED_BLOCK_DIFFERENCE`](super::ALLOWED_BLOCK_DIFFERENCE)
//!    of the chain head;
//! 6. the chain is read again and its nonce compared with the merged one:
//!    - equal: the current nonce, and the signed amount and signature when a payment was accepted at
//!      it (none yet: the nonce alone, as the seed answers, quirk 8);
//!    - different (a claim started here has not reached the chain): the current nonce, amount and
//!      signature, plus the amount and signature claimed at the nonce before.
//!
//! Integers in replies are 32-byte big-endian. Every error is status UNKNOWN with the seed's message.
//! The service only reads: nothing is appended to the log, whatever the answer.
//!
//! Decisions:
//! - A `channel_id` with more than 32 significant bytes names no channel the contract can hold; it is
//!   refused before the signature with a message saying so (the seed would sign a truncated id).
//! - The old nonce's payment is the ledger's claim of nonce − 1, finished or not: a claim seen
//!   finished still carries what was signed at that nonce, which is what a client subtracts while the
//!   chain it reads lags behind ours.

use std::sync::Arc;

use alloy_primitives::U256;
use tonic::{Request, Response, Status};

use crate::chain::{ChainError, ChainReader};
use crate::domain::signature::{channel_state_message, recover_signer};
use crate::domain::{ChannelId, Nonce, ParseError};
use crate::escrow::EscrowConfig;
use crate::escrow::channels::{ChannelSource, Freshness, LookupError};

use super::proto::free_call_state_service_server::FreeCallStateService;
use super::proto::payment_channel_state_service_server::PaymentChannelStateService;
use super::proto::{
    ChannelStateReply, ChannelStateRequest, FreeCallStateReply, FreeCallStateRequest, FreeCallToken,
    GetFreeCallTokenRequest,
};
use super::{BlockWindowError, check_block_window};

/// Why a channel's state is not given; the texts are the seed's.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("channel_id is not a channel id: {0}")]
    ChannelId(ParseError),
    #[error("incorrect signature")]
    IncorrectSignature,
    #[error("channel error:{0}")]
    Lookup(LookupError),
    #[error("channel is not found, channelId: {0}")]
    NotFound(ChannelId),
    #[error("only channel signer/sender/receiver can get latest channel state")]
    NotAParty,
    #[error("{0}")]
    BlockWindow(#[from] BlockWindowError),
    #[error("channel error:{0}")]
    ChainReread(ChainError),
    #[error("unable to read channel details from blockchain.")]
    NotOnChain,
    #[error(
        "channel has different nonce in local storage and blockchain and old payment is not found in storage"
    )]
    OldPaymentNotFound,
}

impl From<StateError> for Status {
    fn from(error: StateError) -> Self {
        let message = match &error {
            StateError::Lookup(lookup) => format!("channel error:{}", lookup.client_message()),
            StateError::BlockWindow(window) => window.client_message(),
            StateError::ChainReread(_) => format!("channel error:{}", crate::escrow::CHAIN_FAILURE),
            _ => error.to_string(),
        };
        // The whole error is logged where the request is answered.
        Status::unknown(message)
    }
}

pub struct StateService<C> {
    channels: Arc<ChannelSource<C>>,
    config: Arc<EscrowConfig>,
}

impl<C: ChainReader> StateService<C> {
    pub fn new(channels: Arc<ChannelSource<C>>, config: Arc<EscrowConfig>) -> Self {
        Self { channels, config }
    }

    /// The reply to one request (module doc).
    pub async fn channel_state(
        &self,
        request: &ChannelStateRequest,
    ) -> Result<ChannelStateReply, StateError> {
        let id = ChannelId::from_be_slice(&request.channel_id).map_err(StateError::ChannelId)?;
        let message = channel_state_message(&self.config.mpe, id, request.current_block);
        let signer =
            recover_signer(&message, &request.signature).map_err(|_| StateError::IncorrectSignature)?;
        let merged = self
            .channels
            .payment_channel(id, Freshness::Fresh)
            .await
            .map_err(StateError::Lookup)?
            .ok_or(StateError::NotFound(id))?;
        let channel = &merged.channel;
        if ![channel.signer, channel.sender, channel.recipient].contains(&signer) {
            return Err(StateError::NotAParty);
        }
        check_block_window(self.channels.chain(), request.current_block).await?;
        let on_chain = self
            .channels
            .chain()
            .channel(id)
            .await
            .map_err(StateError::ChainReread)?
            .ok_or(StateError::NotOnChain)?;

        let current_nonce = channel.nonce.to_be_bytes().to_vec();
        if on_chain.channel.nonce == channel.nonce {
            let Some(signature) = &channel.signature else {
                return Ok(ChannelStateReply { current_nonce, ..Default::default() });
            };
            return Ok(ChannelStateReply {
                current_nonce,
                current_signed_amount: channel.authorized_amount.to_be_bytes().to_vec(),
                current_signature: signature.as_bytes().to_vec(),
                ..Default::default()
            });
        }
        let old = channel
            .nonce
            .0
            .checked_sub(U256::from(1))
            .and_then(|previous| merged.stored.as_ref()?.claims.get(&Nonce(previous)))
            .ok_or(StateError::OldPaymentNotFound)?;
        Ok(ChannelStateReply {
            current_nonce,
            current_signed_amount: channel.authorized_amount.to_be_bytes().to_vec(),
            current_signature: channel.signature.as_ref().map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
            old_nonce_signed_amount: old.amount.to_be_bytes().to_vec(),
            old_nonce_signature: old.signature.as_bytes().to_vec(),
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl<C: ChainReader + 'static> PaymentChannelStateService for StateService<C> {
    #[tracing::instrument(skip_all, fields(rpc = "GetChannelState"))]
    async fn get_channel_state(
        &self,
        request: Request<ChannelStateRequest>,
    ) -> Result<Response<ChannelStateReply>, Status> {
        match self.channel_state(request.get_ref()).await {
            Ok(reply) => Ok(Response::new(reply)),
            Err(error) => {
                tracing::info!(%error, "channel state refused");
                Err(error.into())
            }
        }
    }
}

/// `escrow.FreeCallStateService`: the ledger offers no free calls, so both methods are UNIMPLEMENTED
/// (design.md §8), as the daemon's services of flows it does not run.
#[derive(Debug, Clone, Copy, Default)]
pub struct FreeCallStateUnimplemented;

const NO_FREE_CALLS: &str = "free calls are not implemented by this ledger: pay with \"escrow\"";

#[tonic::async_trait]
impl FreeCallStateService for FreeCallStateUnimplemented {
    async fn get_free_calls_available(
        &self,
        _request: Request<FreeCallStateRequest>,
    ) -> Result<Response<FreeCallStateReply>, Status> {
        Err(Status::unimplemented(NO_FREE_CALLS))
    }

    async fn get_free_call_token(
        &self,
        _request: Request<GetFreeCallTokenRequest>,
    ) -> Result<Response<FreeCallToken>, Status> {
        Err(Status::unimplemented(NO_FREE_CALLS))
    }
}
