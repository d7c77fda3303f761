//! [`ChainReader`] over an Ethereum node's JSON-RPC, with alloy's HTTP provider, over `http://` or
//! `https://` (reqwest on our rustls configuration: the system's roots plus `ethereum_rpc_ca_file`).
//!
//! The node's URL never leaves this module in an error: hosted nodes put their API key in it, and
//! chain errors reach clients (the state service passes them on as the seed does). reqwest's errors
//! are stripped of their URL ([`reqwest::Error::without_url`]) and any copy of it in an HTTP error's
//! text is replaced by [`REDACTED_URL`].

use std::path::Path;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Log as PrimitiveLog};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent};
use alloy::transports::http::reqwest;
use alloy::transports::{TransportError, TransportErrorKind};

use super::mpe::Erc20::decimalsCall;
use super::mpe::MultiPartyEscrow::{
    ChannelAddFunds, ChannelClaim, ChannelSenderClaim, channelsCall, channelsReturn, tokenCall,
};
use super::{ChainError, ChainReader, ChannelLog, ChannelLogEvent, ChannelRead};
use crate::domain::{Amount, BlockNumber, ChainBlock, ChannelId, EthAddress, GroupId, Nonce, OnChainChannel};

/// The longest any one JSON-RPC request may take, connecting included.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// `eth_getLogs` is asked for at most this many blocks at a time: public nodes refuse wider
/// ranges, so a longer range is read in windows of this size.
pub const MAX_LOG_RANGE_BLOCKS: u64 = 10_000;

/// What replaces the node's URL wherever an error would carry it.
pub const REDACTED_URL: &str = "<ethereum_rpc_url>";

/// ALPN offered to an `https://` node, as reqwest offers it when it builds its own TLS (HTTP/2 and
/// HTTP/1.1 both compiled in): HTTP/2 first.
const RPC_ALPN: [&[u8]; 2] = [crate::tls::ALPN_H2, crate::tls::ALPN_HTTP1];

/// The MPE contract on one Ethereum node, read over HTTP(S) JSON-RPC.
#[derive(Debug, Clone)]
pub struct EthChain {
    provider: RootProvider,
    mpe: EthAddress,
    /// The node's URL as reqwest prints it, to find and redact it in error texts.
    url: String,
}

impl EthChain {
    /// A reader of the MPE at `mpe` through the node at `rpc_url` (`http://…` or `https://…`,
    /// trusting the system's roots). Nothing is sent yet: an unreachable node shows up as
    /// [`ChainError::Rpc`] on the first read.
    pub fn connect(rpc_url: &str, mpe: EthAddress) -> Result<Self, ChainError> {
        Self::connect_with_ca(rpc_url, None, mpe)
    }

    /// [`EthChain::connect`], trusting the certificates of the PEM file `ca_file` too for an
    /// `https://` node. A CA file that cannot be used is [`ChainError::Tls`], at once.
    pub fn connect_with_ca(
        rpc_url: &str,
        ca_file: Option<&Path>,
        mpe: EthAddress,
    ) -> Result<Self, ChainError> {
        let invalid = |reason: String| ChainError::InvalidUrl { reason };
        // url's parse errors name the problem, never the input.
        let url = reqwest::Url::parse(rpc_url).map_err(|e| invalid(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(invalid(format!("scheme {other:?} is not http or https"))),
        }
        // reqwest has TLS compiled in (for https:// nodes): it needs the process's crypto provider,
        // which client_config installs; a plain node gets the same configuration, unused.
        let tls = crate::tls::client_config(ca_file, &RPC_ALPN)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(RPC_TIMEOUT)
            .connect_timeout(RPC_TIMEOUT)
            .build()
            .map_err(|e| ChainError::HttpClient { reason: e.without_url().to_string() })?;
        let printed = url.as_str().to_owned();
        let provider = RootProvider::new(RpcClient::new_http_with_client(client, url));
        Ok(Self { provider, mpe, url: printed })
    }

    /// A [`ChainError::Rpc`] of `call` whose text cannot carry the node's URL.
    fn rpc(&self, call: &'static str) -> impl FnOnce(TransportError) -> ChainError + '_ {
        move |error| ChainError::rpc(call)(redact(error, &self.url))
    }

    /// The MPE contract this reader reads.
    pub fn mpe(&self) -> EthAddress {
        self.mpe
    }

    /// The number and hash of one block (`latest`, or a number).
    async fn block(&self, which: BlockNumberOrTag) -> Result<ChainBlock, ChainError> {
        let block = self
            .provider
            .get_block_by_number(which)
            .await
            .map_err(self.rpc("eth_getBlockByNumber"))?
            .ok_or_else(|| ChainError::NoBlock {
                block: match which {
                    BlockNumberOrTag::Number(number) => number.to_string(),
                    tag => tag.to_string(),
                },
            })?;
        Ok(ChainBlock { number: block.header.number, hash: block.header.hash })
    }

    /// The latest block's number and timestamp (seconds since the Unix epoch), for the deployment
    /// record that the reporting views read.
    pub async fn head_block_with_time(&self) -> Result<(u64, u64), ChainError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(self.rpc("eth_getBlockByNumber"))?
            .ok_or_else(|| ChainError::NoBlock { block: BlockNumberOrTag::Latest.to_string() })?;
        Ok((block.header.number, block.header.timestamp))
    }

    /// The MPE's token (`token()`) and its decimals (`decimals()` of that ERC-20 contract).
    pub async fn token_decimals(&self) -> Result<(EthAddress, u8), ChainError> {
        let token = self.view_call(self.mpe.0, tokenCall {}, "eth_call token").await?;
        let decimals = self.view_call(token, decimalsCall {}, "eth_call decimals").await?;
        Ok((EthAddress(token), decimals))
    }

    /// A view function of the contract at `to`, at the latest block.
    async fn view_call<C: SolCall>(
        &self,
        to: Address,
        call: C,
        name: &'static str,
    ) -> Result<C::Return, ChainError> {
        let request = TransactionRequest::default().to(to).input(call.abi_encode().into());
        let output = self.provider.call(request).await.map_err(self.rpc(name))?;
        C::abi_decode_returns(&output).map_err(|e| ChainError::Decode { call: name, reason: e.to_string() })
    }

    async fn logs_in(&self, filter: Filter) -> Result<Vec<ChannelLog>, ChainError> {
        let logs = self.provider.get_logs(&filter).await.map_err(self.rpc("eth_getLogs"))?;
        logs.iter().map(channel_log).collect()
    }

    /// `channels(id)` at a given block.
    async fn channel_at(&self, id: ChannelId, block: ChainBlock) -> Result<Option<ChannelRead>, ChainError> {
        let call = TransactionRequest::default()
            .to(self.mpe.0)
            .input(channelsCall { channelId: id.0 }.abi_encode().into());
        let output = self
            .provider
            .call(call)
            .block(BlockNumberOrTag::Number(block.number).into())
            .await
            .map_err(self.rpc("eth_call channels"))?;
        let values = channelsCall::abi_decode_returns(&output)
            .map_err(|e| ChainError::Decode { call: "eth_call channels", reason: e.to_string() })?;
        if values.sender == Address::ZERO {
            return Ok(None);
        }
        Ok(Some(ChannelRead { channel: on_chain_channel(values), block }))
    }
}

impl ChainReader for EthChain {
    #[tracing::instrument(level = "debug", skip(self), fields(channel = %id))]
    async fn channel(&self, id: ChannelId) -> Result<Option<ChannelRead>, ChainError> {
        let block = self.block(BlockNumberOrTag::Latest).await?;
        self.channel_at(id, block).await
    }

    async fn current_block(&self) -> Result<u64, ChainError> {
        self.provider.get_block_number().await.map_err(self.rpc("eth_blockNumber"))
    }

    async fn chain_id(&self) -> Result<u64, ChainError> {
        self.provider.get_chain_id().await.map_err(self.rpc("eth_chainId"))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(channel = %id))]
    async fn channel_logs(
        &self,
        id: ChannelId,
        from_block: u64,
        to_block: u64,
    ) -> Result<Vec<ChannelLog>, ChainError> {
        let base = Filter::new()
            .address(self.mpe.0)
            .event_signature(vec![
                ChannelClaim::SIGNATURE_HASH,
                ChannelSenderClaim::SIGNATURE_HASH,
                ChannelAddFunds::SIGNATURE_HASH,
            ])
            .topic1(B256::from(id.0));
        let mut found = Vec::new();
        for (start, end) in log_windows(from_block, to_block) {
            found.extend(self.logs_in(base.clone().from_block(start).to_block(end)).await?);
        }
        Ok(found)
    }
}

/// `[from, to]` cut into consecutive inclusive windows of at most [`MAX_LOG_RANGE_BLOCKS`] blocks;
/// none when `from > to`.
fn log_windows(from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut next = (from <= to).then_some(from);
    std::iter::from_fn(move || {
        let start = next?;
        let end = to.min(start.saturating_add(MAX_LOG_RANGE_BLOCKS - 1));
        next = end.checked_add(1).filter(|&n| n <= to);
        Some((start, end))
    })
}

fn on_chain_channel(values: channelsReturn) -> OnChainChannel {
    OnChainChannel {
        nonce: Nonce(values.nonce),
        sender: EthAddress(values.sender),
        signer: EthAddress(values.signer),
        recipient: EthAddress(values.recipient),
        group_id: GroupId(values.groupId.0),
        value: Amount(values.value),
        expiration: BlockNumber(values.expiration),
    }
}

/// One `ChannelClaim`, `ChannelSenderClaim` or `ChannelAddFunds` log as a [`ChannelLog`]. A log
/// without a transaction hash, block number or index is pending, which `eth_getLogs` over mined
/// blocks never returns.
fn channel_log(log: &Log) -> Result<ChannelLog, ChainError> {
    let undecodable = |reason: String| ChainError::Decode { call: "eth_getLogs", reason };
    let transaction_hash =
        log.transaction_hash.ok_or_else(|| undecodable("log without a transaction hash".into()))?;
    let block_number = log.block_number.ok_or_else(|| undecodable("log without a block number".into()))?;
    let log_index = log.log_index.ok_or_else(|| undecodable("log without an index".into()))?;
    let (channel_id, event) = match log.topic0() {
        Some(&ChannelClaim::SIGNATURE_HASH) => {
            let e = decode::<ChannelClaim>(&log.inner).map_err(undecodable)?;
            (
                e.channelId,
                ChannelLogEvent::Claim {
                    nonce: Nonce(e.nonce),
                    actual_amount: Amount(e.claimAmount),
                    planned_amount: Amount(e.plannedAmount),
                    send_back_amount: Amount(e.sendBackAmount),
                    keep_amount: Amount(e.keepAmount),
                },
            )
        }
        Some(&ChannelSenderClaim::SIGNATURE_HASH) => {
            let e = decode::<ChannelSenderClaim>(&log.inner).map_err(undecodable)?;
            (
                e.channelId,
                ChannelLogEvent::SenderClaim { nonce: Nonce(e.nonce), logged_amount: Amount(e.claimAmount) },
            )
        }
        Some(&ChannelAddFunds::SIGNATURE_HASH) => {
            let e = decode::<ChannelAddFunds>(&log.inner).map_err(undecodable)?;
            (e.channelId, ChannelLogEvent::AddFunds { amount: Amount(e.additionalFunds) })
        }
        other => return Err(undecodable(format!("unexpected event topic {other:?}"))),
    };
    Ok(ChannelLog { channel_id: ChannelId(channel_id), event, transaction_hash, block_number, log_index })
}

/// `error` without the node's URL: reqwest's errors lose theirs, and an HTTP error's text (which
/// may quote a reqwest error) has every copy of `url` replaced by [`REDACTED_URL`].
fn redact(error: TransportError, url: &str) -> TransportError {
    let without_url =
        |source: Box<dyn std::error::Error + Send + Sync>| match source.downcast::<reqwest::Error>() {
            Ok(reqwest) => Box::new(reqwest.without_url()) as Box<dyn std::error::Error + Send + Sync>,
            Err(other) => other,
        };
    let kind = match error {
        TransportError::Transport(kind) => kind,
        other => return other,
    };
    TransportError::Transport(match kind {
        TransportErrorKind::Custom(source) => TransportErrorKind::Custom(without_url(source)),
        TransportErrorKind::NonRetryable(source) => TransportErrorKind::NonRetryable(without_url(source)),
        TransportErrorKind::HttpError(mut http) => {
            http.body = http.body.replace(url, REDACTED_URL);
            TransportErrorKind::HttpError(http)
        }
        TransportErrorKind::HttpErrorWithRetryAfter { mut error, retry_after } => {
            error.body = error.body.replace(url, REDACTED_URL);
            TransportErrorKind::HttpErrorWithRetryAfter { error, retry_after }
        }
        other => other,
    })
}

fn decode<E: SolEvent>(log: &PrimitiveLog) -> Result<E, String> {
    E::decode_log(log).map(|decoded| decoded.data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_range_is_read_in_windows_that_cover_it_exactly() {
        assert_eq!(log_windows(5, 5).collect::<Vec<_>>(), [(5, 5)]);
        assert_eq!(log_windows(6, 5).count(), 0);
        assert_eq!(
            log_windows(0, MAX_LOG_RANGE_BLOCKS - 1).collect::<Vec<_>>(),
            [(0, MAX_LOG_RANGE_BLOCKS - 1)]
        );
        assert_eq!(
            log_windows(1, 2 * MAX_LOG_RANGE_BLOCKS + 1).collect::<Vec<_>>(),
            [
                (1, MAX_LOG_RANGE_BLOCKS),
                (MAX_LOG_RANGE_BLOCKS + 1, 2 * MAX_LOG_RANGE_BLOCKS),
                (2 * MAX_LOG_RANGE_BLOCKS + 1, 2 * MAX_LOG_RANGE_BLOCKS + 1),
            ]
        );
        assert_eq!(log_windows(u64::MAX - 1, u64::MAX).collect::<Vec<_>>(), [(u64::MAX - 1, u64::MAX)]);
    }

    #[test]
    fn only_http_and_https_urls_are_accepted_and_refusals_do_not_quote_them() {
        let mpe = EthAddress::default();
        assert!(EthChain::connect("http://127.0.0.1:8545", mpe).is_ok());
        assert!(EthChain::connect("https://mainnet.example/v3/key", mpe).is_ok());
        for url in ["ws://127.0.0.1:8546/key", "127.0.0.1:8545", "not a url"] {
            match EthChain::connect(url, mpe) {
                Err(error @ ChainError::InvalidUrl { .. }) => {
                    assert!(!error.to_string().contains("8545"), "{error}");
                    assert!(!error.to_string().contains("key"), "{error}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unusable_ca_file_is_refused_at_once_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("eth-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        for path in [&missing, &empty] {
            match EthChain::connect_with_ca("https://node.example", Some(path), EthAddress::default()) {
                Err(error @ ChainError::Tls(_)) => {
                    assert!(error.to_string().contains(&path.display().to_string()), "{error}")
                }
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn redaction_strips_the_url_from_http_error_texts() {
        let url = "https://node.example/v3/secret-key";
        let error = TransportErrorKind::http_error(
            502,
            format!("<failed to read response body: error decoding response body for url ({url})>"),
        );
        let redacted = redact(error, url).to_string();
        assert!(!redacted.contains("secret-key"), "{redacted}");
        assert!(redacted.contains(REDACTED_URL), "{redacted}");
    }
}
