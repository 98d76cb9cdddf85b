-- How renewing each account's credentials has gone; the outbox of events,
-- written in the same transaction as the change that causes them; webhook
-- endpoints and their deliveries.
ALTER TABLE integration_accounts
    ADD COLUMN last_refresh_at_ns BIGINT,
    ADD COLUMN last_error_code TEXT,
    ADD COLUMN last_error_at_ns BIGINT,
    ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;

CREATE INDEX integration_accounts_failing ON integration_accounts (id) WHERE consecutive_failures > 0;

CREATE TABLE integration_outbox (
    id TEXT COLLATE "C" PRIMARY KEY,
    occurred_at_ns BIGINT NOT NULL,
    claimed_until_ns BIGINT,
    event JSONB NOT NULL
);

CREATE TABLE integration_webhooks (
    id TEXT COLLATE "C" PRIMARY KEY,
    created_at_ns BIGINT NOT NULL,
    record JSONB NOT NULL
);

CREATE TABLE integration_webhook_deliveries (
    id TEXT COLLATE "C" PRIMARY KEY,
    webhook TEXT COLLATE "C" NOT NULL REFERENCES integration_webhooks (id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    next_attempt_at_ns BIGINT,
    claimed_until_ns BIGINT,
    created_at_ns BIGINT NOT NULL,
    record JSONB NOT NULL
);

CREATE INDEX integration_webhook_deliveries_due ON integration_webhook_deliveries (next_attempt_at_ns)
    WHERE state = 'pending';
CREATE INDEX integration_webhook_deliveries_by_webhook ON integration_webhook_deliveries (webhook, id);
