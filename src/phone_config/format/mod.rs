//! The file formats phones read (docs/spec/config-files.md): pure builders and
//! parsers, no I/O. Callers pass the inputs (device document, certificates, signer,
//! time, a random generator) and get bytes back.
//!
//! * [`sgn`] — the signed header shared by all three formats (§3), parser and verifier.
//! * [`enc`] — the encrypted `.enc.sgn` (§4) and its decryption.
//! * [`itl`] — the Identity Trust List (§7).
//! * [`document`] / [`partial`] — the device document and the partial configuration (§5).
//! * [`capf_section`] — capf's CAPF node, port and mode spliced into the full document.
//! * [`checked`] — a document checked once, for every file built from it.
//! * [`dn`] and [`identity`] — how certificates are named in the files; [`tlv`] — the
//!   element encoding.

pub mod capf_section;
pub mod checked;
pub(crate) mod dn;
pub mod document;
pub mod enc;
pub(crate) mod identity;
pub mod itl;
pub mod partial;
pub mod sgn;
pub(crate) mod tlv;
