//! `escrow.ProviderControlService` (escrow.md §6): the provider lists the payments signed to it and
//! starts claiming them; `snet treasurer` then sends `channelClaim` on chain with what it received.
//!
//! Every request must be meant for our MPE contract and signed by our payment address. Checks, in
//! the seed's order (the first failure is the answer):
//! - `GetListUnclaimed`, `GetListInProgress`: MPE address → block within
//!   [`ALLOWED_BLOCK_DIFFERENCE`](super::ALLOWED_BLOCK_DIFFERENCE) of the chain head → signature over
//!   `__list_unclaimed` / `__list_in_progress` ‖ mpe ‖ block.
//! - `StartClaim`: MPE address → signature over `__start_claim` ‖ mpe ‖ channel id ‖ the channel's
//!   merged nonce (no block: the nonce makes a signature serve once) → start the claim.
//! - `StartClaimForMultipleChannels`: MPE address → block → signature over the ids in ascending
//!   order and the block → start each claim in the order of the request.
//!
//! The MPE address is compared as 20 bytes, so any letter case passes (the clients send EIP-55).
//! Every error is status UNKNOWN with the seed's message. Replies carry integers as 32-byte
//! big-endian; `GetListUnclaimed` replies carry no signature (snet-cli refuses one that does).
//!
//! Decisions:
//! - **Unknown channel in `StartClaim`** (quirk 5: the seed skips the signature check there). The
//!   signature is checked anyway, over nonce 0, the nonce the contract's getter shows for an unknown
//!   id and so the one the CLI signs. The provider then reads the seed's
//!   `channel Id <id> was not found on blockchain or storage`; anybody else is refused as a wrong
//!   signer and learns nothing about the ledger.
//! - **Partial failure of `StartClaimForMultipleChannels`** (quirk 7). The claims are started one by
//!   one, each in its own transaction (a write touches one channel only, design.md §6), and the first
//!   failure ends the request with its error, as in the seed. The claims started before it stay
//!   started; `GetListInProgress`, which the treasurer reads before claiming, lists them, so none is
//!   lost. A reply listing them next to the error cannot be sent: gRPC drops a reply with an error.
//! - **Claims finished on chain** are recorded by `GetListInProgress` only. The claim starts do not
//!   record them first as the seed does, so that a refused start writes nothing (design.md §8);
//!   starting a claim does not depend on them.
//! - `GetListInProgress` skips a claim whose channel cannot be looked up, as the seed does (logged).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::chain::ChainReader;
use crate::domain::signature::{
    SignatureError, list_in_progress_message, list_unclaimed_message, recover_signer, start_claim_message,
    start_claim_multiple_message,
};
use crate::domain::{ChannelId, Claim, EthAddress, Nonce, ParseError};
use crate::escrow::EscrowConfig;
use crate::escrow::channels::{ChannelSource, Freshness, LookupError};
use crate::escrow::claims::{ClaimError, ClaimService};

use super::proto::provider_control_service_server::ProviderControlService;
use super::proto::{
    GetPaymentsListRequest, PaymentReply, PaymentsListReply, StartClaimRequest, StartMultipleClaimRequest,
};
use super::{BlockWindowError, check_block_window};

/// Why a control request is refused; the texts are the seed's.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the mpeAddress: {0} passed does not match to what has been registered")]
    OtherMpe(String),
    #[error("{0}")]
    BlockWindow(#[from] BlockWindowError),
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("the address: {0} does not match to what has been expected / registered")]
    NotPaymentAddress(EthAddress),
    #[error("channel_id is not a channel id: {0}")]
    ChannelId(ParseError),
    #[error("{0}")]
    Lookup(#[from] LookupError),
    #[error("{0}")]
    Claim(#[from] ClaimError),
}

impl From<ControlError> for Status {
    fn from(error: ControlError) -> Self {
        let message = match &error {
            ControlError::BlockWindow(window) => window.client_message(),
            ControlError::Lookup(lookup) => lookup.client_message(),
            ControlError::Claim(claim) => claim.client_message(),
            _ => error.to_string(),
        };
        // The whole error is logged where the request is answered.
        Status::unknown(message)
    }
}

pub struct ControlService<C> {
    channels: Arc<ChannelSource<C>>,
    claims: Arc<ClaimService<C>>,
    config: Arc<EscrowConfig>,
}

impl<C: ChainReader> ControlService<C> {
    pub fn new(
        channels: Arc<ChannelSource<C>>,
        claims: Arc<ClaimService<C>>,
        config: Arc<EscrowConfig>,
    ) -> Self {
        Self { channels, claims, config }
    }

    fn check_mpe(&self, sent: &str) -> Result<(), ControlError> {
        match sent.parse::<EthAddress>() {
            Ok(address) if address == self.config.mpe => Ok(()),
            _ => Err(ControlError::OtherMpe(sent.to_owned())),
        }
    }

    fn check_signer(&self, message: &[u8], signature: &[u8]) -> Result<(), ControlError> {
        let signer = recover_signer(message, signature)?;
        if signer != self.config.payment_address {
            return Err(ControlError::NotPaymentAddress(signer));
        }
        Ok(())
    }

    /// The checks both list requests share, in the seed's order: MPE address, block window, signer.
    async fn check_list_request(
        &self,
        request: &GetPaymentsListRequest,
        message: Vec<u8>,
    ) -> Result<(), ControlError> {
        self.check_mpe(&request.mpe_address)?;
        check_block_window(self.channels.chain(), request.current_block).await?;
        self.check_signer(&message, &request.signature)
    }

    /// Channels with a signed amount not yet claimed, by id.
    pub async fn unclaimed(
        &self,
        request: &GetPaymentsListRequest,
    ) -> Result<PaymentsListReply, ControlError> {
        self.check_list_request(request, list_unclaimed_message(&self.config.mpe, request.current_block))
            .await?;
        let payments = self
            .claims
            .unclaimed()
            .await?
            .into_iter()
            .map(|channel| PaymentReply {
                channel_id: channel.channel_id.to_be_bytes().to_vec(),
                channel_nonce: channel.nonce.to_be_bytes().to_vec(),
                signed_amount: channel.authorized_amount.to_be_bytes().to_vec(),
                signature: Vec::new(),
                channel_expiry: channel.expiration.to_be_bytes().to_vec(),
            })
            .collect();
        Ok(PaymentsListReply { payments })
    }

    /// Claims started and not yet finished on chain, after recording those that have finished.
    pub async fn in_progress(
        &self,
        request: &GetPaymentsListRequest,
    ) -> Result<PaymentsListReply, ControlError> {
        self.check_list_request(request, list_in_progress_message(&self.config.mpe, request.current_block))
            .await?;
        let mut payments = Vec::new();
        for (channel_id, claim) in self.claims.in_progress().await? {
            let channel = match self.channels.payment_channel(channel_id, Freshness::Fresh).await {
                Ok(Some(merged)) => merged.channel,
                Ok(None) => {
                    tracing::warn!(channel = %channel_id, "claim in progress not listed: channel unknown");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(channel = %channel_id, %error, "claim in progress not listed");
                    continue;
                }
            };
            payments.push(PaymentReply {
                channel_expiry: channel.expiration.to_be_bytes().to_vec(),
                ..claim_reply(channel_id, &claim)
            });
        }
        Ok(PaymentsListReply { payments })
    }

    /// Starts the claim of one channel (module doc: unknown channels).
    pub async fn start_claim(&self, request: &StartClaimRequest) -> Result<PaymentReply, ControlError> {
        self.check_mpe(&request.mpe_address)?;
        let channel_id = ChannelId::from_be_slice(&request.channel_id).map_err(ControlError::ChannelId)?;
        let nonce = self
            .channels
            .payment_channel(channel_id, Freshness::Fresh)
            .await?
            .map_or(Nonce::ZERO, |merged| merged.channel.nonce);
        self.check_signer(&start_claim_message(&self.config.mpe, channel_id, nonce), &request.signature)?;
        let claim = self.claims.start_claim(channel_id).await?;
        tracing::info!(channel = %channel_id, nonce = %claim.nonce, amount = %claim.amount, "claim started");
        Ok(claim_reply(channel_id, &claim))
    }

    /// Starts the claim of each channel in the request's order (module doc: partial failure).
    pub async fn start_claims(
        &self,
        request: &StartMultipleClaimRequest,
    ) -> Result<PaymentsListReply, ControlError> {
        self.check_mpe(&request.mpe_address)?;
        check_block_window(self.channels.chain(), request.current_block).await?;
        let ids: Vec<ChannelId> = request.channel_ids.iter().copied().map(ChannelId::from).collect();
        self.check_signer(
            &start_claim_multiple_message(&self.config.mpe, &ids, request.current_block),
            &request.signature,
        )?;
        let mut payments = Vec::with_capacity(ids.len());
        for channel_id in ids {
            let claim = self.claims.start_claim(channel_id).await.inspect_err(|error| {
                tracing::warn!(
                    channel = %channel_id,
                    %error,
                    started = payments.len(),
                    "claim of several channels stopped; the claims started stay started"
                );
            })?;
            tracing::info!(
                channel = %channel_id,
                nonce = %claim.nonce,
                amount = %claim.amount,
                "claim started"
            );
            payments.push(claim_reply(channel_id, &claim));
        }
        Ok(PaymentsListReply { payments })
    }
}

/// A started claim as the treasurer needs it to call `channelClaim`: no expiry, as in the seed.
fn claim_reply(channel_id: ChannelId, claim: &Claim) -> PaymentReply {
    PaymentReply {
        channel_id: channel_id.to_be_bytes().to_vec(),
        channel_nonce: claim.nonce.to_be_bytes().to_vec(),
        signed_amount: claim.amount.to_be_bytes().to_vec(),
        signature: claim.signature.as_bytes().to_vec(),
        channel_expiry: Vec::new(),
    }
}

fn answer<T>(rpc: &str, result: Result<T, ControlError>) -> Result<Response<T>, Status> {
    match result {
        Ok(reply) => Ok(Response::new(reply)),
        Err(error) => {
            tracing::info!(rpc, %error, "control request refused");
            Err(error.into())
        }
    }
}

#[tonic::async_trait]
impl<C: ChainReader + 'static> ProviderControlService for ControlService<C> {
    async fn get_list_unclaimed(
        &self,
        request: Request<GetPaymentsListRequest>,
    ) -> Result<Response<PaymentsListReply>, Status> {
        answer("GetListUnclaimed", self.unclaimed(request.get_ref()).await)
    }

    async fn get_list_in_progress(
        &self,
        request: Request<GetPaymentsListRequest>,
    ) -> Result<Response<PaymentsListReply>, Status> {
        answer("GetListInProgress", self.in_progress(request.get_ref()).await)
    }

    async fn start_claim(
        &self,
        request: Request<StartClaimRequest>,
    ) -> Result<Response<PaymentReply>, Status> {
        answer("StartClaim", ControlService::start_claim(self, request.get_ref()).await)
    }

    async fn start_claim_for_multiple_channels(
        &self,
        request: Request<StartMultipleClaimRequest>,
    ) -> Result<Response<PaymentsListReply>, Status> {
        answer("StartClaimForMultipleChannels", self.start_claims(request.get_ref()).await)
    }
}
