SET LOCAL ROLE mpe_ledger_owner;

-- The rows that every payment updates (its stream head, its channel, its lease) leave room on their
-- page, so that the update is a heap-only tuple (HOT) update: no new index entry, hence no index-page
-- insert that SSI could see as a conflict with a payment on a neighbouring channel, and less bloat.
ALTER TABLE ledger.streams SET (fillfactor = 70);
ALTER TABLE ledger.channels SET (fillfactor = 70);
ALTER TABLE ledger.leases SET (fillfactor = 70);
RESET ROLE;
