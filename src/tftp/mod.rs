//! The configuration companion: decides, per phone and requested name, whether to
//! serve the full, the partial or the encrypted configuration, and builds the signed
//! `.sgn`, `.enc.sgn` and ITL files (docs/spec/config-files.md).
//!
//! Everything here but [`service`] is pure: callers pass the device record, the base document, the
//! signing identity, the time and a random generator, and get bytes back. Fetching
//! those inputs and serving the result belong to the delivery layer.
//!
//! * [`plan`] — the request-name rules and the decision table (§6), and the build.
//! * [`sgn`] — the signed header shared by all three formats (§3), parser and verifier.
//! * [`enc`] — the encrypted `.enc.sgn` (§4) and its decryption.
//! * [`itl`] — the Identity Trust List (§7).
//! * [`document`] / [`partial`] — the device document and the partial configuration (§5).
//! * [`service`] — the edge that reads a request's inputs (store, `tftp/`, signer) and
//!   calls [`plan`]; shared by HTTP delivery and the CLI.
//! * [`signer`] — the RSA signing identity; [`dn`] and [`identity`] — how certificates
//!   are named in the files; [`tlv`] — the element encoding.

pub mod dn;
pub mod document;
pub mod enc;
pub mod error;
pub mod identity;
pub mod itl;
pub mod partial;
pub mod plan;
pub mod service;
pub mod sgn;
pub mod signer;
pub mod tlv;

#[cfg(test)]
mod testpki;

pub use error::{Error, Result};
pub use signer::{Digest, Signer};
