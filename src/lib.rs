//! capf: a CAPF (Certificate Authority Proxy Function) node for Cisco IP phones.
//!
//! Phones open TLS to port 3804, authenticate, and leave with a Locally Significant
//! Certificate (LSC) issued by capf; capf keeps each phone's certificate, public key and
//! MD5 hash, and the configuration companion uses them to serve the phone its
//! configuration encrypted to its own key.
//!
//! Where to look:
//!
//! * [`protocol`] — the CAPF wire codec: the 8-byte header, TLV elements and one type per
//!   message. Pure functions over byte slices; every spec test vector is a unit test.
//! * [`session`] — the sans-I/O state machine of one CAPF conversation: it consumes
//!   decoded client messages and returns the next message to send plus what the server
//!   must do (look a device up, issue a certificate, commit a change). A whole
//!   conversation is a unit test.
//! * [`ca`] — capf's identities (the CAPF certificate and the TFTP signer), LSC issuance
//!   with rcgen, and the checks on keys and certificates that phones send.
//! * [`trust`] — the pure checks behind certificate-mode authentication: the trust
//!   anchors (capf's CAPF certificate for LSCs; the Cisco manufacturing and SUDI CAs,
//!   compiled in, plus operator PEM files for MICs), X.509 path validation, the
//!   possession proofs with strict full-block RSA verification, the SUDI proof, and the
//!   rule that binds a certificate to the device name. No I/O beyond loading anchors.
//! * [`store`] — the sled database: device records, enrolled certificates, the issued
//!   serial index and the append-only audit trail. The only owner of persistent state.
//! * [`server`] — the tokio listener: TLS (rustls), limits and timeouts, one task per
//!   phone driving a `Session`, graceful shutdown.
//! * [`tftp`] — the configuration companion: decides full, partial or encrypted
//!   configuration per phone and builds the signed `.sgn`, `.enc.sgn` and ITL files.
//! * [`phone`] — a CAPF client that behaves like a phone, shared by the examples, the
//!   integration tests and `capf doctor`.
//! * [`cli`] — the `capf` command line; `main.rs` only calls into it.
//! * [`settings`] — the data directory layout and node settings.
//! * [`rsa_signing`] — RSA private-key operations on OpenSSL, for the TLS handshake
//!   and the LSCs (the two signatures each enrollment costs).

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
pub mod phone;
pub mod protocol;
pub mod rsa_signing;
pub mod server;
pub mod session;
pub mod settings;
pub mod store;
pub mod tftp;
pub mod trust;
