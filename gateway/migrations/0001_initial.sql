-- The gateway's shared state, version 1 (SQLite and PostgreSQL alike).
CREATE TABLE registrations (
    alias TEXT PRIMARY KEY,
    box TEXT NOT NULL UNIQUE,
    onion TEXT NOT NULL,
    state TEXT NOT NULL,
    requested DOUBLE PRECISION NOT NULL,
    decided DOUBLE PRECISION NOT NULL DEFAULT 0,
    request TEXT NOT NULL DEFAULT '',
    signature TEXT NOT NULL DEFAULT ''
);
CREATE INDEX registrations_onion ON registrations (onion);
CREATE TABLE counters (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (name, key, bucket)
);
