-- Every change to connectors notifies the nodes, which drop the connectors they cache by
-- access key (a rotated key or a deleted connector stops working on every node at once).
CREATE OR REPLACE FUNCTION utc_connectors_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('utc_connectors', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER connectors_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON connectors
    FOR EACH STATEMENT EXECUTE FUNCTION utc_connectors_changed();
