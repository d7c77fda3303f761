-- The deployment this database records money for: one MultiPartyEscrow contract on one chain.
-- `serve` writes it (the MPE address at start-up, the chain id once the node has answered); payment
-- signatures are over the MPE address, so `verify` re-checks them against it, and audit bundles and
-- reporting views read it. Neither value ever changes once recorded: a database holds the payments
-- of one contract, and pointing it at another is refused (trigger below).
SET LOCAL ROLE mpe_ledger_owner;

CREATE TABLE ledger.deployment (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mpe_address     bytea NOT NULL CHECK (octet_length(mpe_address) = 20),
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL until serve has read eth_chainId from its node.
    chain_id        numeric(78, 0) CHECK (chain_id >= 0),
    chain_id_recorded_at timestamptz,
    CHECK ((chain_id IS NULL) = (chain_id_recorded_at IS NULL))
);

CREATE FUNCTION ledger.refuse_deployment_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'ledger.deployment is recorded once: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.mpe_address <> OLD.mpe_address OR NEW.recorded_at <> OLD.recorded_at
       OR (OLD.chain_id IS NOT NULL AND
           (NEW.chain_id IS DISTINCT FROM OLD.chain_id
            OR NEW.chain_id_recorded_at IS DISTINCT FROM OLD.chain_id_recorded_at)) THEN
        RAISE EXCEPTION 'ledger.deployment is recorded once: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER deployment_recorded_once BEFORE UPDATE ON ledger.deployment
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_deployment_change();
CREATE TRIGGER deployment_not_deleted BEFORE DELETE OR TRUNCATE ON ledger.deployment
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_deployment_change();

GRANT SELECT, INSERT, UPDATE ON ledger.deployment TO mpe_ledger_writer;

RESET ROLE;
