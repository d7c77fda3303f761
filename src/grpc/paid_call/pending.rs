//! A paid call's hold on the ledger between its arrival and its end: its place among the calls in
//! flight ([`CallSlot`]), the payment transaction waiting for the call's outcome ([`Pending`]), and
//! the start of that transaction ([`start_payment`]).
//!
//! Invariants, whatever the client does and whenever it goes away:
//! - **No lease is left behind.** The payment's start runs in a task of its own; if the caller is
//!   gone when it finishes, its lease is given back at once. A [`Pending`] dropped without an
//!   outcome (client gone, call cut) rolls back in a task of its own.
//! - **A served call is recorded.** [`Pending::commit`] runs in a task of its own, which nobody can
//!   cancel: once the service's status 0 has arrived, the commit runs to its end.
//! - **The lease stays renewed** from the start until the outcome is known (the commit then renews
//!   it itself while it retries).
//! - The call's slot (its permit under `max_concurrent_calls`) is held until the outcome is
//!   recorded or rolled back, so a commit still running after its client left still counts.

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{AbortHandle, JoinHandle};

use crate::chain::ChainReader;
use crate::domain::EthAddress;
use crate::domain::payment::{Payment, PaymentError};
use crate::escrow::payments::{PaymentService, PaymentTransaction};

/// One of the `max_concurrent_calls` places, counted in the in-flight gauge while held.
pub(super) struct CallSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: IntGauge,
}

impl CallSlot {
    pub(super) fn new(permit: OwnedSemaphorePermit, in_flight: IntGauge) -> Self {
        in_flight.inc();
        Self { _permit: permit, in_flight }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// Starts the payment in a task of its own (see the module doc): a caller that goes away while the
/// lease is being taken leaves no lease behind.
pub(super) async fn start_payment<C: ChainReader + 'static>(
    payments: &Arc<PaymentService<C>>,
    payment: Payment,
    method: &str,
) -> Result<PaymentTransaction, PaymentError> {
    /// Gives the lease back if the start finishes after its caller went away.
    struct Abandoned<C: ChainReader + 'static> {
        task: Option<JoinHandle<Result<PaymentTransaction, PaymentError>>>,
        payments: Arc<PaymentService<C>>,
    }
    impl<C: ChainReader + 'static> Drop for Abandoned<C> {
        fn drop(&mut self) {
            if let Some(task) = self.task.take() {
                let payments = self.payments.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(transaction)) = task.await {
                        tracing::info!("call abandoned while its payment started: giving the lease back");
                        payments.rollback(transaction).await;
                    }
                });
            }
        }
    }
    let starting = payments.clone();
    let method = method.to_owned();
    let task = tokio::spawn(async move { starting.start(payment, &method).await });
    let mut guard = Abandoned { task: Some(task), payments: payments.clone() };
    let outcome = guard.task.as_mut().expect("set above").await;
    guard.task = None;
    outcome.unwrap_or_else(|error| {
        tracing::error!(%error, "the payment start task failed");
        Err(PaymentError::cannot_store_channel_state())
    })
}

/// A started payment waiting for the call's outcome.
pub(super) struct Pending<C: ChainReader + 'static> {
    payments: Arc<PaymentService<C>>,
    transaction: Option<PaymentTransaction>,
    renewal: Option<AbortHandle>,
    _slot: CallSlot,
}

impl<C: ChainReader + 'static> Pending<C> {
    /// Holds `transaction` and keeps its lease renewed until the outcome.
    pub(super) fn new(
        payments: Arc<PaymentService<C>>,
        transaction: PaymentTransaction,
        slot: CallSlot,
    ) -> Self {
        let renewing = payments.clone();
        let lease = transaction.lease().clone();
        let renewal = tokio::spawn(async move { renewing.keep_renewed(&lease).await }).abort_handle();
        Self { payments, transaction: Some(transaction), renewal: Some(renewal), _slot: slot }
    }

    /// The channel's sender: forwarded to the service as `snet-user-address`.
    pub(super) fn sender(&self) -> Option<EthAddress> {
        self.transaction.as_ref().map(PaymentTransaction::sender)
    }

    fn stop_renewing(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }

    /// Records the payment in a task of its own; the handle may be dropped (the client went away)
    /// and the commit still runs to its end.
    pub(super) fn commit(mut self) -> JoinHandle<Result<(), PaymentError>> {
        tokio::spawn(async move {
            self.stop_renewing();
            let Some(transaction) = self.transaction.take() else { return Ok(()) };
            let outcome = self.payments.commit(transaction).await?;
            tracing::debug!(?outcome, "payment committed");
            Ok(())
        })
    }

    /// Gives the lease back at once; nothing is recorded.
    pub(super) async fn rollback(mut self) {
        self.stop_renewing();
        if let Some(transaction) = self.transaction.take() {
            self.payments.rollback(transaction).await;
        }
    }
}

impl<C: ChainReader + 'static> Drop for Pending<C> {
    fn drop(&mut self) {
        self.stop_renewing();
        if let Some(transaction) = self.transaction.take() {
            let payments = self.payments.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                tracing::info!("call abandoned: rolling its payment back");
                runtime.spawn(async move { payments.rollback(transaction).await });
            }
        }
    }
}
