-- Scenario "shield": accounts, transfers accepted before they are done, the ledger, and export audits.
CREATE TABLE accounts (
    variant text NOT NULL CHECK (variant IN ('broken', 'fixed')),
    name    text NOT NULL,
    balance bigint NOT NULL,
    PRIMARY KEY (variant, name)
);
INSERT INTO accounts (variant, name, balance)
SELECT v, n, 1000000
FROM unnest(ARRAY['broken', 'fixed']) AS v, unnest(ARRAY['alice', 'bob', 'carol', 'dave']) AS n;

-- A transfer is 'accepted' (durably, before the client hears 202), then 'committed' with its ledger rows in one
-- transaction, or 'failed' with the error. Accepted and never committed once the system is quiet = lost.
CREATE TABLE transfers (
    id           uuid PRIMARY KEY,
    variant      text NOT NULL CHECK (variant IN ('broken', 'fixed')),
    from_account text NOT NULL,
    to_account   text NOT NULL,
    amount       bigint NOT NULL CHECK (amount > 0),
    status       text NOT NULL DEFAULT 'accepted' CHECK (status IN ('accepted', 'committed', 'failed')),
    error        text,
    accepted_at  timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    FOREIGN KEY (variant, from_account) REFERENCES accounts (variant, name),
    FOREIGN KEY (variant, to_account) REFERENCES accounts (variant, name)
);
CREATE INDEX transfers_variant_status_idx ON transfers (variant, status);

CREATE TABLE ledger (
    transfer_id uuid NOT NULL REFERENCES transfers (id),
    account     text NOT NULL,
    delta       bigint NOT NULL
);
CREATE INDEX ledger_transfer_id_idx ON ledger (transfer_id);

CREATE TABLE exports (
    id        bigserial PRIMARY KEY,
    variant   text NOT NULL CHECK (variant IN ('broken', 'fixed')),
    rows_sent integer NOT NULL,
    completed boolean NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, UPDATE ON accounts TO %I, %I', pitfalls_role('broken'), pitfalls_role('fixed'));
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON transfers TO %I, %I',
                   pitfalls_role('broken'), pitfalls_role('fixed'));
    EXECUTE format('GRANT SELECT, INSERT ON ledger, exports TO %I, %I',
                   pitfalls_role('broken'), pitfalls_role('fixed'));
    EXECUTE format('GRANT USAGE ON SEQUENCE exports_id_seq TO %I, %I',
                   pitfalls_role('broken'), pitfalls_role('fixed'));
END
$$;
