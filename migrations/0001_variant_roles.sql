-- One login role per variant, each with its own CONNECTION LIMIT: when the broken variant piles up
-- abandoned backends it hits "too many connections for role", not the server's max_connections,
-- so the fixed variant, the admin pool and /healthz keep working on stage.
-- Roles belong to the whole cluster (every database shares them), hence IF NOT EXISTS.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pitfalls_broken') THEN
        CREATE ROLE pitfalls_broken LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pitfalls_fixed') THEN
        CREATE ROLE pitfalls_fixed LOGIN;
    END IF;
END
$$;
ALTER ROLE pitfalls_broken CONNECTION LIMIT 30;
ALTER ROLE pitfalls_fixed CONNECTION LIMIT 20;
