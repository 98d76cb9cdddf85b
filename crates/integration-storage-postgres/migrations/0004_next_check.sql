-- When the background scheduler looks at each account next.
ALTER TABLE integration_accounts ADD COLUMN next_check_at_ns BIGINT;
