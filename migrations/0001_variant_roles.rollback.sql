-- The roles are shared by every database of the cluster (a test database, a second checkout):
-- dropping them here could break those, so rolling back leaves them in place.
SELECT 1;
