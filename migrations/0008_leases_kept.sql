-- A channel's lease row is kept once created: releasing a lease clears its token instead of
-- deleting the row, and taking it again updates the row. Deleting on every release and inserting on
-- every acquisition left a dead row per paid call: at fillfactor 10 each insert took a fresh page,
-- and between autovacuum passes the table of a few hundred live leases grew past 35 MB with 45,000
-- dead rows (cargo bench --bench ledger, 2026-12-08), every lookup and insert paying for it. An
-- update that changes no indexed column is heap-only (HOT, see 0003) and its old version is pruned
-- in place, so the table stays at one row per channel ever leased.
--
-- A lease is held when its token is set (and its expiry not passed); a row with no token is free.
-- holder, acquired_at and expires_at of a free row describe the last holder and are not shown.
SET LOCAL ROLE mpe_ledger_owner;
ALTER TABLE ledger.leases ALTER COLUMN token DROP NOT NULL;
RESET ROLE;
