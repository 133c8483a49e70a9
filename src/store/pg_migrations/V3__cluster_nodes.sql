-- The tables of V2__cluster.sql hold only what expires within seconds or minutes
-- (leases, attempts in flight, the current window's failures per address), and each
-- change to them was a durable commit: a WAL flush per lease taken and given back,
-- several per authentication. Unlogged, they cost no WAL. After a crash of the
-- database they come back empty, and a standby does not have them: a lease or an
-- attempt is then forgotten early, which at worst lets one more session authenticate
-- a device or an address at that moment. The lockout that matters, the device's own
-- failure count, is in `devices`, which stays logged.
ALTER TABLE leases SET UNLOGGED;
ALTER TABLE address_failures SET UNLOGGED;
ALTER TABLE address_attempts SET UNLOGGED;

-- `nodes`: the nodes serving now (src/store/presence.rs). Each renews its row while
-- it serves and removes it when it stops; a row whose `expires` has passed is a node
-- that died. `identity` is a digest of the certificates the node presents and signs
-- with (its certs/), so that a node left behind after a rollover shows in
-- `capf status` on every node. Unlogged for the same reason as the tables above.
CREATE UNLOGGED TABLE nodes (
    name     text PRIMARY KEY,
    holder   text NOT NULL,
    identity text NOT NULL,
    expires  double precision NOT NULL
);

-- The per-address limit's two transactions (src/store/pg.rs, `Cluster`), each one
-- round trip: a call runs as one statement, under the address's advisory lock, so no
-- two nodes reserve or count for one address at the same moment. Times are the
-- database's clock.

-- Reserves an attempt of `p_address` for `p_holder` unless the address's failures in
-- the window, with the attempts in flight, reach `p_max`: 'reserved', 'busy' or
-- 'too_many_failures'.
CREATE FUNCTION capf_reserve_attempt(p_address text, p_holder text, p_max integer,
                                     p_window float8, p_ttl float8) RETURNS text AS $$
DECLARE
    v_now float8 := extract(epoch from clock_timestamp());
    v_failures bigint;
    v_in_flight bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('capf-address:' || p_address));
    SELECT coalesce(max(f.failures), 0) INTO v_failures FROM address_failures f
        WHERE f.address = p_address AND f.window_start > v_now - p_window;
    IF v_failures >= p_max THEN
        RETURN 'too_many_failures';
    END IF;
    SELECT count(*) INTO v_in_flight FROM address_attempts a
        WHERE a.address = p_address AND a.expires > v_now;
    IF v_failures + v_in_flight >= p_max THEN
        RETURN 'busy';
    END IF;
    INSERT INTO address_attempts (address, holder, expires)
        VALUES (p_address, p_holder, v_now + p_ttl)
        ON CONFLICT (address, holder) DO UPDATE SET expires = EXCLUDED.expires;
    RETURN 'reserved';
END;
$$ LANGUAGE plpgsql;

-- Counts a failure of `p_address` and ends `p_holder`'s attempt, together: no node
-- sees a free slot in between. Windows long over are forgotten.
CREATE FUNCTION capf_attempt_failed(p_address text, p_holder text, p_window float8)
    RETURNS void AS $$
DECLARE
    v_now float8 := extract(epoch from clock_timestamp());
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('capf-address:' || p_address));
    INSERT INTO address_failures AS f (address, window_start, failures)
        VALUES (p_address, v_now, 1)
        ON CONFLICT (address) DO UPDATE SET
            failures = CASE WHEN f.window_start <= v_now - p_window
                THEN 1 ELSE f.failures + 1 END,
            window_start = CASE WHEN f.window_start <= v_now - p_window
                THEN v_now ELSE f.window_start END;
    DELETE FROM address_attempts WHERE address = p_address AND holder = p_holder;
    DELETE FROM address_failures WHERE window_start <= v_now - 2 * p_window;
END;
$$ LANGUAGE plpgsql;
