-- Gallery pitfall "commit-retry": purchases whose COMMIT is slow on purpose, so a client can hang up during it.
-- A real COMMIT is slow when it waits for a synchronous standby or runs deferred checks; here a deferred
-- constraint trigger sleeps `pitfalls.commit_seconds` (a transaction's SET LOCAL; unset: no sleep) at COMMIT.
CREATE TABLE purchases (
    id              bigserial PRIMARY KEY,
    customer        text NOT NULL,
    idempotency_key text UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION pitfalls_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(coalesce(nullif(current_setting('pitfalls.commit_seconds', true), ''), '0')::float);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER purchases_slow_commit AFTER INSERT ON purchases
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pitfalls_slow_commit();
