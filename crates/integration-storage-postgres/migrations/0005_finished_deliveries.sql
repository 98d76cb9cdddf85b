-- Finished deliveries by age, for the hourly removal of those past the
-- retention (without it, each removal reads the whole table).
CREATE INDEX integration_webhook_deliveries_finished ON integration_webhook_deliveries (created_at_ns)
    WHERE state <> 'pending';
