-- Leases: who may write a channel right now. Operational state, not money: acquiring, renewing and
-- releasing are not events; an operator's forced release is (stream lease/<channel>).
-- Expiry is judged by the database's clock, so replicas with skewed clocks still agree.
SET LOCAL ROLE mpe_ledger_owner;

CREATE TABLE ledger.leases (
    channel_id  numeric(78, 0) PRIMARY KEY,
    holder      text NOT NULL,
    token       uuid NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    CHECK (expires_at > acquired_at)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.leases TO mpe_ledger_writer;

RESET ROLE;
