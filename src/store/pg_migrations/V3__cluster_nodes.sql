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
