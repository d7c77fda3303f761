SET LOCAL ROLE mpe_ledger_owner;

-- The rows that every payment updates (its stream head, its channel, its lease) get pages with most
-- of their room left free, so that the update is a heap-only tuple (HOT) update: no new index entry.
-- Under SERIALIZABLE every commit's point lookup holds a predicate lock on its index leaf page, and a
-- non-HOT update inserts into such a page: a false conflict with the payments of every channel on
-- that leaf. Old versions are pruned only once no running snapshot can see them, so under a burst of
-- concurrent payments a page fills up with versions; at fillfactor 70 and 20 that still happened
-- (tests/payment_load.rs saw retries in one run of three, and of five), at 10 it did not. The cost
-- is space: these are one row per channel (about 250 bytes), some 2.5 MB per 1,000 channels.
ALTER TABLE ledger.streams SET (fillfactor = 10);
ALTER TABLE ledger.channels SET (fillfactor = 10);
ALTER TABLE ledger.leases SET (fillfactor = 10);
RESET ROLE;
