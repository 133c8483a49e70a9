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
