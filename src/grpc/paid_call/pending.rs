//! A paid call's hold on the ledger between its arrival and its end: its place among the calls in
//! flight ([`CallSlot`]), the payment transaction waiting for the call's outcome ([`Pending`]), and
//! the start of that transaction ([`start_payment`]).
//!
//! Invariants, whatever the client does and whenever it goes away:
//! - **No lease is left behind.** The payment's start runs to its end even if the caller goes away
//!   meanwhile ([`run_to_end`]), and a lease taken for a caller that has gone is given back at once.
//!   A [`Pending`] dropped without an outcome (client gone, call cut) rolls back in a task of its
//!   own.
//! - **A served call is recorded.** [`Pending::commit`] runs to its end whoever stops waiting for
//!   it: once the service's status 0 has arrived, the commit runs to its end.
//! - **The lease stays renewed** from the start until the outcome is known (by the payment
//!   service's one renewal task, `escrow::renewals`; the commit then renews it itself while it
//!   retries).
//! - The call's slot (its permit under `max_concurrent_calls`) is held until the outcome is
//!   recorded or rolled back, so a commit still running after its client left still counts.
//!
//! Cost on the hot path: nothing is spawned while the client waits. The start and the commit are
//! polled in place, in the call's own task, and are moved into a task of their own only when the
//! caller goes away before they end (`cargo bench --bench ledger`: a spawned task per step, and a
//! renewal task per call, cost a cross-thread wake-up each on every paid call).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::OwnedSemaphorePermit;

use crate::chain::ChainReader;
use crate::domain::EthAddress;
use crate::domain::payment::{Payment, PaymentError};
use crate::escrow::payments::{PaymentService, PaymentTransaction};
use crate::escrow::renewals::Renewing;

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

type BoxedFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs `work` to its end: polled in place while the caller waits for it; if the caller goes away
/// first (the future of this function is dropped), what is left of `work` runs in a task of its
/// own and its output goes to `abandoned`.
pub(super) async fn run_to_end<T, A, AF>(work: impl Future<Output = T> + Send + 'static, abandoned: A) -> T
where
    T: Send + 'static,
    A: FnOnce(T) -> AF + Send + 'static,
    AF: Future<Output = ()> + Send + 'static,
{
    type Abandoned<T> = Box<dyn FnOnce(T) -> BoxedFuture<()> + Send>;
    struct Guard<T: Send + 'static> {
        work: Option<BoxedFuture<T>>,
        abandoned: Option<Abandoned<T>>,
    }
    impl<T: Send + 'static> Drop for Guard<T> {
        fn drop(&mut self) {
            let (Some(work), Some(abandoned)) = (self.work.take(), self.abandoned.take()) else { return };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move { abandoned(work.await).await });
                }
                Err(_) => tracing::warn!("runtime gone: an abandoned payment step cannot finish"),
            }
        }
    }
    let abandoned: Abandoned<T> =
        Box::new(move |output: T| -> BoxedFuture<()> { Box::pin(abandoned(output)) });
    let mut guard = Guard { work: Some(Box::pin(work)), abandoned: Some(abandoned) };
    let output = guard.work.as_mut().expect("set above").as_mut().await;
    guard.work = None;
    output
}

/// Starts the payment (see the module doc): a caller that goes away while the lease is being taken
/// leaves no lease behind.
pub(super) async fn start_payment<C: ChainReader + 'static>(
    payments: &Arc<PaymentService<C>>,
    payment: Payment,
    method: &str,
) -> Result<PaymentTransaction, PaymentError> {
    let starting = payments.clone();
    let method = method.to_owned();
    let giving_back = payments.clone();
    run_to_end(async move { starting.start(payment, &method).await }, move |outcome| async move {
        if let Ok(transaction) = outcome {
            tracing::info!("call abandoned while its payment started: giving the lease back");
            giving_back.rollback(transaction).await;
        }
    })
    .await
}

/// A started payment waiting for the call's outcome.
pub(super) struct Pending<C: ChainReader + 'static> {
    payments: Arc<PaymentService<C>>,
    transaction: Option<PaymentTransaction>,
    renewing: Option<Renewing>,
    slot: Option<CallSlot>,
}

impl<C: ChainReader + 'static> Pending<C> {
    /// Holds `transaction` and keeps its lease renewed until the outcome.
    pub(super) fn new(
        payments: Arc<PaymentService<C>>,
        transaction: PaymentTransaction,
        slot: CallSlot,
    ) -> Self {
        let renewing = payments.hold_renewed(transaction.lease());
        Self { payments, transaction: Some(transaction), renewing: Some(renewing), slot: Some(slot) }
    }

    /// The channel's sender: forwarded to the service as `snet-user-address`.
    pub(super) fn sender(&self) -> Option<EthAddress> {
        self.transaction.as_ref().map(PaymentTransaction::sender)
    }

    /// Records the payment; if the caller stops waiting (the client went away), the commit still
    /// runs to its end (and keeps the call's slot until then).
    pub(super) async fn commit(mut self) -> Result<(), PaymentError> {
        let Some(transaction) = self.transaction.take() else { return Ok(()) };
        let payments = self.payments.clone();
        let renewing = self.renewing.take();
        let slot = self.slot.take();
        let committing = async move {
            // The commit renews the lease itself while it retries.
            drop(renewing);
            let outcome = payments.commit(transaction).await;
            drop(slot);
            outcome
        };
        run_to_end(committing, |outcome| async move {
            match outcome {
                Ok(outcome) => tracing::info!(?outcome, "payment of a call whose client left: committed"),
                Err(error) => tracing::warn!(%error, "payment of a call whose client left: not recorded"),
            }
        })
        .await
        .map(|outcome| tracing::debug!(?outcome, "payment committed"))
    }

    /// Gives the lease back at once; nothing is recorded.
    pub(super) async fn rollback(mut self) {
        self.renewing = None;
        if let Some(transaction) = self.transaction.take() {
            self.payments.rollback(transaction).await;
        }
    }
}

impl<C: ChainReader + 'static> Drop for Pending<C> {
    fn drop(&mut self) {
        self.renewing = None;
        if let Some(transaction) = self.transaction.take() {
            let payments = self.payments.clone();
            let slot = self.slot.take();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                tracing::info!("call abandoned: rolling its payment back");
                runtime.spawn(async move {
                    payments.rollback(transaction).await;
                    drop(slot);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::run_to_end;

    #[tokio::test]
    async fn work_awaited_to_its_end_is_not_handed_to_the_abandoned_path() {
        let (told, abandoned) = oneshot::channel::<u32>();
        let output = run_to_end(async { 7 }, move |output| async move {
            let _ = told.send(output);
        })
        .await;
        assert_eq!(output, 7);
        assert!(abandoned.await.is_err(), "the abandoned path ran for work that was awaited");
    }

    #[tokio::test]
    async fn work_whose_caller_went_away_runs_to_its_end_in_a_task_of_its_own() {
        let (release, released) = oneshot::channel::<()>();
        let (told, abandoned) = oneshot::channel::<u32>();
        let caller = tokio::spawn(run_to_end(
            async move {
                let _ = released.await;
                42
            },
            move |output| async move {
                let _ = told.send(output);
            },
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        // The caller is gone; the work goes on and ends, and its output reaches the abandoned path.
        release.send(()).unwrap();
        let output = tokio::time::timeout(Duration::from_secs(5), abandoned).await;
        assert_eq!(output.expect("the abandoned work finished").expect("its output was handed on"), 42);
    }
}
