-- The end user who connected each account through a connect session, and
-- the sessions themselves. A session is read and swapped whole, so it is
-- kept as one JSON record (jsonb compares by value); its expiry is a
-- column of its own for the removal of expired ones.
ALTER TABLE integration_accounts
    ADD COLUMN end_user_id TEXT,
    ADD COLUMN end_user_name TEXT;

CREATE TABLE integration_connect_sessions (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    record JSONB NOT NULL,
    expires_at_ns BIGINT NOT NULL
);

CREATE INDEX integration_connect_sessions_by_expiry ON integration_connect_sessions (expires_at_ns);
