//! capf: a CAPF (Certificate Authority Proxy Function) node for Cisco IP phones.
//!
//! Phones open TLS to port 3804, authenticate, and leave with a Locally Significant
//! Certificate (LSC) issued by capf; capf keeps each phone's certificate, public key and
//! MD5 hash, and the configuration companion uses them to serve the phone its
//! configuration encrypted to its own key.
//!
//! The map, in the order data flows (each module uses only those below it, except the
//! two edges, `cli` and `node`, which wire everything together):
//!
//! * [`cli`] — the `capf` command line; `main.rs` only calls [`cli::main`]. Commands
//!   that need the store run in the server through the admin socket when one runs.
//! * [`web`] — the web admin (HTTPS, off by default): pages that read the store and
//!   change it only by running `capf` command lines through `cli::execute`.
//! * [`node`] — start-up shared by `capf serve` and the tests: load the identities
//!   and trust anchors, bind every listener, run them until shutdown.
//! * `server` — the CAPF listener on 3804: the session cap, TLS (`tls.rs`), and the
//!   driver (`driver.rs`) that runs one phone's connection from handshake to close.
//! * [`phone_config`] — the configuration companion: per phone and request, full,
//!   partial or encrypted configuration and the ITL (`plan`, `format/`), built by
//!   `service` from the store (signed files kept in `cache` while their inputs are
//!   unchanged) and served over HTTP and TFTP (`http`, `tftp`).
//! * `net` — what every listener shares: the accept loop, the connection table (at
//!   the cap the oldest connection that has not made progress gives way), the
//!   standing of peer addresses, and the per-address failure limit.
//! * [`session`] — the sans-I/O state machine of one CAPF conversation: decoded
//!   messages and looked-up records in, a `Step` (commit, bytes to send, next action)
//!   out. A whole conversation is a unit test.
//! * [`protocol`] — the CAPF wire codec: the 8-byte header, TLV elements and one type
//!   per message. Pure; every spec test vector is a unit test.
//! * `trust` — the pure checks behind certificate authentication: anchors, X.509
//!   paths, possession and SUDI proofs, binding a certificate to the device name.
//! * [`ca`] — capf's identities (the CAPF certificate, the TFTP signer and the ITL
//!   recovery identity) and their rollovers, LSC issuance, the checks on phone keys,
//!   and RSA signing on OpenSSL (`ca::signing`).
//! * [`store`] — the sled database and its writer thread: the only owner of
//!   persistent state.
//! * [`renewal`] — automatic LSC renewal: which devices are due, scheduling them at a
//!   rate, for the node's scheduler and `capf renew`.
//! * [`health`] — what `capf status` reports and the running node watches: devices
//!   by status, expiring LSCs, late operations, capf's certificates.
//! * [`settings`] — the data directory layout and `capf.toml`.
//! * [`model`] — the shared nouns: times and the clock, device records, enrolled
//!   certificates, events, and the changes a session asks the store to make.
//! * `phone` (feature `phone-sim`, examples and tests only) — a client that behaves
//!   like a phone.

// Which OpenSSL the build links: exactly one of the two features (Cargo.toml). Both
// on would vendor (openssl-sys's `vendored` wins) while the packager asked for the
// system library; neither would link the system library without saying so.
#[cfg(all(feature = "vendored-openssl", feature = "system-openssl"))]
compile_error!(
    "features `vendored-openssl` (a default) and `system-openssl` exclude each other: \
     build the system one with `--no-default-features --features system-openssl`"
);
#[cfg(not(any(feature = "vendored-openssl", feature = "system-openssl")))]
compile_error!(
    "choose the OpenSSL to link: the default feature `vendored-openssl`, or \
     `--no-default-features --features system-openssl` for the distribution's library"
);

pub mod ca;
pub mod cli;
pub mod health;
pub mod metrics;
pub mod model;
mod net;
pub mod node;
#[cfg(feature = "phone-sim")]
pub mod phone;
pub mod phone_config;
pub mod protocol;
pub mod renewal;
mod server;
pub mod session;
pub mod settings;
pub mod store;
mod trust;
pub mod web;
