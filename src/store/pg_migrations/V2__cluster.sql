-- What nodes sharing the store agree on besides records (docs/cluster.md "Across
-- nodes"). Times are the database's clock (epoch seconds), so nodes whose clocks
-- differ still agree on when something expires.

-- `leases`: one holder at a time per key, until `expires`: a device's authentication
-- turn (`device:NAME`), the renewal scheduler (`renewal`). A node that dies holding
-- one loses it when it expires.
CREATE TABLE leases (
    key     text PRIMARY KEY,
    holder  text NOT NULL,
    expires double precision NOT NULL
);

-- `address_failures`: failed sessions per peer address in the current window, for
-- the per-address limit (net/limits.rs) across nodes.
CREATE TABLE address_failures (
    address      text PRIMARY KEY,
    window_start double precision NOT NULL,
    failures     integer NOT NULL
);
CREATE INDEX address_failures_window ON address_failures (window_start);

-- `address_attempts`: authentication attempts reserved and not yet finished, per
-- address; failures plus these never exceed the limit, whichever node evaluates.
CREATE TABLE address_attempts (
    address text NOT NULL,
    holder  text NOT NULL,
    expires double precision NOT NULL,
    PRIMARY KEY (address, holder)
);
