-- The event log, its stream heads and the projections folded from it.
--
-- Roles (cluster-wide, so created idempotently and tolerant of a concurrent creator):
--   mpe_ledger_owner  owns every object; only it can lift the append-only guard.
--   mpe_ledger_writer what the service runs as: reads everything, inserts events, maintains projections.
DO $$
BEGIN
    BEGIN
        CREATE ROLE mpe_ledger_owner NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE mpe_ledger_writer NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    EXECUTE format('GRANT CREATE, CONNECT ON DATABASE %I TO mpe_ledger_owner', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO mpe_ledger_writer', current_database());
    IF NOT pg_has_role(current_user, 'mpe_ledger_owner', 'MEMBER') THEN
        EXECUTE format('GRANT mpe_ledger_owner TO %I', current_user);
    END IF;
    IF NOT pg_has_role(current_user, 'mpe_ledger_writer', 'MEMBER') THEN
        EXECUTE format('GRANT mpe_ledger_writer TO %I', current_user);
    END IF;
END
$$;

SET LOCAL ROLE mpe_ledger_owner;

CREATE SCHEMA ledger;
GRANT USAGE ON SCHEMA ledger TO mpe_ledger_writer;

-- Every change, in commit-safe order for readers that tail it (see ledger.events_after).
CREATE TABLE ledger.events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: readers order by (transaction_id, position) below the oldest running
    -- transaction, so no committed event can appear behind a reader's cursor.
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream          text NOT NULL,
    stream_version  bigint NOT NULL CHECK (stream_version >= 1),
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    channel_id      numeric(78, 0),
    nonce           numeric(78, 0),
    amount          numeric(78, 0),
    signature       bytea,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    prev_hash       bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash            bytea NOT NULL CHECK (octet_length(hash) = 32),
    UNIQUE (stream, stream_version)
);
CREATE INDEX events_channel ON ledger.events (channel_id, stream_version) WHERE channel_id IS NOT NULL;
CREATE INDEX events_tail ON ledger.events (transaction_id, position);

-- Append-only, enforced for every role: only the owner can lift it (ALTER TABLE ... DISABLE TRIGGER).
CREATE FUNCTION ledger.refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON ledger.events
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_event_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON ledger.events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_event_change();

-- Events after a cursor, safe against in-flight transactions: only transactions older than every
-- running one are returned, ordered by (transaction_id, position); resume from the last pair seen.
CREATE FUNCTION ledger.events_after(after_transaction xid8, after_position bigint, max_rows integer)
RETURNS SETOF ledger.events LANGUAGE sql STABLE AS $$
    SELECT * FROM ledger.events
    WHERE (transaction_id, position) > (after_transaction, after_position)
      AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY transaction_id, position
    LIMIT max_rows
$$;

-- The head of every stream: the version-checked update here is what makes two writers of one stream
-- conflict (40001) before either inserts an event.
CREATE TABLE ledger.streams (
    stream      text PRIMARY KEY,
    version     bigint NOT NULL CHECK (version >= 1),
    last_hash   bytea NOT NULL CHECK (octet_length(last_hash) = 32)
);

-- Projection of the generic AtomicStorage facade.
CREATE TABLE ledger.kv (
    key     bytea PRIMARY KEY,
    value   bytea NOT NULL
);

-- Projection of channel streams.
CREATE TABLE ledger.channels (
    channel_id          numeric(78, 0) PRIMARY KEY,
    nonce               numeric(78, 0) NOT NULL,
    state               text NOT NULL CHECK (state IN ('open', 'closed')),
    sender              bytea NOT NULL CHECK (octet_length(sender) = 20),
    recipient           bytea NOT NULL CHECK (octet_length(recipient) = 20),
    signer              bytea NOT NULL CHECK (octet_length(signer) = 20),
    group_id            bytea NOT NULL CHECK (octet_length(group_id) = 32),
    full_amount         numeric(78, 0) NOT NULL CHECK (full_amount >= 0),
    expiration          numeric(78, 0) NOT NULL,
    authorized_amount   numeric(78, 0) NOT NULL CHECK (authorized_amount >= 0),
    signature           bytea CHECK (octet_length(signature) = 65),
    stream_version      bigint NOT NULL
);

-- Every claim ever started; finished ones keep their on-chain outcome (nothing is deleted).
CREATE TABLE ledger.claims (
    channel_id              numeric(78, 0) NOT NULL,
    nonce                   numeric(78, 0) NOT NULL,
    amount                  numeric(78, 0) NOT NULL,
    signature               bytea NOT NULL CHECK (octet_length(signature) = 65),
    finish_outcome          text CHECK (finish_outcome IN ('claimed_by_recipient', 'reclaimed_by_sender')),
    finish_transaction_hash bytea,
    finish_block_number     bigint,
    finish_amount           numeric(78, 0),
    PRIMARY KEY (channel_id, nonce),
    CHECK ((finish_outcome IS NULL) = (finish_transaction_hash IS NULL))
);

CREATE VIEW ledger.claims_in_progress AS
    SELECT channel_id, nonce, amount, signature FROM ledger.claims WHERE finish_outcome IS NULL;

GRANT SELECT, INSERT ON ledger.events TO mpe_ledger_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON ledger.streams, ledger.kv, ledger.channels, ledger.claims
    TO mpe_ledger_writer;
GRANT SELECT ON ledger.claims_in_progress TO mpe_ledger_writer;
GRANT EXECUTE ON FUNCTION ledger.events_after(xid8, bigint, integer) TO mpe_ledger_writer;

RESET ROLE;
