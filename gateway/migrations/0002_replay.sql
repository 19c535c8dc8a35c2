-- Envelope ids and registration nonces seen, shared by every instance: a box's retry
-- that reaches another instance is recognised there too.
CREATE TABLE replay (
    id TEXT PRIMARY KEY,
    created BIGINT NOT NULL
);
CREATE INDEX replay_created ON replay (created);
