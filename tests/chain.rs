//! `EthChain` against a real ganache and the real MultiPartyEscrow deployed from `snet-contracts`:
//! what the ledger reads is what the contract holds, at the block it says, and claims finished on
//! chain come back as claim logs. Each test starts its own ganache.

mod common;

use alloy::primitives::U256;
use alloy::sol_types::{SolCall, SolEvent};
use common::ganache::{Account, CHAIN_ID, Ganache, Mpe, contract_abi};
use mpe_ledger::chain::mpe::MultiPartyEscrow;
use mpe_ledger::chain::{ChainError, ChainReader, ChannelLog, ChannelLogEvent, EthChain};
use mpe_ledger::domain::{Amount, BlockNumber, ChannelId, GroupId, Nonce, OnChainChannel};

const GROUP: [u8; 32] = [7; 32];

/// A deployed MPE with a funded sender, and the ledger's reader pointed at it.
struct World<'a> {
    mpe: Mpe<'a>,
    chain: EthChain,
    sender: Account,
    signer: Account,
    recipient: Account,
}

impl<'a> World<'a> {
    async fn new(ganache: &'a Ganache) -> Self {
        let mpe = Mpe::deploy(ganache).await;
        let chain = EthChain::connect(ganache.url(), mpe.eth_address()).expect("a valid URL");
        let (sender, signer, recipient) =
            (ganache.account(1).clone(), ganache.account(2).clone(), ganache.account(3).clone());
        mpe.mint_and_deposit(&sender, 10_000).await;
        Self { mpe, chain, sender, signer, recipient }
    }

    async fn open(&self, value: u64, expiration: u64) -> ChannelId {
        self.mpe
            .open_channel(&self.sender, self.signer.address, self.recipient.address, GROUP, value, expiration)
            .await
    }

    async fn read(&self, id: ChannelId) -> OnChainChannel {
        self.chain.channel(id).await.expect("the chain answers").expect("the channel exists").channel
    }
}

#[tokio::test]
async fn the_chain_id_is_ganaches() {
    let ganache = Ganache::start().await;
    let chain = EthChain::connect(ganache.url(), ganache.account(0).eth_address()).unwrap();
    assert_eq!(chain.chain_id().await.unwrap(), CHAIN_ID);
    assert_eq!(CHAIN_ID, 1337);
}

#[tokio::test]
async fn an_opened_channel_reads_back_with_all_seven_fields_at_the_block_it_names() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let expiration = ganache.block_number().await + 100;
    let id = world.open(1_000, expiration).await;

    let read = world.chain.channel(id).await.unwrap().expect("the channel exists");

    assert_eq!(
        read.channel,
        OnChainChannel {
            nonce: Nonce::ZERO,
            sender: world.sender.eth_address(),
            signer: world.signer.eth_address(),
            recipient: world.recipient.eth_address(),
            group_id: GroupId(GROUP),
            value: Amount::from(1_000),
            expiration: BlockNumber::from(expiration),
        }
    );
    let latest = ganache.block_number().await;
    assert_eq!(read.block.number, latest);
    assert_eq!((read.block.number, read.block.hash), ganache.block(latest).await);
    assert_eq!(world.chain.current_block().await.unwrap(), latest);
    assert_eq!(world.mpe.balance(&world.sender).await, U256::from(9_000));
}

#[tokio::test]
async fn a_channel_that_was_never_opened_reads_as_none() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let opened = world.open(1_000, ganache.block_number().await + 100).await;

    assert_eq!(world.chain.channel(ChannelId(opened.0 + U256::from(1))).await.unwrap(), None);
    assert_eq!(world.chain.channel(ChannelId::from(999)).await.unwrap(), None);
    assert!(world.chain.channel(opened).await.unwrap().is_some());
}

#[tokio::test]
async fn added_funds_an_extended_expiration_and_mined_blocks_are_visible() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let expiration = ganache.block_number().await + 100;
    let id = world.open(1_000, expiration).await;

    world.mpe.add_funds(&world.sender, id, 500).await;
    world.mpe.extend(&world.sender, id, expiration + 50).await;
    let after_changes = world.chain.channel(id).await.unwrap().unwrap();
    assert_eq!(after_changes.channel.value, Amount::from(1_500));
    assert_eq!(after_changes.channel.expiration, BlockNumber::from(expiration + 50));

    ganache.mine(3).await;
    let later = world.chain.channel(id).await.unwrap().unwrap();
    assert_eq!(later.block.number, after_changes.block.number + 3);
    assert_eq!((later.block.number, later.block.hash), ganache.block(later.block.number).await);
    assert_eq!(later.channel, after_changes.channel);
}

#[tokio::test]
async fn a_recipient_claim_of_60_of_a_signed_100_lowers_the_value_by_60_and_leaves_one_log() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let id = world.open(1_000, ganache.block_number().await + 100).await;
    let other = world.open(1_000, ganache.block_number().await + 100).await;
    ganache.mine(2).await;
    let before_claim = ganache.block_number().await;

    let payment = world.mpe.sign_payment(&world.signer, id, 0, 100);
    let tx = world.mpe.channel_claim(&world.recipient, id, 60, 100, &payment, false).await;
    let claim_block = world.mpe.block_of(tx).await;

    let after = world.read(id).await;
    assert_eq!(after.value, Amount::from(940));
    assert_eq!(after.nonce, Nonce::from(1));
    let latest = world.chain.current_block().await.unwrap();
    let logs = world.chain.channel_logs(id, 0, latest).await.unwrap();
    assert_eq!(
        logs,
        vec![ChannelLog {
            channel_id: id,
            event: ChannelLogEvent::Claim {
                nonce: Nonce::from(1),
                actual_amount: Amount::from(60),
                planned_amount: Amount::from(100),
                send_back_amount: Amount::ZERO,
                // What stays in the channel: its value after the claim.
                keep_amount: Amount::from(940),
            },
            transaction_hash: tx,
            block_number: claim_block,
            log_index: logs[0].log_index,
        }]
    );
    assert_eq!(world.chain.channel_logs(id, 0, before_claim).await.unwrap(), vec![]);
    assert_eq!(world.chain.channel_logs(id, claim_block, claim_block).await.unwrap().len(), 1);
    assert_eq!(world.chain.channel_logs(other, 0, latest).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_sender_reclaim_after_expiry_is_a_reclaimed_by_sender_log() {
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let expiration = ganache.block_number().await + 5;
    let id = world.open(1_000, expiration).await;
    let before = world.read(id).await;
    ganache.mine(10).await;
    assert!(ganache.block_number().await > expiration);

    let balance_before = world.mpe.balance(&world.sender).await;
    let tx = world.mpe.claim_timeout(&world.sender, id).await;
    let block = world.mpe.block_of(tx).await;

    assert_eq!(world.mpe.balance(&world.sender).await, balance_before + U256::from(1_000));
    let after = world.read(id).await;
    assert_eq!(
        after,
        OnChainChannel {
            nonce: Nonce::from(1),
            value: Amount::ZERO,
            expiration: BlockNumber::ZERO,
            ..before
        }
    );
    let latest = world.chain.current_block().await.unwrap();
    let logs = world.chain.channel_logs(id, 0, latest).await.unwrap();
    assert_eq!(
        logs,
        vec![ChannelLog {
            channel_id: id,
            // The new nonce, as in ChannelClaim; the contract logs the value after zeroing it: 0,
            // although 1000 went back.
            event: ChannelLogEvent::SenderClaim { nonce: Nonce::from(1), logged_amount: Amount::ZERO },
            transaction_hash: tx,
            block_number: block,
            log_index: logs[0].log_index,
        }]
    );
}

#[tokio::test]
async fn added_funds_are_logged_so_the_value_a_sender_takes_back_is_derived_from_the_logs() {
    use mpe_ledger::domain::{ChainBlock, ChannelEvent};
    use mpe_ledger::escrow::claims::taken_back::{anchor, value_before};
    let ganache = Ganache::start().await;
    let world = World::new(&ganache).await;
    let expiration = ganache.block_number().await + 6;
    let id = world.open(1_000, expiration).await;
    let read = world.chain.channel(id).await.unwrap().unwrap();
    world.mpe.add_funds(&world.sender, id, 200).await;
    world.mpe.add_funds(&world.sender, id, 30).await;
    ganache.mine(6).await;
    let balance_before = world.mpe.balance(&world.sender).await;
    let tx = world.mpe.claim_timeout(&world.sender, id).await;
    assert_eq!(world.mpe.balance(&world.sender).await, balance_before + U256::from(1_230));

    let logs = world.chain.channel_logs(id, 0, ganache.block_number().await).await.unwrap();
    let events: Vec<_> = logs.iter().map(|log| log.event.clone()).collect();
    assert_eq!(
        events,
        [
            ChannelLogEvent::AddFunds { amount: Amount::from(200) },
            ChannelLogEvent::AddFunds { amount: Amount::from(30) },
            ChannelLogEvent::SenderClaim { nonce: Nonce::from(1), logged_amount: Amount::ZERO },
        ]
    );
    let reclaim = logs.last().unwrap();
    assert_eq!(reclaim.transaction_hash, tx);
    // The ledger's record: the merge of the channel's state read at one block.
    let merged = ChannelEvent::ChannelMergedFromChain {
        chain: read.channel.clone(),
        block: Some(ChainBlock { number: read.block.number, hash: read.block.hash }),
    };
    let anchor = anchor(&[merged], Nonce::ZERO, reclaim.block_number).unwrap();
    let needed = world.chain.channel_logs(id, anchor.first_block(), reclaim.block_number).await.unwrap();
    assert_eq!(value_before(anchor, &needed, reclaim), Ok(Amount::from(1_230)));
}

#[tokio::test]
async fn an_unreachable_node_is_an_error_that_names_the_call() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let chain = EthChain::connect(&format!("http://127.0.0.1:{port}"), Default::default()).unwrap();

    let error = chain.current_block().await.unwrap_err();
    assert!(matches!(error, ChainError::Rpc { call: "eth_blockNumber", .. }), "{error:?}");
    assert!(error.to_string().starts_with("eth_blockNumber failed"), "{error}");
    let error = chain.channel(ChannelId::from(1)).await.unwrap_err();
    assert!(matches!(error, ChainError::Rpc { call: "eth_getBlockByNumber", .. }), "{error:?}");
    let error = chain.channel_logs(ChannelId::from(1), 0, 10).await.unwrap_err();
    assert!(matches!(error, ChainError::Rpc { call: "eth_getLogs", .. }), "{error:?}");
}

/// The interface declared in `chain::mpe` is checked against the ABI that `snet-contracts` ships.
#[test]
fn the_declared_mpe_interface_is_the_installed_abi() {
    let abi = contract_abi("MultiPartyEscrow");
    let entries = abi.as_array().expect("an ABI is a JSON array");
    let signature = |kind: &str, name: &str| -> (String, Vec<bool>) {
        let entry = entries
            .iter()
            .find(|e| e["type"] == kind && e["name"] == name)
            .unwrap_or_else(|| panic!("the ABI has no {kind} {name}"));
        let inputs = entry["inputs"].as_array().unwrap();
        let types: Vec<&str> = inputs.iter().map(|i| i["type"].as_str().unwrap()).collect();
        let indexed = inputs.iter().map(|i| i["indexed"].as_bool().unwrap_or(false)).collect();
        (format!("{name}({})", types.join(",")), indexed)
    };
    let event = |name: &str, declared: &str, indexed: &[bool]| {
        assert_eq!(signature("event", name), (declared.to_owned(), indexed.to_vec()));
    };
    use MultiPartyEscrow::*;
    event("ChannelClaim", ChannelClaim::SIGNATURE, &[true, false, true, false, false, false, false]);
    event("ChannelSenderClaim", ChannelSenderClaim::SIGNATURE, &[true, false, false]);
    event("ChannelOpen", ChannelOpen::SIGNATURE, &[false, false, true, false, true, true, false, false]);
    event("ChannelAddFunds", ChannelAddFunds::SIGNATURE, &[true, false]);
    event("ChannelExtend", ChannelExtend::SIGNATURE, &[true, false]);
    for declared in [
        channelsCall::SIGNATURE,
        nextChannelIdCall::SIGNATURE,
        balancesCall::SIGNATURE,
        depositCall::SIGNATURE,
        openChannelCall::SIGNATURE,
        channelAddFundsCall::SIGNATURE,
        channelExtendCall::SIGNATURE,
        channelClaimCall::SIGNATURE,
        channelClaimTimeoutCall::SIGNATURE,
    ] {
        let name = declared.split('(').next().unwrap();
        assert_eq!(signature("function", name).0, declared);
    }
    let channels = entries.iter().find(|e| e["name"] == "channels").unwrap();
    let outputs: Vec<(&str, &str)> = channels["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outputs,
        [
            ("nonce", "uint256"),
            ("sender", "address"),
            ("signer", "address"),
            ("recipient", "address"),
            ("groupId", "bytes32"),
            ("value", "uint256"),
            ("expiration", "uint256"),
        ]
    );
}
