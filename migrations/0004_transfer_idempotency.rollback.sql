DROP INDEX transfers_idempotency_key_idx;
ALTER TABLE transfers DROP COLUMN idempotency_key;
