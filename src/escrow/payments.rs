//! Payment transactions of paid calls (escrow.md §3.3–3.4, §3.8): `start` validates a payment and
//! takes the channel's lease; `commit` records it (`payment accepted`, after a merge event when the
//! chain showed something newer) and releases the lease; `rollback` only releases the lease.
//!
//! Decisions where the seed has a defect (escrow.md §10, §11):
//! - The lock is a lease with an expiry (see `store::leases`); a second concurrent `start` on a held
//!   channel gets the seed's FailedPrecondition, and a holder whose lease expired and was taken over
//!   cannot commit: its commit is refused with FailedPrecondition and nothing is written.
//! - Commit is a compare-and-swap on the channel's stream version, not the seed's blind Put.
//!
//! A served call is recorded: once the service has run, `commit` never gives up for contention or a
//! lost connection while the lease can still be held. It retries until the lease's lifetime
//! (`lease_ttl`) from the start of the commit has passed, renewing the lease every `lease_ttl / 3`
//! meanwhile, and a COMMIT whose acknowledgement was lost is resolved by what was recorded (the
//! store's idempotency), never guessed. "Retried" is the ledger's own retry: a client re-sending a
//! payment it already made is refused by the income check, as in the seed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use crate::chain::ChainReader;
use crate::domain::fold::replay;
use crate::domain::payment::{Income, Payment, PaymentError, validate_income, validate_payment};
use crate::domain::{ChannelEvent, EthAddress, Event, PaymentChannelData, Signature};
use crate::store::leases::{Acquisition, Lease, PgLeases};
use crate::store::postgres::batch::{BatchOutcome, BatchedCommit};
use crate::store::postgres::ledger::{ChannelCommit, CommitError, CommitOutcome, PaymentIdentity};
use crate::store::postgres::projection::StoredChannel;
use crate::store::retry::Retry;

use super::EscrowConfig;
use super::channels::{ChannelSource, Freshness, LookupError, MergedChannel};
use super::renewals::{Renewals, Renewing};

/// A validated payment holding its channel's lease, waiting for the call's outcome.
#[derive(Debug)]
pub struct PaymentTransaction {
    payment: Payment,
    signer: EthAddress,
    signature: Signature,
    merged: MergedChannel,
    lease: Lease,
}

impl PaymentTransaction {
    pub fn payment(&self) -> &Payment {
        &self.payment
    }

    /// The channel as validated (merged, before this payment).
    pub fn channel(&self) -> &PaymentChannelData {
        &self.merged.channel
    }

    /// The channel's sender: forwarded to the service as `snet-user-address`.
    pub fn sender(&self) -> EthAddress {
        self.merged.channel.sender
    }

    pub fn signer(&self) -> EthAddress {
        self.signer
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

/// Shortest interval between two lease renewals, whatever the lease's lifetime.
const MIN_RENEWAL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// How often a held lease is renewed: a third of its lifetime, so two renewals may fail before it
/// expires.
fn renewal_interval(config: &EscrowConfig) -> std::time::Duration {
    (config.lease_ttl / 3).max(MIN_RENEWAL_INTERVAL)
}

pub struct PaymentService<C> {
    channels: Arc<ChannelSource<C>>,
    leases: PgLeases,
    config: Arc<EscrowConfig>,
    renewals: Renewals,
}

impl<C: ChainReader> PaymentService<C> {
    pub fn new(channels: Arc<ChannelSource<C>>, leases: PgLeases, config: Arc<EscrowConfig>) -> Self {
        let renewals = Renewals::new(leases.clone(), config.lease_ttl, renewal_interval(&config));
        Self { channels, leases, config, renewals }
    }

    /// Keeps the lease of a started payment renewed until the returned handle is dropped (by one
    /// task for every call in flight: `super::renewals`).
    pub fn hold_renewed(&self, lease: &Lease) -> Renewing {
        self.renewals.hold(lease)
    }

    /// Leases of calls in flight that are being kept renewed.
    pub fn leases_held(&self) -> usize {
        self.renewals.held()
    }

    /// Validates `payment` for a call of `method` and takes the channel's lease (escrow.md §3.4 order).
    #[tracing::instrument(skip_all, fields(channel = %payment.channel_id, nonce = %payment.nonce))]
    pub async fn start(&self, payment: Payment, method: &str) -> Result<PaymentTransaction, PaymentError> {
        let key = payment.key();
        let (lease, stored) = match self
            .leases
            .acquire_and_load(payment.channel_id, &self.config.replica_id, self.config.lease_ttl)
            .await
        {
            Ok((Acquisition::Acquired(lease), stored)) => (lease, stored),
            Ok((Acquisition::HeldBy(_), _)) => {
                self.channels.metrics().lease_conflicts.inc();
                return Err(self.refused(PaymentError::channel_busy(key)));
            }
            Err(error) => {
                tracing::error!(%error, "lease acquisition failed");
                return Err(self.refused(PaymentError::cannot_get_mutex(key)));
            }
        };
        match self.validate(&payment, method, stored).await {
            Ok((merged, signer, signature)) => {
                Ok(PaymentTransaction { payment, signer, signature, merged, lease })
            }
            Err(error) => {
                self.release(&lease).await;
                Err(self.refused(error))
            }
        }
    }

    /// The escrow's metrics (shared with the channel source).
    pub fn metrics(&self) -> &crate::escrow::metrics::EscrowMetrics {
        self.channels.metrics()
    }

    fn refused(&self, error: PaymentError) -> PaymentError {
        let metrics = self.channels.metrics();
        metrics.payments.with_label_values(&["refused"]).inc();
        metrics.payment_errors.with_label_values(&[&error.code.grpc_status().to_string()]).inc();
        error
    }

    async fn validate(
        &self,
        payment: &Payment,
        method: &str,
        stored: Option<StoredChannel>,
    ) -> Result<(MergedChannel, EthAddress, Signature), PaymentError> {
        let current_block = match self.channels.payment_head_block().await {
            Ok(block) => Some(block),
            Err(error) => {
                tracing::warn!(%error, "cannot read the current block");
                None
            }
        };
        let freshness = match current_block {
            Some(current_block) => Freshness::ForPayment { amount: payment.amount, current_block },
            None => Freshness::Fresh,
        };
        let merged = self
            .channels
            .merge(payment.channel_id, stored, freshness)
            .await
            .map_err(|error| {
                if matches!(error, LookupError::Storage(_) | LookupError::Chain(_)) {
                    tracing::warn!(%error, "the channel could not be looked up");
                }
                PaymentError::channel_error(error.client_message())
            })?
            .ok_or_else(|| PaymentError::channel_not_found(payment.key()))?;
        let valid =
            validate_payment(payment, &merged.channel, current_block, self.config.expiration_threshold)?;
        let price = self.config.pricing.price(method).map_err(PaymentError::internal)?;
        validate_income(Income::of(payment.amount, merged.channel.authorized_amount), price)?;
        Ok((merged, valid.signer, valid.signature))
    }

    /// Records the payment and releases the lease.
    #[tracing::instrument(skip_all, fields(channel = %transaction.payment.channel_id, nonce = %transaction.payment.nonce))]
    pub async fn commit(&self, transaction: PaymentTransaction) -> Result<CommitOutcome, PaymentError> {
        let PaymentTransaction { payment, signer, signature, merged, lease } = transaction;
        let mut events: Vec<ChannelEvent> = merged.merge.into_iter().collect();
        events.push(ChannelEvent::PaymentAccepted {
            nonce: payment.nonce,
            amount: payment.amount,
            signature,
        });
        let deadline = tokio::time::Instant::now() + self.config.lease_ttl;
        // Group commit when the payment authorises something new on the state it was validated
        // against; the same authorisation again is the single commit's idempotency case.
        let batched = (merged.channel.authorized_amount != payment.amount)
            .then(|| replay(payment.channel_id, merged.stored.clone(), &events).ok().flatten())
            .flatten()
            .map(|after| BatchedCommit {
                channel_id: payment.channel_id,
                head: merged.head,
                events: events.iter().cloned().map(Event::Channel).collect(),
                after,
                lease_token: lease.token,
                lease_holder: lease.holder.clone(),
                signer,
                deadline,
            });
        let commit = ChannelCommit {
            channel_id: payment.channel_id,
            expected_version: merged.version,
            lease: Some(&lease),
            events,
            payment: Some(PaymentIdentity {
                mpe: payment.mpe,
                nonce: payment.nonce,
                amount: payment.amount,
                signer,
            }),
        };
        let outcome = self.commit_events(batched, commit, deadline, &lease, payment.key()).await;
        let label = match &outcome {
            Ok(CommitOutcome::Recorded { .. }) => "committed",
            Ok(CommitOutcome::AlreadyRecorded) => "duplicate",
            Err(_) => "commit_failed",
        };
        self.channels.metrics().payments.with_label_values(&[label]).inc();
        outcome
    }

    /// Commits in a batch with other channels' payments when it can, else alone; under
    /// `Retry::Until` the lease's lifetime, renewing the lease while it retries (module doc).
    async fn commit_events(
        &self,
        batched: Option<BatchedCommit>,
        commit: ChannelCommit<'_>,
        deadline: tokio::time::Instant,
        lease: &Lease,
        key: crate::domain::PaymentChannelKey,
    ) -> Result<CommitOutcome, PaymentError> {
        let ledger = self.channels.ledger();
        let committing = async {
            if let Some(batched) = batched
                && let BatchOutcome::Recorded { version } = ledger.commit_batched(batched).await
            {
                return Ok(CommitOutcome::Recorded { version });
            }
            ledger.commit_with(commit, Retry::Until(deadline)).await
        };
        let outcome = self.while_renewing(lease, committing).await;
        match outcome {
            Ok(outcome) => Ok(outcome),
            Err(CommitError::LeaseLost { .. } | CommitError::StaleState { .. }) => {
                self.release(lease).await;
                Err(PaymentError::lease_lost(key))
            }
            Err(error @ CommitError::ConflictingPayment { .. }) => {
                self.release(lease).await;
                Err(PaymentError::conflicting_payment(error))
            }
            Err(CommitError::Store(error)) => {
                tracing::error!(%error, "payment commit failed");
                self.release(lease).await;
                Err(PaymentError::cannot_store_channel_state())
            }
        }
    }

    /// Runs `work` while renewing `lease` every `lease_ttl / 3` (at least every
    /// [`MIN_RENEWAL_INTERVAL`]); renewing stops with `work`. A lease found lost is logged and no
    /// longer renewed (its commit will be refused); a failed renewal is tried again at the next tick.
    pub async fn while_renewing<T>(&self, lease: &Lease, work: impl Future<Output = T>) -> T {
        tokio::select! {
            output = work => output,
            never = self.keep_renewed(lease) => match never {},
        }
    }

    /// Renews `lease` every `lease_ttl / 3` (at least every [`MIN_RENEWAL_INTERVAL`]) until
    /// dropped; a lease found lost is logged and no longer renewed.
    async fn keep_renewed(&self, lease: &Lease) -> Infallible {
        let every = renewal_interval(&self.config);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.leases.renew(lease, self.config.lease_ttl).await {
                Ok(true) => tracing::debug!("lease renewed"),
                Ok(false) => {
                    tracing::warn!("lease lost: this payment will not be recorded");
                    break;
                }
                Err(error) => tracing::warn!(%error, "lease renewal failed; trying again"),
            }
        }
        std::future::pending::<Infallible>().await
    }

    /// Gives the lease back; nothing is recorded.
    pub async fn rollback(&self, transaction: PaymentTransaction) {
        self.channels.metrics().payments.with_label_values(&["rolled_back"]).inc();
        self.release(&transaction.lease).await;
    }

    async fn release(&self, lease: &Lease) {
        if let Err(error) = self.leases.release(lease).await {
            // The lease expires by itself; a failed release only delays the next call on the channel.
            tracing::warn!(%error, channel = %lease.channel_id, "lease release failed");
        }
    }
}
