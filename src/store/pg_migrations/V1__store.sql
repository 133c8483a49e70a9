-- The PostgreSQL store (docs/cluster.md "Store backends"): the sled trees as tables.
-- Records stay the JSON the sled store writes (src/store/codec.rs), in jsonb, so both
-- backends decode them with one codec and `capf store migrate` copies them as they are.

-- `devices`: one row per device; `record` is the versioned envelope {"v":1,"device":...}.
-- A session's read-modify-write locks its row (SELECT ... FOR UPDATE), which is what
-- keeps the lockout counter in the record atomic across nodes.
CREATE TABLE devices (
    name    text COLLATE "C" PRIMARY KEY CHECK (name <> ''),
    record  jsonb NOT NULL,
    -- Bumped by every write: what another node's configuration cache compares.
    version bigint NOT NULL DEFAULT 1
);

-- `events`: the audit trail, one for all nodes. Ids come from the identity sequence:
-- increasing in insertion order, with gaps where a transaction rolled back.
CREATE TABLE events (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time   bigint NOT NULL,
    device text,
    record jsonb NOT NULL
);
CREATE INDEX events_device ON events (device, id);
CREATE INDEX events_time ON events (time);

-- `serials`: every certificate capf signed (lowercase hex), with its revocation.
CREATE TABLE serials (
    serial text PRIMARY KEY,
    record jsonb NOT NULL
);

-- `lsc_keys`: SHA-256 of a key's identity -> the device whose LSC holds it.
CREATE TABLE lsc_keys (
    key    bytea PRIMARY KEY,
    device text NOT NULL
);

-- `web_accounts`: the web admin's operators.
CREATE TABLE web_accounts (
    name   text PRIMARY KEY,
    record jsonb NOT NULL
);

-- Every committed change to `devices` tells the other nodes which device changed
-- (their configuration caches drop it); NOTIFY is delivered at commit, only if the
-- transaction commits.
CREATE FUNCTION capf_device_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('capf_devices', OLD.name);
    ELSE
        PERFORM pg_notify('capf_devices', NEW.name);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER devices_changed AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION capf_device_changed();
