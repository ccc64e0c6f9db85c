DO $$
BEGIN
    EXECUTE format('DROP ROLE IF EXISTS %I, %I', pitfalls_role('broken'), pitfalls_role('fixed'));
END
$$;
DROP FUNCTION pitfalls_role(text);
