-- The `reporting` schema: documented, stable views for finance's SQL (docs/reporting.md), the role
-- `mpe_ledger_reader` that sees only them, and what the views need that was not recorded before:
-- the signer and the serving replica of each payment, and the deployment's token decimals, average
-- block time and head block.
--
-- The views are a public interface: a later migration that changes one says so in CHANGELOG.md.
-- They read the log (`ledger.events`) for history and the projections (`ledger.channels`,
-- `ledger.claims`) for the current state; they never read the chain or ledger.toml, only what serve
-- recorded in `ledger.deployment`.
DO $$
BEGIN
    BEGIN
        CREATE ROLE mpe_ledger_reader NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO mpe_ledger_reader', current_database());
END
$$;

SET LOCAL ROLE mpe_ledger_owner;

-- Beside the event, not in its hashed bytes (see src/domain/event.rs): the address the payment's
-- signature recovered to when it was committed (re-derivable from the signature, which the hash
-- covers), and the replica that served the call. NULL for events other than payments, and for
-- payments recorded before this migration (events are never rewritten).
ALTER TABLE ledger.events
    ADD COLUMN signer bytea CHECK (octet_length(signer) = 20),
    ADD COLUMN replica text;

-- What serve records besides the MPE address and the chain id (migration 0006):
--   token_*: the MPE's token and its decimals, read from the chain once; never change after.
--   average_block_time_ms, claims_due_within_blocks: settings, written at every start of serve.
--   head_*: the chain's head block and its timestamp as serve last read them, and when it did.
ALTER TABLE ledger.deployment
    ADD COLUMN token_address bytea CHECK (octet_length(token_address) = 20),
    ADD COLUMN token_decimals integer CHECK (token_decimals BETWEEN 0 AND 77),
    ADD COLUMN average_block_time_ms bigint CHECK (average_block_time_ms > 0),
    ADD COLUMN claims_due_within_blocks bigint CHECK (claims_due_within_blocks >= 0),
    ADD COLUMN head_block bigint CHECK (head_block >= 0),
    ADD COLUMN head_block_time timestamptz,
    ADD COLUMN head_recorded_at timestamptz,
    ADD CHECK ((token_address IS NULL) = (token_decimals IS NULL)),
    ADD CHECK ((head_block IS NULL) = (head_block_time IS NULL)
               AND (head_block IS NULL) = (head_recorded_at IS NULL));

-- As in 0006, and the token once recorded never changes either (the MPE's token is fixed when the
-- contract is deployed).
CREATE OR REPLACE FUNCTION ledger.refuse_deployment_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'ledger.deployment is recorded once: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.mpe_address <> OLD.mpe_address OR NEW.recorded_at <> OLD.recorded_at
       OR (OLD.chain_id IS NOT NULL AND
           (NEW.chain_id IS DISTINCT FROM OLD.chain_id
            OR NEW.chain_id_recorded_at IS DISTINCT FROM OLD.chain_id_recorded_at))
       OR (OLD.token_address IS NOT NULL AND
           (NEW.token_address IS DISTINCT FROM OLD.token_address
            OR NEW.token_decimals IS DISTINCT FROM OLD.token_decimals)) THEN
        RAISE EXCEPTION 'ledger.deployment is recorded once: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE SCHEMA reporting;
COMMENT ON SCHEMA reporting IS
    'Stable, documented views for finance (docs/reporting.md); changes are announced in CHANGELOG.md';

-- An amount of cogs in tokens of `decimals` decimals, exactly (multiplying by 1e-decimals keeps
-- every digit; dividing by a power of ten can round). NULL when the decimals are not known yet.
CREATE FUNCTION reporting.tokens(cogs numeric, decimals integer) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT cogs * ('1e-' || decimals)::numeric $$;

-- An address or hash as 0x-hex text.
CREATE FUNCTION reporting.hex(bytes bytea) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT '0x' || encode(bytes, 'hex') $$;

CREATE VIEW reporting.deployment AS
SELECT reporting.hex(mpe_address) AS mpe_address,
       chain_id,
       reporting.hex(token_address) AS token_address,
       token_decimals,
       average_block_time_ms,
       claims_due_within_blocks,
       head_block,
       head_block_time,
       head_recorded_at
FROM ledger.deployment;

-- One row per accepted payment. A payment authorises a cumulative amount at its nonce; its
-- increment is what it added to the previous payment at that nonce.
CREATE VIEW reporting.payments AS
WITH p AS (
    SELECT e.position, e.channel_id, e.nonce, e.amount, e.signer, e.recorded_at, e.replica,
           e.amount - coalesce(lag(e.amount) OVER (PARTITION BY e.channel_id, e.nonce
                                                   ORDER BY e.stream_version), 0) AS increment
    FROM ledger.events e
    WHERE e.event_type = 'payment_accepted'
)
SELECT p.position AS event_position,
       p.channel_id,
       p.nonce,
       p.increment::numeric(78, 0) AS increment_cogs,
       reporting.tokens(p.increment, d.token_decimals) AS increment_tokens,
       p.amount::numeric(78, 0) AS authorized_cogs,
       reporting.tokens(p.amount, d.token_decimals) AS authorized_tokens,
       reporting.hex(c.sender) AS sender,
       reporting.hex(p.signer) AS signer,
       encode(c.group_id, 'base64') AS group_id,
       p.recorded_at,
       p.replica
FROM p
JOIN ledger.channels c ON c.channel_id = p.channel_id
LEFT JOIN ledger.deployment d ON true;

-- One row per claim started here, and per sender reclaim (which may end no claim). Events written
-- before migration 0005 (`claim_finished`, which cannot be rewritten) are read as
-- src/domain/event.rs says: with the outcome `claimed_by_recipient` its amount is the actual amount
-- and the planned one is the claim's; with `reclaimed_by_sender` its amount is the value taken back
-- and the provider's loss is the claim's amount.
CREATE VIEW reporting.claims AS
WITH started AS (
    SELECT channel_id, nonce, amount, recorded_at
    FROM ledger.events WHERE event_type = 'claim_started'
), ended AS (
    SELECT channel_id, nonce, event_type, recorded_at,
           CASE WHEN event_type = 'claim_landed'
                  OR (event_type = 'claim_finished' AND payload->>'outcome' = 'claimed_by_recipient')
                THEN 'landed' ELSE 'sender_reclaimed' END AS outcome,
           decode(substr(payload->>'transaction_hash', 3), 'hex') AS transaction_hash,
           (payload->>'block_number')::bigint AS block_number,
           amount,
           CASE WHEN event_type = 'claim_landed' THEN (payload->>'planned_amount')::numeric END
               AS planned_amount,
           CASE WHEN event_type = 'sender_reclaimed' THEN (payload->>'provider_loss')::numeric END
               AS provider_loss
    FROM ledger.events
    WHERE event_type IN ('claim_landed', 'sender_reclaimed', 'claim_finished')
), claims AS (
    SELECT coalesce(s.channel_id, e.channel_id) AS channel_id,
           coalesce(s.nonce, e.nonce) AS nonce,
           coalesce(e.outcome, 'in_progress') AS outcome,
           s.recorded_at AS started_at,
           e.recorded_at AS ended_at,
           coalesce(e.planned_amount, s.amount) AS planned,
           CASE e.outcome WHEN 'landed' THEN e.amount WHEN 'sender_reclaimed' THEN 0 END AS actual,
           CASE WHEN e.outcome = 'sender_reclaimed' THEN e.amount END AS taken_back,
           CASE WHEN e.outcome = 'sender_reclaimed'
                THEN coalesce(e.provider_loss, s.amount, 0) END AS loss,
           e.transaction_hash,
           e.block_number,
           e.event_type
    FROM started s
    FULL JOIN ended e ON e.channel_id = s.channel_id AND e.nonce = s.nonce
)
SELECT k.channel_id,
       k.nonce,
       k.outcome,
       k.started_at,
       k.ended_at,
       CASE WHEN k.outcome = 'landed' THEN k.ended_at - k.started_at END AS time_to_land,
       k.planned::numeric(78, 0) AS planned_cogs,
       reporting.tokens(k.planned, d.token_decimals) AS planned_tokens,
       k.actual::numeric(78, 0) AS actual_cogs,
       reporting.tokens(k.actual, d.token_decimals) AS actual_tokens,
       k.taken_back::numeric(78, 0) AS value_taken_back_cogs,
       reporting.tokens(k.taken_back, d.token_decimals) AS value_taken_back_tokens,
       k.loss::numeric(78, 0) AS provider_loss_cogs,
       reporting.tokens(k.loss, d.token_decimals) AS provider_loss_tokens,
       reporting.hex(k.transaction_hash) AS transaction_hash,
       k.block_number,
       k.event_type AS recorded_as
FROM claims k
LEFT JOIN ledger.deployment d ON true;

-- Earned (authorised increments, by the payment's recorded UTC day) and collected (claimed on
-- chain, by the UTC day the landing was recorded) per channel.
CREATE VIEW reporting.revenue_daily_by_channel AS
WITH earned AS (
    SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, channel_id, sum(increment_cogs) AS cogs
    FROM reporting.payments GROUP BY 1, 2
), collected AS (
    SELECT (ended_at AT TIME ZONE 'UTC')::date AS day, channel_id, sum(actual_cogs) AS cogs
    FROM reporting.claims WHERE outcome = 'landed' GROUP BY 1, 2
), days AS (
    SELECT day, channel_id, coalesce(earned.cogs, 0) AS earned, coalesce(collected.cogs, 0) AS collected
    FROM earned FULL JOIN collected USING (day, channel_id)
)
SELECT days.day,
       days.channel_id,
       encode(c.group_id, 'base64') AS group_id,
       days.earned::numeric(78, 0) AS earned_cogs,
       reporting.tokens(days.earned, d.token_decimals) AS earned_tokens,
       days.collected::numeric(78, 0) AS collected_cogs,
       reporting.tokens(days.collected, d.token_decimals) AS collected_tokens
FROM days
JOIN ledger.channels c ON c.channel_id = days.channel_id
LEFT JOIN ledger.deployment d ON true;

CREATE VIEW reporting.revenue_daily_by_group AS
SELECT r.day,
       r.group_id,
       sum(r.earned_cogs)::numeric(78, 0) AS earned_cogs,
       reporting.tokens(sum(r.earned_cogs), max(d.token_decimals)) AS earned_tokens,
       sum(r.collected_cogs)::numeric(78, 0) AS collected_cogs,
       reporting.tokens(sum(r.collected_cogs), max(d.token_decimals)) AS collected_tokens
FROM reporting.revenue_daily_by_channel r
LEFT JOIN ledger.deployment d ON true
GROUP BY r.day, r.group_id;

-- Per channel, now: what a sender's reclaim after expiration would take from the provider
-- (authorised and not claimed, and claims started and not landed), and how long is left, from the
-- head block serve last recorded. The estimate is the head block's time plus the blocks left at
-- the configured average block time; it is NULL when it would lie more than a century away.
CREATE VIEW reporting.money_at_risk AS
WITH pending AS (
    SELECT channel_id, sum(amount) AS amount
    FROM ledger.claims WHERE finish_outcome IS NULL GROUP BY channel_id
), risk AS (
    SELECT c.channel_id, c.sender, c.group_id, c.nonce, c.state, c.expiration,
           c.authorized_amount AS unclaimed,
           coalesce(p.amount, 0) AS in_progress,
           c.expiration - d.head_block AS blocks_left,
           d.head_block, d.head_block_time, d.average_block_time_ms, d.token_decimals
    FROM ledger.channels c
    LEFT JOIN pending p ON p.channel_id = c.channel_id
    LEFT JOIN ledger.deployment d ON true
)
SELECT r.channel_id,
       reporting.hex(r.sender) AS sender,
       encode(r.group_id, 'base64') AS group_id,
       r.nonce,
       r.state,
       r.unclaimed::numeric(78, 0) AS unclaimed_cogs,
       reporting.tokens(r.unclaimed, r.token_decimals) AS unclaimed_tokens,
       r.in_progress::numeric(78, 0) AS in_progress_cogs,
       reporting.tokens(r.in_progress, r.token_decimals) AS in_progress_tokens,
       (r.unclaimed + r.in_progress)::numeric(78, 0) AS at_risk_cogs,
       reporting.tokens(r.unclaimed + r.in_progress, r.token_decimals) AS at_risk_tokens,
       r.expiration::numeric(78, 0) AS expiration_block,
       r.head_block,
       r.blocks_left::numeric(78, 0) AS blocks_left,
       r.expiration <= r.head_block AS expired,
       CASE WHEN abs(r.blocks_left * r.average_block_time_ms) <= 3155760000000
            THEN r.head_block_time
                 + interval '1 millisecond' * (r.blocks_left * r.average_block_time_ms)::bigint
       END AS estimated_expiration_at
FROM risk r;

-- Per channel and nonce: authorised off-chain (the last payment's cumulative amount), claimed on
-- chain, lost to a sender's reclaim; `difference_cogs` is authorised minus claimed, and `reason`
-- says why they differ (or `claimed_in_full`). Rows only for nonces with something authorised,
-- claimed or reclaimed.
CREATE VIEW reporting.reconciliation AS
WITH authorized AS (
    SELECT channel_id, nonce, max(amount) AS amount
    FROM ledger.events WHERE event_type = 'payment_accepted' GROUP BY channel_id, nonce
), keys AS (
    SELECT channel_id, nonce FROM authorized
    UNION
    SELECT channel_id, nonce FROM reporting.claims
), rows AS (
    SELECT k.channel_id, k.nonce,
           coalesce(a.amount, 0) AS authorized,
           k2.planned_cogs AS planned,
           coalesce(k2.actual_cogs, 0) AS claimed,
           coalesce(k2.provider_loss_cogs, 0) AS lost,
           k2.outcome,
           c.nonce AS channel_nonce
    FROM keys k
    LEFT JOIN authorized a ON a.channel_id = k.channel_id AND a.nonce = k.nonce
    LEFT JOIN reporting.claims k2 ON k2.channel_id = k.channel_id AND k2.nonce = k.nonce
    JOIN ledger.channels c ON c.channel_id = k.channel_id
)
SELECT r.channel_id,
       r.nonce,
       r.authorized::numeric(78, 0) AS authorized_cogs,
       reporting.tokens(r.authorized, d.token_decimals) AS authorized_tokens,
       r.planned::numeric(78, 0) AS planned_cogs,
       r.claimed::numeric(78, 0) AS claimed_cogs,
       reporting.tokens(r.claimed, d.token_decimals) AS claimed_tokens,
       r.lost::numeric(78, 0) AS lost_cogs,
       reporting.tokens(r.lost, d.token_decimals) AS lost_tokens,
       (r.authorized - r.claimed)::numeric(78, 0) AS difference_cogs,
       reporting.tokens(r.authorized - r.claimed, d.token_decimals) AS difference_tokens,
       CASE
           WHEN r.outcome = 'landed' AND r.claimed = r.authorized THEN 'claimed_in_full'
           WHEN r.outcome = 'landed' AND r.claimed < r.authorized THEN 'claimed_less_than_authorized'
           WHEN r.outcome = 'landed' THEN 'claimed_more_than_authorized'
           WHEN r.outcome = 'sender_reclaimed' AND r.lost = 0 AND r.authorized = 0
               THEN 'sender_reclaimed_nothing_authorized'
           WHEN r.outcome = 'sender_reclaimed' THEN 'lost_to_sender_reclaim'
           WHEN r.outcome = 'in_progress' THEN 'claim_in_progress'
           WHEN r.nonce = r.channel_nonce THEN 'not_claimed_yet'
           ELSE 'nonce_passed_without_claim'
       END AS reason
FROM rows r
LEFT JOIN ledger.deployment d ON true;

GRANT USAGE ON SCHEMA reporting TO mpe_ledger_reader, mpe_ledger_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO mpe_ledger_reader, mpe_ledger_writer;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA reporting TO mpe_ledger_reader, mpe_ledger_writer;

RESET ROLE;
