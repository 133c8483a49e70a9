//! The on-disk form of capf's identities: PEM certificates and PKCS#8 keys.
//!
//! Files are written to a temporary name in the same directory and renamed into
//! place, so a reader never sees half a key; key files are created 0600, never
//! widened and then narrowed. The temporary file is created exclusively (`O_EXCL`,
//! `O_NOFOLLOW`) under a random name, so nothing planted in the directory (a file
//! another user can read, a symlink) is ever written through; the rename replaces
//! whatever stands at the final name without following it. The rest of capf writes
//! its files with the same two functions, [`open_new`] and [`replace`].

use super::CaError;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::PrivatePkcs8KeyDer;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode of private key files: readable by the owner only.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: public.
pub(crate) const CERT_MODE: u32 = 0o644;

/// Creates `path` for writing, exclusively: fails if anything exists there (a file,
/// or a symlink, which is never followed). Created with `mode` (less the umask), so
/// the file is never more open than that, not even for a moment.
pub(crate) fn open_new(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode)
        .open(path)
}

/// Writes `contents` to `path` through a temporary file created with `mode` (see
/// [`open_new`]), then renames it over `path` and syncs the directory.
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 6];
    rand::fill(&mut suffix);
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let mut file = open_new(&tmp, mode)?;
    let written = (|| {
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        // Best effort: the temporary name is ours alone, nothing else refers to it.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// [`replace`], with capf's error for identity files.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    replace(path, contents, mode).map_err(|source| CaError::io(path, source))
}

/// The DER certificate in the first CERTIFICATE block of the PEM file at `path`.
pub(crate) fn read_certificate(path: &Path) -> Result<Vec<u8>, CaError> {
    let text = std::fs::read(path).map_err(|e| CaError::io(path, e))?;
    parse_certificate(path, &text)
}

/// The DER certificate in the first CERTIFICATE block of `text`, the contents of the
/// file `path` (named in errors).
pub(crate) fn parse_certificate(path: &Path, text: &[u8]) -> Result<Vec<u8>, CaError> {
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text) {
        match section {
            Ok((SectionKind::Certificate, der)) => return Ok(der),
            Ok(_) => continue,
            Err(e) => return Err(CaError::pem(path, e.to_string())),
        }
    }
    Err(CaError::pem(path, "no CERTIFICATE block"))
}

/// The private key in the PEM file at `path`, as PKCS#8 DER. A PKCS#1 "RSA PRIVATE
/// KEY" (what older openssl commands write) is converted, because rcgen with ring
/// only loads PKCS#8.
pub(crate) fn read_private_key(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, CaError> {
    let text = std::fs::read(path).map_err(|e| CaError::io(path, e))?;
    parse_private_key(path, &text)
}

/// The private key in `text`, the contents of the PEM file `path` (named in errors), as
/// PKCS#8 DER (see [`read_private_key`]).
pub(crate) fn parse_private_key(
    path: &Path,
    text: &[u8],
) -> Result<PrivatePkcs8KeyDer<'static>, CaError> {
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text) {
        match section {
            Ok((SectionKind::PrivateKey, der)) => return Ok(PrivatePkcs8KeyDer::from(der)),
            Ok((SectionKind::RsaPrivateKey, der)) => {
                let key = rsa::PrivateKey::from_pkcs1_der(&der)
                    .map_err(|e| CaError::pem(path, format!("bad RSA PRIVATE KEY: {e}")))?;
                let pkcs8 = key
                    .to_pkcs8_der()
                    .map_err(|e| CaError::pem(path, format!("cannot convert to PKCS#8: {e}")))?;
                return Ok(PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec()));
            }
            Ok(_) => continue,
            Err(e) => return Err(CaError::pem(path, e.to_string())),
        }
    }
    Err(CaError::pem(
        path,
        "no PRIVATE KEY or RSA PRIVATE KEY block (encrypted keys are not supported)",
    ))
}

/// PEM text of a DER certificate (RFC 7468: base64 in 64-column lines).
pub fn certificate_pem(der: &[u8]) -> String {
    pem("CERTIFICATE", der)
}

/// PEM text of any DER object under `label` (RFC 7468: base64 in 64-column lines).
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(super) fn rename(from: &Path, to: &Path) -> Result<(), CaError> {
    std::fs::rename(from, to).map_err(|e| CaError::io(from, e))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CaError::io(dir, e))
}

/// `certs/retired/`, created owner-only if missing.
pub(super) fn retired_dir(certs: &Path) -> Result<PathBuf, CaError> {
    let dir = certs.join(super::RETIRED_DIR);
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(builder.recursive(true), 0o700);
    builder.create(&dir).map_err(|e| CaError::io(&dir, e))?;
    Ok(dir)
}
