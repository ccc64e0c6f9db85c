DROP TABLE exports;
DROP TABLE ledger;
DROP TABLE transfers;
DROP TABLE accounts;
