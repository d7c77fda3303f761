//! One chain, one database and one channel, as the escrow tests build them: ganache running the
//! real MultiPartyEscrow, a fresh migrated database, the production constructors of the escrow
//! services (`tests/escrow.rs`, `tests/claims.rs`).

use std::sync::Arc;
use std::time::Duration;

use mpe_ledger::chain::EthChain;
use mpe_ledger::domain::payment::{Payment, PaymentError, PaymentErrorCode};
use mpe_ledger::domain::{Amount, ChannelEvent, ChannelId, Nonce, PaymentChannelKey};
use mpe_ledger::escrow::EscrowConfig;
use mpe_ledger::escrow::channels::ChannelSource;
use mpe_ledger::escrow::claims::ClaimService;
use mpe_ledger::escrow::payments::PaymentService;
use mpe_ledger::store::ChannelStore;
use mpe_ledger::store::leases::PgLeases;
use mpe_ledger::store::postgres::ledger::CommitOutcome;
use mpe_ledger::store::postgres::{PgChannelStore, PgLedger};

use super::TestDb;
use super::escrow::escrow_config;
use super::ganache::{Account, Ganache, Mpe};

pub const PRICE: u64 = 10;
pub const GROUP: [u8; 32] = [7; 32];
pub const METHOD: &str = "/example.Calculator/add";

/// One chain, one database, one channel from the client (account 1) to the provider (account 2).
pub struct World<'a> {
    pub ganache: &'a Ganache,
    pub mpe: Mpe<'a>,
    pub db: TestDb,
    pub chain: EthChain,
    pub channel: ChannelId,
    pub expiration: u64,
}

impl<'a> World<'a> {
    pub async fn new(ganache: &'a Ganache) -> Self {
        Self::with_channel(ganache, 1000, 1000).await
    }

    pub async fn with_channel(ganache: &'a Ganache, value: u64, blocks_to_expiry: u64) -> Self {
        let mpe = Mpe::deploy(ganache).await;
        let client = ganache.account(1);
        mpe.mint_and_deposit(client, 10_000).await;
        let expiration = ganache.block_number().await + blocks_to_expiry;
        let channel = mpe
            .open_channel(client, client.address, ganache.account(2).address, GROUP, value, expiration)
            .await;
        let chain = EthChain::connect(ganache.url(), mpe.eth_address()).unwrap();
        Self { ganache, mpe, db: TestDb::new().await, chain, channel, expiration }
    }

    pub fn client(&self) -> &Account {
        self.ganache.account(1)
    }

    pub fn provider(&self) -> &Account {
        self.ganache.account(2)
    }

    pub fn config(&self, replica: &str, lease_ttl: Duration) -> Arc<EscrowConfig> {
        Arc::new(EscrowConfig {
            replica_id: replica.to_owned(),
            lease_ttl,
            ..escrow_config(self.mpe.eth_address(), self.provider().eth_address(), GROUP, PRICE)
        })
    }

    pub fn ledger(&self) -> PgLedger {
        PgLedger::new(self.db.pool.clone(), self.db.metrics.clone())
    }

    pub fn source(&self, config: &Arc<EscrowConfig>) -> Arc<ChannelSource<EthChain>> {
        Arc::new(ChannelSource::new(self.ledger(), self.chain.clone(), config.clone()))
    }

    pub fn leases(&self) -> PgLeases {
        PgLeases::new(self.db.pool.clone(), self.db.metrics.clone())
    }

    /// A replica's payment service.
    pub fn replica(&self, name: &str, lease_ttl: Duration) -> PaymentService<EthChain> {
        let config = self.config(name, lease_ttl);
        PaymentService::new(self.source(&config), self.leases(), config)
    }

    pub fn payments(&self) -> PaymentService<EthChain> {
        self.replica("replica-a", Duration::from_secs(30))
    }

    pub fn claims(&self) -> ClaimService<EthChain> {
        let config = self.config("replica-a", Duration::from_secs(30));
        ClaimService::new(self.source(&config), self.leases(), config)
    }

    /// A payment signed by `signer` the way the clients sign it.
    pub fn payment_by(&self, signer: &Account, nonce: u64, amount: u64) -> Payment {
        self.payment_on(self.channel, signer, nonce, amount)
    }

    /// A payment on any channel of this MPE, signed by `signer`.
    pub fn payment_on(&self, channel: ChannelId, signer: &Account, nonce: u64, amount: u64) -> Payment {
        Payment {
            mpe: self.mpe.eth_address(),
            channel_id: channel,
            nonce: Nonce::from(nonce),
            amount: Amount::from(amount),
            signature: self.mpe.sign_payment(signer, channel, nonce, amount).0.to_vec(),
        }
    }

    /// Another channel from the client to the provider in the same group.
    pub async fn open_channel(&self, value: u64, blocks_to_expiry: u64) -> ChannelId {
        let expiration = self.ganache.block_number().await + blocks_to_expiry;
        let client = self.client();
        self.mpe.open_channel(client, client.address, self.provider().address, GROUP, value, expiration).await
    }

    /// Every event of one channel's stream.
    pub async fn events_of(&self, channel: ChannelId) -> Vec<ChannelEvent> {
        PgChannelStore::new(self.db.pool.clone(), self.db.metrics.clone())
            .events(&PaymentChannelKey::new(channel))
            .await
            .unwrap()
    }

    pub fn payment(&self, nonce: u64, amount: u64) -> Payment {
        self.payment_by(self.client(), nonce, amount)
    }

    pub async fn events(&self) -> Vec<ChannelEvent> {
        self.events_of(self.channel).await
    }

    /// Everything a refused request must leave untouched.
    pub async fn snapshot(&self) -> (i64, Vec<String>) {
        (self.db.event_count().await, self.db.projections_snapshot().await)
    }

    pub async fn pay(&self, payments: &PaymentService<EthChain>, nonce: u64, amount: u64) {
        self.pay_on(payments, self.channel, nonce, amount).await
    }

    /// A paid call's payment on `channel`, committed.
    pub async fn pay_on(
        &self,
        payments: &PaymentService<EthChain>,
        channel: ChannelId,
        nonce: u64,
        amount: u64,
    ) {
        let payment = self.payment_on(channel, self.client(), nonce, amount);
        let transaction = payments.start(payment, METHOD).await.unwrap();
        let outcome = payments.commit(transaction).await.unwrap();
        assert!(matches!(outcome, CommitOutcome::Recorded { .. }), "{outcome:?}");
    }
}

/// What [`World::audit_history`] wrote.
pub struct AuditHistory {
    /// The chain id recorded in the deployment record.
    pub chain_id: u64,
    /// Every event of the channel's stream, in version order.
    pub events: Vec<ChannelEvent>,
}

impl World<'_> {
    /// The history the audit tests read, on the world's channel, through the production services:
    /// two payments at nonce 0, a claim of them started and landed on chain, the sender's re-fund,
    /// and a payment at nonce 1 (so merges from the chain with their blocks at both nonces); then
    /// the deployment record `serve` writes (the MPE address and the chain id).
    pub async fn audit_history(&self) -> AuditHistory {
        use mpe_ledger::chain::ChainReader;
        use mpe_ledger::store::postgres::deployment;

        let payments = self.payments();
        self.pay(&payments, 0, PRICE).await;
        self.pay(&payments, 0, 2 * PRICE).await;
        let claims = self.claims();
        let claim = claims.start_claim(self.channel).await.unwrap();
        self.mpe
            .channel_claim(self.provider(), self.channel, 2 * PRICE, 2 * PRICE, &claim.signature, false)
            .await;
        assert_eq!(claims.record_finished_claims().await.unwrap().len(), 1, "the claim landed");
        self.mpe.add_funds(self.client(), self.channel, 100).await;
        // A new service reads the chain afresh, and merges the re-fund before the payment.
        self.pay(&self.payments(), 1, PRICE).await;
        let chain_id = self.chain.chain_id().await.unwrap();
        deployment::record_mpe(&self.db.pool, self.mpe.eth_address()).await.unwrap();
        deployment::record_chain_id(&self.db.pool, chain_id).await.unwrap();
        let events = self.events().await;
        let merges_with_block = events
            .iter()
            .filter(|e| matches!(e, ChannelEvent::ChannelMergedFromChain { block: Some(_), .. }))
            .count();
        assert!(merges_with_block >= 2, "{events:#?}");
        AuditHistory { chain_id, events }
    }
}

pub fn refusal(result: Result<impl std::fmt::Debug, PaymentError>) -> (PaymentErrorCode, String) {
    let error = result.unwrap_err();
    (error.code, error.message)
}
