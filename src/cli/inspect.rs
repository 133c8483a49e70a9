//! `capf inspect FILE`: print a signed file's header (and an ITL's records), verify
//! its signature and, with the phone's key, decrypt an `.enc.sgn`.
//!
//! Unlike the reference tools, which print a failure message and exit 0, a bad
//! signature or a malformed file is a non-zero exit, so scripts can rely on it.

use anyhow::{bail, Context, Result};
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::render;
use crate::phone_config::format::enc;
use crate::phone_config::format::itl::{self, Role};
use crate::phone_config::format::sgn::{self, FileKind, SignedFile};
use crate::phone_config::Digest;
use crate::settings::DataDir;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  capf inspect SEP001122334455.cnf.xml.sgn\n  capf inspect ITLFile.tlv\n  capf inspect SEP001122334455.cnf.xml.enc.sgn --key phone.key"
)]
pub struct InspectArgs {
    /// A .sgn, .enc.sgn or .tlv file; the format follows from the name.
    pub file: PathBuf,
    /// The phone's private key (PEM, PKCS#8 or PKCS#1): decrypt an .enc.sgn and print
    /// the document.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The signer's certificate (PEM) for .sgn and .enc.sgn (default: the node's
    /// certs/tftp.pem). An ITL is verified with its own SAST record.
    #[arg(long)]
    pub cert: Option<PathBuf>,
}

pub fn inspect(data: &DataDir, args: InspectArgs) -> Result<ExitCode> {
    let name = args
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let Some(kind) = FileKind::from_name(name) else {
        bail!(
            "{}: cannot tell the format from the name (expected .sgn, .enc.sgn or .tlv)",
            args.file.display()
        );
    };
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "file:           {} ({} bytes)",
        args.file.display(),
        bytes.len()
    )?;
    if kind == FileKind::Tlv {
        let list = itl::parse(&bytes).context("not a valid trust list")?;
        print_header(&mut out, &list.header)?;
        for (i, record) in list.records.iter().enumerate() {
            let role = Role::from_value(record.role)
                .map_or_else(|| "unknown".to_owned(), |r| format!("{r:?}").to_uppercase());
            writeln!(
                out,
                "record {i}:       role {} ({role}), {} bytes\n  subject:      {}\n  issuer:       {}\n  serial:       {}\n  certificate:  {} bytes",
                record.role,
                record.length,
                record.subject,
                record.issuer,
                hex::encode(record.serial),
                record.certificate.len()
            )?;
        }
        itl::verify(&list).context("trust list signature")?;
        writeln!(out, "signature:      OK (SAST record)")?;
        return Ok(ExitCode::SUCCESS);
    }

    let file = sgn::parse(&bytes, kind).context("not a valid signed file")?;
    print_header(&mut out, &file)?;
    let cert = signer_certificate(data, args.cert.as_deref())?;
    sgn::verify(&file, &cert).context("signature")?;
    writeln!(out, "signature:      OK")?;
    let document = match (kind, &args.key) {
        (FileKind::EncSgn, Some(key)) => Some(enc::decrypt(&bytes, &phone_key(key)?)?),
        (FileKind::EncSgn, None) => None,
        _ => Some(file.body.to_vec()),
    };
    if let Some(document) = document {
        writeln!(out, "--- document ({} bytes) ---", document.len())?;
        out.write_all(&document)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_header(out: &mut dyn Write, file: &SignedFile<'_>) -> Result<()> {
    let [major, minor] = file.version;
    writeln!(out, "version:        {major}.{minor}")?;
    writeln!(out, "header length:  {}", file.header_length)?;
    if let Some([major, minor]) = file.signer_version {
        writeln!(out, "signer version: {major}.{minor}")?;
    }
    writeln!(out, "signer:         {}", file.signer_name)?;
    writeln!(out, "serial:         {}", hex::encode(file.serial))?;
    writeln!(out, "issuer:         {}", file.issuer_name)?;
    writeln!(
        out,
        "digest:         {}, RSA-{} signature",
        digest_name(file.digest),
        file.signature.len() * 8
    )?;
    writeln!(out, "filename:       {}", file.filename)?;
    writeln!(
        out,
        "timestamp:      {} ({})",
        file.timestamp,
        render::time(i64::from(file.timestamp))
    )?;
    if let Some(e) = &file.encryption {
        writeln!(out, "encryption:     AES-128-CBC, IV {}", hex::encode(e.iv))?;
        writeln!(out, "  pad count:    {}", e.pad_count)?;
        writeln!(
            out,
            "  wrapped key:  {} bytes (RSA-{})",
            e.wrapped_key.len(),
            e.key_size_bits
        )?;
        writeln!(
            out,
            "  plaintext:    {} {}",
            digest_name(e.digest),
            hex::encode(e.plaintext_digest)
        )?;
    }
    if file.kind != FileKind::Tlv {
        writeln!(out, "body:           {} bytes", file.body.len())?;
    }
    Ok(())
}

fn digest_name(digest: Digest) -> &'static str {
    match digest {
        Digest::Sha1 => "SHA-1",
        Digest::Sha512 => "SHA-512",
    }
}

/// `--cert`, else the node's TFTP signer.
fn signer_certificate(data: &DataDir, cert: Option<&Path>) -> Result<Vec<u8>> {
    let path = match cert {
        Some(path) => path.to_path_buf(),
        None if data.tftp_cert().exists() => data.tftp_cert(),
        None => bail!(
            "no signer certificate to verify with: pass --cert SIGNER.pem (no {})",
            data.tftp_cert().display()
        ),
    };
    let cert = CertificateDer::from_pem_file(&path)
        .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
    Ok(cert.to_vec())
}

fn phone_key(path: &Path) -> Result<rsa::PrivateKey> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    rsa::PrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| rsa::PrivateKey::from_pkcs1_pem(&pem))
        .map_err(|_| {
            anyhow::anyhow!(
                "{}: not an RSA private key (PEM, PKCS#8 or PKCS#1)",
                path.display()
            )
        })
}
