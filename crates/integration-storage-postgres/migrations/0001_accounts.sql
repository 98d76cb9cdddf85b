-- Accounts and pending OAuth 2.0 authorizations.
-- Sealed secrets are bytes, in name and value arrays of one length. Times
-- are Unix nanoseconds: records keep them exact, and PostgreSQL's
-- timestamps stop at microseconds.
CREATE TABLE integration_accounts (
    id TEXT COLLATE "C" PRIMARY KEY,
    integration TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    parameters JSONB NOT NULL,
    secret_parameter_names TEXT[] NOT NULL,
    secret_parameter_values BYTEA[] NOT NULL,
    credential_names TEXT[] NOT NULL,
    credential_values BYTEA[] NOT NULL,
    created_at_ns BIGINT NOT NULL,
    updated_at_ns BIGINT NOT NULL,
    revision BIGINT NOT NULL
);

CREATE INDEX integration_accounts_by_integration ON integration_accounts (integration, id);
CREATE INDEX integration_accounts_by_status ON integration_accounts (status, id);

CREATE TABLE integration_pending_authorizations (
    state TEXT COLLATE "C" PRIMARY KEY,
    account TEXT NOT NULL,
    created_at_ns BIGINT NOT NULL,
    expires_at_ns BIGINT NOT NULL,
    data JSONB NOT NULL,
    secret_names TEXT[] NOT NULL,
    secret_values BYTEA[] NOT NULL
);

CREATE INDEX integration_pending_authorizations_by_expiry ON integration_pending_authorizations (expires_at_ns);
