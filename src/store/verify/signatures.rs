//! `verify`'s re-check of every client signature in the log: each `payment accepted` and
//! `claim started` event carries the 65-byte signature the client sent, over the payment message
//! (MPE address, channel, nonce, cumulative amount); it must recover to the channel's signer or its
//! sender as the stream had folded them just before that event. The MPE address is the deployment
//! record's (`store::postgres::deployment`); without a record the check cannot run and says so.
//!
//! The recoveries (about 50 µs each) run on worker threads, one per core, fed in batches while the
//! log is still being read, so the check costs little more wall time than the fold on a machine
//! with a spare core. `rebuild` never runs it: its fold must stay fast.
//!
//! A hash chain recomputed by whoever can write the table (the owning role) hides every change but
//! this one: a forged signature cannot be made without the client's key.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::domain::signature::check_payment_signature;
use crate::domain::{Amount, ChannelId, EthAddress, Nonce, Signature};

use super::Difference;

/// Payments handed to a worker at once.
const BATCH: usize = 4096;
/// Batches waiting for a worker before the reader waits (bounds memory: a few MiB).
const QUEUED_BATCHES: usize = 4;

/// One signed event to check, with the parties its stream had folded to before it.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    pub stream: String,
    pub version: u64,
    pub channel_id: ChannelId,
    pub nonce: Nonce,
    pub amount: Amount,
    pub signature: Signature,
    pub signer: EthAddress,
    pub sender: EthAddress,
}

/// The difference `event` makes, if its signature is not the signer's or the sender's (the rule
/// is the domain's, shared with `verify-bundle`).
pub fn check(mpe: &EthAddress, event: &SignedEvent) -> Option<Difference> {
    let error = check_payment_signature(
        mpe,
        event.channel_id,
        event.nonce,
        event.amount,
        &event.signature,
        &event.signer,
        &event.sender,
    )
    .err()?;
    Some(Difference {
        stream: event.stream.clone(),
        field: format!("version {}: signature (forged)", event.version),
        stored: error.to_string(),
        folded: format!("signed by the channel's signer {} or sender {}", event.signer, event.sender),
    })
}

/// The running check: push every signed event, then [`SignatureCheck::finish`].
pub struct SignatureCheck {
    batch: Vec<SignedEvent>,
    queue: Option<SyncSender<Vec<SignedEvent>>>,
    workers: Vec<JoinHandle<Vec<(String, u64, Difference)>>>,
    checked: u64,
}

impl SignatureCheck {
    /// Starts one worker per core, checking against the MPE contract at `mpe`.
    pub fn start(mpe: EthAddress) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let (queue, batches) = sync_channel::<Vec<SignedEvent>>(QUEUED_BATCHES);
        let batches = Arc::new(Mutex::new(batches));
        let workers = (0..cores)
            .map(|_| {
                let batches = batches.clone();
                std::thread::spawn(move || work(mpe, &batches))
            })
            .collect();
        Self { batch: Vec::with_capacity(BATCH), queue: Some(queue), workers, checked: 0 }
    }

    pub fn push(&mut self, event: SignedEvent) {
        self.checked += 1;
        self.batch.push(event);
        if self.batch.len() == BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if let Some(queue) = &self.queue {
            // A worker that panicked drops its end only with the others; `finish` reports it.
            let _ = queue.send(batch);
        }
    }

    /// Waits for the workers: how many signatures were checked, and every forged one in log order.
    pub fn finish(mut self) -> (u64, Vec<Difference>) {
        self.send();
        self.queue = None;
        let mut found: Vec<(String, u64, Difference)> = Vec::new();
        for worker in self.workers.drain(..) {
            found.extend(worker.join().expect("a signature worker panicked"));
        }
        found.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        (self.checked, found.into_iter().map(|(_, _, difference)| difference).collect())
    }
}

fn work(mpe: EthAddress, batches: &Mutex<Receiver<Vec<SignedEvent>>>) -> Vec<(String, u64, Difference)> {
    let mut found = Vec::new();
    loop {
        let batch = match batches.lock().expect("the queue's lock").recv() {
            Ok(batch) => batch,
            Err(_) => return found,
        };
        for event in &batch {
            if let Some(difference) = check(&mpe, event) {
                found.push((event.stream.clone(), event.version, difference));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::signature::{payment_message, recover_signer, sign};

    const CLIENT_KEY: [u8; 32] = [0x11; 32];
    const OTHER_KEY: [u8; 32] = [0x22; 32];

    fn address_of(key: &[u8; 32]) -> EthAddress {
        let message = b"who";
        recover_signer(message, sign(message, key).as_bytes()).unwrap()
    }

    fn event(mpe: &EthAddress, key: &[u8; 32], amount: u64) -> SignedEvent {
        let (channel_id, nonce, amount) = (ChannelId::from(7), Nonce::from(0), Amount::from(amount));
        let client = address_of(&CLIENT_KEY);
        SignedEvent {
            stream: "channel/7".to_owned(),
            version: 2,
            channel_id,
            nonce,
            amount,
            signature: sign(&payment_message(mpe, channel_id, nonce, amount), key),
            signer: client,
            sender: client,
        }
    }

    #[test]
    fn the_clients_signature_passes_and_any_other_is_named() {
        let mpe: EthAddress = "0x5b1869D9A4C187F2EAa108f3062412ecf0526b24".parse().unwrap();
        assert_eq!(check(&mpe, &event(&mpe, &CLIENT_KEY, 10)), None);
        let forged = check(&mpe, &event(&mpe, &OTHER_KEY, 10)).expect("a forged signature");
        assert_eq!(forged.field, "version 2: signature (forged)");
        assert_eq!(forged.stored, format!("signed by {}", address_of(&OTHER_KEY)));
        // A signature over another amount recovers to some unrelated address.
        let mut moved = event(&mpe, &CLIENT_KEY, 10);
        moved.amount = Amount::from(11);
        assert!(check(&mpe, &moved).is_some());
    }

    #[test]
    fn the_workers_find_every_forged_signature_in_log_order() {
        let mpe: EthAddress = "0x5b1869D9A4C187F2EAa108f3062412ecf0526b24".parse().unwrap();
        let mut checking = SignatureCheck::start(mpe);
        let total = BATCH * 2 + 17;
        let forged = [5usize, BATCH + 3, total - 1];
        let (honest, bad) = (event(&mpe, &CLIENT_KEY, 10), event(&mpe, &OTHER_KEY, 10));
        for i in 0..total {
            let mut signed = if forged.contains(&i) { bad.clone() } else { honest.clone() };
            signed.version = i as u64 + 1;
            checking.push(signed);
        }
        let (checked, differences) = checking.finish();
        assert_eq!(checked, total as u64);
        let versions: Vec<String> = differences.iter().map(|d| d.field.clone()).collect();
        let expected: Vec<String> =
            forged.iter().map(|i| format!("version {}: signature (forged)", i + 1)).collect();
        assert_eq!(versions, expected);
    }
}
