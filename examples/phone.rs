//! A simulated Cisco phone: enrolls with a capf node the way a phone does.
//!
//! ```text
//! cargo run --example phone -- --capf-cert capf-data/certs/capf.pem SEP001122334455
//! cargo run --example phone -- --password 123456 --out ./phone SEP001122334455
//! ```
//!
//! It connects with TLS trusting only the CAPF certificate, authenticates (null string
//! or `--password`), answers key generation (RSA or EC, generated, or `--key` loaded),
//! stores the issued LSC and its key as PEM in `--out`, answers fetch and delete with
//! `--cert`, and reports the END_SESSION reason.

use capf::phone::{connector, Phone, PhoneKey};
use capf::protocol::{CertificateType, WrappedCertificate};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Device name, e.g. SEP001122334455.
    name: String,
    /// capf address.
    #[arg(long, default_value = "127.0.0.1:3804")]
    addr: SocketAddr,
    /// The CAPF certificate to trust (PEM).
    #[arg(long, default_value = "capf-data/certs/capf.pem")]
    capf_cert: PathBuf,
    /// Authentication string typed on the keypad (omit for null string).
    #[arg(long)]
    password: Option<String>,
    /// Protocol version to announce (2 behaves like the softphone client).
    #[arg(long, default_value_t = 3)]
    version: u8,
    /// Use this private key (PKCS#8 PEM, RSA) when the request matches.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The certificate the phone holds (PEM), returned on troubleshoot.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Where to write the issued LSC and key.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let trust: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&args.capf_cert)?.collect::<Result<_, _>>()?;
    let mut phone = Phone::new(&args.name);
    phone.password = Some(args.password.unwrap_or_default());
    phone.version = Some(args.version);
    if let Some(path) = &args.key {
        use rsa::pkcs8::DecodePrivateKey;
        let pem = std::fs::read_to_string(path)?;
        phone.key = Some(PhoneKey::Rsa(rsa::PrivateKey::from_pkcs8_pem(&pem)?));
    }
    if let Some(path) = &args.cert {
        let der = CertificateDer::from_pem_file(path)?;
        phone.certificate = Some(WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: der.to_vec(),
        });
    }

    let outcome = phone.run(args.addr, &connector(&trust)?).await?;
    println!("TLS: {}", outcome.tls_version);
    println!("server said: {:?}", outcome.commands);
    if let Some((der, key)) = &outcome.issued {
        std::fs::create_dir_all(&args.out)?;
        let cert_path = args.out.join(format!("{}.pem", args.name));
        let key_path = args.out.join(format!("{}.key", args.name));
        std::fs::write(&cert_path, capf_pem(der))?;
        write_private(&key_path, &key.to_pem()?)?;
        println!(
            "LSC stored in {} (key {})",
            cert_path.display(),
            key_path.display()
        );
    }
    if outcome.delete_requested {
        println!("server asked the phone to delete its LSC");
    }
    match outcome.end_reason {
        Some(reason) => println!("END_SESSION reason {}", reason.to_u8()),
        None => println!("server closed the connection without END_SESSION"),
    }
    Ok(())
}

fn capf_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        body.join("\n")
    )
}

/// Private keys are written owner-only.
fn write_private(path: &std::path::Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pem.as_bytes())
}
