-- Claim outcomes as their own facts (events `claim landed` and `sender reclaimed`), and the claim
-- watcher's log cursors.
SET LOCAL ROLE mpe_ledger_owner;

-- The planned (signed) amount of a claim that landed, from `claim landed`. NULL for a sender's
-- reclaim, for a claim in progress, and for a claim ended by a `claim finished` event written before
-- this migration, whose planned amount is the claim's `amount`.
ALTER TABLE ledger.claims ADD COLUMN finish_planned_amount numeric(78, 0)
    CHECK (finish_planned_amount IS NULL OR finish_outcome = 'claimed_by_recipient');

-- Where the search of each channel's claim logs goes on from. Operational state, like leases, not
-- money: moving it is not an event (one every watcher pass would flood the log), and losing it only
-- makes the next pass search again from the earliest pending claim's block. `next_block` is the
-- first block not yet searched; it never passes head - confirmations + 1.
CREATE TABLE ledger.claim_log_cursors (
    channel_id  numeric(78, 0) PRIMARY KEY,
    next_block  bigint NOT NULL CHECK (next_block >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.claim_log_cursors TO mpe_ledger_writer;

RESET ROLE;
