-- Scenario "shield": an Idempotency-Key per transfer (the client's, from the request header). The same key again
-- returns the first transfer instead of moving the money twice. Kept as long as the transfer row (>= 24 h).
ALTER TABLE transfers ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX transfers_idempotency_key_idx ON transfers (variant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
