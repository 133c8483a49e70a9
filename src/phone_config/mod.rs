//! The configuration companion: decides, per phone and requested name, whether to
//! serve the full, the partial or the encrypted configuration, and builds the signed
//! `.sgn`, `.enc.sgn` and ITL files (docs/spec/config-files.md).
//!
//! Data flows down this list:
//!
//! * [`http`] and [`tftp`] — delivery: the HTTP (6970) and TFTP (69) servers phones
//!   fetch from. They parse the request name and hand it to the service.
//! * [`service`] — the edge that reads a request's inputs (the device from the store,
//!   the base document under `tftp/`, the signer) and calls [`plan`]; shared by both
//!   servers and by the CLI (`config build`, `itl build`, `doctor`). It keeps the
//!   signed files it built in [`cache`], under the digest of their inputs, and the
//!   node's copies of them in [`kept`], on disk, for after a restart.
//! * [`plan`] — pure: the request-name rules, the decision table (§6) and the build.
//! * [`format`] — pure: the file formats (`.sgn`, `.enc.sgn`, ITL, the partial XML).
//! * [`signer`] — the RSA signing identity of the files, loaded from `certs/tftp.*`.

pub mod cache;
pub mod crl;
pub mod error;
pub mod format;
pub(crate) mod http;
pub mod kept;
pub mod plan;
pub mod service;
pub mod signer;
pub mod tftp;

#[cfg(test)]
mod testpki;

pub use crate::model::Digest;
pub use error::{Error, Result};
pub use signer::Signer;
