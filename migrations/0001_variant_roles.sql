-- One login role per variant, each with its own CONNECTION LIMIT: when the broken variant piles up abandoned
-- backends it hits "too many connections for role", not the server's max_connections, so the fixed variant,
-- the admin pool and /healthz keep working on stage.
-- Roles belong to the whole cluster, so they are named after this database (pitfalls -> pitfalls_broken,
-- pitfalls_fixed; the tests' pitfalls_test -> pitfalls_test_broken...): a test run never shares a connection
-- limit with a running demo.
CREATE FUNCTION pitfalls_role(variant text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$ SELECT current_database() || '_' || variant $$;

DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT * FROM (VALUES ('broken', 30), ('fixed', 20)) AS t(variant, connection_limit) LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = pitfalls_role(v.variant)) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', pitfalls_role(v.variant));
        END IF;
        EXECUTE format('ALTER ROLE %I CONNECTION LIMIT %s', pitfalls_role(v.variant), v.connection_limit);
    END LOOP;
END
$$;
