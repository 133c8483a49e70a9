-- `web_sessions`: the web admin's sessions (src/web/session.rs), by the SHA-256 of
-- the session token, so that every node sharing the store knows every session and a
-- restart logs no one out. A session is not worth a WAL flush: unlogged, as the
-- tables of V3 are. After a crash of the database the sessions are gone, which means
-- a new login.
CREATE UNLOGGED TABLE web_sessions (
    key    bytea PRIMARY KEY,
    record jsonb NOT NULL
);
