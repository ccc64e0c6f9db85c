DROP TABLE purchases;
DROP FUNCTION pitfalls_slow_commit();
