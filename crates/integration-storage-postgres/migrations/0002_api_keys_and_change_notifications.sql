-- The API keys of the gateways sharing this database, and a notification
-- for every account changed or removed, so that every gateway drops its
-- cached copy. The payload is the table's schema and the account id,
-- separated by a newline: channels are database-wide, schemas are not.
CREATE TABLE integration_api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ns BIGINT NOT NULL,
    hash TEXT NOT NULL
);

CREATE FUNCTION integration_accounts_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('integration_accounts', TG_TABLE_SCHEMA || E'\n' || OLD.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER integration_accounts_changed AFTER UPDATE OR DELETE ON integration_accounts
    FOR EACH ROW EXECUTE FUNCTION integration_accounts_notify();
